"""vocabopt.search: the dynamic program finds the cost model's optimum (brute force over every cutoff set), and
its number is the cost model's number for the design it returns; the candidates are sane (projection floor, tail
size, aligned cutoffs, no more memory than the full softmax, no dominated frontier point)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocabopt import cost
from vocabopt.errors import InputError
from vocabopt.profile import DeviceProfile, synthetic_profile
from vocabopt.search import Design, SearchSpace, default_min_proj, pareto, search

CPU_PROFILE = Path(__file__).resolve().parents[1] / "configs" / "devices" / "cpu-xeon-2core-float32.json"

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
    """The fastest J-tail design whose tails hold >= min_tail ids and whose memory is <= the full softmax's."""
    V = len(counts)
    full = cost.predict(prof, counts, hidden=hidden, cutoffs=[], proj_dims=[], batch_tokens=n).memory_bytes
    best = (np.inf, None)
    for cut in itertools.combinations(range(1, V), J):
        if min(np.diff([*cut, V])) < min_tail:
            continue
        p = cost.predict(prof, counts, hidden=hidden, cutoffs=list(cut), proj_dims=projs, batch_tokens=n)
        if p.memory_bytes <= full and p.time_ms < best[0]:
            best = (p.time_ms, list(cut))
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
    """Over every cutoff set whose tails hold at least `min_tail` ids (1: every cutoff set) and that needs no more
    memory than the full softmax."""
    counts = np.sort(
        (1000 / np.arange(1, v + 1) ** alpha).astype(np.int64) + np.random.default_rng(seed).integers(0, 3, v)
    )[::-1]
    prof = random_monotone_profile(seed)
    hidden = 16
    found = search(prof, counts, hidden, n, space=SearchSpace(max_clusters=max_j, min_tail=min_tail))
    for J in range(1, min(max_j, v - 1) + 1):
        projs = found["space"].dims(hidden, J)  # the default floor: the profile's alignment (8)
        assert projs == [max(8, hidden // 4 ** (i + 1)) for i in range(J)]
        t_bf, cut_bf = brute_force(prof, counts, hidden, n, J, projs, min_tail)
        if cut_bf is None:  # no J-tail design with tails this large (and memory this small) fits
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


def zipf_counts(v: int, alpha: float = 1.05) -> np.ndarray:
    return np.maximum((1e9 / np.arange(1, v + 1) ** alpha).astype(np.int64), 1)


@pytest.fixture(scope="module")
def cpu_profile():
    return DeviceProfile.load(CPU_PROFILE)


def all_designs(found):
    return [*found["per_clusters"].values(), *found["frontier"]]


@pytest.mark.parametrize("mode, decode", [("train", "full"), ("infer", "greedy")])
def test_default_min_proj_is_the_alignment_and_min_proj_overrides_it(cpu_profile, mode, decode):
    """346K rare words once got 2-dimensional projections (d=512, J=4: 512 // 4**4); the default floor is the
    profile's alignment, and `min_proj=1` restores the unconstrained rule."""
    counts = zipf_counts(100_000)
    assert default_min_proj(cpu_profile, 512) == cpu_profile.alignment == 8
    assert default_min_proj(cpu_profile, 4) == 4  # never above hidden
    found = search(cpu_profile, counts, 512, 2048, mode=mode, decode=decode)
    assert found["space"].min_proj == 8
    assert all(min(d.proj_dims) >= 8 for d in all_designs(found))
    assert found["per_clusters"][4].proj_dims == [128, 32, 8, 8]
    free = search(cpu_profile, counts, 512, 2048, mode=mode, decode=decode, space=SearchSpace(min_proj=1))
    assert free["per_clusters"][4].proj_dims == [128, 32, 8, 2]
    wide = search(cpu_profile, counts, 512, 2048, mode=mode, decode=decode, space=SearchSpace(min_proj=64))
    assert all(min(d.proj_dims) >= 64 for d in all_designs(wide))


def test_projections_below_the_default_buy_almost_no_time(cpu_profile):
    """The evidence for the default floor (docs/optimizer.md), reproduced from the shipped profile: its tail loss
    kernels are flat in the inner dimension (the projection size) between 4 and 16, and the cost model predicts the
    fastest design with no floor at most ~2% faster than with the default (V=268K Zipf, d 256-1024)."""
    for name in ("linear_nll_fwd", "linear_nll_bwd", "linear_nll_keep_fwd", "linear_nll_keep_bwd"):
        table = cpu_profile.kernels[name]
        axes = table["axes"]
        assert axes["in"][:2] == [4, 16], name
        t, measured = np.asarray(table["median_ms"]), np.asarray(table["measured"])  # (rows, in, out)
        work = np.asarray(axes["rows"])[:, None] * np.asarray(axes["out"])[None, :] >= 2**20  # not launch-bound
        ok = measured[:, 0, :] & measured[:, 1, :] & work
        assert np.median(t[:, 1, :][ok] / t[:, 0, :][ok]) < 1.1, name  # 4x the inner dimension, < 10% more time
    counts = zipf_counts(268_000)
    for d in (256, 512, 1024):
        default = search(cpu_profile, counts, d, 2048)["frontier"][0]
        free = search(cpu_profile, counts, d, 2048, space=SearchSpace(min_proj=1))["frontier"][0]
        assert min(free.proj_dims) < 8 <= min(default.proj_dims)
        assert default.time_ms <= free.time_ms * 1.025, (d, default, free)


@pytest.mark.parametrize("mode, decode", [("train", "full"), ("infer", "greedy"), ("infer", "full")])
def test_no_design_needs_more_memory_than_the_full_softmax(cpu_profile, mode, decode):
    """Each design's memory is `cost.predict`'s, and none proposed exceeds the full softmax's in the same mode. In
    full-distribution inference every design does (its (N, V) output is assembled from the clusters): none is left."""
    counts = zipf_counts(8000, 1.2)
    found = search(cpu_profile, counts, 512, 2048, mode=mode, decode=decode)
    full = cost.predict(
        cpu_profile, counts, hidden=512, cutoffs=[], proj_dims=[], batch_tokens=2048, mode=mode, decode=decode
    )
    assert found["full_memory_bytes"] == full.memory_bytes
    for d in all_designs(found):
        p = cost.predict(
            cpu_profile,
            counts,
            hidden=512,
            cutoffs=d.cutoffs,
            proj_dims=d.proj_dims,
            batch_tokens=2048,
            mode=mode,
            decode=decode,
        )
        assert d.memory_bytes == pytest.approx(p.memory_bytes, rel=1e-9)
        assert d.time_ms == pytest.approx(p.time_ms, rel=1e-9)
        assert d.memory_bytes <= full.memory_bytes
    if decode == "full" and mode == "infer":
        assert not found["per_clusters"] and not found["frontier"] and found["over_memory"] > 0
        p = cost.predict(
            cpu_profile,
            counts,
            hidden=512,
            cutoffs=[2000],
            proj_dims=[128],
            batch_tokens=2048,
            mode=mode,
            decode=decode,
        )
        assert p.memory_bytes > full.memory_bytes  # the reason: even the paper's design needs more
    else:
        assert found["frontier"] and found["over_memory"] == 0


@pytest.mark.parametrize("mode, decode", [("train", "full"), ("infer", "greedy")])
def test_cutoffs_are_aligned_on_the_aligned_grid(cpu_profile, mode, decode):
    """Infer/greedy once proposed J=3 [31, 32, 288]: on the log-spaced grid every cutoff is a multiple of the
    profile's alignment (head bounds included: moved inward to one)."""
    counts = zipf_counts(8000, 1.2)
    for space in (SearchSpace(), SearchSpace(min_head=3001, max_head=5005), SearchSpace(max_clusters=1)):
        found = search(cpu_profile, counts, 512, 2048, mode=mode, decode=decode, space=space)
        for d in all_designs(found):
            assert all(c % 8 == 0 for c in d.cutoffs), d.cutoffs
            if space.min_head:
                assert 3001 <= d.cutoffs[0] <= 5005


def test_frontier_leaves_out_designs_slower_than_the_full_softmax():
    """A head loss kernel 3x slower per multiply-add than plain linears makes designs with large heads slower than
    the full softmax: it (capacity 1) dominates them, so none is on the frontier (the last point once was)."""

    def fn(kernel, *c):
        return 0.01 + (3e-8 if kernel.startswith("linear_nll_keep") else 1e-8) * np.prod(c, axis=0)

    prof = synthetic_profile(fn)
    counts = zipf_counts(20_000, 1.0)
    found = search(prof, counts, 256, 1024, space=SearchSpace(max_clusters=2))
    slow = cost.predict(prof, counts, hidden=256, cutoffs=[19_000], proj_dims=[64], batch_tokens=1024)
    assert slow.time_ms > found["full_ms"]  # such designs exist in the family
    assert found["frontier"] and all(d.time_ms < found["full_ms"] for d in found["frontier"])
