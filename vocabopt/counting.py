"""Exact token counting for the analyzer: tokenizer specs and the per-batch counters that run in worker processes.

Inputs: a tokenizer spec (`--tokenizer PATH|word|bytes`) and batches of text sequences.
Outputs: per-batch counts (an int64 array indexed by token id; string-keyed for the word tokenizer).

Why this is fast and still exact. A Hugging Face tokenizer normalizes a sequence, splits it into pre-tokens and
runs its model on each pre-token independently, so counts only depend on how often each distinct pre-token occurs:
count those, tokenize each distinct one once, multiply. Three paths, chosen per tokenizer and reported:
- "chunks": for tokenizers whose normalizer is character-local and whose pre-tokenizer always splits before a run of
  spaces that follows a non-space character (GPT-2 byte-level, Metaspace, BERT, Whitespace), we cut sequences at
  those points, count distinct chunks by sorting integer keys of their UTF-8 bytes (numpy; no Python object per
  chunk), and encode each distinct chunk once, many chunks per tokenizer call.
- "pretokens": any other deterministic model: each sequence goes through the tokenizer's own normalizer and
  pre-tokenizer (Rust), distinct pre-tokens are counted, and the model runs once per distinct pre-token.
- "encode": plain `encode_batch`, when the model is not deterministic (BPE dropout) or a sequence contains the text of
  an added token (those are split out before pre-tokenization, so such sequences always take this path).
Special tokens a post-processor adds ([CLS], <s>, ...) are counted once per sequence when asked.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TokenizerError

WORD_UNK = "<unk>"
CACHE_LIMIT = 2_000_000  # distinct chunks/pre-tokens remembered per worker; bounds memory on huge corpora
JOINED_TEXTS = 64  # distinct chunks are encoded as about this many long texts (enough for the tokenizer's threads)

# Normalizers that act on each character independently (never across a space), so cutting the raw text at a space
# gives the same normalized pieces. BertNormalizer may delete control characters, so it is safe only with
# pre-tokenizers that drop whitespace.
_LOCAL_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Nmt"}
_WS_DROPPING = {"Whitespace", "WhitespaceSplit", "BertPreTokenizer"}
_PIECE_LOCAL = {"Punctuation", "Digits", "Whitespace", "WhitespaceSplit", "BertPreTokenizer"}
# Split regexes that cut before every space following a non-space and match a piece alone as they do in context: no
# alternative matches a non-space followed by a space (so each such point ends a match), and no lookahead reaches past
# a piece's last character, a non-space. GPT-4's cl100k as Llama 3 ships it (digits in threes), and Qwen2's (single
# digits). Other regexes take the "pretokens" path.
_SAFE_SPLITS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+",
}


@dataclass(frozen=True)
class TokenizerSpec:
    """What worker processes need to rebuild a tokenizer (picklable)."""

    kind: str  # "hf" | "word" | "bytes"
    name: str
    sha256: str
    json: str = ""  # hf: the tokenizer's canonical JSON
    options: dict[str, Any] = field(default_factory=dict)


def load_spec(spec: str, min_count: int = 1, max_vocab: int | None = None) -> TokenizerSpec:
    """Parse `--tokenizer`: a tokenizer.json (or a directory holding one), `word`, or `bytes`."""
    if spec == "bytes":
        return TokenizerSpec("bytes", "bytes", _sha({"kind": "bytes", "version": 1}))
    if spec == "word":
        if min_count < 1:
            raise TokenizerError(f"--min-count {min_count}: must be at least 1")
        if max_vocab is not None and max_vocab < 2:
            raise TokenizerError(f"--max-vocab {max_vocab}: must be at least 2 (one id is {WORD_UNK})")
        opts = {"min_count": min_count, "max_vocab": max_vocab, "pre_tokenizer": "Whitespace"}
        return TokenizerSpec("word", "word", _sha({"kind": "word", "version": 1, **opts}), options=opts)
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise TokenizerError(
            f"{spec}: no tokenizer.json there; pass a tokenizer.json, a directory holding one, 'word' or 'bytes'"
        )
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: cannot read ({e}); pass a readable tokenizer.json") from None
    tok = _from_str(raw, str(path))
    canonical = tok.to_str()
    _share(canonical, tok)
    model = config_of(canonical).get("model", {}).get("type", "model")
    name = f"{path.parent.name or path.stem}/{path.name} ({model}, {tok.get_vocab_size(with_added_tokens=True)} ids)"
    return TokenizerSpec("hf", name, hashlib.sha256(canonical.encode("utf-8")).hexdigest(), json=canonical)


def _from_str(raw: str, where: str):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(raw)
    except Exception as e:  # tokenizers raises a bare Exception for invalid JSON
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(
            f"{where}: not a valid Hugging Face tokenizer.json ({msg}); regenerate it with tokenizers' Tokenizer.save"
        ) from None


# A tokenizer.json is parsed once per process (~16 ms, and ~8 ms for json.loads, on the shipped one).
_SHARED: dict[str, Any] = {}  # canonical JSON -> Tokenizer (the last few), never truncating or padding


def _share(canonical: str, tok) -> None:
    if len(_SHARED) >= 4:
        _SHARED.clear()
    tok.no_truncation()
    tok.no_padding()
    _SHARED[canonical] = tok


def _shared_tokenizer(spec: TokenizerSpec):
    """The tokenizer of `spec`, parsed once per process and shared: callers only encode and read it."""
    if spec.json not in _SHARED:
        _share(spec.json, _from_str(spec.json, spec.name))
    return _SHARED[spec.json]


@functools.lru_cache(maxsize=4)
def config_of(canonical: str) -> dict[str, Any]:
    """A tokenizer's JSON config, parsed once per process (shared: read it, never change it)."""
    return json.loads(canonical)


