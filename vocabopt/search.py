"""The search: dynamic programming over cutoffs, for the `optimize` stage.

Inputs: a DeviceProfile, the target distribution by frequency rank, the hidden size, the tokens per step and a
`SearchSpace` (cluster counts, projection rule, head bounds, grid size). Outputs: `Design`s — the best one for each
number of tail clusters and the Pareto frontier over (predicted time, capacity).

Method (Grave et al. 2017, §4): clusters are contiguous blocks of the frequency-sorted vocabulary, so for J tail
clusters the cost head(k_0 + J) + sum_i tail_i(start_i, end_i) is minimised exactly by dynamic programming over
cutoffs on a candidate grid (every rank for small vocabularies; log-spaced multiples of the profile's alignment for
large ones). The DP sums the same per-cluster costs that `cost.predict` does, so its optimum is the model's
optimum. One DP pass also gives the best tails for every head size: that family is the frontier.

Sane candidates only: no design predicted to need more activation memory than the full softmax in the same mode,
no frontier design slower than the full softmax (it dominates them: capacity 1), no tail of fewer than `min_tail`
ids, no projection below `min_proj` (default: the profile's alignment, see `default_min_proj`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import cost, design
from .errors import InputError
from .kernels import ELEMENT_BYTES


@dataclass
class Design:
    """One candidate design and what the cost model says of it."""

    cutoffs: list[int]
    proj_dims: list[int]
    time_ms: float
    params: int
    capacity: float  # frequency-weighted width: sum over clusters of share * dim / hidden (1.0 = full softmax)
    memory_bytes: float = 0.0  # predicted peak activation bytes of one step (as `cost.predict`)

    def to_json(self) -> dict[str, Any]:
        return {
            "cutoffs": self.cutoffs,
            "proj_dims": self.proj_dims,
            "time_ms": round(self.time_ms, 6),
            "memory_bytes": int(self.memory_bytes),
            "params": self.params,
            "capacity": round(self.capacity, 6),
        }

    @classmethod
    def build(
        cls,
        counts_by_rank: np.ndarray,
        hidden: int,
        cutoffs: list[int],
        dims: list[int],
        time_ms: float,
        memory_bytes: float = 0.0,
    ) -> Design:
        """A design with its parameter count and capacity, both from `vocabopt.design`."""
        shares = design.cluster_shares(counts_by_rank, cutoffs)
        n = design.n_params(len(counts_by_rank), hidden, cutoffs, dims)
        return cls(cutoffs, dims, time_ms, n, design.capacity(shares, hidden, dims), memory_bytes)


@dataclass(frozen=True)
class SearchSpace:
    """Which designs the search considers: cluster counts, the projection rule, head bounds, grid size."""

    max_clusters: int = 4
    div_value: float = design.DIV_VALUE
    min_proj: int | None = None  # None: `default_min_proj` (the profile's alignment); 1: no floor
    proj_dims: list[int] | None = None  # explicit sizes: also cap the number of clusters
    min_head: int | None = None
    max_head: int | None = None
    candidates: int = 256  # cutoff grid size
    # smallest tail cluster in ids; None: the profile's alignment, at most V // 64 (a 1-id tail is a head logit)
    min_tail: int | None = None

    def dims(self, hidden: int, n_tails: int) -> list[int]:
        """Projection sizes for `n_tails` tails: the explicit ones, else `design.proj_dims`'s rule."""
        if self.proj_dims is not None:
            if len(self.proj_dims) < n_tails:
                raise InputError(
                    f"{len(self.proj_dims)} proj_dims {self.proj_dims} for {n_tails} clusters; pass one per cluster"
                )
            return [int(p) for p in self.proj_dims[:n_tails]]
        return design.proj_dims(hidden, n_tails, div_value=self.div_value, min_proj=self.min_proj)

    def fits(self, n_tails: int) -> bool:
        """Whether a design with `n_tails` tails can take its projection sizes from this space."""
        return self.proj_dims is None or len(self.proj_dims) >= n_tails

    def check(self, vocab: int, hidden: int) -> None:
        """InputError naming the first option that leaves no design to search."""
        _check_space(self, vocab, hidden)

    def resolved(self, profile: Any, vocab: int, hidden: int) -> SearchSpace:
        """This space with the profile-dependent defaults filled in: `min_proj` (`default_min_proj`) and `min_tail`
        (the profile's alignment, at most V // 64)."""
        alignment = _alignment(profile)
        min_proj = self.min_proj
        if min_proj is None and self.proj_dims is None:
            min_proj = default_min_proj(profile, hidden)
        min_tail = self.min_tail if self.min_tail is not None else min(alignment, max(1, vocab // 64))
        return replace(self, min_proj=min_proj, min_tail=min_tail)


def _alignment(profile: Any) -> int:
    return max(1, int(getattr(profile, "alignment", 8)))


def default_min_proj(profile: Any, hidden: int) -> int:
    """The default floor on projection sizes: the profile's alignment (8, or 64 where unaligned widths measured
    slower), at most `hidden`.

    Evidence (docs/optimizer.md, tests/test_search.py): the shipped 2-core CPU profile's tail loss kernels take
    within a few percent the same time at inner dimension 4 as at 16 (median ratio 1.02-1.05 at points with
    rows x out >= 2^20), the projection matmul is not measured below an output width of 16 (the model clamps it:
    flat), and below an inner dimension of 4 every table is clamped. So the cost model predicts that projections
    below 8 make the fastest design at most ~2% faster (V=268K Zipf, d 256-1024, train and greedy; 0.3% on KJV),
    while each halving halves the tail's capacity. `min_proj=1` restores the unconstrained rule.
    """
    return max(1, min(int(hidden), _alignment(profile)))


def candidate_grid(vocab: int, n: int, alignment: int, lo: int = 1, hi: int | None = None) -> np.ndarray:
    """Cutoff positions in [lo, hi]: every rank if few enough, else ~n log-spaced multiples of `alignment`.

    On the aligned grid every cutoff, hence every tail but the last, is a multiple of the alignment; `lo`/`hi` are
    moved inward to multiples of it (kept as they are only when no multiple lies between them).
    """
    hi = vocab - 1 if hi is None else min(hi, vocab - 1)
    lo = max(lo, 1)
    if vocab - 1 <= n:
        return np.arange(lo, hi + 1)
    g = np.round(np.geomspace(alignment, vocab - 1, n) / alignment).astype(np.int64) * alignment
    a_lo, a_hi = -(-lo // alignment) * alignment, hi // alignment * alignment
    g = np.concatenate([g, [a_lo, a_hi]] if a_lo <= a_hi else [g, [lo, hi]])
    return np.unique(g[(g >= lo) & (g <= hi)])


class _Search:
    """Dynamic programming over cutoffs for one (profile, distribution, hidden, N, mode)."""

    def __init__(
        self,
        profile: Any,
        counts_by_rank: np.ndarray,
        hidden: int,
        batch_tokens: int,
        positions: np.ndarray,
        mode: str,
        decode: str,
        min_tail: int = 1,
    ) -> None:
        self.profile, self.hidden, self.n, self.mode, self.decode = (
            profile,
            hidden,
            batch_tokens,
            mode,
            decode,
        )
        self.counts = np.asarray(counts_by_rank, dtype=np.int64)
        self.vocab = len(self.counts)
        self.pos = np.asarray(positions, dtype=np.int64)  # (m,) candidate starts of tail clusters
        self.ends = np.append(self.pos, self.vocab)  # (m+1,) candidate ends
        cum = np.concatenate([[0.0], np.cumsum(self.counts, dtype=np.float64)])
        self.cum_share = cum / max(cum[-1], 1.0)  # (V+1,) share of targets in ranks [0, r)
        self.min_tail = min_tail
        self._tail: dict[int, np.ndarray] = {}

    def tail_matrix(self, proj: int) -> np.ndarray:
        """(m, m+1) predicted ms of a tail [pos[a], ends[b]) with projection `proj`; inf where b <= a or the tail
        would hold fewer than `min_tail` ids."""
        if proj not in self._tail:
            m = len(self.pos)
            a, b = np.triu_indices(m, k=1, m=m + 1)
            size = self.ends[b] - self.pos[a]
            share = self.cum_share[self.ends[b]] - self.cum_share[self.pos[a]]
            ms, _ = cost.tail_ms(
                self.profile, self.n, self.hidden, proj=proj, size=size, share=share, mode=self.mode, decode=self.decode
            )
            mat = np.full((m, m + 1), np.inf)
            mat[a, b] = np.where(size >= self.min_tail, ms, np.inf)
            self._tail[proj] = mat
        return self._tail[proj]

    def solve(self, projs: list[int], head_lo: int, head_hi: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Best cost for each head size pos[a] with len(projs) tails, and back-pointers to rebuild them."""
        J, m = len(projs), len(self.pos)
        best = self.tail_matrix(projs[-1])[:, m].copy()  # (m,) the last tail ends at V
        back = []
        for i in range(J - 2, -1, -1):
            total = self.tail_matrix(projs[i])[:, :m] + best[None, :]  # (m, m): tail i then the best rest
            arg = np.argmin(total, axis=1)
            best = total[np.arange(m), arg]
            back.append(arg)
        back.reverse()  # back[i][a]: start of tail i+1 when tail i starts at pos[a]
        head, _ = cost.head_ms(
            self.profile, self.n, self.hidden, self.pos + J, mode=self.mode, decode=self.decode, vocab=self.vocab
        )
        total = head + best
        total[(self.pos < head_lo) | (self.pos > head_hi)] = np.inf
        return total, back

    def cutoffs(self, a: int, back: list[np.ndarray]) -> list[int]:
        cut = [int(self.pos[a])]
        for arg in back:
            a = int(arg[a])
            cut.append(int(self.pos[a]))
        return cut

    def memory(self, cutoffs: list[int], dims: list[int]) -> float:
        """Predicted peak activation bytes of a design: the sum `cost.predict` makes of `cost.cluster_bytes`
        (tests/test_search.py pins the two together), without its per-kernel timing."""
        n, d, mode = self.n, self.hidden, self.mode
        full_rows = mode == "infer" and self.decode == "full"  # every tail on all N rows
        eb = ELEMENT_BYTES[self.profile.dtype]
        saved, peak = cost.cluster_bytes(n, d, 0, cutoffs[0] + len(cutoffs), mode=mode, element_bytes=eb, tail=False)
        total, peak = float(saved), float(peak)
        edges = [*cutoffs, self.vocab]
        for lo, hi, proj in zip(edges[:-1], edges[1:], dims, strict=True):
            rows = float(n) if full_rows else (self.cum_share[hi] - self.cum_share[lo]) * n
            saved, transient = cost.cluster_bytes(rows, d, proj, hi - lo, mode=mode, element_bytes=eb, tail=True)
            total, peak = total + float(saved), max(peak, float(transient))
        return total + peak + (2 * 4 * n * self.vocab if full_rows else 0.0)  # + the assembled (N, V) fp32 log-probs


def search(
    profile: Any,
    counts_by_rank: np.ndarray,
    hidden: int,
    batch_tokens: int,
    *,
    mode: str = "train",
    decode: str = "full",
    space: SearchSpace | None = None,
) -> dict[str, Any]:
    """Run the DP for 1..max_clusters tails; return the best design per J and the frontier.

    Only designs predicted to need no more activation memory than the full softmax (same mode) are kept; the
    frontier also leaves out designs not faster than it. Returns {"per_clusters": {J: Design}, "frontier":
    [Design] fastest first, "candidates": grid size, "full_ms", "full_memory_bytes", "space": the resolved
    SearchSpace, "over_memory": how many designs the memory rule left out, "mode", "decode"}.
    """
    counts = np.asarray(counts_by_rank, dtype=np.int64)
    vocab = len(counts)
    if batch_tokens < 1:
        raise InputError(f"batch_tokens must be >= 1 (tokens per step), got {batch_tokens}")
    (space or SearchSpace()).check(vocab, hidden)
    space = (space or SearchSpace()).resolved(profile, vocab, hidden)
    head_lo, head_hi = max(1, space.min_head or 1), min(vocab - 1, space.max_head or vocab)
    positions = candidate_grid(vocab, space.candidates, _alignment(profile), head_lo, head_hi)
    positions = np.unique(np.concatenate([positions, candidate_grid(vocab, space.candidates, _alignment(profile))]))
    dp = _Search(profile, counts, hidden, batch_tokens, positions, mode, decode, int(space.min_tail or 1))
    full = cost.predict(
        profile, counts, hidden=hidden, cutoffs=[], proj_dims=[], batch_tokens=batch_tokens, mode=mode, decode=decode
    )
    max_j = space.max_clusters if space.proj_dims is None else min(space.max_clusters, len(space.proj_dims))
    family: list[Design] = []
    for J in range(1, min(max_j, len(positions)) + 1):
        dims = space.dims(hidden, J)
        total, back = dp.solve(dims, head_lo, head_hi)
        for a in np.flatnonzero(np.isfinite(total)):
            cut = dp.cutoffs(int(a), back)
            family.append(Design.build(counts, hidden, cut, dims, float(total[a]), dp.memory(cut, dims)))
    if not family:
        raise InputError(
            f"no design fits: vocabulary {vocab}, head size in [{head_lo}, {head_hi}], "
            f"up to {space.max_clusters} clusters; "
            "loosen --min-head/--max-head, lower --max-clusters or min_tail"
        )
    # a design needing more memory than the full softmax is no design to propose (infer/full: the clusters' log-probs
    # are assembled into an (N, V) output beside the full softmax's own, so every design does)
    fits = [d for d in family if d.memory_bytes <= full.memory_bytes]
    per_j: dict[int, Design] = {}
    for d in sorted(fits, key=lambda d: d.time_ms):
        per_j.setdefault(len(d.cutoffs), d)
    return {
        "per_clusters": dict(sorted(per_j.items())),
        # a design slower than the full softmax is dominated by it (capacity 1)
        "frontier": pareto([d for d in fits if d.time_ms < full.time_ms]),
        "candidates": len(positions),
        "full_ms": full.time_ms,
        "full_memory_bytes": full.memory_bytes,
        "space": space,
        "over_memory": len(family) - len(fits),
        "mode": mode,
        "decode": decode,
    }


def pareto(designs: list, get: Callable[[Any, str], float] = getattr) -> list:
    """Designs no other beats on both time (lower) and capacity (higher), fastest first (one of equal ones).
    `get(design, field)` reads "time_ms" and "capacity": attributes of `Design`s, or `dict.get` for their JSON."""
    out: list = []
    for d in sorted(designs, key=lambda d: (get(d, "time_ms"), -get(d, "capacity"))):
        if not out or get(d, "capacity") > get(out[-1], "capacity") + 1e-12:
            out.append(d)
    return out


def _check_space(space: SearchSpace, vocab: int, hidden: int) -> None:
    if vocab < 3:
        raise InputError(f"vocabulary of {vocab} ids is too small for an adaptive softmax (need >= 3)")
    if hidden < 1:
        raise InputError(f"hidden must be a positive width, got {hidden}")
    if space.max_clusters < 1:
        raise InputError(
            f"max_clusters={space.max_clusters}: need at least one tail cluster; "
            "with none the layer is the full softmax (pass --max-clusters 1 or more)"
        )
    min_head, max_head = space.min_head, space.max_head
    if min_head is not None and min_head >= vocab:
        raise InputError(
            f"min_head={min_head} leaves no room for a tail in a vocabulary of {vocab}; "
            f"pass --min-head below {vocab - 1}"
        )
    if min_head is not None and min_head < 1:
        raise InputError(f"min_head={min_head} must be >= 1")
    if max_head is not None and max_head < max(1, min_head or 1):
        raise InputError(f"max_head={max_head} is below min_head={min_head or 1}; raise --max-head")
    if space.min_proj is not None and not 1 <= space.min_proj <= hidden:
        raise InputError(f"min_proj={space.min_proj} must be in [1, hidden={hidden}]")
    if space.proj_dims is not None:
        design.check_proj_dims(space.proj_dims, hidden)
    design.check_div_value(space.div_value)
    if space.min_tail is not None and space.min_tail < 1:
        raise InputError(f"min_tail={space.min_tail}: a tail cluster holds at least 1 id")
    if space.candidates < 2:
        raise InputError(f"candidates={space.candidates} (--candidates): need at least 2 grid points")
