"""Exact token counting for the analyzer: tokenizer specs and the per-batch counters that run in worker processes.

Inputs: a tokenizer spec (`--tokenizer PATH|word|bytes`) and batches of text sequences.
Outputs: per-batch counts (an int64 array indexed by token id; string-keyed for the word tokenizer).

Why this is fast and still exact. A Hugging Face tokenizer normalizes a sequence, splits it into pre-tokens and
runs its model on each pre-token independently, so counts only depend on how often each distinct pre-token occurs:
count those, tokenize each distinct one once, multiply. Three paths, chosen per tokenizer and reported:
- "chunks": for tokenizers whose normalizer is character-local and whose pre-tokenizer always splits before a run of
  spaces that follows a non-space character (GPT-2 byte-level, Metaspace, BERT, Whitespace), we cut sequences at
  those points with `str.split` (C speed), count distinct chunks, and encode each distinct chunk once.
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
        raise TokenizerError(f"{spec}: no tokenizer.json there; pass a tokenizer.json, a directory holding one, "
                             "'word' or 'bytes'")
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
        raise TokenizerError(f"{where}: not a valid Hugging Face tokenizer.json ({msg}); "
                             "regenerate it with tokenizers' Tokenizer.save") from None


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
        return (pattern is not None and len(pattern) == 1 and not pattern.isspace()
                and not any(c.isspace() for c in content))
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
    out.n_bytes = len("".join(texts).encode("utf-8", "surrogatepass"))
    if words:
        out.n_words = len(" ".join(texts).split())


class HFCounter:
    """Counts a batch of sequences with a Hugging Face tokenizer, exactly as `encode_batch` would."""

    def __init__(self, spec: TokenizerSpec, add_special_tokens: bool, force_path: str | None = None,
                 max_chars: int = 1 << 20) -> None:
        tok = _shared_tokenizer(spec)
        self.tok, self.max_chars = tok, max_chars
        config = config_of(spec.json)
        self.path, self.reason = choose_path(config)
        if force_path is not None:  # tests compare the paths against each other
            self.path = force_path
        self.vocab_size = hf_vocab_size(tok)
        self.special_ids = self._special_ids() if add_special_tokens else np.zeros(0, np.int64)
        contents = sorted({t["content"] for t in config.get("added_tokens") or [] if t.get("content")},
                          key=len, reverse=True)
        self.added = re.compile("|".join(map(re.escape, contents))) if contents else None
        self.normalizer = tok.normalizer
        self.cache: dict[str, list[int]] = {}  # distinct piece -> ids (chunks: in their raw split form)
        self.cache_exact: dict[str, list[int]] = {}  # chunk -> ids, for chunks cut one text at a time

    def _special_ids(self) -> np.ndarray:
        """Ids the post-processor adds to one sequence (their multiset does not depend on the text)."""
        enc = self.tok.encode("", add_special_tokens=False)
        with_special = self.tok.post_process(enc, add_special_tokens=True)
        ids = [i for i, m in zip(with_special.ids, with_special.special_tokens_mask) if m]
        return np.asarray(ids, dtype=np.int64)

    def count(self, payload: Payload) -> BatchCounts:
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
            encs = self.tok.encode_batch(plain, add_special_tokens=False)
            ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64)
            out.counts += np.bincount(ids, minlength=self.vocab_size)
        if fast:
            out.paths[self.path] += len(fast)
            if self.path == "chunks":
                raw, exact, n_words = _chunk_counts(fast)
                out.n_words += n_words
                self._add_distinct(raw, out.counts, self.cache, raw_chunks=True)
                self._add_distinct(exact, out.counts, self.cache_exact)
            else:
                self._add_distinct(self._pretoken_counts(fast), out.counts, self.cache)
        return out

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

    def _encode_chunks(self, chunks: list[str]) -> list[list[int]]:
        """The ids of each chunk (in the order given), from encoding a few long texts of chunks laid end to end.

        One Encoding per chunk costs more in Python objects than the tokenizer spends on the chunk, so chunks are
        joined wherever a line could have been cut (before a space that follows a non-space: the chunk path's own
        invariant), and each token goes back to the chunk holding its start offset (in characters). Chunks that do
        not start with a space lead a text; chunks ending in whitespace stay alone, so every chunk after a text's
        first follows one that ends in a token holding a non-space, whose start a post-processor's offset trimming
        cannot push past its chunk.
        """
        glue, leaders, alone = [], [], []  # indices into chunks
        for i, c in enumerate(chunks):
            if c[-1].isspace():
                alone.append(i)
            else:
                (glue if c[0] == " " else leaders).append(i)
        n_texts = max(len(leaders), JOINED_TEXTS)
        groups = [[lead] for lead in leaders] + [[] for _ in range(n_texts - len(leaders))]
        for k, group in enumerate(groups):
            group.extend(glue[k::n_texts])
        groups = [g for g in groups if g] + [[i] for i in alone]
        texts = ["".join([chunks[i] for i in g]) for g in groups]
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        # Positions in all texts laid end to end: a token's start plus its text's start; the same for chunks.
        n_tokens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        text_starts = np.cumsum([0] + [len(t) for t in texts[:-1]])
        starts = itertools.chain.from_iterable(e.offsets for e in encs)  # (start, end) pairs
        token_starts = np.fromiter((o[0] for o in starts), dtype=np.int64, count=int(n_tokens.sum()))
        token_starts += np.repeat(text_starts, n_tokens)
        order = list(itertools.chain.from_iterable(groups))
        chunk_starts = np.cumsum([0] + [len(chunks[i]) for i in order[:-1]])
        bounds = np.searchsorted(token_starts, chunk_starts, side="left")
        # A text's first chunk starts at the text's first token: exact, whatever trimming did to a lone whitespace
        # chunk's offsets at the end of the text before.
        bounds[np.cumsum([0] + [len(g) for g in groups[:-1]])] = np.cumsum(np.concatenate([[0], n_tokens[:-1]]))
        bounds = bounds.tolist() + [len(token_starts)]
        ids = list(itertools.chain.from_iterable(e.ids for e in encs))
        out: list[list[int]] = [[]] * len(chunks)
        for i, a, b in zip(order, bounds, bounds[1:]):
            out[i] = ids[a:b]
        return out

    def _add_distinct(self, distinct: Counter, counts: np.ndarray, cache: dict[str, list[int]],
                      raw_chunks: bool = False) -> None:
        """counts[id] += n for the ids of each distinct piece (tokenized once, cached across batches).

        raw_chunks: the keys are chunks in their raw split form (see `_raw_to_chunks`).
        """
        ids = [cache.get(p) for p in distinct]  # lists of ints (no per-piece array objects); None: not seen yet
        todo = [k for k, i in enumerate(ids) if i is None]
        if len(cache) + len(todo) > CACHE_LIMIT:
            cache.clear()
        if todo:
            keys = list(distinct)
            missing = [keys[k] for k in todo]
            if self.path == "chunks":
                new = self._encode_chunks(_raw_to_chunks(missing) if raw_chunks else missing)
            else:
                model = self.tok.model
                new = [[t.id for t in model.tokenize(piece)] for piece in missing]
            cache.update(zip(missing, new))
            for k, i in zip(todo, new):
                ids[k] = i
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        if not lengths.sum():  # also an empty `distinct`
            return
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        weights = np.repeat(np.fromiter(distinct.values(), dtype=np.int64, count=len(ids)), lengths)
        # float64 weights are exact below 2**53 tokens per batch
        counts += np.rint(np.bincount(flat, weights=weights, minlength=counts.size)).astype(np.int64)


_ADJ_SPACE = re.compile(r"\s | \s")  # a space next to other whitespace (or at a text's edge, once joined)
_CUT = re.compile(r"(?<=\S)(?= )")  # before a space that follows a non-whitespace character


# Byte -> 1 for the ASCII characters str.isspace() accepts (\t \n \v \f \r, the four information separators, space),
# and for the space alone: bytes.translate tables, which map a whole batch in one C pass.
_WS_TABLE = bytes(int(b in (9, 10, 11, 12, 13, 28, 29, 30, 31, 32)) for b in range(256))
_SPACE_TABLE = bytes(int(b == 32) for b in range(256))


def _ascii_scan(joined: str) -> tuple[np.ndarray, int] | None:
    """For ASCII text (else None): start positions of each space next to other whitespace, and the number of
    whitespace-separated words; vectorised over the bytes, ~10x faster than the regex and str.split."""
    if not joined.isascii():
        return None
    data = joined.encode("ascii")
    ws = np.frombuffer(data.translate(_WS_TABLE), dtype=bool)
    space = np.frombuffer(data.translate(_SPACE_TABLE), dtype=bool)
    positions = np.flatnonzero((space[:-1] & ws[1:]) | (ws[:-1] & space[1:]))
    n_words = int(np.count_nonzero(ws[:-1] > ws[1:])) + int(ws.size > 0 and not ws[0])  # word starts
    return positions, n_words


def _flagged_texts(texts: list[str], positions: np.ndarray) -> list[int]:
    """Indices of the texts holding a flagged pair (a pair across a text's edge flags both neighbours)."""
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1)
    chars = np.concatenate([positions, positions + 1])
    return np.unique(np.searchsorted(ends, chars, side="right")).tolist()


