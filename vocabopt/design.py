"""The design arithmetic of an adaptive softmax: one home for every rule the stages share, numpy only.

Inputs: token counts (by id or by rank), a hidden width, cutoffs, projection sizes. Outputs: plain numbers, lists
and arrays. CorpusStats, Plan, the optimizer, the cost model, bench, validate and export call these functions and
keep no copy of them.

Vocabulary layout, in frequency-rank space (rank 0 = most frequent id):
    head   = ranks [0, cutoffs[0])                  -> scored by the head, plus one logit per tail cluster
    tail i = ranks [cutoffs[i], cutoffs[i+1] or V)  -> scored through a projection hidden -> proj_dims[i]

The exported layer (`adaptive_head.py`) is a torch-only file that cannot import this module; where it needs the same
rule (cutoff checks, the static path's row budget) it keeps its own few lines, and tests/test_design.py pins the
two to the same results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InputError

# The static path's row budget per tail: CAPACITY_FACTOR x the expected rows + 8 sigma + 16, rounded up to a multiple
# of 16. Equal to AdaptiveHeadConfig.capacity_factor's default (tests/test_design.py checks).
CAPACITY_FACTOR = 2.0
DIV_VALUE = 4.0  # the paper's code default and torch's AdaptiveLogSoftmaxWithLoss default: tail i gets d // 4**(i+1)


def frequency_order(counts_by_id: np.ndarray) -> np.ndarray:
    """(V,) int64 rank -> token id: decreasing count, ties by increasing id (deterministic)."""
    counts_by_id = np.asarray(counts_by_id)
    return np.lexsort((np.arange(counts_by_id.size), -counts_by_id)).astype(np.int64)


def check_cutoffs(cutoffs: Sequence[int], vocab_size: int | None, *, what: str = "cutoffs") -> list[int]:
    """`cutoffs` as a list of ints if they are strictly increasing and in (0, vocab_size); else InputError.

    `vocab_size=None` checks only that they are positive and strictly increasing (for lists clipped to a
    vocabulary later, such as the folklore designs). The message names the input, what is wrong and a fix.
    """
    cut = as_int_list(cutoffs, what)
    if not cut:
        raise InputError(f"{what} is empty; pass at least one cutoff (the head size), e.g. [2000, 10000]")
    limit = math.inf if vocab_size is None else vocab_size
    if all(a < b for a, b in zip(cut, cut[1:])) and cut[0] > 0 and cut[-1] < limit:
        return cut
    if vocab_size is None:
        raise InputError(f"{what} {cut} must be strictly increasing positive integers, e.g. 2000,10000")
    fit = sorted({c for c in cut if 0 < c < vocab_size}) or [max(1, vocab_size // 25), max(2, vocab_size // 5)]
    fix = f"drop the ones >= {vocab_size} (e.g. {fit})" if cut[-1] >= vocab_size else f"e.g. {fit}"
    raise InputError(
        f"{what} {cut} must be strictly increasing integers in (0, vocab_size={vocab_size}) to fit a vocabulary "
        f"of {vocab_size:,} ids; {fix}"
    )


def clip_cutoffs(cutoffs: Sequence[int], vocab_size: int) -> list[int]:
    """The cutoffs of a hand-typed design that lie inside a vocabulary of `vocab_size` ids (folklore lists)."""
    return [int(c) for c in cutoffs if 0 < c < vocab_size]


def as_int_list(values: Sequence[int], what: str) -> list[int]:
    """`values` as a list of Python ints; InputError if any is not integral."""
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a list of integers, got {values!r}") from None
    if any(o != v for o, v in zip(out, values)):
        raise InputError(f"{what} must be integers, got {list(values)!r}")
    return out


def check_div_value(div_value: float) -> None:
    """InputError unless `div_value` is a positive finite number."""
    if not (isinstance(div_value, (int, float)) and math.isfinite(div_value) and div_value > 0):
        raise InputError(
            f"div_value={div_value}: must be a positive number (projections are hidden // div_value**(i+1))"
        )


def proj_dims(hidden: int, n_tails: int, *, div_value: float = DIV_VALUE, min_proj: int | None = None) -> list[int]:
    """Projection size of each tail cluster: hidden // div_value**(i+1), at least min_proj (and 1), at most hidden."""
    check_div_value(div_value)
    floor = max(1, min_proj or 1)
    return [min(hidden, max(floor, int(hidden // (div_value ** (i + 1))))) for i in range(n_tails)]


def check_proj_dims(dims: Sequence[int], hidden: int, n_tails: int | None = None) -> list[int]:
    """`dims` as ints if each is in [1, hidden] (and, given `n_tails`, there is one per tail); else InputError."""
    dims = as_int_list(dims, "proj_dims")
    bad = [p for p in dims if not 1 <= p <= hidden]
    if not dims or bad:
        raise InputError(f"proj_dims {dims}: each must be in [1, hidden={hidden}]; {bad} is not")
    if n_tails is not None and len(dims) != n_tails:
        raise InputError(f"{len(dims)} proj_dims {dims} for {n_tails} tail clusters; pass one per cutoff")
    return dims


def bounds(cutoffs: Sequence[int], vocab_size: int) -> list[tuple[int, int]]:
    """Rank ranges [lo, hi) of the head shortlist and of each tail cluster."""
    edges = [0, *cutoffs, vocab_size]
    return list(zip(edges[:-1], edges[1:]))


def cluster_shares(counts_by_rank: np.ndarray, cutoffs: Sequence[int]) -> list[float]:
    """Share of target tokens in the head shortlist and in each tail cluster (p_i of the paper); sums to 1."""
    total = max(float(np.sum(counts_by_rank)), 1.0)
    return [float(np.sum(counts_by_rank[lo:hi])) / total for lo, hi in bounds(cutoffs, len(counts_by_rank))]


def capacity(shares: Sequence[float], hidden: int, dims: Sequence[int]) -> float:
    """Share-weighted output width over hidden: sum_i share_i * d_i / d (the head counts d/d = 1; full softmax = 1)."""
    return float(shares[0] + sum(s * p / hidden for s, p in zip(shares[1:], dims, strict=True)))


def n_params(
    vocab_size: int,
    hidden: int,
    cutoffs: Sequence[int],
    dims: Sequence[int],
    *,
    head_bias: bool = True,
    tail_bias: bool = True,
) -> int:
    """Weights and biases of the layer: head (shortlist + one logit per tail), each tail's projection and output."""
    n = (cutoffs[0] + len(cutoffs)) * (hidden + int(head_bias))
    for (lo, hi), p in zip(bounds(cutoffs, vocab_size)[1:], dims, strict=True):
        n += hidden * p + (hi - lo) * (p + int(tail_bias))
    return int(n)


def full_softmax_params(vocab_size: int, hidden: int) -> int:
    """Weights and bias of the full softmax's (V, d) linear."""
    return vocab_size * (hidden + 1)


def static_rows(n_tokens: int, share: np.ndarray | float, capacity_factor: float = CAPACITY_FACTOR) -> np.ndarray:
    """Rows a tail runs on in the layer's static path (no host sync) for `n_tokens` targets, `share` of them its own:
    capacity_factor x the expected count + 8 sigma + 16, rounded up to a multiple of 16, at most n_tokens."""
    mean = n_tokens * np.asarray(share, dtype=float)
    rows = 16.0 * np.ceil((capacity_factor * mean + 8.0 * np.sqrt(mean) + 16.0) / 16.0)
    return np.minimum(float(n_tokens), rows)


def alswl_div_value(hidden: int, dims: Sequence[int]) -> float | None:
    """The div_value for which torch's AdaptiveLogSoftmaxWithLoss builds exactly these projection sizes, or None.

    ALSWL projects tail i to int(hidden // div_value**(i+1)); tried in order: hidden / dims[0], 4, 2, 8 (the first
    that reproduces every size wins, so a plan made with the default rule exports div_value=4.0).
    """
    if not dims:
        return None
    for div in (hidden / dims[0], 4.0, 2.0, 8.0):
        if div > 0 and all(int(hidden // div ** (i + 1)) == p for i, p in enumerate(dims)):
            return float(div)
    return None
