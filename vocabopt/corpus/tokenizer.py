"""Tokenizer specs: parse `--tokenizer`, identify the tokenizer, and choose how its counts are made.

Job: everything the analyze stage knows about a tokenizer before counting. Inputs: `--tokenizer PATH|word|bytes`
(a Hugging Face tokenizer.json, a transformers folder, a tiktoken rank file or tekken JSON, converted by `formats`;
a SentencePiece .model, counted by `spm`). Outputs: `TokenizerSpec` (picklable: what worker
processes need to rebuild the tokenizer, with its name and sha256), the tokenizer's config and shared instance per
process, the counting path its config allows (`choose_path`) and what that path needs to know of the config. Its
vocabulary (size, token strings, token sizes) is `vocab`'s.

The counting paths (see vocabopt.corpus.counters for how each counts):
- "chunks": the normalizer is character-local and the pre-tokenizer always splits before a run of spaces that
  follows a non-space character (GPT-2 byte-level, Metaspace, BERT, Whitespace; Split regexes that the analysis of
  `regex_safety` proves do: cl100k, o200k, Qwen2, tekken, DeepSeek ...), so a sequence can be cut at those points;
  and SentencePiece layouts that keep a sequence whole (an unsplit Metaspace, or Llama 2's Prepend + Replace
  normalizer: `restated_metaspace`) when no token of the vocabulary crosses such a point.
- "pretokens": any other deterministic model.
- "encode": BPE dropout (not deterministic), or a pre-tokenizer that does not split (nothing repeats). Sequences
  holding an added token's text take it whatever the path, and so does every batch after a path measured slower
  than encoding (see counters.PROBE_BATCHES).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from . import spm
from .formats import FORMATS, add_config_tokens, detect, read_ranks, tekken_parts, tiktoken_json, tiktoken_pattern
from .regex_safety import split_safety
from .words import WORD_UNK

# Normalizers that act on each character independently (never across a space), so cutting the raw text at a space
# gives the same normalized pieces. BertNormalizer may delete control characters, so it is safe only with
# pre-tokenizers that drop whitespace.
_LOCAL_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Nmt"}
WS_DROPPING = {"Whitespace", "WhitespaceSplit", "BertPreTokenizer"}
_PIECE_LOCAL = {"Punctuation", "Digits", "Whitespace", "WhitespaceSplit", "BertPreTokenizer"}


@dataclass(frozen=True)
class TokenizerSpec:
    """What worker processes need to rebuild a tokenizer (picklable)."""

    kind: str  # "hf" | "spm" | "word" | "bytes"
    name: str
    sha256: str
    json: str = ""  # hf: the tokenizer's canonical JSON
    options: dict[str, Any] = field(default_factory=dict)
    blob: bytes = b""  # spm: the .model file's bytes


def load_spec(spec: str, min_count: int = 1, max_vocab: int | None = None) -> TokenizerSpec:
    """Parse `--tokenizer`: a tokenizer.json, a transformers folder, a SentencePiece .model, a tiktoken rank file, a
    tekken JSON (see vocabopt.corpus.formats), `word`, or `bytes`; a path may be an os.PathLike."""
    spec = os.fspath(spec)
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
    if not path.exists():
        raise TokenizerError(f"{spec}: no such file (no tokenizer.json there); pass {FORMATS}")
    fmt = detect(path)
    if fmt == "spm":
        return _spm_spec(path / "tokenizer.model" if path.is_dir() else path)
    if fmt in ("tiktoken", "tekken"):
        return _hf_spec(_rank_tokenizer(path, fmt), path, fmt)
    json_path = path / "tokenizer.json" if path.is_dir() else path
    try:
        raw = json_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{json_path}: cannot read ({e}); pass a readable tokenizer.json") from None
    key = (hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest(), str(json_path))
    if fmt == "hf" and key in _SPECS:  # the same file's text: parsed already in this process
        return _SPECS[key]
    tok = _from_str(raw, str(json_path))
    if fmt == "transformers":
        add_config_tokens(tok, path)
    spec = _hf_spec(tok, json_path, fmt)
    if fmt == "hf":
        if len(_SPECS) >= 4:
            _SPECS.clear()
        _SPECS[key] = spec
    return spec


def _hf_spec(tok, path: Path, fmt: str) -> TokenizerSpec:
    canonical = tok.to_str()
    _share(canonical, tok)
    model = config_of(canonical).get("model", {}).get("type", "model")
    ids = tok.get_vocab_size(with_added_tokens=True)
    origin = {"hf": "", "transformers": "transformers folder, ", "tiktoken": "tiktoken ranks, ", "tekken": "tekken, "}
    name = f"{path.parent.name or path.stem}/{path.name} ({origin[fmt]}{model}, {ids} ids)"
    return TokenizerSpec("hf", name, hashlib.sha256(canonical.encode("utf-8")).hexdigest(), json=canonical)


def _rank_tokenizer(path: Path, fmt: str):
    """A tiktoken rank file or tekken JSON as a byte-level BPE Tokenizer (see `formats.tiktoken_json`)."""
    if path.is_dir():
        path = path / "tekken.json"
    if fmt == "tekken":
        ranks, pattern, offset = tekken_parts(path)
    else:
        ranks, pattern, offset = read_ranks(path), tiktoken_pattern(path), 0
    return _from_str(tiktoken_json(ranks, pattern, offset), str(path))


def _spm_spec(path: Path) -> TokenizerSpec:
    blob = path.read_bytes()
    sp = spm.processor(blob, str(path))
    name = f"{path.parent.name or path.stem}/{path.name} (SentencePiece, {sp.get_piece_size()} ids)"
    return TokenizerSpec("spm", name, hashlib.sha256(blob).hexdigest(), blob=blob)


def _from_str(raw: str, where: str):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(raw)
    except Exception as e:  # tokenizers raises a bare Exception for invalid JSON
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(
            f"{where}: not a valid Hugging Face tokenizer.json ({msg}); regenerate it with tokenizers' Tokenizer.save"
        ) from None


# A tokenizer.json is parsed once per process (~16 ms, and ~8 ms for json.loads, on the shipped one; ~40 ms with
# its canonical form for a 32K Unigram: a measurable share of counting a 4 MB corpus).
_SHARED: dict[str, Any] = {}  # canonical JSON -> Tokenizer (the last few), never truncating or padding
_SPECS: dict[tuple[str, str], TokenizerSpec] = {}  # (sha256 of a tokenizer.json's text, its path) -> its spec


def _share(canonical: str, tok) -> None:
    if len(_SHARED) >= 6:  # a counter holds up to three (the tokenizer, restated, ASCII): room for two counters
        _SHARED.clear()
    tok.no_truncation()
    tok.no_padding()
    _SHARED[canonical] = tok


def shared_tokenizer(spec: TokenizerSpec, restated: bool = False):
    """The tokenizer of `spec`, parsed once per process and shared: callers only encode and read it. `restated`: the
    tokenizer of its config as `restated_metaspace` gives it (the tokenizer itself where there is none)."""
    canonical = (_restated_json(spec.json) or spec.json) if restated else spec.json
    if canonical not in _SHARED:
        _share(canonical, _from_str(canonical, spec.name))
    return _SHARED[canonical]


def ascii_tokenizer(spec: TokenizerSpec) -> tuple[Any, bool] | None:
    """(tokenizer, lower) for plain-ASCII texts on the chunk path: the restated tokenizer (`shared_tokenizer`)
    without the normalizer `ascii_normalizer` finds harmless there, texts lowercased first where it lowercases
    (shared); None where there is no such normalizer."""
    found = _ascii_json(spec.json)
    if found is None:
        return None
    canonical, lower = found
    if canonical not in _SHARED:
        _share(canonical, _from_str(canonical, spec.name))
    return _SHARED[canonical], lower


# The derived configs' JSON, made once per process (a 32K-piece Unigram's took ~13 ms to write, each analyze call)
@functools.lru_cache(maxsize=4)
def _restated_json(canonical: str) -> str | None:
    config = restated_metaspace(config_of(canonical))
    return None if config is None else json.dumps(config, ensure_ascii=False)


@functools.lru_cache(maxsize=4)
def _ascii_json(canonical: str) -> tuple[str, bool] | None:
    restated = config_of(canonical)
    found = ascii_normalizer(restated_metaspace(restated) or restated)
    return None if found is None else (json.dumps(found[0], ensure_ascii=False), found[1])


def is_shared(tok: Any) -> bool:
    """Whether `tok` is one of the shared tokenizers (never changed once shared)."""
    return any(t is tok for t in _SHARED.values())


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
    if pre is not None and pre.get("type") == "Metaspace" and not pre.get("split", True):
        # one pre-token per sequence (a SentencePiece layout in tokenizers): it still tokenizes as
        # its pieces cut before spaces when no token can join two pieces
        if norm is None and _unsplit_metaspace_cuts(config):  # (a normalizer could make spaces the cut misses)
            return "chunks", "Metaspace keeps a sequence whole, but no token joins a character to a following space"
        return "encode", _whole_reason(config, "Metaspace keeps a sequence whole")
    restated = restated_metaspace(config)
    if restated is not None:  # SentencePiece's other layout: a normalizer makes the "▁"s, no pre-tokenizer
        if _unsplit_metaspace_cuts(restated):
            return (
                "chunks",
                "a Replace normalizer keeps a sequence whole, but no token joins a character to a following space",
            )
        return "encode", _whole_reason(restated, "a Replace normalizer keeps a sequence whole")
    if pre is None:  # one pre-token per sequence: nothing repeats to count once
        return "encode", "the pre-tokenizer does not split a sequence: counted by plain encoding"
    splitter = splitter_kind(pre)
    if splitter is None:
        return "pretokens", f"pre-tokenizer {pre.get('type')} may not split at spaces{_unsafe_split_reason(pre)}"
    if not normalizer_local(norm, allow_deleting=splitter == "drops"):
        return "pretokens", f"normalizer {(norm or {}).get('type')} is not character-local"
    return "chunks", f"{pre.get('type')} splits before spaces"


def _whole_reason(config: dict, layout: str) -> str:
    """Why a SentencePiece layout that keeps a sequence whole is counted by plain encoding."""
    if (config.get("model") or {}).get("type") == "Unigram":
        return f"{layout} and a Unigram model's ties fall by what came before a piece: counted by plain encoding"
    return f"{layout} and tokens cross spaces: counted by plain encoding"


def _unsplit_metaspace_cuts(config: dict) -> bool:
    """Whether a Metaspace pre-tokenizer that keeps each sequence whole (split=False) still gives the tokens of the
    sequence's pieces cut before every run of spaces (the chunk path's cut), one piece at a time.

    It does when no token of the vocabulary holds the replacement character (a space, "▁") right after another
    character: a BPE merge that crossed a cut would make such a token, so the tokens of the whole are those of its
    pieces. The replacement must itself be a token (unknown characters around it would otherwise fuse across the
    cut), and the model BPE (no word affixes, no `ignore_merges`). Not Unigram: its scores add up along the whole
    sequence, so where two segmentations of a piece tie, rounding decides by what came before it (" abc" as "ab c"
    after "x", as "a bc" after "y": tests build such a vocabulary). The first
    piece of a text gets the prefix the whole does: the chunk path encodes pieces laid end to end, a text's first
    piece first. A text holding the replacement character itself ("a▁ b": "▁▁" may be a token across the cut) is
    encoded whole (`metaspace_replacement`, the counter's added-token check).
    """
    pre, model = config["pre_tokenizer"], config.get("model") or {}
    replacement = pre.get("replacement") or "\u2581"
    kind, vocab = model.get("type"), model.get("vocab") or {}
    affixes = model.get("continuing_subword_prefix") or model.get("end_of_word_suffix") or model.get("ignore_merges")
    if kind != "BPE" or affixes:
        return False
    tokens = list(vocab) if isinstance(vocab, dict) else []
    if len(replacement) != 1 or replacement not in set(tokens):
        return False
    joined = "\x00".join(tokens)  # one C scan for "a character, then the replacement" inside any token
    return re.search(f"[^\x00{re.escape(replacement)}]{re.escape(replacement)}", joined) is None


def metaspace_replacement(config: dict) -> str | None:
    """The replacement character of a Metaspace pre-tokenizer that keeps a sequence whole, or of the normalizer
    `restated_metaspace` restates as one (None otherwise): texts holding it are encoded whole on the chunk path (see
    `_unsplit_metaspace_cuts`)."""
    pre = (restated_metaspace(config) or config).get("pre_tokenizer") or {}
    if pre.get("type") != "Metaspace" or pre.get("split", True):
        return None
    return pre.get("replacement") or "\u2581"


def restated_metaspace(config: dict) -> dict | None:
    """SentencePiece's layout in tokenizer.json without a pre-tokenizer (Llama 2, Mistral v0.1: a normalizer
    Prepend("▁") then Replace(" ", "▁"); the Replace alone: no prefix) as the config with the unsplit Metaspace
    pre-tokenizer it equals instead (prepend_scheme "always", or "never" without the Prepend), or None for any other.

    Replace alone is exactly Metaspace(prepend_scheme="never", split=False). With the Prepend the two differ only on
    a text that starts with a space or "▁" (Prepend adds one more "▁", Metaspace does not), and after an added token
    (the normalizer prepends to every part between added tokens); the counter encodes texts holding "▁" or an added
    token's text whole with the tokenizer itself, and so the texts that start with a space (`leading_space_whole`;
    a piece of a sequence cut before a space loses that space first: its "▁" then comes from the Prepend, as in the
    uncut sequence), the rest by chunks with the restated one.
    """
    norm = config.get("normalizer") or {}
    if config.get("pre_tokenizer") is not None or not unsplit_metaspace_builds():
        return None
    steps = norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]
    if not steps or not 1 <= len(steps) <= 2:
        return None
    *prepend, replace = steps
    r = replace.get("content")
    if (
        replace.get("type") != "Replace"
        or replace.get("pattern") != {"String": " "}
        or not isinstance(r, str)
        or len(r) != 1
        or r.isspace()
        or any(p.get("type") != "Prepend" or p.get("prepend") != r for p in prepend)
    ):
        return None
    scheme = "always" if prepend else "never"
    metaspace = {"type": "Metaspace", "replacement": r, "prepend_scheme": scheme, "split": False}
    return {**config, "normalizer": None, "pre_tokenizer": metaspace}


@functools.cache
def unsplit_metaspace_builds() -> bool:
    """Whether the installed tokenizers can build a Metaspace that keeps a sequence whole (its `split` option came
    with tokenizers 0.19; before, Metaspace always split and needed `add_prefix_space`)."""
    from importlib.metadata import version

    major, minor = (int(x) for x in re.findall(r"\d+", version("tokenizers"))[:2])
    return (major, minor) >= (0, 19)


def ascii_normalizer(config: dict) -> tuple[dict, bool] | None:
    """(config, lower): `config` without its normalizer and added tokens, and whether to lowercase a text first,
    such that the two tokenize the same every plain-ASCII text (no control character but \\t \\n \\r:
    `locate._plain_ascii`) that holds no added token's content; None where the normalizer may do more to such text,
    or there is none. Unicode forms leave ASCII as it is; Lowercase and BertNormalizer lowercase it (accents and
    Chinese characters are not ASCII; BertNormalizer's clean_text deletes \\v and \\f and makes other whitespace
    spaces, which the whitespace-dropping pre-tokenizer it must be followed by drops). The normalizer cost WordPiece
    ~45% of encoding distinct ASCII words, NFKC a Unigram ~15% (ad hoc, the Heaps corpus's words). The chunk path's
    texts hold no added token's content (raw or normalized: `counters.HFCounter._whole`, and `ChunkEncoder`'s
    `crossed`), so the copy has none to match: in its lowercased text one the tokenizer matches in the raw text only
    could otherwise match."""
    norm = config.get("normalizer")
    steps = steps_of(norm)
    if not steps:
        return None
    lower = False
    for step in steps:
        kind = step.get("type")
        if kind == "BertNormalizer":
            if step.get("clean_text", True) and (config.get("pre_tokenizer") or {}).get("type") not in WS_DROPPING:
                return None
            lower = lower or step.get("lowercase", True)
        elif kind == "Lowercase":
            lower = True
        elif kind not in ("NFC", "NFD", "NFKC", "NFKD"):
            return None
    return {**config, "normalizer": None, "added_tokens": []}, lower


def members_of(pre: dict) -> list[dict]:
    """The pre-tokenizers of a Sequence, or the one pre-tokenizer itself."""
    return pre.get("pretokenizers") or [] if pre.get("type") == "Sequence" else [pre]


def steps_of(norm: dict | None) -> list[dict]:
    """The normalizers of a Sequence, or the one normalizer itself ([] for none)."""
    return (norm.get("normalizers") or [] if norm.get("type") == "Sequence" else [norm]) if norm else []


def leading_space_whole(config: dict) -> bool:
    """Whether texts that start with a space must be encoded whole on the chunk path (see `restated_metaspace`)."""
    restated = restated_metaspace(config)
    return restated is not None and restated["pre_tokenizer"]["prepend_scheme"] == "always"


def splitter_kind(pre: dict) -> str | None:
    """'drops' (splits at whitespace and drops it), 'prefix' (keeps a space on the next piece) or None (unsafe)."""
    kind = pre.get("type")
    if kind in WS_DROPPING:
        return "drops"
    if kind == "ByteLevel" and pre.get("use_regex", True):
        return "prefix"
    if kind == "Metaspace" and pre.get("split", True):
        return "prefix"
    if kind == "Split":
        return "prefix" if _split_kind(pre)[0] == "cuts" else None
    if kind == "Sequence":
        return _sequence_kind(pre.get("pretokenizers") or [])
    return None


def _split_kind(pre: dict) -> tuple[str | None, str]:
    """('cuts' | 'respects' | None, reason) of a Split pre-tokenizer for the cut before spaces
    (`regex_safety.split_safety`)."""
    regex = (pre.get("pattern") or {}).get("Regex")
    if regex is None or pre.get("behavior") != "Isolated" or pre.get("invert"):
        return None, "a Split other than an isolated regex"
    respects, cuts, reason = split_safety(regex)
    return ("cuts" if cuts else "respects") if respects else None, reason


def _sequence_kind(members: list[dict]) -> str | None:
    """A Sequence is cut-safe when every Split in it respects the cut, one member cuts there (a Split, or the first
    member's own splitting), and every other member acts on each piece alone."""
    found = None
    for k, m in enumerate(members):
        kind = m.get("type")
        if kind == "Split":
            split, _ = _split_kind(m)
            if split is None or after_byte_level(members, k):
                return None
            found = found or ("prefix" if split == "cuts" else None)
        elif k == 0:
            found = splitter_kind(m)
            if found is None:
                return None
        elif kind not in _PIECE_LOCAL and kind != "ByteLevel":
            return None
    return found


def after_byte_level(members: list[dict], k: int) -> bool:
    """Whether members[k] sees the text after a ByteLevel member's mapping (" " -> "Ġ", "\n" -> "Ċ": letters to
    a regex, which the analysis of the raw text does not cover)."""
    return any(m.get("type") == "ByteLevel" for m in members[:k])


def _unsafe_split_reason(pre: dict) -> str:
    """Why the first unsafe Split regex of a pre-tokenizer is unsafe ("" if none is)."""
    for m in members_of(pre):
        if m.get("type") == "Split":
            split, reason = _split_kind(m)
            if split is None:
                return f": its Split regex is not cut-safe ({reason})"
    return ""


def normalizer_local(norm: dict | None, allow_deleting: bool) -> bool:
    if norm is None:
        return True
    kind = norm.get("type")
    if kind == "Sequence":
        return all(normalizer_local(n, allow_deleting) for n in norm.get("normalizers") or [])
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