def _chunk_counts(texts: list[str]) -> tuple[Counter, Counter, int]:
    """Distinct chunks and their counts, and the number of whitespace-separated words of `texts`.

    A chunk is a piece of a text cut before every run of spaces that follows a non-space. Returns (raw, exact,
    n_words): `raw` counts the chunks of texts whose spaces all sit between non-whitespace characters, cut by one
    `str.split` (C speed) and keyed in their raw split form (see `_raw_to_chunks`: converting only the keys not seen
    before is cheaper than re-keying every batch); `exact` counts the chunks of the few other texts, cut by a regex.
    """
    joined = "\n".join(texts)
    scan = _ascii_scan(joined)
    if scan is None:
        positions = np.fromiter((m.start() for m in _ADJ_SPACE.finditer(joined)), dtype=np.int64)
    else:
        positions, n_words = scan
    raw = _split_counts(texts)
    exact: Counter = Counter()
    if positions.size:
        flagged = [texts[k] for k in _flagged_texts(texts, positions)]
        for key, n in _split_counts(flagged).items():  # additive over texts: swap the flagged ones for their exact cut
            if raw[key] == n:
                del raw[key]
            else:
                raw[key] -= n
        for t in flagged:
            exact.update(_CUT.split(t))  # later parts keep their leading space
        exact.pop("", None)
    raw.pop("\n", None)  # an empty first chunk (a text that starts with a space, or an empty text)
    if scan is None:  # chunks are cut at whitespace, so no word spans two: count words per distinct chunk
        n_words = sum(n * len(k.split()) for counter in (raw, exact) for k, n in counter.items())
    return raw, exact, n_words


def _split_counts(texts: list[str]) -> Counter:
    """Chunk counts of texts whose every space follows a non-space, in raw form: one join and one `str.split`."""
    return Counter(("\n" + " \n".join(texts)).split(" ")) if texts else Counter()


def _raw_to_chunks(keys: list[str]) -> list[str]:
    """Chunks from their raw split form: a text's first chunk comes out of `_split_counts` prefixed by "\n", every
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
        data = "".join(texts).encode("utf-8", "surrogatepass")
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


def make_counter(spec: TokenizerSpec, add_special_tokens: bool, force_path: str | None = None,
                 max_chars: int = 1 << 20):
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
