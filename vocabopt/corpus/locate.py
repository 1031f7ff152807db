"""Locating tokens in chunks laid end to end: which tokens of a long encoded text belong to which chunk.

Job: the chunk path encodes its distinct chunks as a few long texts (vocabopt.corpus.counters) and gives each token
back to the chunk holding its start. Inputs: the texts' encodings, the chunks in text order and where each text
starts. Outputs: `Located` = (all ids laid end to end, tokens per text, each token's start, each chunk's start), in
one coordinate (characters or bytes of the texts laid end to end). Three ways to find a token's start: the
tokenizer's offsets (any tokenizer; the offsets cost it ~40% more time), or the sizes of the tokens themselves where
they add up to the text (`by_bytes`: byte-level BPE; `by_chars`: SentencePiece layouts), checked per text.
"""

from __future__ import annotations

import itertools

import numpy as np

from .chunks import utf8

Located = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (ids, tokens per text, token starts, chunk starts)


def ids_of(encs: list) -> tuple[np.ndarray, np.ndarray]:
    """(all ids laid end to end, number of ids of each encoding)."""
    n_tokens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=int(n_tokens.sum()))
    return ids, n_tokens


def by_offsets(encs: list, ordered: list[str], firsts: np.ndarray) -> Located:
    """Positions in characters, from the tokens' offsets (encodings made with offsets: `encode_batch`)."""
    ids, n_tokens = ids_of(encs)
    lengths = np.fromiter(map(len, ordered), dtype=np.int64, count=len(ordered))
    chunk_starts = np.cumsum(lengths) - lengths
    offsets = itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encs))
    token_starts = np.fromiter(offsets, dtype=np.int64, count=2 * ids.size)[::2]  # (start, end) pairs
    token_starts += np.repeat(chunk_starts[firsts], n_tokens)
    return ids, n_tokens, token_starts, chunk_starts


def by_bytes(encs: list, texts: list[str], ordered: list[str], firsts: np.ndarray, token_bytes) -> Located | None:
    """Positions in bytes, for byte-level BPE (`tokenizer.byte_level_sizes`): a token's string has one character per
    byte of text. None if some text's tokens do not add up to its bytes (an unknown character was dropped)."""
    ids, n_tokens = ids_of(encs)
    sizes = token_bytes[ids]  # (total,) bytes of each token
    ascii_only = all(map(str.isascii, texts))
    lengths = np.fromiter(
        map(len, ordered) if ascii_only else (len(utf8(c)) for c in ordered), dtype=np.int64, count=len(ordered)
    )
    chunk_ends, token_ends = np.cumsum(lengths), np.cumsum(sizes)
    text_ends = np.append(chunk_ends[firsts[1:] - 1], chunk_ends[-1:])  # bytes up to each text's end
    text_token_ends = np.concatenate([[0], token_ends])[np.cumsum(n_tokens)]
    if not np.array_equal(text_ends, text_token_ends):
        return None
    return ids, n_tokens, token_ends - sizes, chunk_ends - lengths


def by_chars(
    encs: list, texts: list[str], ordered: list[str], firsts: np.ndarray, token_chars, prepends: bool
) -> Located | None:
    """Positions in characters, for the SentencePiece layouts (`tokenizer.metaspace_sizes`): a token stands for its
    string's characters (a byte-fallback token for a character's first byte or none), and with `prepends` one "▁"
    before a text that does not start with a space is the tokenizer's own, no character of the text. None if some
    text's tokens do not add up to its characters (a fused unk)."""
    ids, n_tokens = ids_of(encs)
    sizes = token_chars[ids]  # (total,) characters of each token
    lengths = np.fromiter(map(len, ordered), dtype=np.int64, count=len(ordered))
    chunk_ends = np.cumsum(lengths)
    chunk_starts = chunk_ends - lengths
    text_starts = chunk_starts[firsts]
    text_lengths = np.diff(np.append(text_starts, chunk_ends[-1]))
    added = np.fromiter((prepends and t[:1] != " " for t in texts), dtype=np.int64, count=len(texts))
    if n_tokens.min(initial=1) == 0:
        return None
    sums = np.add.reduceat(sizes, np.cumsum(n_tokens) - n_tokens)  # characters per text
    if not np.array_equal(sums, text_lengths + added):
        return None
    text_of = np.repeat(np.arange(len(texts)), n_tokens)
    starts = np.cumsum(sizes) - sizes - np.cumsum(added)[text_of]  # in the texts' characters laid end to end
    starts[sizes == 0] = -1  # a UTF-8 continuation byte starts where its character's first byte does
    return ids, n_tokens, np.maximum(np.maximum.accumulate(starts), text_starts[text_of]), chunk_starts
