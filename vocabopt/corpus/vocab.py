"""Vocabulary tables of a tokenizer: its size, token strings, and the size of the text each token stands for.

Job: what the counters and the analyze stage read from a tokenizer's vocabulary. Inputs: a tokenizer (shared per
process: `tokenizer.shared_tokenizer`) and its config. Outputs: the number of ids (`hf_vocab_size`), the token
string of every id (`token_strings`), and the per-token sizes the chunk path places tokens by (`byte_level_sizes`,
`metaspace_sizes`). A shared tokenizer's vocabulary is read once per process (`vocab_of`).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np

from . import spm
from .tokenizer import (
    TokenizerSpec,
    is_shared,
    members_of,
    metaspace_replacement,
    restated_metaspace,
    shared_tokenizer,
)

# tok.get_vocab() builds a new dict each call: ~10 ms for the 21K tokens of the benchmarks' cl100k-style tokenizer,
# read three times by `vocabopt analyze` (~10% of counting the shipped 4 MB corpus; ad hoc), ~10x that for a 200K
# vocabulary. Only the shared tokenizers' (`tokenizer.shared_tokenizer`: never changed once shared) are kept:
# (id(tokenizer), with added tokens) -> (the tokenizer, held so that its id stays its own; its vocabulary).
_VOCABS: dict[tuple[int, bool], tuple[Any, dict[str, int]]] = {}


def vocab_of(tok: Any, with_added_tokens: bool = True) -> dict[str, int]:
    """tok.get_vocab(with_added_tokens), read once per process for a shared tokenizer (read the dict, never change
    it); read each time for any other (a caller may add tokens to its own tokenizer)."""
    if not is_shared(tok):
        return tok.get_vocab(with_added_tokens=with_added_tokens)
    key = (id(tok), with_added_tokens)
    if key not in _VOCABS:
        if len(_VOCABS) >= 8:
            _VOCABS.clear()
        _VOCABS[key] = (tok, tok.get_vocab(with_added_tokens=with_added_tokens))
    return _VOCABS[key][1]


def hf_vocab_size(tok) -> int:
    """Number of ids (the largest id + 1, so counts can be indexed by any id the tokenizer emits)."""
    return max(vocab_of(tok).values(), default=-1) + 1


def hf_token_strings(spec: TokenizerSpec) -> list[str]:
    vocab = vocab_of(shared_tokenizer(spec))
    n = max(vocab.values(), default=-1) + 1  # as hf_vocab_size
    tokens = [""] * n
    for s, i in vocab.items():
        if 0 <= i < n:
            tokens[i] = s
    return tokens


def token_strings(spec: TokenizerSpec) -> list[str]:
    """The token string of every id of an hf or spm tokenizer."""
    if spec.kind == "spm":
        return spm.token_strings(spm.processor(spec.blob, spec.name))
    return hf_token_strings(spec)


def byte_token_strings() -> list[str]:
    return [chr(b) if 0x21 <= b < 0x7F else f"<0x{b:02X}>" for b in range(256)]


def byte_level_sizes(tok, config: dict) -> np.ndarray | None:
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
    vocab = vocab_of(tok)
    return _string_lengths(vocab, max(vocab.values(), default=-1) + 1)


def _string_lengths(vocab: dict[str, int], n: int) -> np.ndarray:
    """(n,) int64: the length of each id's token string in `vocab` (0 for ids it does not hold)."""
    sizes = np.zeros(n, np.int64)
    sizes[np.fromiter(vocab.values(), np.int64, len(vocab))] = np.fromiter(map(len, vocab), np.int64, len(vocab))
    return sizes


_BYTE_TOKEN = re.compile("<0x[0-9A-Fa-f]{2}>")
_ASCII_STABLE = {"NFC", "NFD", "NFKC", "NFKD"}  # normalizers that leave every ASCII text as it is


class CharSizes(NamedTuple):
    """Per-token sizes in characters that place tokens in a text without offsets (`locate.by_chars`)."""

    sizes: np.ndarray  # (V,) characters of text each token stands for
    prepends: bool  # the tokenizer adds a "▁" before a text that does not start with a space
    ascii_only: bool  # the sizes hold for ASCII text (or text in `form`) only: a normalizer may change the rest
    nonspace: bool  # tokens cover the non-whitespace characters only (the pre-tokenizer drops whitespace)
    form: str | None = None  # the normalizer's Unicode form (NFKC ...): the sizes also hold for text already in it


