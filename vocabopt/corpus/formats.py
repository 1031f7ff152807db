"""Tokenizer file formats other than a bare tokenizer.json: what `--tokenizer` accepts, and how each becomes countable.

Job: turn the file a user holds into what the counters take. Inputs: a path. Outputs: `detect(path)` (the format),
and per format:
- a `transformers` folder (tokenizer.json + tokenizer_config.json): the added tokens of the config
  (`added_tokens_decoder`) that the tokenizer.json lacks are added at their ids (`add_config_tokens`);
- a tiktoken rank file (`.tiktoken`: base64 token bytes and rank per line, GPT-4's cl100k, GPT-4o's o200k, Llama 3's
  original release) and its regex: converted to a byte-level BPE tokenizer.json whose ids are the ranks
  (`tiktoken_json`), as `transformers` converts them (merges recovered by running BPE on each token below its rank;
  a whole pre-token in the vocabulary is one token, as tiktoken does). Counts equal tiktoken's `encode_ordinary`;
- a Mistral tekken JSON (`tekken.json`: the ranks, the regex and the number of special ids before them);
- a SentencePiece `.model`: counted by the `sentencepiece` package itself (see vocabopt.corpus.spm).
Optional packages (`sentencepiece`) are imported only when such a file is given.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

from ..errors import TokenizerError

FORMATS = (
    "a tokenizer.json, a transformers folder, a SentencePiece .model, a tiktoken rank file (.tiktoken, with a "
    "known name or a FILE.regex beside it), a tekken .json, 'word' or 'bytes'"
)
# Pre-tokenizer regexes of OpenAI's published encodings, by rank-file name: o200k's as tiktoken ships it; cl100k's and
# r50k/p50k's in the form without possessives and the `\s++$` anchor that transformers' converted tokenizers use
# (tiktoken's own comment calls its faster form equivalent). A FILE.regex beside the rank file overrides them.
TIKTOKEN_PATTERNS = {
    "cl100k_base": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "o200k_base": "|".join(
        [
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"\p{N}{1,3}",
            r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
            r"\s*[\r\n]+",
            r"\s+(?!\S)",
            r"\s+",
        ]
    ),
    "r50k_base": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "p50k_base": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
}


def detect(path: Path) -> str:
    """'hf' | 'transformers' | 'spm' | 'tiktoken' | 'tekken' for an existing path; TokenizerError otherwise."""
    if path.is_dir():
        if (path / "tokenizer.json").exists():
            return "transformers" if (path / "tokenizer_config.json").exists() else "hf"
        if (path / "tokenizer.model").exists():
            return "spm"
        if (path / "tekken.json").exists():
            return "tekken"
        raise TokenizerError(f"{path}: no tokenizer file in this folder; pass {FORMATS}")
    with path.open("rb") as f:
        head = f.read(4096)
    if path.suffix == ".model" or head[:1] == b"\n" and b"\x12" in head[:64]:  # a SentencePiece ModelProto
        return "spm"
    if path.suffix == ".tiktoken" or _looks_like_ranks(head):
        return "tiktoken"
    if head.lstrip()[:1] == b"{":
        if b'"vocab"' in head and b'"config"' in head and b'"model"' not in head:
            return "tekken"
        return "hf"
    raise TokenizerError(f"{path}: not a tokenizer file vocabopt reads; pass {FORMATS}")


def _looks_like_ranks(head: bytes) -> bool:
    lines = head.split(b"\n")[:3]
    try:
        return all(len(parts := ln.split()) == 2 and int(parts[1]) >= 0 and base64.b64decode(parts[0]) for ln in lines)
    except ValueError:
        return False


# --- transformers folders -------------------------------------------------------------------------------------------


def add_config_tokens(tok, folder: Path) -> None:
    """Add the tokens of tokenizer_config.json's `added_tokens_decoder` that `tok` lacks, at their ids (in place)."""
    from tokenizers import AddedToken

    config_path = folder / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        msg = f"{config_path}: cannot read ({e}); fix the file or pass the tokenizer.json alone"
        raise TokenizerError(msg) from None
    added = config.get("added_tokens_decoder") or {}
    for key in sorted(added, key=int):
        token, want = added[key], int(key)
        content = token.get("content")
        if not content or tok.token_to_id(content) is not None:
            continue
        size = tok.get_vocab_size(with_added_tokens=True)
        if want != size:
            raise TokenizerError(
                f"{config_path}: added token {content!r} has id {want}, but the next free id of tokenizer.json is "
                f"{size}; regenerate the folder with transformers' save_pretrained"
            )
        new = AddedToken(
            content,
            single_word=token.get("single_word", False),
            lstrip=token.get("lstrip", False),
            rstrip=token.get("rstrip", False),
            normalized=token.get("normalized", not token.get("special", False)),
            special=token.get("special", False),
        )
        (tok.add_special_tokens if token.get("special") else tok.add_tokens)([new])


