"""Chunks laid end to end: encode a batch's new distinct chunks as a few long texts, and locate which tokens of a
long encoded text belong to which chunk.

Job: the tokenizing step of the chunk path (`ChunkEncoder`, used by vocabopt.corpus.counters). Inputs: distinct
chunks (`chunks.Chunks`: UTF-8 bytes), the tokenizer. Outputs: each chunk's token ids. The texts are built from
the chunks' bytes in numpy, no Python string per chunk. Each token goes back to the chunk holding its start:
`Located` = (all ids laid end to end, tokens per text, each token's start, each chunk's start), in one coordinate
(characters or bytes of the texts laid end to end). Three ways to find a token's start: the tokenizer's offsets (any
tokenizer; the offsets cost it ~40% more time), or the sizes of the tokens themselves where they add up to the text
(`by_bytes`: byte-level BPE; `by_chars`: SentencePiece layouts), checked per text.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Callable
from typing import Any

import numpy as np

from .chunks import _WS_TABLE, ALNUM_BYTE, Chunks

JOINED_TEXTS = 64  # distinct chunks are encoded as about this many long texts (enough for the tokenizer's threads)
_WS_BYTE = np.frombuffer(_WS_TABLE, dtype=bool)  # byte -> whether str.isspace() accepts it as an ASCII character

Located = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (ids, tokens per text, token starts, chunk starts)


def ids_of(encs: list) -> tuple[np.ndarray, np.ndarray]:
    """(all ids laid end to end, number of ids of each encoding)."""
    lists = [e.ids for e in encs]  # each a new Python list: made once
    n_tokens = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    ids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(n_tokens.sum()))
    return ids, n_tokens


def by_offsets(encs: list, lengths: np.ndarray, firsts: np.ndarray) -> Located:
    """Positions in characters, from the tokens' offsets (encodings made with offsets: `encode_batch`); `lengths`:
    the chunks' characters in text order."""
    ids, n_tokens = ids_of(encs)
    chunk_starts = np.cumsum(lengths) - lengths
    offsets = itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encs))
    token_starts = np.fromiter(offsets, dtype=np.int64, count=2 * ids.size)[::2]  # (start, end) pairs
    token_starts += np.repeat(chunk_starts[firsts], n_tokens)
    return ids, n_tokens, token_starts, chunk_starts


def by_bytes(encs: list, lengths: np.ndarray, firsts: np.ndarray, token_bytes) -> Located | None:
    """Positions in bytes, for byte-level BPE (`vocab.byte_level_sizes`): a token's string has one character per
    byte of text; `lengths`: the chunks' bytes in text order. None if some text's tokens do not add up to its bytes
    (an unknown character was dropped)."""
    ids, n_tokens = ids_of(encs)
    sizes = token_bytes[ids]  # (total,) bytes of each token
    chunk_ends, token_ends = np.cumsum(lengths), np.cumsum(sizes)
    text_ends = np.append(chunk_ends[firsts[1:] - 1], chunk_ends[-1:])  # bytes up to each text's end
    text_token_ends = np.concatenate([[0], token_ends])[np.cumsum(n_tokens)]
    if not np.array_equal(text_ends, text_token_ends):
        return None
    return ids, n_tokens, token_ends - sizes, chunk_ends - lengths


def by_chars(
    encs: list, spaced: np.ndarray, lengths: np.ndarray, firsts: np.ndarray, token_chars, prepends: bool
) -> Located | None:
    """Positions in characters, for the SentencePiece layouts (`vocab.metaspace_sizes`): a token stands for its
    string's characters (a byte-fallback token for a character's first byte or none), and with `prepends` one "▁"
    before a text that does not start with a space (`spaced`: (texts,) bool) is the tokenizer's own, no character
    of the text; `lengths`: the chunks' characters in text order (a text of whitespace a pre-tokenizer drops may
    have none, and no token). None if some text's tokens do not add up to its characters (a fused unk)."""
    ids, n_tokens = ids_of(encs)
    sizes = token_chars[ids]  # (total,) characters of each token
    chunk_ends = np.cumsum(lengths)
    chunk_starts = chunk_ends - lengths
    text_starts = chunk_starts[firsts]
    text_lengths = np.diff(np.append(text_starts, chunk_ends[-1]))
    added = (~spaced).astype(np.int64) if prepends else np.zeros(spaced.size, np.int64)
    ends = np.concatenate([[0], np.cumsum(sizes)])[np.cumsum(n_tokens)]
    sums = ends - np.concatenate([[0], ends[:-1]])  # characters per text (0 for a text without tokens)
    if not np.array_equal(sums, text_lengths + added):
        return None
    text_of = np.repeat(np.arange(spaced.size), n_tokens)
    starts = np.cumsum(sizes) - sizes - np.cumsum(added)[text_of]  # in the texts' characters laid end to end
    starts[sizes == 0] = -1  # a UTF-8 continuation byte starts where its character's first byte does
    return ids, n_tokens, np.maximum(np.maximum.accumulate(starts), text_starts[text_of]), chunk_starts