def metaspace_sizes(tok, config: dict) -> CharSizes | None:
    """`CharSizes` (characters of text each token stands for, whether the tokenizer adds a "▁" before a text, the
    normalizer's form where it has one) for the Metaspace tokenizers the chunk path takes: the SentencePiece layouts
    (`metaspace_replacement` not None: no normalizer once restated) and a splitting Metaspace behind no normalizer
    or a Unicode normalization form (NFKC ...: Unigram tokenizers), which leaves ASCII text and text already in that
    form as it is, so that its sizes count the text's own characters; the "▁" one character for one space. None
    for any other tokenizer, or without `encode_batch_fast`. Measured (ad hoc, a 9 MB slice of the Heaps corpus,
    Unigram + NFKC): placing by offsets took ~1.7 s of a 2.6 s count (encode_batch with offsets, then reading them
    in Python).

    A model token stands for its string's characters; a byte-fallback token "<0xNN>" for one character when NN
    starts a UTF-8 character and for none when NN continues one (the bytes of a character add up to 1); the unk token
    for one (a fused unk stands for more). No size is ever too large (a vocabulary whose tokens merge byte-fallback
    tokens, "<0xE4><0xB8>", is refused), so a text whose sizes add up to its characters has every size right, and
    one that falls short is caught by the counter's per-text check. Added tokens never occur in the texts located
    this way (texts holding their content are encoded whole, and so are chunks whose joining would form it).
    """
    pre = config.get("pre_tokenizer") or {}
    norm = config.get("normalizer")
    split = pre.get("type") == "Metaspace" and pre.get("split", True)
    if split and norm is not None and norm.get("type") not in _ASCII_STABLE:
        return None
    if (metaspace_replacement(config) is None and not split) or not hasattr(tok, "encode_batch_fast"):
        return None
    pre = (restated_metaspace(config) or config)["pre_tokenizer"]
    model = config.get("model") or {}
    vocab = vocab_of(tok, with_added_tokens=False)  # the model's own tokens
    if model.get("byte_fallback") and any(len(t) > 6 and _BYTE_TOKEN.search(t) for t in vocab):
        return None
    sizes = _string_lengths(vocab, hf_vocab_size(tok))
    if model.get("byte_fallback"):
        for b in range(256):
            if (i := vocab.get(f"<0x{b:02X}>")) is not None:
                sizes[i] = int(not 0x80 <= b < 0xC0)
    unk = model.get("unk_token") if model.get("type") == "BPE" else model.get("unk_id")
    unk_id = vocab.get(unk) if isinstance(unk, str) else unk
    if isinstance(unk_id, int) and 0 <= unk_id < sizes.size:
        sizes[unk_id] = 1
    form = norm.get("type") if split and norm is not None else None
    return CharSizes(sizes, pre.get("prepend_scheme", "always") in ("always", "first"), form is not None, False, form)


def wordpiece_sizes(tok, config: dict) -> CharSizes | None:
    """Sizes of a WordPiece model behind a pre-tokenizer that drops whitespace (BERT's, Whitespace) and a normalizer
    that keeps ASCII text's length (BERT's: lowercasing, accents, CJK spacing; its clean_text drops control
    characters, which the placing refuses to meet): a token stands for its string's characters, less its
    continuing-subword prefix; the unk token for one (it stands for a whole word: too few, and caught). Placed by
    the non-whitespace characters of ASCII text only. None for any other tokenizer."""
    model, pre = config.get("model") or {}, config.get("pre_tokenizer") or {}
    norm = config.get("normalizer") or {"type": None}
    if (
        model.get("type") != "WordPiece"
        or pre.get("type") not in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit")
        or norm.get("type") not in {None, "BertNormalizer", "Lowercase", "StripAccents", *_ASCII_STABLE}
        or not hasattr(tok, "encode_batch_fast")
    ):
        return None
    vocab = vocab_of(tok, with_added_tokens=False)
    prefix = model.get("continuing_subword_prefix") or ""
    sizes = _string_lengths(vocab, hf_vocab_size(tok))
    if prefix:
        continuing = [i for t, i in vocab.items() if t.startswith(prefix) and len(t) > len(prefix)]
        sizes[continuing] -= len(prefix)  # "##ing" continues a word: 3 characters (as a word's start: caught)
    if isinstance(unk_id := vocab.get(model.get("unk_token")), int):
        sizes[unk_id] = 1
    return CharSizes(sizes, False, True, True)


def _bytes_one_to_one(pre: dict) -> bool:
    """Whether a pre-tokenizer maps each byte of the text to one character: ByteLevel without a prefix space, alone or
    after pre-tokenizers that only split (Llama 3: a Split regex, then ByteLevel)."""
    members = members_of(pre)
    byte_level = [m for m in members if m.get("type") == "ByteLevel"]
    return (
        bool(byte_level)
        and not any(m.get("add_prefix_space") for m in byte_level)
        and all(m.get("type") in ("ByteLevel", "Split", "Digits", "Punctuation") for m in members)
    )
