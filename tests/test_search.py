"""vocabopt.search: the dynamic program finds the cost model's optimum (brute force over every cutoff set), and
its number is the cost model's number for the design it returns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocabopt import cost
from vocabopt.design import proj_dims
from vocabopt.errors import InputError
from vocabopt.profile import synthetic_profile
from vocabopt.search import Design, SearchSpace, pareto, search

SMALL_GRID = {
    "rows": [1, 4, 16, 64],
    "in": [1, 4, 16],
    "out": [1, 4, 16, 64],
    "width": [1, 4, 16, 64],
    "tokens": [16, 64],
    "hidden": [4, 16],
    "elements": [16, 256, 4096],
}


def random_monotone_profile(seed: int):
    """Random tables, non-decreasing along every axis (cumulative maxima of noise, in log space)."""
    rng = np.random.default_rng(seed)

    def fn(name, *mesh):
        r = rng.uniform(0.0, 3.0, mesh[0].shape)
        for ax in range(r.ndim):
            r = np.maximum.accumulate(r, axis=ax)
        return 10.0 ** (r - 3.0)

    return synthetic_profile(fn, grid=SMALL_GRID)


def brute_force(prof, counts, hidden, n, J, projs, min_tail=1):
    V = len(counts)
    best = (np.inf, None)
    for cut in itertools.combinations(range(1, V), J):
        if min(np.diff([*cut, V])) < min_tail:
            continue
        t = cost.predict(prof, counts, hidden=hidden, cutoffs=list(cut), proj_dims=projs, batch_tokens=n).time_ms
        if t < best[0]:
            best = (t, list(cut))
    return best


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    v=st.integers(4, 11),
    alpha=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**16),
    n=st.sampled_from([16, 40, 64]),
    max_j=st.integers(1, 3),
    min_tail=st.sampled_from([1, 2, 3]),
)
def test_dp_equals_brute_force(v, alpha, seed, n, max_j, min_tail):
    """Over every cutoff set whose tails hold at least `min_tail` ids (1: every cutoff set)."""
    counts = np.sort(
        (1000 / np.arange(1, v + 1) ** alpha).astype(np.int64) + np.random.default_rng(seed).integers(0, 3, v)
    )[::-1]
    prof = random_monotone_profile(seed)
    hidden = 16
    found = search(prof, counts, hidden, n, space=SearchSpace(max_clusters=max_j, min_tail=min_tail))
    for J in range(1, min(max_j, v - 1) + 1):
        projs = proj_dims(hidden, J)
        t_bf, cut_bf = brute_force(prof, counts, hidden, n, J, projs, min_tail)
        if cut_bf is None:  # no J-tail design with tails this large fits
            assert J not in found["per_clusters"]
            continue
        design = found["per_clusters"][J]
        assert design.time_ms == pytest.approx(t_bf, rel=1e-9), (J, design.cutoffs, cut_bf)
        # the DP's number is the cost model's number for the design it returns
        predicted = cost.predict(prof, counts, hidden=hidden, cutoffs=design.cutoffs, proj_dims=projs, batch_tokens=n)
        assert predicted.time_ms == pytest.approx(design.time_ms)


def test_pareto_keeps_only_undominated_designs_fastest_first():
    d = [Design([1], [1], t, 0, c) for t, c in [(3.0, 0.9), (1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (4.0, 0.9)]]
    assert [(x.time_ms, x.capacity) for x in pareto(d)] == [(1.0, 0.5), (2.0, 0.7), (3.0, 0.9)]


def test_search_space_checks_name_the_option():
    prof = random_monotone_profile(0)
    counts = np.arange(50)[::-1].astype(np.int64)
    with pytest.raises(InputError, match="candidates=1"):
        search(prof, counts, 16, 64, space=SearchSpace(candidates=1))
    with pytest.raises(InputError, match="div_value=-1"):
        search(prof, counts, 16, 64, space=SearchSpace(div_value=-1))


def test_default_min_tail_keeps_one_id_clusters_out():
    """Infer/greedy on a steep distribution once proposed J=3 [31, 32, 288]: a one-id tail is a head logit."""
    prof = synthetic_profile(lambda kernel, *c: 0.01 + 1e-7 * np.prod(c, axis=0))
    counts = np.round(1e7 / np.arange(1, 5001) ** 1.3).astype(np.int64)
    found = search(prof, counts, 64, 256, mode="infer", decode="greedy", space=SearchSpace(max_clusters=4))
    for design in [*found["per_clusters"].values(), *found["frontier"]]:
        assert min(np.diff([*design.cutoffs, 5000])) >= 8, design.cutoffs  # the profile's alignment