class ChunkEncoder:
    """Token ids of distinct chunks, from encoding a few long texts of chunks laid end to end.

    One Encoding per chunk costs more in Python objects than the tokenizer spends on the chunk, so chunks are joined
    wherever a line could have been cut (before a space that follows a non-space: the chunk path's own invariant;
    before a lone newline where the counter cuts there too: `_layout`), and each token goes back to the chunk
    holding its start. Other chunks that do not start with a space lead a text; chunks ending in whitespace stay
    alone, so every chunk after a text's first follows one that ends in a token holding a non-space, whose start a
    post-processor's offset trimming cannot push past its chunk.

    Tokens are placed by their sizes in bytes (`token_bytes`: byte-level BPE) or characters (`token_chars`:
    Metaspace tokenizers, some for ASCII texts only: `vocab.metaspace_sizes`), which needs no offsets (~40% of the
    tokenizer's time), else by the offsets; where the sizes do not add up to a text (unknown characters: they will
    come again), they are not tried again. `crossed`: whether a text holds an added token's content (None when no
    added token holds a place the counter cuts: whitespace after its first character, or a cut punctuation
    character after an ASCII letter or digit, the only ways one can form across two chunks laid end to end).
    `drops`: the model drops characters it has no token for (BPE without unk token or byte fallback), and the
    tokenizer's offsets after a dropped character are wrong: once sizes have not added up, every chunk is encoded as
    a text of its own (exact, slower).
    `newline_cuts`: the counter cuts before lone newlines; `punctuation`: (256,) bool, the bytes it cuts before
    after an ASCII letter or digit (see `_layout`). `ascii_tok`: (tokenizer, lower) that encodes plain-ASCII texts
    as `tok` does, without its normalizer (`tokenizer.ascii_tokenizer`).
    """

    def __init__(
        self,
        tok,
        token_bytes,
        token_chars,
        crossed: Callable[[str], bool] | None,
        drops: bool = False,
        newline_cuts: str | None = None,
        ascii_tok: tuple[Any, bool] | None = None,
        punctuation: np.ndarray | None = None,
    ) -> None:
        self.tok, self.token_bytes, self.token_chars, self.crossed = tok, token_bytes, token_chars, crossed
        self.drops, self.alone, self.newline_cuts = drops, False, newline_cuts
        self.ascii_tok, self.punctuation = ascii_tok, punctuation

    def encode(self, chunks: Chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, starts, lengths): chunk j's ids are ids[starts[j]:starts[j] + lengths[j]]."""
        n = len(chunks)
        order, firsts = _layout(chunks, self.newline_cuts, self.punctuation)
        if self.alone:  # one chunk per text: each text's tokens are its chunk's, whatever the offsets say
            firsts = np.arange(n)
        lengths = chunks.lengths[order]  # (n,) bytes, in text order
        joined = Chunks(chunks.data, chunks.starts[order], lengths).joined()  # the texts laid end to end
        raw, ends = joined.tobytes(), np.cumsum(lengths)
        bounds = np.append(ends[firsts[1:] - 1], ends[-1]) if n else ends  # bytes up to each text's end
        texts = _decode(raw, bounds)
        if self.crossed is not None and (crossed := [k for k, t in enumerate(texts) if self.crossed(t)]):
            # an added token's text formed across two chunks laid end to end: those texts' chunks go one per text
            stops = [*firsts[1:].tolist(), n]
            firsts = np.union1d(firsts, [p for k in crossed for p in range(firsts[k] + 1, stops[k])]).astype(np.int64)
            texts = _decode(raw, np.append(ends[firsts[1:] - 1], ends[-1]))
        ids, n_tokens, token_starts, chunk_starts = self._locate(texts, joined, lengths, firsts)
        if self.alone and firsts.size < n:
            return self.encode(chunks)
        located = np.empty(n + 1, np.int64)
        located[:n] = np.searchsorted(token_starts, chunk_starts, side="left")
        located[n] = ids.size
        # A text's first chunk starts at the text's first token: exact, whatever trimming did to a lone whitespace
        # chunk's offsets at the end of the text before.
        located[firsts] = np.cumsum(n_tokens) - n_tokens
        starts, counts = np.empty(n, np.int64), np.empty(n, np.int64)
        starts[order], counts[order] = located[:-1], np.diff(located)
        return ids, starts, counts

    def _locate(self, texts: list[str], joined: np.ndarray, lengths: np.ndarray, firsts: np.ndarray) -> Located:
        """Encode `texts` (the chunks of `lengths` bytes laid end to end in `joined`, text k starting at chunk
        firsts[k]) and place each token."""
        sizes, tok = self.token_chars, self.tok
        # the byte scan only where something depends on it (not for byte-level BPE without a normalizer)
        plain = (self.ascii_tok is not None or (sizes is not None and sizes.ascii_only)) and _plain_ascii(joined)
        if sizes is not None and sizes.ascii_only and not plain and not _in_form(sizes.form, texts):
            # sizes that hold for ASCII text (or text already in the normalizer's Unicode form) only: by offsets
            return by_offsets(tok.encode_batch(texts, add_special_tokens=False), _chars(joined, lengths), firsts)
        if plain and self.ascii_tok is not None and _plain_ascii(joined, _CONTROL_VF):
            # the same tokens without the normalizer's cost, and the same lengths (`tokenizer.ascii_normalizer`)
            tok, lower = self.ascii_tok
            texts = [t.lower() for t in texts] if lower else texts
        if self.token_bytes is not None or self.token_chars is not None:
            encs = tok.encode_batch_fast(texts, add_special_tokens=False)
            if self.token_bytes is not None:
                located = by_bytes(encs, lengths, firsts, self.token_bytes)
            else:
                assert sizes is not None
                spaced = joined[(np.cumsum(lengths) - lengths)[firsts]] == 32  # texts that start with a space
                counted = _nonspace(joined, lengths) if sizes.nonspace else _chars(joined, lengths)
                located = by_chars(encs, spaced, counted, firsts, sizes.sizes, sizes.prepends)
            if located is not None:
                return located
            self.token_bytes = self.token_chars = None
            self.alone = self.drops
        return by_offsets(tok.encode_batch(texts, add_special_tokens=False), _chars(joined, lengths), firsts)