def _sha(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# --- deciding the path --------------------------------------------------------------------------------------------


def choose_path(config: dict) -> tuple[str, str]:
    """('chunks' | 'pretokens' | 'encode', reason) for a tokenizer's JSON config."""
    model = config.get("model") or {}
    if model.get("dropout") not in (None, 0, 0.0):
        return "encode", "BPE dropout makes the model non-deterministic"
    pre = config.get("pre_tokenizer")
    norm = config.get("normalizer")
    if pre is None:
        return "pretokens", "no pre-tokenizer: each sequence is one pre-token"
    splitter = _splitter_kind(pre)
    if splitter is None:
        return "pretokens", f"pre-tokenizer {pre.get('type')} may not split at spaces"
    if not _normalizer_local(norm, allow_deleting=splitter == "drops"):
        return "pretokens", f"normalizer {(norm or {}).get('type')} is not character-local"
    return "chunks", f"{pre.get('type')} splits before spaces"


def _splitter_kind(pre: dict) -> str | None:
    """'drops' (splits at whitespace and drops it), 'prefix' (keeps a space on the next piece) or None (unsafe)."""
    kind = pre.get("type")
    if kind in _WS_DROPPING:
        return "drops"
    if kind == "ByteLevel" and pre.get("use_regex", True):
        return "prefix"
    if kind == "Metaspace" and pre.get("split", True):
        return "prefix"
    if (
        kind == "Split"
        and (pre.get("pattern") or {}).get("Regex") in _SAFE_SPLITS
        and pre.get("behavior") == "Isolated"
        and not pre.get("invert")
    ):
        return "prefix"
    if kind == "Sequence":
        members = pre.get("pretokenizers") or []
        if not members:
            return None
        first = _splitter_kind(members[0])
        rest_ok = all(m.get("type") in _PIECE_LOCAL or (m.get("type") == "ByteLevel") for m in members[1:])
        return first if rest_ok else None
    return None


def _normalizer_local(norm: dict | None, allow_deleting: bool) -> bool:
    if norm is None:
        return True
    kind = norm.get("type")
    if kind == "Sequence":
        return all(_normalizer_local(n, allow_deleting) for n in norm.get("normalizers") or [])
    if kind == "BertNormalizer":
        return allow_deleting
    if kind == "Replace":
        pattern = (norm.get("pattern") or {}).get("String")
        content = norm.get("content") or ""
        return (
            pattern is not None
            and len(pattern) == 1
            and not pattern.isspace()
            and not any(c.isspace() for c in content)
        )
    return kind in _LOCAL_NORMALIZERS


# --- the counters (built inside each worker) ----------------------------------------------------------------------


@dataclass
class BatchCounts:
    counts: np.ndarray | None = None  # (V,) int64 for hf/bytes
    words: Counter | None = None  # word tokenizer: string-keyed counts
    n_sequences: int = 0
    n_bytes: int = 0  # UTF-8 bytes of the counted text (line terminators excluded)
    n_words: int = 0  # whitespace-separated words
    paths: Counter = field(default_factory=Counter)  # sequences per counting path


Payload = str | list[tuple[str, bool]]  # a block of whole lines (one sequence per non-blank line), or sequences


def unpack(payload: Payload, max_chars: int) -> tuple[list[str], int]:
    """(texts, number of sequence starts) of a batch; block lines longer than max_chars are cut at whitespace."""
    if isinstance(payload, str):
        texts = [line for line in payload.split("\n") if line and not line.isspace()]
        n_starts = len(texts)
        if texts and max(map(len, texts)) > max_chars:
            from .sources import cut_long

            texts = [piece for line in texts for piece in cut_long(line, max_chars)]
        return texts, n_starts
    return [t for t, _ in payload], sum(not c for _, c in payload)


def _totals(out: BatchCounts, texts: list[str], n_starts: int, words: bool = True) -> None:
    """Sequences, bytes and (unless the caller counts them another way) whitespace-separated words of a batch."""
    out.n_sequences = n_starts
    out.n_bytes = len(_utf8("".join(texts)))
    if words:
        out.n_words = len(" ".join(texts).split())


@dataclass
class _Prepared:
    """A batch after the pure Python part of counting (`HFCounter.prepare`), before tokenizing (`finish`)."""

    out: BatchCounts  # totals and special tokens filled in
    plain: list[str]  # texts to encode whole
    groups: list[tuple[str, Any, np.ndarray]]  # (kind, distinct keys, counts): see `_IdStore`


class HFCounter:
    """Counts a batch of sequences with a Hugging Face tokenizer, exactly as `encode_batch` would.

    `count(payload)` = `finish(prepare(payload))`: `prepare` (cutting and counting distinct pieces, pure Python and
    numpy) may run in another thread than `finish` (tokenizing new pieces, which releases the GIL, and weighting
    their ids), so that one batch is tokenized while the next is cut. `finish` calls must not overlap.
    """

    def __init__(
        self, spec: TokenizerSpec, add_special_tokens: bool, force_path: str | None = None, max_chars: int = 1 << 20
    ) -> None:
        tok = _shared_tokenizer(spec)
        self.tok, self.max_chars = tok, max_chars
        config = config_of(spec.json)
        self.path, self.reason = choose_path(config)
        if force_path is not None:  # tests compare the paths against each other
            self.path = force_path
        self.vocab_size = hf_vocab_size(tok)
        self.special_ids = self._special_ids() if add_special_tokens else np.zeros(0, np.int64)
        contents = sorted(
            {t["content"] for t in config.get("added_tokens") or [] if t.get("content")}, key=len, reverse=True
        )
        self.added = re.compile("|".join(map(re.escape, contents))) if contents else None
        self.normalizer = tok.normalizer
        self.token_bytes = _byte_level_sizes(tok, config) if self.path == "chunks" else None
        self.store = _IdStore()  # distinct piece -> ids, remembered across batches

    def _special_ids(self) -> np.ndarray:
        """Ids the post-processor adds to one sequence (their multiset does not depend on the text)."""
        enc = self.tok.encode("", add_special_tokens=False)
        with_special = self.tok.post_process(enc, add_special_tokens=True)
        ids = [i for i, m in zip(with_special.ids, with_special.special_tokens_mask) if m]
        return np.asarray(ids, dtype=np.int64)

    def count(self, payload: Payload) -> BatchCounts:
        return self.finish(self.prepare(payload))

    def prepare(self, payload: Payload) -> _Prepared:
        texts, n_starts = unpack(payload, self.max_chars)
        out = BatchCounts(counts=np.zeros(self.vocab_size, np.int64))
        _totals(out, texts, n_starts, words=self.path != "chunks")
        if self.special_ids.size and n_starts:
            np.add.at(out.counts, self.special_ids, n_starts)
        if self.path == "encode":
            plain, fast = texts, []
        elif self._any_added(texts):
            plain, fast = [], []
            for t in texts:
                (plain if self._any_added([t]) else fast).append(t)
        else:
            plain, fast = [], texts
        if plain:
            out.paths["encode"] += len(plain)
            if self.path == "chunks":
                out.n_words += len(" ".join(plain).split())
        groups: list[tuple[str, Any, np.ndarray]] = []
        if fast:
            out.paths[self.path] += len(fast)
            if self.path == "chunks":
                raw, exact, n_words = _chunk_counts(fast)
                out.n_words += n_words
                groups = [
                    ("key", raw.keys, raw.key_counts),
                    ("pair", raw.pairs, raw.pair_counts),
                    ("raw", list(raw.strings), _values(raw.strings)),
                    ("exact", list(exact), _values(exact)),
                ]
            else:
                pretokens = self._pretoken_counts(fast)
                groups = [("piece", list(pretokens), _values(pretokens))]
        return _Prepared(out, plain, groups)

    def finish(self, prepared: _Prepared) -> BatchCounts:
        out = prepared.out
        if prepared.plain:
            encs = self.tok.encode_batch(prepared.plain, add_special_tokens=False)
            ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64)
            out.counts += np.bincount(ids, minlength=self.vocab_size)
        if prepared.groups:
            self._add_distinct(prepared.groups, out.counts)
        return out

    def _add_distinct(self, groups: list[tuple[str, Any, np.ndarray]], counts: np.ndarray) -> None:
        """counts[id] += n for the ids of each distinct piece of each group, tokenizing (once, in one call) only
        the pieces the store has not seen."""
        store = self.store
        if store.full(sum(len(keys) for _, keys, _ in groups)):
            store.clear()
        rows = [store.rows_of(kind, keys) for kind, keys, _ in groups]
        todo = [np.flatnonzero(r < 0) for r in rows]
        missing = [
            keys[t] if isinstance(keys, np.ndarray) else [keys[k] for k in t.tolist()]
            for (_, keys, _), t in zip(groups, todo)
        ]
        texts = [text for (kind, _, _), m in zip(groups, missing) for text in _TEXTS_OF[kind](m)]
        if texts:
            ids, starts, lengths = self._tokenize(texts)
            at = 0
            for (kind, _, _), r, t, m in zip(groups, rows, todo, missing):
                r[t] = store.add(kind, m, ids, starts[at : at + t.size], lengths[at : at + t.size])
                at += t.size
        weights = np.concatenate([w for _, _, w in groups])
        counts += store.weighted_counts(np.concatenate(rows), weights, counts.size)

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, starts, lengths): texts[j]'s token ids are ids[starts[j]:starts[j] + lengths[j]]."""
        if self.path == "chunks":
            return self._encode_chunks(texts)
        pieces = [[t.id for t in self.tok.model.tokenize(piece)] for piece in texts]
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        ids = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=int(lengths.sum()))
        return ids, np.cumsum(lengths) - lengths, lengths

    def _any_added(self, texts: list[str]) -> bool:
        """Whether any text contains an added token's content, raw or normalized (checked on the whole batch)."""
        if self.added is None:
            return False
        joined = "\n".join(texts)
        if self.added.search(joined):
            return True
        return self.normalizer is not None and self.added.search(self.normalizer.normalize_str(joined)) is not None

    def _pretoken_counts(self, texts: list[str]) -> Counter:
        counts: Counter = Counter()
        pre = self.tok.pre_tokenizer
        for text in texts:
            if self.normalizer is not None:
                text = self.normalizer.normalize_str(text)
            counts.update([p for p, _ in pre.pre_tokenize_str(text)] if pre is not None else [text])
        return counts

    def _encode_chunks(self, chunks: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids of distinct chunks, from encoding a few long texts of chunks laid end to end.

        Returns (ids, starts, lengths): chunks[j]'s ids are ids[starts[j]:starts[j] + lengths[j]].
        One Encoding per chunk costs more in Python objects than the tokenizer spends on the chunk, so chunks are
        joined wherever a line could have been cut (before a space that follows a non-space: the chunk path's own
        invariant), and each token goes back to the chunk holding its start offset (in characters). Chunks that do
        not start with a space lead a text; chunks ending in whitespace stay alone, so every chunk after a text's
        first follows one that ends in a token holding a non-space, whose start a post-processor's offset trimming
        cannot push past its chunk.
        """
        n = len(chunks)
        kind = np.fromiter((2 if c[-1].isspace() else c[0] == " " for c in chunks), dtype=np.int8, count=n)
        leaders, glue, alone = (np.flatnonzero(kind == k) for k in (0, 1, 2))
        n_texts = max(leaders.size, JOINED_TEXTS)
        # Text of each chunk, and its place there: a leader first, then every n_texts-th glue chunk, alone at the end.
        group = np.empty(n, np.int64)
        rank = np.empty(n, np.int64)
        group[leaders], rank[leaders] = np.arange(leaders.size), -1
        group[glue], rank[glue] = np.arange(glue.size) % n_texts, np.arange(glue.size) // n_texts
        group[alone], rank[alone] = n_texts + np.arange(alone.size), 0
        order = np.lexsort((rank, group))
        firsts = np.flatnonzero(np.diff(group[order], prepend=-1))  # positions in `order` where a text starts
        ordered = [chunks[i] for i in order.tolist()]
        texts = ["".join(ordered[a:b]) for a, b in zip(firsts.tolist(), firsts[1:].tolist() + [n])]
        located = self._locate_by_bytes(texts, ordered, firsts) if self.token_bytes is not None else None
        ids, n_tokens, token_starts, chunk_starts = located or self._locate_by_offsets(texts, ordered, firsts)
        total = ids.size
        bounds = np.empty(n + 1, np.int64)
        bounds[:n] = np.searchsorted(token_starts, chunk_starts, side="left")
        bounds[n] = total
        # A text's first chunk starts at the text's first token: exact, whatever trimming did to a lone whitespace
        # chunk's offsets at the end of the text before.
        bounds[firsts] = np.cumsum(n_tokens) - n_tokens
        starts, counts = np.empty(n, np.int64), np.empty(n, np.int64)
        starts[order], counts[order] = bounds[:-1], np.diff(bounds)
        return ids, starts, counts

    def _locate_by_offsets(self, texts: list[str], ordered: list[str], firsts: np.ndarray) -> _Located:
        """Encode `texts` (`ordered` chunks laid end to end, text k starting at chunk firsts[k]); positions in
        characters, from the tokens' offsets."""
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        ids, n_tokens = _ids_of(encs)
        lengths = np.fromiter(map(len, ordered), dtype=np.int64, count=len(ordered))
        chunk_starts = np.cumsum(lengths) - lengths
        offsets = itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encs))
        token_starts = np.fromiter(offsets, dtype=np.int64, count=2 * ids.size)[::2]  # (start, end) pairs
        token_starts += np.repeat(chunk_starts[firsts], n_tokens)
        return ids, n_tokens, token_starts, chunk_starts

    def _locate_by_bytes(self, texts: list[str], ordered: list[str], firsts: np.ndarray) -> _Located | None:
        """As `_locate_by_offsets`, in bytes, for byte-level BPE: a token's string has one character per byte of
        text, so the tokens' sizes lay them out without the offsets (which cost the tokenizer ~40% more time).
        None if some text's tokens do not add up to its bytes (an unknown character was dropped): then the offsets
        decide."""
        ids, n_tokens = _ids_of(self.tok.encode_batch_fast(texts, add_special_tokens=False))
        sizes = self.token_bytes[ids]  # (total,) bytes of each token
        ascii_only = all(map(str.isascii, texts))
        lengths = np.fromiter(
            map(len, ordered) if ascii_only else (len(_utf8(c)) for c in ordered), dtype=np.int64, count=len(ordered)
        )
        chunk_ends, token_ends = np.cumsum(lengths), np.cumsum(sizes)
        text_ends = np.append(chunk_ends[firsts[1:] - 1], chunk_ends[-1:])  # bytes up to each text's end
        text_token_ends = np.concatenate([[0], token_ends])[np.cumsum(n_tokens)]
        if not np.array_equal(text_ends, text_token_ends):
            self.token_bytes = None  # such characters will come again: stop paying for two encodes
            return None
        return ids, n_tokens, token_ends - sizes, chunk_ends - lengths


