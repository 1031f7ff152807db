"""Chunk keys: the numpy machinery that counts distinct pieces of text without a Python object per piece.

Job: the fast part of the "chunks" counting path. Inputs: a batch of texts (str). Outputs: the distinct chunks of
the batch and their counts (`chunk_counts`: a text cut before every run of spaces that follows a non-space), keyed
by their UTF-8 bytes as integers (`_Pieces`), grouped by kind of key (`chunk_groups`, for vocabopt.corpus.store);
the whitespace-separated word count found on the way; `Chunks`, the new pieces as the UTF-8 texts the tokenizer
sees, built from their keys in numpy (`CHUNKS_OF`); `split_lone_newlines`, the cut before newlines some tokenizers
allow.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

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
_ASCII_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
ALNUM_BYTE = np.array([chr(b) in _ASCII_ALNUM for b in range(256)])  # byte -> whether it is A-Z a-z 0-9
_ALNUM_TABLE = ALNUM_BYTE.astype(np.uint8).tobytes()  # the same, as a bytes.translate table
_NEW_TEXT = np.array([32, 10], np.uint8)  # " \n": what `_piece_counts` lays between two texts


def utf8(text: str) -> bytes:
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
    data = utf8(joined)
    ws = np.frombuffer(data.translate(_WS_TABLE), dtype=bool)
    space = np.frombuffer(data.translate(_SPACE_TABLE), dtype=bool)
    positions = np.flatnonzero((space[:-1] & ws[1:]) | (ws[:-1] & space[1:]))  # in bytes
    n_words = int(np.count_nonzero(ws[:-1] > ws[1:])) + int(ws.size > 0 and not ws[0])  # word starts
    if not positions.size:
        return [], n_words
    lengths = map(len, texts) if len(data) == len(joined) else map(len, map(utf8, texts))
    return _flagged_texts(lengths, len(texts), positions), n_words


def count_words(texts: list[str]) -> int:
    """len(" ".join(texts).split()), from the UTF-8 bytes when the only whitespace is ASCII (~10x faster)."""
    joined = "\n".join(texts)
    if not joined.isascii() and _UNICODE_SPACE.search(joined):
        return len(joined.split())
    ws = np.frombuffer(utf8(joined).translate(_WS_TABLE), dtype=bool)
    return int(np.count_nonzero(ws[:-1] > ws[1:])) + int(ws.size > 0 and not ws[0])  # word starts


def _flagged_texts(lengths, n: int, positions: np.ndarray) -> list[int]:
    """Indices of the texts (of these `lengths`, joined by one separator) holding a flagged pair's characters."""
    ends = np.cumsum(np.fromiter(lengths, dtype=np.int64, count=n) + 1)
    chars = np.concatenate([positions, positions + 1])
    return np.unique(np.searchsorted(ends, chars, side="right")).tolist()


@dataclass
class _Pieces:
    """Distinct chunks of a batch and their counts, in raw split form (see `_raw_to_chunks`), keyed by their UTF-8
    bytes (`_short_keys`) so that no Python object is made per piece: under 8 bytes as one uint64, 8-15 bytes as a
    pair of them, longer ones as strings."""

    keys: np.ndarray  # (S,) uint64, distinct, sorted
    key_counts: np.ndarray  # (S,) int64
    pairs: np.ndarray  # (P, 2) uint64, distinct: (the first 8 bytes, the rest's `_short_keys` key)
    pair_counts: np.ndarray  # (P,) int64
    strings: Counter


_KEY_MASK = np.array([(1 << (8 * n)) - 1 for n in range(8)], dtype=np.uint64)  # the low n bytes
_KEY_LENGTH = np.array([n << 56 for n in range(8)], dtype=np.uint64)  # the length, in the top byte
_EMPTY_FIRST = ord("\n") | 1 << 56  # the key of "\n": the empty first chunk of a text that starts with a space


def _piece_counts(texts: list[str], punctuation: np.ndarray | None = None) -> _Pieces:
    """Raw chunks of texts whose every space sits between two non-whitespace characters: the text laid out as
    "\n" + " \n".join(texts) and cut at every space, counted by sorting integer keys (~3x faster than
    `Counter(str.split)`, which makes a Python string per piece). `punctuation`: (256,) bool, the bytes before which
    a text is also cut where an ASCII letter or digit comes before them (`cuts.punctuation_cuts`); the piece from
    there on is the first of a text of its own."""
    data = utf8("\n" + " \n".join(texts))
    if punctuation is not None:
        data = _cut_after_alnum(data, punctuation)
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
    pairs = np.stack([first[runs], rest[runs]], axis=1)
    long = np.flatnonzero(lengths >= 16)
    strings = Counter(
        [
            data[a : a + b].decode("utf-8", "surrogatepass")
            for a, b in zip(starts[long].tolist(), lengths[long].tolist())
        ]
    )
    return _Pieces(keys, key_counts, pairs, np.diff(np.append(runs, first.size)), strings)


