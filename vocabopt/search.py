"""The search: dynamic programming over cutoffs, for the `optimize` stage.

Inputs: a DeviceProfile, the target distribution by frequency rank, the hidden size, the tokens per step and a
`SearchSpace` (cluster counts, projection rule, head bounds, grid size). Outputs: `Design`s — the best one for each
number of tail clusters and the Pareto frontier over (predicted time, capacity).

Method (Grave et al. 2017, §4): clusters are contiguous blocks of the frequency-sorted vocabulary, so for J tail
clusters the cost head(k_0 + J) + sum_i tail_i(start_i, end_i) is minimised exactly by dynamic programming over
cutoffs on a candidate grid (every rank for small vocabularies; log-spaced, rounded to the profile's alignment for
large ones). The DP sums the same per-cluster costs that `cost.predict` does, so its optimum is the model's
optimum. One DP pass also gives the best tails for every head size: that family is the frontier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import cost, design
from .errors import InputError


@dataclass
class Design:
    """One candidate design and what the cost model says of it."""

    cutoffs: list[int]
    proj_dims: list[int]
    time_ms: float
    params: int
    capacity: float  # frequency-weighted width: sum over clusters of share * dim / hidden (1.0 = full softmax)

    def to_json(self) -> dict[str, Any]:
        return {
            "cutoffs": self.cutoffs,
            "proj_dims": self.proj_dims,
            "time_ms": round(self.time_ms, 6),
            "params": self.params,
            "capacity": round(self.capacity, 6),
        }

    @classmethod
    def build(
        cls, counts_by_rank: np.ndarray, hidden: int, cutoffs: list[int], dims: list[int], time_ms: float
    ) -> Design:
        """A design with its parameter count and capacity, both from `vocabopt.design`."""
        shares = design.cluster_shares(counts_by_rank, cutoffs)
        n = design.n_params(len(counts_by_rank), hidden, cutoffs, dims)
        return cls(cutoffs, dims, time_ms, n, design.capacity(shares, hidden, dims))


@dataclass(frozen=True)
class SearchSpace:
    """Which designs the search considers: cluster counts, the projection rule, head bounds, grid size."""

    max_clusters: int = 4
    div_value: float = design.DIV_VALUE
    min_proj: int | None = None
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


def candidate_grid(vocab: int, n: int, alignment: int, lo: int = 1, hi: int | None = None) -> np.ndarray:
    """Cutoff positions in [lo, hi]: every rank if few enough, else ~n log-spaced ones (aligned)."""
    hi = vocab - 1 if hi is None else min(hi, vocab - 1)
    if vocab - 1 <= n:
        return np.arange(max(lo, 1), hi + 1)
    g = np.round(np.geomspace(1, vocab - 1, n)).astype(np.int64)
    big = g >= 4 * alignment  # small heads stay exact; a misaligned width only matters for wide matrices
    g[big] = np.round(g[big] / alignment).astype(np.int64) * alignment
    g = np.concatenate([g, [lo, hi]])
    return np.unique(g[(g >= max(lo, 1)) & (g <= hi)])


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
    """Run the DP for 1..max_clusters tails; return the best design per J and all designs on the frontier."""
    space = space or SearchSpace()
    counts = np.asarray(counts_by_rank, dtype=np.int64)
    vocab = len(counts)
    if batch_tokens < 1:
        raise InputError(f"batch_tokens must be >= 1 (tokens per step), got {batch_tokens}")
    space.check(vocab, hidden)
    head_lo, head_hi = max(1, space.min_head or 1), min(vocab - 1, space.max_head or vocab)
    positions = candidate_grid(vocab, space.candidates, int(getattr(profile, "alignment", 8)))
    positions = np.unique(np.concatenate([positions, [head_lo, min(head_hi, vocab - 1)]]))
    alignment = int(getattr(profile, "alignment", 8))
    min_tail = space.min_tail if space.min_tail is not None else min(alignment, max(1, vocab // 64))
    dp = _Search(profile, counts, hidden, batch_tokens, positions, mode, decode, min_tail)
    max_j = space.max_clusters if space.proj_dims is None else min(space.max_clusters, len(space.proj_dims))
    per_j: dict[int, Design] = {}
    family: list[Design] = []
    for J in range(1, min(max_j, len(positions)) + 1):
        dims = space.dims(hidden, J)
        total, back = dp.solve(dims, head_lo, head_hi)
        family += [
            Design.build(counts, hidden, dp.cutoffs(int(a), back), dims, float(total[a]))
            for a in np.flatnonzero(np.isfinite(total))
        ]
        if np.isfinite(total).any():
            a = int(np.argmin(total))
            per_j[J] = Design.build(counts, hidden, dp.cutoffs(a, back), dims, float(total[a]))
    if not per_j:
        raise InputError(
            f"no design fits: vocabulary {vocab}, head size in [{head_lo}, {head_hi}], "
            f"up to {space.max_clusters} clusters; "
            "loosen --min-head/--max-head, lower --max-clusters or min_tail"
        )
    full = cost.predict(
        profile, counts, hidden=hidden, cutoffs=[], proj_dims=[], batch_tokens=batch_tokens, mode=mode, decode=decode
    )
    # full_ms: a frontier design slower than the full softmax is dominated by it (capacity 1)
    return {"per_clusters": per_j, "frontier": pareto(family), "candidates": len(positions), "full_ms": full.time_ms}


def pareto(designs: list[Design]) -> list[Design]:
    """Designs no other beats on both time (lower) and capacity (higher), fastest first."""
    out: list[Design] = []
    for d in sorted(designs, key=lambda d: (d.time_ms, -d.capacity)):
        if not out or d.capacity > out[-1].capacity + 1e-12:
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