_Located = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (ids, tokens per text, token starts, chunk starts)


def _ids_of(encs: list) -> tuple[np.ndarray, np.ndarray]:
    """(all ids laid end to end, number of ids of each encoding)."""
    n_tokens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=int(n_tokens.sum()))
    return ids, n_tokens


def _byte_level_sizes(tok, config: dict) -> np.ndarray | None:
    """(V,) characters of each token's string, when one character is one byte of the text: a BPE model behind the
    ByteLevel pre-tokenizer (see `_bytes_one_to_one`), with no normalizer, affixes on tokens or unk token;
    else None. (An unk token stands for characters of any size, fused ones for several: their errors in bytes could
    cancel out in a text's sum. Without one, an unknown character is dropped, and the sum always shows it.)"""
    pre, model = config.get("pre_tokenizer") or {}, config.get("model") or {}
    if (
        not _bytes_one_to_one(pre)
        or config.get("normalizer") is not None
        or model.get("type") != "BPE"
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
        or model.get("byte_fallback")
        or model.get("unk_token") is not None
        or not hasattr(tok, "encode_batch_fast")
    ):  # tokenizers < 0.20
        return None
    vocab = tok.get_vocab(with_added_tokens=True)
    sizes = np.zeros(max(vocab.values(), default=-1) + 1, np.int64)
    sizes[np.fromiter(vocab.values(), np.int64, len(vocab))] = np.fromiter(map(len, vocab), np.int64, len(vocab))
    return sizes