# --- tiktoken and tekken ----------------------------------------------------------------------------------------


def read_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken rank file: one `base64(token bytes) rank` per line."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise TokenizerError(f"{path}:{lineno}: not 'base64-token rank'; pass a tiktoken rank file") from None
    return ranks


def tiktoken_pattern(path: Path) -> str:
    """The regex of a rank file: FILE.regex beside it, else the published one of a known name (cl100k_base ...)."""
    sidecar = path.with_name(path.name + ".regex")
    if sidecar.exists():
        return sidecar.read_text(encoding="utf-8").strip("\n")
    for name, pattern in TIKTOKEN_PATTERNS.items():
        if name in path.name:
            return pattern
    raise TokenizerError(
        f"{path}: a tiktoken rank file needs its regex; put it in {sidecar.name} beside the file, or name the file "
        f"after a published encoding ({', '.join(TIKTOKEN_PATTERNS)})"
    )


def tekken_parts(path: Path) -> tuple[dict[bytes, int], str, int]:
    """(ranks, regex, id offset) of a Mistral tekken JSON: token k of `vocab` (by rank) has id offset + k, after
    `default_num_special_tokens` special ids; only the first `default_vocab_size - offset` ranks are used."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        config = raw["config"]
        offset = int(config.get("default_num_special_tokens", len(raw.get("special_tokens") or [])))
        n_ranks = int(config.get("default_vocab_size", offset + len(raw["vocab"]))) - offset
        ranks = {base64.b64decode(t["token_bytes"]): int(t["rank"]) for t in raw["vocab"] if int(t["rank"]) < n_ranks}
        return ranks, config["pattern"], offset
    except (OSError, ValueError, KeyError, TypeError) as e:
        msg = f"{path}: not a tekken JSON ({type(e).__name__}: {e}); pass Mistral's tekken.json"
        raise TokenizerError(msg) from None


@functools.lru_cache(maxsize=1)
def _byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode: byte b -> the printable character ByteLevel uses for it."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _bpe_str(token: bytes) -> str:
    table = _byte_chars()
    return "".join(table[b] for b in token)


def _parts_below(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """The pieces tiktoken's BPE leaves of `token` using only merges ranked below max_rank."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best):
                best, at = rank, i
        if best is None:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def tiktoken_json(ranks: dict[bytes, int], pattern: str, offset: int = 0) -> str:
    """A tokenizer.json counting as tiktoken's `encode_ordinary` with these ranks and regex (id = rank + offset)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {_bpe_str(token): rank + offset for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        if len(token) > 1:
            parts = _parts_below(ranks, token, rank)
            if len(parts) == 2:
                merges.append((rank, _bpe_str(parts[0]), _bpe_str(parts[1])))
    merges.sort()
    model = models.BPE(vocab, [(a, b) for _, a, b in merges], ignore_merges=True)  # a known piece is one token
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()
