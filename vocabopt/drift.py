"""Drift: how far new data's token frequencies moved from the ones a plan was made for, and whether to re-plan.

Inputs: the CorpusStats the plan was made from (old), CorpusStats of the new data (same tokenizer), the Plan, a
DeviceProfile. Outputs: `DriftReport`: each cluster's share of targets then and now, the tokens whose frequency
rank in the new data falls in another cluster than the plan gives them, the predicted step time and capacity of
the old plan on the new frequencies against the best new plan (`vocabopt.optimize` on the new stats), and a
recommendation: "keep", or "replan" with the predicted gain. `vocabopt replan` then migrates the trained weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import design
from .cost import predict
from .errors import MismatchError
from .optimize import optimize
from .plan import Plan

MIN_GAIN = 0.05  # re-plan when the new plan is predicted at least 5% faster per step


@dataclass
class DriftReport:
    """Shares then and now, cutoff crossings, predicted times and the recommendation."""

    shares_then: list[float]  # per cluster (head shortlist first), in the old stats
    shares_now: list[float]  # the same clusters, in the new stats
    crossed: int  # tokens whose new-data rank lies in another cluster than the plan's
    crossed_up: int  # ... of them, ones that became more frequent (belong in a cluster nearer the head)
    examples: list[dict[str, Any]]  # the most frequent crossings: token, id, cluster then / now, counts
    total_variation: float  # 0.5 * sum |p_old - p_new| over token ids (0 = same distribution, 1 = disjoint)
    old_plan_ms: float  # predicted step time of the old plan on the new frequencies
    new_plan_ms: float  # ... of the best new plan
    old_capacity: float  # design.capacity of the old plan on the new frequencies
    new_capacity: float
    new_cutoffs: list[int]
    new_proj_dims: list[int]
    recommendation: str  # "keep" | "replan"
    gain: float  # old_plan_ms / new_plan_ms - 1
    reason: str
    new_plan: Plan | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self) | {"new_plan": None}
        del out["new_plan"]
        return out


def _counts(stats: Any, V: int, what: str) -> np.ndarray:
    counts = np.asarray(getattr(stats, "counts", stats), dtype=np.int64)
    if counts.shape != (V,):
        raise MismatchError(
            f"{what} has {counts.size} ids but the plan {V}: count it with the plan's tokenizer "
            "(a tokenizer with added tokens needs `vocabopt expand` first)"
        )
    return counts


def crossings(plan: Plan, new_counts: np.ndarray, tokens: list[str] | None, examples: int = 10) -> dict[str, Any]:
    """Tokens whose rank in the new data's frequency order lies in another cluster than the plan puts them in."""
    edges = np.array([0, *plan.cutoffs])
    now_rank = np.empty(plan.vocab_size, dtype=np.int64)
    now_rank[design.frequency_order(new_counts)] = np.arange(plan.vocab_size)
    then = np.searchsorted(edges, plan.rank_of, side="right") - 1  # (V,) by id
    now = np.searchsorted(edges, now_rank, side="right") - 1
    moved = np.flatnonzero(then != now)
    moved = moved[np.argsort(-new_counts[moved], kind="stable")]
    rows = [
        {
            "id": int(t),
            "token": tokens[t] if tokens is not None and t < len(tokens) else str(t),
            "cluster_then": int(then[t]),
            "cluster_now": int(now[t]),
            "count_then": int(plan.counts_by_id[t]),
            "count_now": int(new_counts[t]),
        }
        for t in moved[:examples]
    ]
    return {"crossed": int(moved.size), "crossed_up": int(np.sum(now[moved] < then[moved])), "examples": rows}


def drift(
    old_stats: Any,
    new_stats: Any,
    plan: Plan,
    *,
    profile: Any,
    batch_tokens: int | None = None,
    min_gain: float = MIN_GAIN,
    examples: int = 10,
    **optimize_options: Any,
) -> DriftReport:
    """Compare the frequencies a plan was made for with new data's, and recommend keeping it or re-planning.

    Args:
        old_stats: the CorpusStats the plan was made from (or (V,) counts by id).
        new_stats: CorpusStats of the new data, counted with the same tokenizer.
        plan: the plan in use.
        profile: the DeviceProfile to predict step times with.
        batch_tokens: tokens per step (default the plan's, else 2048).
        min_gain: recommend "replan" when the best new plan is predicted at least this much faster.
        examples: how many crossing tokens to list.
        **optimize_options: passed to `vocabopt.optimize` for the new plan (tolerance, min_capacity, ...).

    Example:
        >>> rep = vocabopt.drift(old_stats, new_stats, plan, profile=prof)
        >>> rep.recommendation, rep.gain, rep.shares_then, rep.shares_now
    """
    V = plan.vocab_size
    old, new = _counts(old_stats, V, "old stats"), _counts(new_stats, V, "new stats")
    n = int(batch_tokens or plan.batch_tokens or 2048)
    new_by_old_rank = new[plan.order]
    then = design.cluster_shares(old[plan.order], plan.cutoffs)
    now = design.cluster_shares(new_by_old_rank, plan.cutoffs)
    kw = dict(hidden=plan.hidden, batch_tokens=n, mode=plan.mode)
    old_ms = predict(profile, new_by_old_rank, cutoffs=plan.cutoffs, proj_dims=plan.proj_dims, **kw).time_ms
    best = optimize(new_stats, profile=profile, **kw, **optimize_options)
    new_ms = predict(profile, best.counts_by_rank, cutoffs=best.cutoffs, proj_dims=best.proj_dims, **kw).time_ms
    old_cap = design.capacity(now, plan.hidden, plan.proj_dims)
    gain = old_ms / new_ms - 1.0
    replan = gain >= min_gain and best.capacity >= old_cap - 1e-9
    if replan:
        reason = (
            f"the new plan is predicted {gain:.1%} faster per step at capacity {best.capacity:.3f} >= {old_cap:.3f}"
        )
    elif gain >= min_gain:
        reason = f"a faster plan exists ({gain:.1%}) but at lower capacity ({best.capacity:.3f} < {old_cap:.3f})"
    else:
        reason = f"the best new plan is predicted {gain:+.1%} per step, under the {min_gain:.0%} threshold"
    cross = crossings(plan, new, getattr(new_stats, "tokens", None), examples)
    p_old, p_new = old / max(1, old.sum()), new / max(1, new.sum())
    return DriftReport(
        shares_then=then,
        shares_now=now,
        crossed=cross["crossed"],
        crossed_up=cross["crossed_up"],
        examples=cross["examples"],
        total_variation=float(0.5 * np.abs(p_old - p_new).sum()),
        old_plan_ms=float(old_ms),
        new_plan_ms=float(new_ms),
        old_capacity=float(old_cap),
        new_capacity=float(best.capacity),
        new_cutoffs=list(best.cutoffs),
        new_proj_dims=list(best.proj_dims),
        recommendation="replan" if replan else "keep",
        gain=float(gain),
        reason=reason,
        new_plan=best,
    )