def _bytes_one_to_one(pre: dict) -> bool:
    """Whether a pre-tokenizer maps each byte of the text to one character: ByteLevel without a prefix space, alone or
    after pre-tokenizers that only split (Llama 3: a Split regex, then ByteLevel)."""
    members = pre.get("pretokenizers") or [] if pre.get("type") == "Sequence" else [pre]
    byte_level = [m for m in members if m.get("type") == "ByteLevel"]
    return (
        bool(byte_level)
        and not any(m.get("add_prefix_space") for m in byte_level)
        and all(m.get("type") in ("ByteLevel", "Split", "Digits", "Punctuation") for m in members)
    )


def _values(counter: Counter) -> np.ndarray:
    return np.fromiter(counter.values(), dtype=np.int64, count=len(counter))


class _IdStore:
    """Token ids of distinct pieces, laid end to end in one growing array: row r's ids are
    ids[starts[r]:starts[r] + lengths[r]]. Numpy rows instead of one Python list per piece: weighting the ids of a
    batch's pieces is a few vector operations.

    Pieces are found by kind: "key" (`_short_keys` uint64, in a sorted array), "pair" (`_Pieces.pairs` ints),
    "raw" (raw split forms), "exact" (chunks cut by the regex), "piece" (pre-tokens): one dict each.
    """

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self.clear()

    def clear(self) -> None:
        self.tables: dict[str, dict] = {}
        self.keys = np.zeros(0, np.uint64)  # sorted "key" keys ...
        self.key_rows = np.zeros(0, np.int64)  # ... and their rows
        self.n_rows, self.n_ids = 0, 0
        # Buffers with room to grow: appending a batch's new pieces costs O(new), not O(stored).
        self.starts = np.zeros(1 << 12, np.int64)
        self.lengths = np.zeros(1 << 12, np.int64)
        self.ids = np.zeros(1 << 14, np.int32)

    def full(self, n_new: int) -> bool:
        return self.n_rows + n_new > self.limit

    def rows_of(self, kind: str, keys) -> np.ndarray:
        """(len(keys),) int64: each key's row, -1 for keys not stored."""
        if kind == "key":
            if not self.keys.size:
                return np.full(len(keys), -1, np.int64)
            at = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
            return np.where(self.keys[at] == keys, self.key_rows[at], -1)
        get = self.tables.setdefault(kind, {}).get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def add(self, kind: str, keys, ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Store keys[j] with ids[starts[j]:starts[j] + lengths[j]]; returns their rows."""
        rows = np.arange(self.n_rows, self.n_rows + len(keys))
        if kind == "key":  # merged into the sorted keys: O(stored) memory traffic, no sort of the stored keys
            order = np.argsort(keys)
            at = np.searchsorted(self.keys, keys[order])
            self.keys, self.key_rows = np.insert(self.keys, at, keys[order]), np.insert(self.key_rows, at, rows[order])
        else:
            self.tables.setdefault(kind, {}).update(zip(keys, rows.tolist()))
        mine = ids[_spans(starts, lengths)]
        self.starts = _append(self.starts, self.n_rows, self.n_ids + np.cumsum(lengths) - lengths)
        self.lengths = _append(self.lengths, self.n_rows, lengths)
        self.ids = _append(self.ids, self.n_ids, mine)
        self.n_rows += len(keys)
        self.n_ids += mine.size
        return rows

    def weighted_counts(self, rows: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
        """(size,) int64: sum over k of weights[k] at each id of row rows[k]."""
        lengths = self.lengths[rows]
        if not lengths.sum():
            return np.zeros(size, np.int64)
        ids = self.ids[_spans(self.starts[rows], lengths)]
        # float64 weights are exact below 2**53 tokens per batch
        return np.rint(np.bincount(ids, weights=np.repeat(weights, lengths), minlength=size)).astype(np.int64)


def _append(buf: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """buf[:n] followed by values: in buf when it has room, else in a new buffer twice as large (amortised O(1))."""
    if n + values.size > buf.size:
        grown = np.empty(max(2 * buf.size, n + values.size), buf.dtype)
        grown[:n] = buf[:n]
        buf = grown
    buf[n : n + values.size] = values
    return buf


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions starts[j], ..., starts[j] + lengths[j] - 1, for each j in turn."""
    total = int(lengths.sum())
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)


