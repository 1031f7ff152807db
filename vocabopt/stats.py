"""CorpusStats: the artifact of the `analyze` stage — token counts of a corpus under one tokenizer.

Inputs: counts indexed by the tokenizer's own ids (from `vocabopt.analyze`, `merge`, or a user's array).
Outputs: `stats.json` (metadata, summary statistics, Zipf fits and token strings, readable by a person) and
`stats.counts.<hash>.npy` beside it (int64 counts, length = vocabulary size, zero counts kept; named by its
sha256 so that a new save never touches the sidecar of the artifact it replaces); or `stats.npz`, one file holding
both (the single-file form of `vocabopt.artifacts`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from .corpus.files import SourceInfo  # defined with the readers that fill it; vocabopt.stats.SourceInfo stays
from .corpus.words import word_vocab_order
from .design import frequency_order
from .errors import ArtifactError, MismatchError

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.CorpusStats"
COVERAGE_TARGETS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
RARE_COUNT = 2  # "almost never seen": at most this many occurrences in the corpus (under_trained)


@dataclass
class TokenizerInfo:
    kind: str  # "hf" (a tokenizer.json), "word" (built from the corpus), "bytes", or "counts" (user-supplied)
    name: str
    sha256: str  # of the tokenizer's canonical JSON; for "word" and "bytes", of their spec (options)
    vocab_size: int


@dataclass
class CorpusStats:
    """Token counts of a corpus under one tokenizer, plus what was counted and how.

    Example:
        >>> stats = CorpusStats.from_counts([5, 3, 0, 1])
        >>> stats.summary()["types_seen"]
        3
    """

    counts: np.ndarray  # (V,) int64, indexed by the tokenizer's own ids
    tokens: list[str]  # (V,) token strings
    tokenizer: TokenizerInfo
    sources: list[SourceInfo] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # how the counts were made (sequence, path, limits)
    n_sequences: int = 0
    n_bytes: int = 0  # UTF-8 bytes of the counted text
    n_words: int = 0  # whitespace-separated words in the counted text
    fits: dict[str, Any] = field(default_factory=dict)  # Zipf fits (vocabopt.zipf.fit)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.counts.ndim != 1:
            raise MismatchError(f"counts must be one-dimensional, got shape {self.counts.shape}")
        if self.counts.size and self.counts.min() < 0:
            raise MismatchError("counts must be non-negative")
        if len(self.tokens) != self.counts.size:
            raise MismatchError(f"{len(self.tokens)} token strings for {self.counts.size} counts; pass one per id")

    def __repr__(self) -> str:
        """One line (the arrays are V long): V, total tokens, ids seen, ids covering 90% of tokens, tokenizer."""
        total = self.total
        top = ""
        if total:
            cum = np.cumsum(np.sort(self.counts)[::-1])  # (V,) tokens covered by the top k+1 ids
            top = f", top {int(np.searchsorted(cum, 0.9 * total) + 1):,} ids cover 90%"
        return (
            f"CorpusStats(V={self.vocab_size:,}, {total:,} tokens, {int(np.count_nonzero(self.counts)):,} ids seen"
            f"{top}, tokenizer={self.tokenizer.name!r})"
        )

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_counts(cls, counts, tokens: list[str] | None = None, name: str = "counts") -> CorpusStats:
        """Stats from counts a user already has (index = token id). Token strings default to the ids."""
        counts = np.asarray(counts)
        if counts.ndim != 1 or not (np.issubdtype(counts.dtype, np.integer) or _all_integral(counts)):
            raise MismatchError("counts must be a 1-D array of non-negative integers, one per token id")
        counts = counts.astype(np.int64)
        tokens = [str(i) for i in range(counts.size)] if tokens is None else list(tokens)
        token_bytes = "\0".join(tokens).encode("utf-8", "surrogatepass")
        digest = artifacts.sha256_bytes(artifacts.npy_bytes(counts) + token_bytes)
        info = TokenizerInfo(kind="counts", name=name, sha256=digest, vocab_size=int(counts.size))
        stats = cls(counts=counts, tokens=tokens, tokenizer=info)
        stats.refit()
        return stats

    def refit(self) -> None:
        """Recompute the Zipf fits from the counts."""
        from . import zipf  # not at the top: zipf imports scipy (~0.5 s), which `import vocabopt` should not pay

        self.fits = zipf.fit(self.counts)

    # --- derived quantities ---------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return int(self.counts.size)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def frequency_order(self) -> np.ndarray:
        """Token ids sorted by decreasing count (ties by increasing id): rank -> id."""
        return frequency_order(self.counts)

    def summary(self) -> dict[str, Any]:
        """Summary statistics (JSON-ready): totals, entropy, coverage, hapaxes, Good-Turing unseen mass."""
        return summarize(self.counts, n_bytes=self.n_bytes, n_words=self.n_words, n_sequences=self.n_sequences)

    def under_trained(self, rare: int = RARE_COUNT, examples: int = 6) -> dict[str, Any]:
        """Ids the corpus never or almost never shows (count 0, or 1..`rare`), grouped by kind: the corpus-side
        complement of weight-based detectors (Magikarp): an id seen this rarely gets almost no gradient.

        Returns {"rare_count": rare, "never": {kind: {"n": int, "examples": [token, ...]}}, "rare": {...}} with
        kinds "byte" (byte tokens: byte-level alphabet, <0xNN>), "whitespace" (runs of spaces, newlines, tabs),
        "special" (<...>, [...] markers), "unreached_merge" (both halves of some split are common, count >= the
        median of seen ids, yet the whole never occurs) and "other". Empty for the bytes and word tokenizers.
        """
        out: dict[str, Any] = {"rare_count": rare, "never": {}, "rare": {}}
        if self.tokenizer.kind in ("bytes", "word"):
            return out
        kinds = _token_kinds(self.tokens, self.counts)
        for name, mask in (("never", self.counts == 0), ("rare", (self.counts > 0) & (self.counts <= rare))):
            for i in np.flatnonzero(mask).tolist():
                group = out[name].setdefault(kinds[i], {"n": 0, "examples": []})
                group["n"] += 1
                if len(group["examples"]) < examples:
                    group["examples"].append(self.tokens[i])
        return out

    # --- persistence ----------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write `path` (JSON) and `<stem>.counts.<hash>.npy` beside it, each atomically (sidecar first); or, for a
        path ending in `.npz`, one file holding the same JSON and the counts (`vocabopt.artifacts` explains)."""
        npy = artifacts.npy_bytes(self.counts)
        if artifacts.is_single_file(path):
            obj = self.to_json(counts_file="counts.npy", counts_sha256=artifacts.sha256_bytes(npy))
            artifacts.write_single_file(path, obj, {"counts.npy": npy})
            return
        sidecar = artifacts.sidecar_path(path, "counts", npy)
        obj = self.to_json(counts_file=sidecar.name, counts_sha256=artifacts.sha256_bytes(npy))
        artifacts.write_with_sidecars(path, {sidecar: npy}, lambda: artifacts.dumps_json(obj).encode("ascii"))

    def to_json(self, counts_file: str | None = None, counts_sha256: str | None = None) -> dict[str, Any]:
        return {
            "artifact": ARTIFACT,
            "schema_version": self.schema_version,
            "tokenizer": asdict(self.tokenizer),
            "sources": [asdict(s) for s in self.sources],
            "options": self.options,
            "n_sequences": self.n_sequences,
            "n_bytes": self.n_bytes,
            "n_words": self.n_words,
            "summary": self.summary(),
            "fits": self.fits,
            "counts_file": counts_file,
            "counts_sha256": counts_sha256,
            "tokens": self.tokens,
        }

    @classmethod
    def load(cls, path: str | Path) -> CorpusStats:
        """Read a CorpusStats written by `save`, either form (never unpickles)."""
        path = Path(path)
        obj, read_array = artifacts.read_artifact(path, ARTIFACT, SCHEMA_VERSION)
        try:
            counts_file = obj["counts_file"]
            if not isinstance(counts_file, str) or Path(counts_file).name != counts_file:
                raise ArtifactError(f"{path}: invalid counts_file {counts_file!r}; regenerate the stats")
            counts = read_array(counts_file, obj["counts_sha256"], "counts")
            if counts.dtype != np.int64 or counts.ndim != 1:
                raise ArtifactError(f"{path}: counts must be a 1-D int64 array, got {counts.dtype} {counts.shape}")
            tokens = obj["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ArtifactError(f"{path}: 'tokens' must be a list of strings; regenerate the stats")
            stats = cls(
                counts=counts,
                tokens=tokens,
                tokenizer=TokenizerInfo(**obj["tokenizer"]),
                sources=[SourceInfo(**s) for s in obj["sources"]],
                options=dict(obj["options"]),
                n_sequences=int(obj["n_sequences"]),
                n_bytes=int(obj["n_bytes"]),
                n_words=int(obj["n_words"]),
                fits=dict(obj["fits"]),
                schema_version=obj["schema_version"],
            )
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError, MismatchError) as e:
            raise ArtifactError(f"{path}: malformed CorpusStats ({type(e).__name__}: {e}); regenerate it") from None
        if stats.tokenizer.vocab_size != stats.vocab_size:
            raise ArtifactError(
                f"{path}: tokenizer vocab_size {stats.tokenizer.vocab_size} != {stats.vocab_size} counts; regenerate it"
            )
        return stats