def _cut_after_alnum(data: bytes, table: np.ndarray) -> bytes:
    """data with " \n" (a new text) before every byte of `table` ((256,) bool) that follows an ASCII letter or digit.
    (Found by bytes.translate, inserted by one np.insert: ~2x faster than numpy lookups, ad hoc.)"""
    marks = np.frombuffer(data.translate(table.astype(np.uint8).tobytes()), dtype=bool)
    at = np.flatnonzero(marks[1:] & np.frombuffer(data.translate(_ALNUM_TABLE), dtype=bool)[:-1]) + 1
    if not at.size:
        return data
    return np.insert(np.frombuffer(data, dtype=np.uint8), np.repeat(at, 2), np.tile(_NEW_TEXT, at.size)).tobytes()


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `keys` (sorted) and how often each occurs."""
    keys = np.sort(keys)
    firsts = np.flatnonzero(np.concatenate([keys[:1] == keys[:1], keys[1:] != keys[:-1]]))  # first of each run
    return keys[firsts], np.diff(np.append(firsts, keys.size))


def _short_keys(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(n,) uint64 keys of pieces of buf's bytes: the piece's bytes (little-endian) and, below 8 bytes, its length
    in the top byte. A piece of exactly 8 bytes is the first half of a pair: its length is implied."""
    octets = buf.view(np.uint8)
    # the 8 bytes from each byte position, as one uint64 (unaligned reads, one gather: ~2x faster than two aligned
    # gathers and shifts); buf's zero padding keeps every read inside
    words = np.ndarray(shape=(octets.size - 7,), dtype="<u8", buffer=octets, strides=(1,))
    keys = words[starts]
    short = lengths < 8
    if short.all():
        return (keys & _KEY_MASK[lengths]) | _KEY_LENGTH[lengths]
    keys[short] = (keys[short] & _KEY_MASK[lengths[short]]) | _KEY_LENGTH[lengths[short]]
    return keys


def split_lone_newlines(texts: list[str], after: str = "any") -> list[str]:
    """texts, each cut before every newline that sits alone between two non-whitespace characters ("x\ny z" ->
    "x", "\ny z"), the first an ASCII letter or digit where `after` is "alnum": where `cuts.newline_cuts`
    allows it, a text's parts tokenize as the text does, and a chunk then no longer joins a line's last word to the
    next line's first (in document mode ~43% of kjv.txt's distinct chunks did, nearly all new)."""
    ends = _ASCII_ALNUM if after == "alnum" else None
    out: list[str] = []
    for text in texts:
        if "\n" not in text:
            out.append(text)
            continue
        lines = text.split("\n")
        part = lines[0]
        for line in lines[1:]:
            if part and line and not line[0].isspace() and (part[-1] in ends if ends else not part[-1].isspace()):
                out.append(part)
                part = "\n" + line
            else:
                part += "\n" + line
        out.append(part)
    return out


def chunk_counts(texts: list[str], punctuation: np.ndarray | None = None) -> tuple[_Pieces, Counter, int]:
    """Distinct chunks and their counts, and the number of whitespace-separated words of `texts`.

    A chunk is a piece of a text cut before every run of spaces that follows a non-space. Returns (raw, exact,
    n_words): `raw` counts the chunks of texts whose spaces all sit between non-whitespace characters, where every
    space is a cut (`_piece_counts`, also cut before `punctuation` after an ASCII letter or digit); `exact` counts
    the chunks of the few other texts, cut by a regex.
    """
    flagged, n_words = _scan(texts)
    exact: Counter = Counter()
    if flagged:
        for k in flagged:
            exact.update(_CUT.split(texts[k]))  # later parts keep their leading space
        exact.pop("", None)
        skip = set(flagged)
        texts = [t for k, t in enumerate(texts) if k not in skip]
    raw = _piece_counts(texts, punctuation)
    keep = raw.keys != _EMPTY_FIRST  # the first text may start with a space (the scan sees no "\n" before it)
    raw.keys, raw.key_counts = raw.keys[keep], raw.key_counts[keep]
    return raw, exact, n_words


def _raw_to_chunks(keys: list[str]) -> list[str]:
    """Chunks from their raw split form: a text's first chunk comes out of `_piece_counts` prefixed by "\n", every
    later chunk without its leading space. (Unambiguous: such a later chunk starts with a non-whitespace
    character, since texts with a space next to other whitespace are cut by the regex instead.)"""
    return [k[1:] if k[:1] == "\n" else " " + k for k in keys]


# --- chunks as texts to tokenize ---------------------------------------------------------------------------------