# How each kind of key turns back into the text to tokenize.
_TEXTS_OF: dict[str, Callable[[Any], list[str]]] = {
    "key": lambda keys: _raw_to_chunks(_key_strings(keys)),
    "pair": lambda pairs: _raw_to_chunks(_pair_strings(pairs)),
    "raw": lambda keys: _raw_to_chunks(keys),
    "exact": list,
    "piece": list,
}


_ADJ_SPACE = re.compile(r"\s | \s")  # a space next to other whitespace (or at a text's edge, once joined)
_CUT = re.compile(r"(?<=\S)(?= )")  # before a space that follows a non-whitespace character
# The non-ASCII characters str.isspace() accepts (tests check this against every code point). Text without them has
# only ASCII whitespace, which a scan of its UTF-8 bytes finds exactly.
_UNICODE_SPACES = (
    "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_UNICODE_SPACE = re.compile(f"[{_UNICODE_SPACES}]")

# Byte -> 1 for the ASCII characters str.isspace() accepts (\t \n \v \f \r, the four information separators, space),
# and for the space alone: bytes.translate tables, which map a whole batch in one C pass.
_WS_TABLE = bytes(int(b in (9, 10, 11, 12, 13, 28, 29, 30, 31, 32)) for b in range(256))
_SPACE_TABLE = bytes(int(b == 32) for b in range(256))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a library caller's lone surrogates pass through and back


def _scan(texts: list[str]) -> tuple[list[int], int]:
    """Indices of the texts holding a space next to other whitespace, and the number of whitespace-separated words.

    Vectorised over the UTF-8 bytes when the only whitespace is ASCII (~10x faster than a regex and str.split);
    a regex and str.split otherwise. A pair across two texts' edge flags both texts.
    """
    joined = "\n".join(texts)
    if not joined.isascii() and _UNICODE_SPACE.search(joined):
        positions = np.fromiter((m.start() for m in _ADJ_SPACE.finditer(joined)), dtype=np.int64)
        return _flagged_texts(map(len, texts), len(texts), positions), len(joined.split())
    data = _utf8(joined)
    ws = np.frombuffer(data.translate(_WS_TABLE), dtype=bool)
    space = np.frombuffer(data.translate(_SPACE_TABLE), dtype=bool)
    positions = np.flatnonzero((space[:-1] & ws[1:]) | (ws[:-1] & space[1:]))  # in bytes
    n_words = int(np.count_nonzero(ws[:-1] > ws[1:])) + int(ws.size > 0 and not ws[0])  # word starts
    if not positions.size:
        return [], n_words
    lengths = map(len, texts) if len(data) == len(joined) else map(len, map(_utf8, texts))
    return _flagged_texts(lengths, len(texts), positions), n_words


def _flagged_texts(lengths, n: int, positions: np.ndarray) -> list[int]:
    """Indices of the texts (of these `lengths`, joined by one separator) holding a flagged pair's characters."""
    ends = np.cumsum(np.fromiter(lengths, dtype=np.int64, count=n) + 1)
    chars = np.concatenate([positions, positions + 1])
    return np.unique(np.searchsorted(ends, chars, side="right")).tolist()


@dataclass
class _Pieces:
    """Distinct chunks of a batch and their counts, in raw split form (see `_raw_to_chunks`), keyed by their UTF-8
    bytes (`_short_keys`) so that no Python object is made per piece: under 8 bytes as one uint64, 8-15 bytes as a
    Python int of two (made only per distinct piece), longer ones as strings."""

    keys: np.ndarray  # (S,) uint64, distinct, sorted
    key_counts: np.ndarray  # (S,) int64
    pairs: list[int]  # first 8 bytes | the rest's key << 64
    pair_counts: np.ndarray  # (P,) int64
    strings: Counter


_KEY_MASK = np.array([(1 << (8 * n)) - 1 for n in range(8)], dtype=np.uint64)  # the low n bytes
_KEY_LENGTH = np.array([n << 56 for n in range(8)], dtype=np.uint64)  # the length, in the top byte
_EMPTY_FIRST = ord("\n") | 1 << 56  # the key of "\n": the empty first chunk of a text that starts with a space


def _piece_counts(texts: list[str]) -> _Pieces:
    """Raw chunks of texts whose every space sits between two non-whitespace characters: the text laid out as
    "\n" + " \n".join(texts) and cut at every space, counted by sorting integer keys (~3x faster than
    `Counter(str.split)`, which makes a Python string per piece)."""
    data = _utf8("\n" + " \n".join(texts))
    n = len(data)
    buf = np.zeros(n // 8 + 3, dtype="<u8")  # zero padding: reads of 16 bytes near the end stay inside
    buf.view(np.uint8)[:n] = np.frombuffer(data, dtype=np.uint8)
    spaces = np.flatnonzero(buf.view(np.uint8)[:n] == 32)
    starts = np.concatenate([[0], spaces + 1])
    lengths = np.concatenate([spaces, [n]]) - starts
    short, medium = lengths < 8, (lengths >= 8) & (lengths < 16)
    keys, key_counts = _distinct(_short_keys(buf, starts[short], lengths[short]))
    first = _short_keys(buf, starts[medium], np.full(int(medium.sum()), 8))
    rest = _short_keys(buf, starts[medium] + 8, lengths[medium] - 8)
    order = np.lexsort((rest, first))
    first, rest = first[order], rest[order]
    runs = np.flatnonzero(np.concatenate([first[:1] == first[:1], (first[1:] != first[:-1]) | (rest[1:] != rest[:-1])]))
    pairs = [a | b << 64 for a, b in zip(first[runs].tolist(), rest[runs].tolist())]
    long = np.flatnonzero(lengths >= 16)
    strings = Counter(
        [
            data[a : a + b].decode("utf-8", "surrogatepass")
            for a, b in zip(starts[long].tolist(), lengths[long].tolist())
        ]
    )
    return _Pieces(keys, key_counts, pairs, np.diff(np.append(runs, first.size)), strings)


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `keys` (sorted) and how often each occurs."""
    keys = np.sort(keys)
    firsts = np.flatnonzero(np.concatenate([keys[:1] == keys[:1], keys[1:] != keys[:-1]]))  # first of each run
    return keys[firsts], np.diff(np.append(firsts, keys.size))


def _short_keys(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(n,) uint64 keys of pieces of buf's bytes: the piece's bytes (little-endian) and, below 8 bytes, its length
    in the top byte. A piece of exactly 8 bytes is the first half of a pair: its length is implied."""
    word, shift = starts >> 3, ((starts & 7) * 8).astype(np.uint64)
    keys = (buf[word] >> shift) | (buf[word + 1] << (np.uint64(64) - shift))  # a shift by 64 gives 0 in numpy
    short = lengths < 8
    if short.all():
        return (keys & _KEY_MASK[lengths]) | _KEY_LENGTH[lengths]
    keys[short] = (keys[short] & _KEY_MASK[lengths[short]]) | _KEY_LENGTH[lengths[short]]
    return keys


def _key_strings(keys: np.ndarray) -> list[str]:
    """The raw pieces of `_short_keys` keys (under 8 bytes)."""
    return [k.to_bytes(8, "little")[: k >> 56].decode("utf-8", "surrogatepass") for k in keys.tolist()]


def _pair_strings(pairs: list[int]) -> list[str]:
    """The raw pieces of `_Pieces.pairs` keys (8-15 bytes)."""
    mask = (1 << 64) - 1
    return [
        ((p & mask).to_bytes(8, "little") + (p >> 64).to_bytes(8, "little")[: p >> 120]).decode(
            "utf-8", "surrogatepass"
        )
        for p in pairs
    ]


def _chunk_counts(texts: list[str]) -> tuple[_Pieces, Counter, int]:
    """Distinct chunks and their counts, and the number of whitespace-separated words of `texts`.

    A chunk is a piece of a text cut before every run of spaces that follows a non-space. Returns (raw, exact,
    n_words): `raw` counts the chunks of texts whose spaces all sit between non-whitespace characters, where every
    space is a cut (`_piece_counts`); `exact` counts the chunks of the few other texts, cut by a regex.
    """
    flagged, n_words = _scan(texts)
    exact: Counter = Counter()
    if flagged:
        for k in flagged:
            exact.update(_CUT.split(texts[k]))  # later parts keep their leading space
        exact.pop("", None)
        skip = set(flagged)
        texts = [t for k, t in enumerate(texts) if k not in skip]
    raw = _piece_counts(texts)
    keep = raw.keys != _EMPTY_FIRST  # the first text may start with a space (the scan sees no "\n" before it)
    raw.keys, raw.key_counts = raw.keys[keep], raw.key_counts[keep]
    return raw, exact, n_words


def _raw_to_chunks(keys: list[str]) -> list[str]:
    """Chunks from their raw split form: a text's first chunk comes out of `_piece_counts` prefixed by "\n", every
    later chunk without its leading space. (Unambiguous: such a later chunk starts with a non-whitespace
    character, since texts with a space next to other whitespace are cut by the regex instead.)"""
    return [k[1:] if k[:1] == "\n" else " " + k for k in keys]


class BytesCounter:
    vocab_size = 256

    def __init__(self, max_chars: int = 1 << 20) -> None:
        self.max_chars = max_chars

    def count(self, payload: Payload) -> BatchCounts:
        texts, n_starts = unpack(payload, self.max_chars)
        out = BatchCounts()
        _totals(out, texts, n_starts)
        data = _utf8("".join(texts))
        out.counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(np.int64)
        out.paths["bytes"] += len(texts)
        return out


class WordCounter:
    """Unicode words (HF `Whitespace` pre-tokenizer: \\w+ | [^\\w\\s]+), counted by string."""

    def __init__(self, max_chars: int = 1 << 20) -> None:
        from tokenizers import pre_tokenizers

        self.pre = pre_tokenizers.Whitespace()
        self.cache: dict[str, list[str]] = {}
        self.max_chars = max_chars

    def count(self, payload: Payload) -> BatchCounts:
        texts, n_starts = unpack(payload, self.max_chars)
        out = BatchCounts(words=Counter())
        _totals(out, texts, n_starts)
        # Whitespace never sits inside a word, so splitting at whitespace first is exact.
        chunks = Counter(" ".join(texts).split())
        if len(self.cache) > CACHE_LIMIT:
            self.cache.clear()
        for chunk, n in chunks.items():
            pieces = self.cache.get(chunk)
            if pieces is None:
                pieces = self.cache[chunk] = [p for p, _ in self.pre.pre_tokenize_str(chunk)]
            for p in pieces:
                out.words[p] += n
        out.paths["words"] += len(texts)
        return out


def make_counter(
    spec: TokenizerSpec, add_special_tokens: bool, force_path: str | None = None, max_chars: int = 1 << 20
):
    if spec.kind == "hf":
        return HFCounter(spec, add_special_tokens, force_path, max_chars)
    if spec.kind == "bytes":
        return BytesCounter(max_chars)
    return WordCounter(max_chars)


# --- the word vocabulary ------------------------------------------------------------------------------------------


def word_vocab_order(counts: dict[str, int]) -> list[str]:
    """Word ids: <unk> first, then words by decreasing count, ties by string (deterministic)."""
    words = sorted((w for w in counts if w != WORD_UNK), key=lambda w: (-counts[w], w))
    return [WORD_UNK] + words


def build_word_vocab(words: Counter, min_count: int, max_vocab: int | None) -> tuple[np.ndarray, list[str]]:
    """Counts and strings of the word vocabulary; pruned words' counts go to <unk> (id 0)."""
    order = word_vocab_order(dict(words))
    kept = [w for w in order[1:] if words[w] >= min_count]
    if max_vocab is not None:
        kept = kept[: max_vocab - 1]
    unk = sum(words.values()) - sum(words[w] for w in kept)
    return np.array([unk] + [words[w] for w in kept], dtype=np.int64), [WORD_UNK] + kept


def word_tokenizer_json(tokens: list[str]) -> str:
    """A Hugging Face WordLevel tokenizer.json whose ids match `tokens` (for `--save-tokenizer`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=WORD_UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


def hf_vocab_size(tok) -> int:
    """Number of ids (the largest id + 1, so counts can be indexed by any id the tokenizer emits)."""
    return max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1


def hf_token_strings(spec: TokenizerSpec) -> list[str]:
    vocab = _shared_tokenizer(spec).get_vocab(with_added_tokens=True)
    n = max(vocab.values(), default=-1) + 1  # as hf_vocab_size
    tokens = [""] * n
    for s, i in vocab.items():
        if 0 <= i < n:
            tokens[i] = s
    return tokens


def byte_token_strings() -> list[str]:
    return [chr(b) if 0x21 <= b < 0x7F else f"<0x{b:02X}>" for b in range(256)]