def _all_integral(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating) and bool(np.all(np.isfinite(a))) and bool(np.all(a == np.round(a)))


def summarize(counts: np.ndarray, n_bytes: int = 0, n_words: int = 0, n_sequences: int = 0) -> dict[str, Any]:
    """Statistics of a count vector; `n_bytes`/`n_words` give bytes per token and tokens per word when known."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    seen = counts[counts > 0]
    out: dict[str, Any] = {
        "total_tokens": total,
        "vocab_size": int(counts.size),
        "types_seen": int(seen.size),
        "never_seen_ids": int(counts.size - seen.size),
        "hapax_legomena": int(np.count_nonzero(counts == 1)),
        "sequences": int(n_sequences),
    }
    if total == 0:
        out.update(
            entropy_bits=0.0,
            good_turing_unseen_mass=0.0,
            bytes_per_token=None,
            tokens_per_word=None,
            coverage_top_k={},
            k_for_coverage={},
        )
        return out
    p = seen / total
    out["entropy_bits"] = float(-(p * np.log2(p)).sum())
    out["perplexity_unigram"] = float(2.0 ** out["entropy_bits"])
    # Good-Turing: probability mass of types not yet seen ~ N1 / N.
    out["good_turing_unseen_mass"] = out["hapax_legomena"] / total
    out["bytes_per_token"] = n_bytes / total if n_bytes else None
    out["tokens_per_word"] = total / n_words if n_words else None
    cum = np.cumsum(np.sort(counts)[::-1])  # (V,) tokens covered by the top k+1 ids
    ks = [2**i for i in range(int(math.log2(counts.size)) + 1)]
    if ks[-1] != counts.size:
        ks.append(int(counts.size))
    out["coverage_top_k"] = {str(k): float(cum[k - 1] / total) for k in ks}
    # Smallest k whose top-k ids cover at least the target share of tokens.
    out["k_for_coverage"] = {
        f"{t:g}": int(np.searchsorted(cum, math.ceil(t * total - 1e-9), side="left") + 1) for t in COVERAGE_TARGETS
    }
    return out


def merge(stats: list[CorpusStats]) -> CorpusStats:
    """Sum the stats of shards of one corpus counted with the same tokenizer and options.

    Example:
        >>> a = CorpusStats.from_counts([1, 2]); merge([a, a]).counts.tolist()
        [2, 4]
    """
    if not stats:
        raise MismatchError("nothing to merge; pass at least one stats file")
    first = stats[0]
    for i, s in enumerate(stats[1:], start=1):
        if (s.tokenizer.kind, s.tokenizer.sha256) != (first.tokenizer.kind, first.tokenizer.sha256):
            raise MismatchError(
                f"stats #{i} was counted with tokenizer {s.tokenizer.name!r} ({s.tokenizer.sha256[:12]}), "
                f"stats #0 with {first.tokenizer.name!r} ({first.tokenizer.sha256[:12]}); "
                "merge only shards counted with the same tokenizer"
            )
        for key in ("sequence", "add_special_tokens"):
            if s.options.get(key) != first.options.get(key):
                raise MismatchError(
                    f"stats #{i} has {key}={s.options.get(key)!r} but stats #0 has {first.options.get(key)!r}; "
                    "re-run analyze with the same options"
                )
    if first.tokenizer.kind == "word":
        counts, tokens = _merge_by_string(stats)
    else:
        if any(s.vocab_size != first.vocab_size for s in stats):
            raise MismatchError("vocabulary sizes differ; merge only shards counted with the same tokenizer")
        counts, tokens = sum((s.counts for s in stats), np.zeros(first.vocab_size, np.int64)), list(first.tokens)
    options = dict(first.options)
    options["merged_from"] = len(stats)
    out = CorpusStats(
        counts=counts,
        tokens=tokens,
        tokenizer=TokenizerInfo(**{**asdict(first.tokenizer), "vocab_size": int(counts.size)}),
        sources=[src for s in stats for src in s.sources],
        options=options,
        n_sequences=sum(s.n_sequences for s in stats),
        n_bytes=sum(s.n_bytes for s in stats),
        n_words=sum(s.n_words for s in stats),
    )
    out.refit()
    return out


def _merge_by_string(stats: list[CorpusStats]) -> tuple[np.ndarray, list[str]]:
    """Word-level shards each built their own vocabulary: add counts by word, then re-rank (id 0 stays <unk>)."""
    totals: dict[str, int] = {}
    for s in stats:
        for tok, c in zip(s.tokens, s.counts.tolist()):
            totals[tok] = totals.get(tok, 0) + c
    tokens = word_vocab_order(totals)
    return np.array([totals[t] for t in tokens], dtype=np.int64), tokens


# GPT-2's ByteLevel alphabet: the character each byte is written as in a byte-level vocabulary.
_KEPT = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
_BYTE_CHAR = {b: chr(b) if b in _KEPT else chr(256 + sum(1 for c in range(b) if c not in _KEPT)) for b in range(256)}
_WS_CHARS = {_BYTE_CHAR[b] for b in b" \t\n\r\x0b\x0c"} | {"▁", " ", "\t", "\n", "\r"}


def _token_kinds(tokens: list[str], counts: np.ndarray) -> list[str]:
    """The kind of every id's token string (see `CorpusStats.under_trained`)."""
    vocab = {t: i for i, t in enumerate(tokens) if t}
    byte_level = all(c in vocab for c in _BYTE_CHAR.values())
    seen = counts[counts > 0]
    common = float(np.median(seen)) if seen.size else 1.0
    kinds = []
    for i, t in enumerate(tokens):
        if (byte_level and len(t) == 1) or (len(t) == 6 and t.startswith("<0x") and t.endswith(">")):
            kinds.append("byte")
        elif t and all(c in _WS_CHARS for c in t):
            kinds.append("whitespace")
        elif len(t) >= 3 and t[0] + t[-1] in ("<>", "[]") and " " not in t:
            kinds.append("special")
        elif counts[i] == 0 and any(
            counts[vocab.get(t[:k], i)] >= common and counts[vocab.get(t[k:], i)] >= common for k in range(1, len(t))
        ):
            kinds.append("unreached_merge")
        else:
            kinds.append("other")
    return kinds
