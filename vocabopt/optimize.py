"""Optimizer: the `optimize` stage — cutoffs and projection sizes that minimise the predicted step time.

Inputs: CorpusStats (the target distribution, sorted by frequency), a DeviceProfile, the hidden size and the
tokens per step. Output: a `Plan` whose `predicted` holds the cost of the design, of the full softmax, of the
best design for each number of tail clusters, the Pareto frontier over (time, capacity) and the folklore
designs.

Method (Grave et al. 2017, §4): clusters are contiguous blocks of the frequency-sorted vocabulary, so for J
tail clusters the cost head(k_0 + J) + sum_i tail_i(start_i, end_i) is minimised exactly by dynamic
programming over cutoffs on a candidate grid (every rank for small vocabularies; log-spaced, rounded to the
profile's alignment for large ones). The DP sums the same per-cluster costs that `cost.predict` does, so its
optimum is the model's optimum. One DP pass also gives the best tails for every head size: that family is the
frontier.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import cost
from .errors import InputError
from .plan import Plan
from .version import __version__

log = logging.getLogger(__name__)

FOLKLORE: dict[str, list[int]] = {
    "paper/Lua": [2000, 10000],
    "fairseq WT103": [20000, 60000],
    "Transformer-XL": [20000, 40000, 200000],
}


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


def proj_rule(
    hidden: int,
    n_clusters: int,
    div_value: float = 4.0,
    min_proj: int | None = None,
    proj_dims: list[int] | None = None,
) -> list[int]:
    """Projection size per tail cluster: explicit dims, else hidden // div_value**(i+1), at least min_proj."""
    if proj_dims is not None:
        if len(proj_dims) < n_clusters:
            raise InputError(f"{len(proj_dims)} proj_dims {proj_dims} for {n_clusters} clusters; pass one per cluster")
        return [int(p) for p in proj_dims[:n_clusters]]
    floor = max(1, min_proj or 1)
    return [min(hidden, max(floor, int(hidden // (div_value ** (i + 1))))) for i in range(n_clusters)]


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


def capacity_of(shares: list[float], hidden: int, proj_dims: list[int]) -> float:
    return float(shares[0] + sum(s * p / hidden for s, p in zip(shares[1:], proj_dims, strict=True)))


def params_of(vocab: int, hidden: int, cutoffs: list[int], proj_dims: list[int]) -> int:
    """Weights and biases of the layer (as `Plan.n_params` counts them)."""
    edges = [*cutoffs, vocab]
    n = (cutoffs[0] + len(cutoffs)) * (hidden + 1)
    for i, p in enumerate(proj_dims):
        n += hidden * p + (edges[i + 1] - edges[i]) * (p + 1)
    return int(n)


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
        self._tail: dict[int, np.ndarray] = {}

    def tail_matrix(self, proj: int) -> np.ndarray:
        """(m, m+1) predicted ms of a tail [pos[a], ends[b]) with projection `proj`; inf where b <= a."""
        if proj not in self._tail:
            m = len(self.pos)
            a, b = np.triu_indices(m, k=1, m=m + 1)
            size = self.ends[b] - self.pos[a]
            share = self.cum_share[self.ends[b]] - self.cum_share[self.pos[a]]
            ms, _ = cost.tail_ms(self.profile, self.n, self.hidden, proj, size, share, self.mode, self.decode)
            mat = np.full((m, m + 1), np.inf)
            mat[a, b] = ms
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
        head, _ = cost.head_ms(self.profile, self.n, self.hidden, self.pos + J, self.mode, self.decode, self.vocab)
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
    mode: str = "train",
    decode: str = "full",
    max_clusters: int = 4,
    div_value: float = 4.0,
    min_proj: int | None = None,
    proj_dims: list[int] | None = None,
    min_head: int | None = None,
    max_head: int | None = None,
    candidates: int = 256,
) -> dict[str, Any]:
    """Run the DP for 1..max_clusters tails; return the best design per J and all designs on the frontier."""
    counts = np.asarray(counts_by_rank, dtype=np.int64)
    vocab = len(counts)
    _check(vocab, hidden, batch_tokens, max_clusters, min_head, max_head, min_proj, proj_dims)
    head_lo, head_hi = max(1, min_head or 1), min(vocab - 1, max_head or vocab)
    positions = candidate_grid(vocab, candidates, getattr(profile, "alignment", 8))
    positions = np.unique(np.concatenate([positions, [head_lo, min(head_hi, vocab - 1)]]))
    s = _Search(profile, counts, hidden, batch_tokens, positions, mode, decode)
    max_j = max_clusters if proj_dims is None else min(max_clusters, len(proj_dims))
    per_j: dict[int, Design] = {}
    family: list[Design] = []
    for J in range(1, max_j + 1):
        if J > len(positions):
            break
        projs = proj_rule(hidden, J, div_value, min_proj, proj_dims)
        total, back = s.solve(projs, head_lo, head_hi)
        for a in np.flatnonzero(np.isfinite(total)):
            cut = s.cutoffs(int(a), back)
            shares = cost.shares_of(counts, cut)
            family.append(
                Design(
                    cut,
                    projs,
                    float(total[a]),
                    params_of(vocab, hidden, cut, projs),
                    capacity_of(shares, hidden, projs),
                )
            )
        if np.isfinite(total).any():
            cut = s.cutoffs(int(np.argmin(total)), back)
            per_j[J] = Design(
                cut,
                projs,
                float(np.min(total)),
                params_of(vocab, hidden, cut, projs),
                capacity_of(cost.shares_of(counts, cut), hidden, projs),
            )
    if not per_j:
        raise InputError(
            f"no design fits: vocabulary {vocab}, head size in [{head_lo}, {head_hi}], "
            f"up to {max_clusters} clusters; "
            "loosen --min-head/--max-head or lower --max-clusters"
        )
    return {"per_clusters": per_j, "frontier": pareto(family), "candidates": len(positions)}


def pareto(designs: list[Design]) -> list[Design]:
    """Designs no other beats on both time (lower) and capacity (higher), fastest first."""
    out: list[Design] = []
    for d in sorted(designs, key=lambda d: (d.time_ms, -d.capacity)):
        if not out or d.capacity > out[-1].capacity + 1e-12:
            out.append(d)
    return out


# The default capacity floor. CAPACITY_CEILING: on the shipped corpus (docs/benchmarks.md, "validate") a 0.9 design
# trained as well as the full softmax while the fastest designs (~0.65, with 2-16-dimensional tails) trained 7-8%
# worse, so more than 0.9 is never required. Below that, the floor is the capacity the paper's own design
# (REFERENCE_DESIGN, clipped to the vocabulary, same projection rule) has on the user's distribution: a design that
# trained to near-full-softmax perplexity on large vocabularies (Grave et al. 2017), so the plan is never less
# expressive than the design a user would otherwise type in, only faster.
CAPACITY_CEILING = 0.9
REFERENCE_DESIGN = "paper/Lua"


def default_min_capacity(
    counts: np.ndarray, hidden: int, div_value: float, min_proj: int | None, proj_dims: list[int] | None
) -> tuple[float, str]:
    """(floor, why): min(CAPACITY_CEILING, the capacity of REFERENCE_DESIGN on `counts` (by rank))."""
    cut = [c for c in FOLKLORE[REFERENCE_DESIGN] if c < len(counts)]
    if not cut or (proj_dims is not None and len(proj_dims) < len(cut)):
        return CAPACITY_CEILING, f"{CAPACITY_CEILING} (no {REFERENCE_DESIGN} design fits this vocabulary)"
    projs = proj_rule(hidden, len(cut), div_value, min_proj, proj_dims)
    ref = capacity_of(cost.shares_of(counts, cut), hidden, projs)
    if ref >= CAPACITY_CEILING:
        return CAPACITY_CEILING, f"{CAPACITY_CEILING} ({REFERENCE_DESIGN} {cut} has {ref:.3f}: more is not needed)"
    return ref, f"{ref:.3f}, the capacity of {REFERENCE_DESIGN} {cut} here (below {CAPACITY_CEILING})"


def recommend(frontier: list[Design], tolerance: float, min_capacity: float = 0.0) -> Design:
    """The highest-capacity design within `tolerance` (relative) of the fastest one with at least `min_capacity`
    (the most capacious design if none reaches it)."""
    eligible = [d for d in frontier if d.capacity >= min_capacity] or [max(frontier, key=lambda d: d.capacity)]
    fastest = min(d.time_ms for d in eligible)
    return max((d for d in eligible if d.time_ms <= fastest * (1 + tolerance)), key=lambda d: d.capacity)


def _check(vocab, hidden, batch_tokens, max_clusters, min_head, max_head, min_proj, proj_dims) -> None:
    if vocab < 3:
        raise InputError(f"vocabulary of {vocab} ids is too small for an adaptive softmax (need >= 3)")
    if hidden < 1:
        raise InputError(f"hidden must be a positive width, got {hidden}")
    if batch_tokens < 1:
        raise InputError(f"batch_tokens must be >= 1 (tokens per step), got {batch_tokens}")
    if max_clusters < 1:
        raise InputError(
            f"max_clusters={max_clusters}: need at least one tail cluster; "
            "with none the layer is the full softmax (pass --max-clusters 1 or more)"
        )
    if min_head is not None and min_head >= vocab:
        raise InputError(
            f"min_head={min_head} leaves no room for a tail in a vocabulary of {vocab}; "
            f"pass --min-head below {vocab - 1}"
        )
    if min_head is not None and min_head < 1:
        raise InputError(f"min_head={min_head} must be >= 1")
    if max_head is not None and max_head < max(1, min_head or 1):
        raise InputError(f"max_head={max_head} is below min_head={min_head or 1}; raise --max-head")
    if min_proj is not None and not 1 <= min_proj <= hidden:
        raise InputError(f"min_proj={min_proj} must be in [1, hidden={hidden}]")
    if proj_dims is not None:
        bad = [p for p in proj_dims if not 1 <= int(p) <= hidden]
        if not proj_dims or bad:
            raise InputError(f"proj_dims {proj_dims}: each must be in [1, hidden={hidden}]; {bad} is not")


def folklore(
    profile: Any,
    counts: np.ndarray,
    hidden: int,
    batch_tokens: int,
    mode: str,
    decode: str,
    div_value: float,
    min_proj: int | None,
    proj_dims: list[int] | None,
) -> list[dict[str, Any]]:
    """The hand-typed designs people copy, clipped to the vocabulary, under the same projection rule."""
    out = []
    for name, cut in FOLKLORE.items():
        cut = [c for c in cut if c < len(counts)]
        if not cut:
            continue
        if proj_dims is not None and len(proj_dims) < len(cut):
            continue
        projs = proj_rule(hidden, len(cut), div_value, min_proj, proj_dims)
        p = cost.predict(profile, counts, hidden, cut, projs, batch_tokens, mode, decode)
        out.append(
            {
                "name": name,
                "cutoffs": cut,
                "proj_dims": projs,
                "time_ms": p.time_ms,
                "memory_bytes": int(p.memory_bytes),
                "extrapolated": p.extrapolated,
                "capacity": capacity_of(cost.shares_of(counts, cut), hidden, projs),
            }
        )
    return out


def optimize(
    stats: Any,
    *,
    hidden: int,
    profile: Any,
    batch_tokens: int,
    mode: str = "train",
    decode: str = "full",
    max_clusters: int = 4,
    div_value: float = 4.0,
    min_proj: int | None = None,
    proj_dims: list[int] | None = None,
    min_head: int | None = None,
    max_head: int | None = None,
    candidates: int = 256,
    tolerance: float = 0.02,
    min_capacity: float | None = None,
    cutoffs: list[int] | None = None,
) -> Plan:
    """Recommend an adaptive-softmax design for a corpus, a device and a batch size.

    Args:
        stats: a CorpusStats (or a 1-D array of counts by token id).
        hidden: width d of the hidden states.
        profile: a DeviceProfile (`profile_device` or `DeviceProfile.load`).
        batch_tokens: tokens per step N.
        mode: "train" (forward + backward, a tail runs only for its targets) or "infer".
        decode: for infer, "full" (every cluster for every row) or "greedy" (a tail for its share of rows).
        max_clusters: search 1..max_clusters tail clusters.
        div_value, min_proj, proj_dims: the capacity rule (hidden // div_value**(i+1), at least min_proj;
            or explicit sizes, which also cap the number of clusters).
        min_head, max_head: bounds on the head's shortlist size.
        candidates: size of the log-spaced cutoff grid (every rank when the vocabulary is smaller).
        tolerance: recommend the highest-capacity frontier design within this share of the fastest time.
        min_capacity: only designs with at least this capacity are recommended. Default: the capacity of the
            paper's [2000, 10000] design on this corpus, capped at 0.9 (see `default_min_capacity`; on the shipped
            corpus the fastest designs, near 0.65, trained to 7-8% worse held-out perplexity than the full softmax
            in 300 steps, while 0.9 matched it: docs/benchmarks.md, "validate"). 0 gives the fastest design.
        cutoffs: evaluate this design instead of recommending one (the search still runs, for the comparison).

    Example:
        >>> plan = vocabopt.optimize(stats, hidden=512, profile=prof, batch_tokens=2048)
        >>> plan.cutoffs, plan.predicted["speedup"]
    """
    t0 = time.perf_counter()
    raw = np.asarray(getattr(stats, "counts", stats))
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise InputError(f"stats must be a CorpusStats or 1-D integer counts, got {raw.dtype} {raw.shape}")
    order = np.lexsort((np.arange(raw.size), -raw)).astype(np.int64)  # rank -> id, as CorpusStats orders it
    counts = raw.astype(np.int64)[order]
    if counts.sum() == 0:
        raise InputError("stats hold no tokens (all counts are zero); analyze a non-empty corpus")
    cost._recipe_mode(mode, decode)
    if not (math.isfinite(div_value) and div_value > 0):
        raise InputError(
            f"div_value={div_value}: must be a positive number (projections are hidden // div_value**(i+1))"
        )
    if min_capacity is None:
        min_capacity, floor_reason = default_min_capacity(counts, hidden, div_value, min_proj, proj_dims)
    elif not (math.isfinite(min_capacity) and 0 <= min_capacity <= 1):
        raise InputError(f"min_capacity={min_capacity}: must be a share in [0, 1], e.g. 0.9")
    else:
        floor_reason = f"{min_capacity} (given)"
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"tolerance={tolerance}: must be a share >= 0 of the fastest time, e.g. 0.02")
    found = search(
        profile,
        counts,
        hidden,
        batch_tokens,
        mode,
        decode,
        max_clusters,
        div_value,
        min_proj,
        proj_dims,
        min_head,
        max_head,
        candidates,
    )
    best = recommend(found["frontier"], tolerance, min_capacity)
    if cutoffs is not None:
        best = _given(counts, hidden, list(cutoffs), div_value, min_proj, proj_dims)
    pred = cost.predict(profile, counts, hidden, best.cutoffs, best.proj_dims, batch_tokens, mode, decode)
    full = cost.predict(profile, counts, hidden, [], [], batch_tokens, mode, decode)
    folk = folklore(profile, counts, hidden, batch_tokens, mode, decode, div_value, min_proj, proj_dims)
    for f in folk:
        f["speedup"] = full.time_ms / f["time_ms"]
    predicted = {
        "plan": pred.to_json(),
        "full_softmax": full.to_json(),
        "speedup": full.time_ms / pred.time_ms,
        "memory_ratio": full.memory_bytes / max(pred.memory_bytes, 1.0),
        "mode": mode,
        "decode": decode,
        "batch_tokens": batch_tokens,
        "best_per_clusters": {str(j): d.to_json() for j, d in found["per_clusters"].items()},
        "frontier": [d.to_json() for d in _thin(found["frontier"], 12)],
        "folklore": folk,
        # No wall time here: the same inputs must give a byte-identical plan (the CLI prints the time it took).
        "search": {"candidates": found["candidates"]},
    }
    tok = getattr(stats, "tokenizer", None)
    provenance = {
        "method": "vocabopt.optimize",
        "vocabopt": __version__,
        "stats": {"tokenizer": tok.name, "sha256": tok.sha256, "kind": tok.kind} if tok is not None else None,
        "profile": {
            "device": profile.device,
            "device_type": profile.device_type,
            "dtype": profile.dtype,
            "torch": profile.environment.get("torch"),
            "created": profile.created,
        },
        "options": {
            "max_clusters": max_clusters,
            "div_value": div_value,
            "min_proj": min_proj,
            "proj_dims": proj_dims,
            "min_head": min_head,
            "max_head": max_head,
            "candidates": candidates,
            "tolerance": tolerance,
            "min_capacity": round(min_capacity, 6),
            "min_capacity_rule": floor_reason,
            "cutoffs": list(cutoffs) if cutoffs is not None else None,
            "decode": decode,
        },
    }
    if tok is not None:
        provenance["tokenizer"] = {"name": tok.name, "sha256": tok.sha256, "kind": tok.kind}
    log.info("optimize: %s in %.2fs", best.cutoffs, time.perf_counter() - t0)
    return Plan(
        vocab_size=len(counts),
        hidden=hidden,
        order=order,
        cutoffs=best.cutoffs,
        proj_dims=best.proj_dims,
        counts=counts,
        mode=mode,
        batch_tokens=batch_tokens,
        predicted=predicted,
        provenance=provenance,
    )


def _given(counts, hidden, cutoffs, div_value, min_proj, proj_dims) -> Design:
    vocab = len(counts)
    if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] <= 0 or cutoffs[-1] >= vocab:
        fit = [c for c in cutoffs if 0 < c < vocab]
        raise InputError(
            f"cutoffs {cutoffs} do not fit the stats' vocabulary of {vocab:,} ids: they must be strictly increasing "
            f"and in (0, {vocab}); drop the ones >= {vocab} (e.g. {fit or [max(1, vocab // 10)]}) or use stats "
            "counted with the model's tokenizer"
        )
    projs = proj_rule(hidden, len(cutoffs), div_value, min_proj, proj_dims)
    return Design(
        cutoffs,
        projs,
        0.0,
        params_of(vocab, hidden, cutoffs, projs),
        capacity_of(cost.shares_of(counts, cutoffs), hidden, projs),
    )


def _thin(designs: list[Design], k: int) -> list[Design]:
    if len(designs) <= k:
        return designs
    idx = np.unique(np.round(np.linspace(0, len(designs) - 1, k)).astype(int))
    return [designs[i] for i in idx]


def plot_plan(plan: Plan, path: str) -> None:
    """Write `plan_png(plan)` to `path` atomically."""
    from .artifacts import atomic_write_bytes

    atomic_write_bytes(path, plan_png(plan))


def plan_png(plan: Plan) -> bytes:
    """PNG: the frontier (time vs capacity), the plan and folklore marked, and the plan's cost per cluster."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = plan.predicted
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    front = p["frontier"]
    ax1.plot([d["time_ms"] for d in front], [d["capacity"] for d in front], "o-", ms=3, label="frontier")
    ax1.scatter(
        [p["plan"]["time_ms"]],
        [capacity_of(plan.cluster_shares, plan.hidden, plan.proj_dims)],
        marker="*",
        s=160,
        c="C3",
        zorder=3,
        label=f"plan {plan.cutoffs}",
    )
    for f in p["folklore"]:
        ax1.scatter([f["time_ms"]], [f["capacity"]], marker="x", s=50, label=f"{f['name']} {f['cutoffs']}")
    ax1.axvline(p["full_softmax"]["time_ms"], color="gray", ls="--", lw=1, label="full softmax")
    ax1.set(
        xscale="log",
        xlabel="predicted ms per step",
        ylabel="capacity (share-weighted dim / d)",
        title=f"V={plan.vocab_size:,}, d={plan.hidden}, N={plan.batch_tokens}, {plan.mode}",
    )
    ax1.legend(fontsize=7)
    names = [c["name"] for c in p["plan"]["clusters"]]
    ax2.bar(names, [c["time_ms"] for c in p["plan"]["clusters"]], color="C0")
    ax2.set(ylabel="predicted ms", title=f"plan cost per cluster (total {p['plan']['time_ms']:.1f} ms)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