def _decode(raw: bytes, bounds: np.ndarray) -> list[str]:
    """The texts of `raw` (UTF-8, lone surrogates passed) that end at `bounds` (bytes), each starting where the one
    before ends."""
    ends = bounds.tolist()
    return [raw[a:b].decode("utf-8", "surrogatepass") for a, b in zip([0, *ends[:-1]], ends)]


def _layout(
    chunks: Chunks, newline_cuts: str | None = None, punctuation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(order, firsts): the chunks in text order, and where in that order each text starts. A leader first (a chunk
    that does not start with a space), then every n_texts-th glue chunk (one that starts with a space); chunks ending
    in whitespace alone at the end. With `newline_cuts` (`cuts.newline_cuts`), a chunk that starts with a
    newline then a non-whitespace character (`chunks.split_lone_newlines`' parts) is glue ("any"), or ("alnum") a
    guest: it follows a chunk that ends in an ASCII letter or digit (a host), one guest each, and leads a text of its
    own when no host is left. A chunk that starts with a byte of `punctuation` (`cuts.punctuation_cuts`) and does
    not end in whitespace is a guest too. Each text costs the tokenizer ~6 us more than its characters (ad hoc,
    GPT-2's byte-level BPE, one word per text against 256): kjv-bpe-8k's chunks of the Heaps corpus in
    benchmarks/analyze_throughput.py led ~130K texts before newline chunks were glued."""
    n, data = len(chunks), chunks.data
    last = data[chunks.starts + chunks.lengths - 1] if n else np.zeros(0, np.uint8)
    alone = _WS_BYTE[last]
    for j in np.flatnonzero(last >= 0x80).tolist():  # a non-ASCII last character: Unicode whitespace?
        text = data[chunks.starts[j] : chunks.starts[j] + chunks.lengths[j]].tobytes()
        alone[j] = text.decode("utf-8", "surrogatepass")[-1].isspace()
    first = data[chunks.starts] if n else np.zeros(0, np.uint8)
    glue, after = ~alone & (first == 32), np.zeros(n, bool)
    if newline_cuts and n:  # a chunk that is not alone has a second byte
        second = data[np.minimum(chunks.starts + 1, data.size - 1)]
        lone_newline = ~alone & (first == 10) & ~_WS_BYTE[second] & (second < 0x80)
        if newline_cuts == "any":
            glue |= lone_newline
        else:
            after = lone_newline
    if punctuation is not None and n:
        after |= ~alone & punctuation[first]
    hosts, guests = np.flatnonzero(~alone & ~after & ALNUM_BYTE[last]), np.flatnonzero(after)
    k = min(hosts.size, guests.size)  # the k-th guest (a newline or punctuation chunk) follows the k-th host
    after[guests[k:]] = False  # those left lead texts of their own
    hosts, guests = hosts[:k], guests[:k]
    leaders = np.flatnonzero(~alone & ~glue & ~after)
    glue, alone = np.flatnonzero(glue), np.flatnonzero(alone)
    n_texts = max(leaders.size, JOINED_TEXTS)
    group, rank = np.empty(n, np.int64), np.empty(n, np.int64)  # rank: 2 per place, a guest right after its host
    group[leaders], rank[leaders] = np.arange(leaders.size), -2
    group[glue], rank[glue] = np.arange(glue.size) % n_texts, 2 * (np.arange(glue.size) // n_texts)
    group[alone], rank[alone] = n_texts + np.arange(alone.size), 0
    group[guests], rank[guests] = group[hosts], rank[hosts] + 1
    order = np.lexsort((rank, group))
    return order, np.flatnonzero(np.diff(group[order], prepend=-1))


# ASCII control characters but \t \n \v \f \r: a normalizer may drop them (BERT's clean_text), a pre-tokenizer keep
# them as a word's characters
_CONTROL = np.zeros(256, bool)
_CONTROL[[*range(0, 9), *range(14, 32), 127]] = True  # \x1c-\x1f too: whitespace to Python, not to the tokenizers
_CONTROL_VF = _CONTROL.copy()
_CONTROL_VF[[11, 12]] = True  # \v \f as well: BertNormalizer's clean_text deletes them


def _plain_ascii(joined: np.ndarray, table: np.ndarray = _CONTROL) -> bool:
    """Whether the bytes are ASCII text without control characters other than whitespace (of `table`)."""
    return not joined.size or (int(joined.max()) < 0x80 and not table[joined].any())


def _in_form(form: str | None, texts: list[str]) -> bool:
    """Whether every text is already in Unicode normalization `form` (the normalizer leaves it as it is)."""
    return form is not None and all(unicodedata.is_normalized(form, t) for t in texts)


def _nonspace(joined: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(n,) non-whitespace characters of each chunk of `lengths` bytes laid end to end in ASCII `joined`."""
    ends = np.concatenate([[0], np.cumsum(~_WS_BYTE[joined])])
    stops = np.cumsum(lengths)
    return ends[stops] - ends[stops - lengths]


def _chars(joined: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(n,) characters of each chunk of `lengths` bytes laid end to end in `joined` (UTF-8: every byte but the
    continuation bytes starts a character)."""
    starts_char = np.concatenate([[0], np.cumsum((joined & 0xC0) != 0x80)])
    ends = np.cumsum(lengths)
    return starts_char[ends] - starts_char[ends - lengths]
