"""Plan: the artifact of the `optimize` stage — the design of one adaptive-softmax output layer.

Inputs: CorpusStats (for the frequency order and the target distribution), a hidden size, cutoffs and
projection sizes (by hand via `Plan.from_cutoffs`, or from `vocabopt.optimize`).
Outputs: `plan.json` (everything a person needs to read the design) and `<stem>.order.<hash>.npy` /
`<stem>.counts.<hash>.npy` beside it (int64 arrays of length V, named by their sha256); or `plan.npz`, one file
holding both (the single-file form of `vocabopt.artifacts`).
`vocabopt.build_layer(plan)` and `vocabopt export` consume it.

Vocabulary layout, in frequency-rank space: see `vocabopt.design` (which holds every rule the Plan derives from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts, design
from .errors import ArtifactError, InputError

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.Plan"
MODES = ("train", "infer")


@dataclass
class Plan:
    """The design of an adaptive softmax: frequency order, cutoffs, per-cluster projection sizes, provenance.

    Example:
        >>> import numpy as np
        >>> plan = Plan.from_cutoffs(np.array([5, 1, 9, 3, 0, 2]), hidden=8, cutoffs=[2, 4])
        >>> plan.cluster_sizes, plan.proj_dims, plan.order.tolist()
        ([2, 2, 2], [2, 1], [2, 0, 3, 5, 1, 4])
    """

    vocab_size: int
    hidden: int
    order: np.ndarray  # (V,) int64: frequency rank -> original token id (most frequent first)
    cutoffs: list[int]  # strictly increasing, in (0, V)
    proj_dims: list[int]  # one per tail cluster, each in [1, hidden]
    counts_by_rank: np.ndarray  # (V,) int64 counts by frequency rank (the target distribution; head-bias init)
    mode: str = "train"  # what it was optimized for: "train" (known targets) | "infer" (generation)
    batch_tokens: int | None = None  # tokens per step the plan was optimized for
    predicted: dict[str, Any] = field(default_factory=dict)  # cost-model predictions (by the optimizer)
    provenance: dict[str, Any] = field(default_factory=dict)  # tokenizer, stats path, profile, options
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.order = np.asarray(self.order, dtype=np.int64)
        self.counts_by_rank = np.asarray(self.counts_by_rank, dtype=np.int64)
        self.cutoffs = [int(c) for c in self.cutoffs]
        self.proj_dims = [int(p) for p in self.proj_dims]
        self.vocab_size, self.hidden = int(self.vocab_size), int(self.hidden)
        self.validate()

    def __repr__(self) -> str:
        """One line (the arrays are V long): V, d, cutoffs, projections, capacity, batch, predicted speedup."""
        speedup = self.predicted.get("speedup")
        return (
            f"Plan(V={self.vocab_size:,}, d={self.hidden}, cutoffs={self.cutoffs}, proj_dims={self.proj_dims}, "
            f"capacity={self.capacity:.3f}, mode={self.mode}"
            + (f", N={self.batch_tokens:,}" if self.batch_tokens else "")
            + (f", predicted {speedup:.2f}x" if isinstance(speedup, int | float) else "")
            + ")"
        )

    # --- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_cutoffs(
        cls,
        stats: Any,
        hidden: int,
        cutoffs: list[int],
        proj_dims: list[int] | None = None,
        div_value: float = design.DIV_VALUE,
        **kw: Any,
    ) -> Plan:
        """A plan built by hand from corpus statistics and cutoffs.

        Args:
            stats: a `CorpusStats`, or a 1-D array of counts indexed by token id.
            hidden: width d of the hidden states fed to the layer.
            cutoffs: rank boundaries; `cutoffs[0]` is the head's shortlist size.
            proj_dims: projection size per tail cluster; default ALSWL's rule `hidden // div_value**(i+1)`
                (clamped to at least 1).
            div_value: the divisor of that rule.
            **kw: other Plan fields (mode, batch_tokens, predicted, provenance).

        Example:
            >>> plan = Plan.from_cutoffs(np.arange(100)[::-1], hidden=64, cutoffs=[10, 40])
            >>> plan.proj_dims
            [16, 4]
        """
        counts = np.asarray(getattr(stats, "counts", stats))
        if counts.ndim != 1 or counts.size < 2 or not np.issubdtype(counts.dtype, np.integer):
            raise InputError(
                f"stats must be a CorpusStats or a 1-D integer array of counts with at least 2 ids, "
                f"got {counts.dtype} array of shape {counts.shape}"
            )
        counts = counts.astype(np.int64)
        order = design.frequency_order(counts)
        cutoffs = design.as_int_list(cutoffs, "cutoffs")
        if proj_dims is None:
            proj_dims = design.proj_dims(hidden, len(cutoffs), div_value=div_value)
        provenance = dict(kw.pop("provenance", {}) or {})
        tok = getattr(stats, "tokenizer", None)
        if tok is not None:
            provenance.setdefault("tokenizer", tokenizer_record(stats))
        provenance.setdefault("method", "from_cutoffs")
        return cls(
            vocab_size=int(counts.size),
            hidden=hidden,
            order=order,
            cutoffs=cutoffs,
            proj_dims=design.as_int_list(proj_dims, "proj_dims"),
            counts_by_rank=counts[order],
            provenance=provenance,
            **kw,
        )

    # --- validation -------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise InputError naming the first problem and its fix; all checks are O(V) numpy."""
        V, d = self.vocab_size, self.hidden
        if V < 2:
            raise InputError(f"vocab_size must be at least 2, got {V}")
        if d < 1:
            raise InputError(f"hidden must be a positive width, got {d}")
        design.check_cutoffs(self.cutoffs, V)
        design.check_proj_dims(self.proj_dims, d, len(self.cutoffs))
        if self.order.shape != (V,) or self.counts_by_rank.shape != (V,):
            raise InputError(
                f"order {self.order.shape} and counts {self.counts_by_rank.shape} must both have shape ({V},)"
            )
        if not np.array_equal(np.sort(self.order), np.arange(V)):
            raise InputError("order must be a permutation of 0..vocab_size-1 (rank -> token id)")
        if self.counts_by_rank.size and self.counts_by_rank.min() < 0:
            raise InputError("counts must be non-negative")
        if self.mode not in MODES:
            raise InputError(f"mode {self.mode!r} is not one of {MODES}")
        if self.batch_tokens is not None and int(self.batch_tokens) < 1:
            raise InputError(f"batch_tokens must be a positive number of tokens, got {self.batch_tokens}")

    # --- derived quantities -----------------------------------------------------------------------------

    @property
    def n_clusters(self) -> int:
        """Number of tail clusters."""
        return len(self.cutoffs)

    @property
    def shortlist_size(self) -> int:
        """Tokens scored directly by the head."""
        return self.cutoffs[0]

    @property
    def head_size(self) -> int:
        """Head outputs: the shortlist plus one logit per tail cluster."""
        return self.cutoffs[0] + len(self.cutoffs)

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """Rank ranges [lo, hi) of the head shortlist and of each tail cluster."""
        return design.bounds(self.cutoffs, self.vocab_size)

    @property
    def cluster_sizes(self) -> list[int]:
        """Sizes of the head shortlist and of each tail cluster (sums to V)."""
        return [hi - lo for lo, hi in self.bounds]

    @property
    def cluster_shares(self) -> list[float]:
        """Share of target tokens in the shortlist and in each tail cluster (p_i of the paper)."""
        return design.cluster_shares(self.counts_by_rank, self.cutoffs)

    @property
    def capacity(self) -> float:
        """Share-weighted output width over hidden (1 = full softmax): `design.capacity`."""
        return design.capacity(self.cluster_shares, self.hidden, self.proj_dims)

    @property
    def counts_by_id(self) -> np.ndarray:
        """(V,) int64 counts indexed by original token id (the inverse permutation of `counts_by_rank`)."""
        out = np.empty_like(self.counts_by_rank)
        out[self.order] = self.counts_by_rank
        return out

    @property
    def rank_of(self) -> np.ndarray:
        """(V,) int64: original token id -> frequency rank (the inverse of `order`)."""
        inv = np.empty_like(self.order)
        inv[self.order] = np.arange(self.vocab_size, dtype=np.int64)
        return inv

    def n_params(self, tail_bias: bool = True, head_bias: bool = True) -> int:
        """Parameters of the layer built from this plan (with biases as `build_layer` defaults)."""
        return design.n_params(
            self.vocab_size, self.hidden, self.cutoffs, self.proj_dims, head_bias=head_bias, tail_bias=tail_bias
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description of the design (used by the CLI and in the saved JSON)."""
        dims = [self.hidden, *self.proj_dims]
        return {
            "clusters": [
                {"ranks": [lo, hi], "size": hi - lo, "share": round(s, 6), "proj_dim": p}
                for (lo, hi), s, p in zip(self.bounds, self.cluster_shares, dims, strict=True)
            ],
            "head_size": self.head_size,
            "params": self.n_params(),
            "full_softmax_params": design.full_softmax_params(self.vocab_size, self.hidden),
        }

    # --- persistence ------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write `path` (JSON) and `<stem>.order.<hash>.npy` / `<stem>.counts.<hash>.npy` beside it, atomically;
        or, for a path ending in `.npz`, one file holding the same JSON and both arrays (`artifacts` explains)."""
        single = artifacts.is_single_file(path)
        files, blobs = {}, {}
        for name, array in (("order", self.order), ("counts", self.counts_by_rank)):  # JSON names stay as saved
            data = artifacts.npy_bytes(array)
            where = Path(f"{name}.npy") if single else artifacts.sidecar_path(path, name, data)
            blobs[where] = data
            files[name] = {"file": where.name, "sha256": artifacts.sha256_bytes(data)}
        obj = self.to_json(files)
        if single:
            artifacts.write_single_file(path, obj, {p.name: data for p, data in blobs.items()})
        else:
            artifacts.write_with_sidecars(path, blobs, lambda: artifacts.dumps_json(obj).encode("ascii"))

    def to_json(self, files: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "artifact": ARTIFACT,
            "schema_version": self.schema_version,
            "vocab_size": self.vocab_size,
            "hidden": self.hidden,
            "cutoffs": self.cutoffs,
            "proj_dims": self.proj_dims,
            "mode": self.mode,
            "batch_tokens": self.batch_tokens,
            "predicted": self.predicted,
            "provenance": self.provenance,
            "summary": self.summary(),
            "arrays": files or {},
        }

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a Plan written by `save`, either form (never unpickles); ArtifactError if it is not one."""
        path = Path(path)
        obj, read_array = artifacts.read_artifact(path, ARTIFACT, SCHEMA_VERSION)
        try:
            arrays = {}
            for name in ("order", "counts"):
                spec = obj["arrays"][name]
                fname = spec["file"]
                if not isinstance(fname, str) or Path(fname).name != fname:
                    raise ArtifactError(f"{path}: invalid {name} file name {fname!r}; regenerate the plan")
                arr = read_array(fname, spec["sha256"], name)
                if arr.dtype != np.int64 or arr.ndim != 1:
                    raise ArtifactError(f"{path}: {name} must be a 1-D int64 array, got {arr.dtype} {arr.shape}")
                arrays["counts_by_rank" if name == "counts" else name] = arr
            return cls(
                vocab_size=obj["vocab_size"],
                hidden=obj["hidden"],
                cutoffs=list(obj["cutoffs"]),
                proj_dims=list(obj["proj_dims"]),
                mode=obj.get("mode", "train"),
                batch_tokens=obj.get("batch_tokens"),
                predicted=dict(obj.get("predicted") or {}),
                provenance=dict(obj.get("provenance") or {}),
                schema_version=obj["schema_version"],
                **arrays,
            )
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError, InputError) as e:
            raise ArtifactError(f"{path}: malformed Plan ({type(e).__name__}: {e}); regenerate it") from None


def tokenizer_record(stats: Any) -> dict[str, Any] | None:
    """How the stats turned text into ids: the tokenizer and the sequence mode the counts were made with, so that
    validate and tune read the corpus the same way."""
    tok = getattr(stats, "tokenizer", None)
    if tok is None:
        return None
    record = {"name": tok.name, "sha256": tok.sha256, "kind": tok.kind}
    sequence = (getattr(stats, "options", None) or {}).get("sequence")
    return {**record, "sequence": sequence} if sequence else record