@dataclass
class Chunks:
    """Texts to tokenize as UTF-8 bytes in one buffer: text j is data[starts[j]:starts[j] + lengths[j]]. The distinct
    pieces of a batch become the texts the tokenizer sees without a Python string per piece (`CHUNKS_OF`)."""

    data: np.ndarray  # (B,) uint8; may hold bytes of no text between texts
    starts: np.ndarray  # (n,) int64, bytes
    lengths: np.ndarray  # (n,) int64, bytes

    def __len__(self) -> int:
        return self.lengths.size

    @classmethod
    def of_strings(cls, texts: list[str]) -> Chunks:
        data = utf8("".join(texts))
        n = len(texts)
        sizes = map(len, texts) if len(data) == sum(map(len, texts)) else (len(utf8(t)) for t in texts)
        lengths = np.fromiter(sizes, dtype=np.int64, count=n)
        return cls(np.frombuffer(data, dtype=np.uint8), np.cumsum(lengths) - lengths, lengths)

    @classmethod
    def concat(cls, parts: list[Chunks]) -> Chunks:
        offsets = np.cumsum([0] + [p.data.size for p in parts[:-1]])
        return cls(
            np.concatenate([p.data for p in parts]) if parts else np.zeros(0, np.uint8),
            np.concatenate([p.starts + o for p, o in zip(parts, offsets.tolist())] or [np.zeros(0, np.int64)]),
            np.concatenate([p.lengths for p in parts] or [np.zeros(0, np.int64)]),
        )

    def joined(self) -> np.ndarray:
        """(sum of lengths,) uint8: the texts laid end to end."""
        return self.data[_spans(self.starts, self.lengths)]

    def strings(self) -> list[str]:
        raw = self.joined().tobytes()
        ends = np.cumsum(self.lengths).tolist()
        return [raw[a:b].decode("utf-8", "surrogatepass") for a, b in zip([0] + ends[:-1], ends)]


def _raw_matrix_chunks(raw: np.ndarray, lengths: np.ndarray) -> Chunks:
    """Chunks of raw split forms (`_raw_to_chunks`) held as rows of bytes: raw (n, W) uint8, lengths (n,) bytes."""
    n, width = raw.shape
    out = np.empty((n, width + 1), np.uint8)
    out[:, 0] = 32  # the space a later chunk lost to the split
    out[:, 1:] = raw
    first = raw[:, 0] == 10  # a text's first chunk: "\n" + the chunk
    starts = np.arange(n, dtype=np.int64) * (width + 1) + np.where(first, 2, 0)
    return Chunks(out.reshape(-1), starts, np.where(first, lengths - 1, lengths + 1).astype(np.int64))


def _key_chunks(keys: np.ndarray) -> Chunks:
    """Chunks of `_short_keys` keys (raw pieces under 8 bytes, their length in the top byte)."""
    raw = np.ascontiguousarray(keys, dtype="<u8").view(np.uint8).reshape(-1, 8)
    return _raw_matrix_chunks(raw, (keys >> np.uint64(56)).astype(np.int64))


def _pair_chunks(pairs: np.ndarray) -> Chunks:
    """Chunks of `_Pieces.pairs` keys (raw pieces of 8-15 bytes)."""
    raw = np.ascontiguousarray(pairs, dtype="<u8").view(np.uint8).reshape(-1, 16)
    return _raw_matrix_chunks(raw, 8 + (pairs[:, 1] >> np.uint64(56)).astype(np.int64))


# How each kind of key turns back into the texts to tokenize.
CHUNKS_OF: dict[str, Callable[[Any], Chunks]] = {
    "key": _key_chunks,
    "pair": _pair_chunks,
    "raw": lambda keys: Chunks.of_strings(_raw_to_chunks(keys)),
    "exact": Chunks.of_strings,
    "piece": Chunks.of_strings,
}


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions starts[j], ..., starts[j] + lengths[j] - 1, for each j in turn."""
    total = int(lengths.sum())
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)


Groups = list[tuple[str, Any, np.ndarray]]  # (kind, distinct keys, counts): see `IdStore`


def chunk_groups(texts: list[str], punctuation: np.ndarray | None = None) -> tuple[Groups, int]:
    """The distinct chunks of `texts` by kind of key, and the number of whitespace-separated words (`chunk_counts`)."""
    raw, exact, n_words = chunk_counts(texts, punctuation)
    groups = [
        ("key", raw.keys, raw.key_counts),
        ("pair", raw.pairs, raw.pair_counts),
        ("raw", list(raw.strings), _values(raw.strings)),
        ("exact", list(exact), _values(exact)),
    ]
    return groups, n_words


def _values(counter: Counter) -> np.ndarray:
    return np.fromiter(counter.values(), dtype=np.int64, count=len(counter))
