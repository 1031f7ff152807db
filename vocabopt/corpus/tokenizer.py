"""Tokenizer specs: parse `--tokenizer`, identify the tokenizer, and choose how its counts are made.

Job: everything the analyze stage knows about a tokenizer before counting. Inputs: `--tokenizer PATH|word|bytes`
(a Hugging Face tokenizer.json, or a directory holding one). Outputs: `TokenizerSpec` (picklable: what worker
processes need to rebuild the tokenizer, with its name and sha256), the tokenizer's config and shared instance per
process, the counting path its config allows (`choose_path`), its vocabulary size and token strings.

The counting paths (see vocabopt.corpus.counters for how each counts):
- "chunks": the normalizer is character-local and the pre-tokenizer always splits before a run of spaces that
  follows a non-space character (GPT-2 byte-level, Metaspace, BERT, Whitespace; Split with GPT-4's cl100k regex as
  Llama 3 ships it, or Qwen2's, when ByteLevel follows), so a sequence can be cut at those points.
- "pretokens": any other deterministic model.
- "encode": BPE dropout (not deterministic). Sequences holding an added token's text take it whatever the path.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TokenizerError
from .words import WORD_UNK

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


def shared_tokenizer(spec: TokenizerSpec):
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


# --- vocabulary -----------------------------------------------------------------------------------------------


def hf_vocab_size(tok) -> int:
    """Number of ids (the largest id + 1, so counts can be indexed by any id the tokenizer emits)."""
    return max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1


def hf_token_strings(spec: TokenizerSpec) -> list[str]:
    vocab = shared_tokenizer(spec).get_vocab(with_added_tokens=True)
    n = max(vocab.values(), default=-1) + 1  # as hf_vocab_size
    tokens = [""] * n
    for s, i in vocab.items():
        if 0 <= i < n:
            tokens[i] = s
    return tokens


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
