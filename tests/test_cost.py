"""The cost model: interpolation reproduces the grid, extrapolation is flagged, designs sum their parts."""

from __future__ import annotations

import numpy as np
import pytest

from vocabopt import cost
from vocabopt.errors import InputError
from vocabopt.profile import synthetic_profile


def power_law(name, *c):
    """Exactly linear in log space: multilinear log interpolation must reproduce it between grid points."""
    t = 1e-3 * np.ones_like(c[0], dtype=float)
    for x, e in zip(c, (0.9, 0.7, 0.8), strict=False):
        t = t * x**e
    return t


def zipf_counts(v: int, alpha: float = 1.1) -> np.ndarray:
    return np.maximum((1e7 / np.arange(1, v + 1) ** alpha).astype(np.int64), 1)


@pytest.fixture(scope="module")
def prof():
    return synthetic_profile(power_law)


def test_grid_points_reproduced_exactly(prof):
    rng = np.random.default_rng(0)
    for name, axes in cost.KERNEL_AXES.items():
        table = prof.kernels[name]
        grid = [np.asarray(table["axes"][a]) for a in axes]
        med = np.asarray(table["median_ms"])
        for _ in range(10):
            idx = tuple(int(rng.integers(len(g))) for g in grid)
            ms, ex = cost.tables(prof)[name](*[g[i] for g, i in zip(grid, idx, strict=True)])
            assert ms == pytest.approx(med[idx], rel=1e-9)
            assert not ex


def test_interpolates_power_laws_exactly_between_points(prof):
    ms, ex = cost.tables(prof)["linear_fwd"](
        np.array([100.0, 3000.0]), np.array([50.0, 700.0]), np.array([999.0, 12345.0])
    )
    expect = power_law("linear_fwd", np.array([100.0, 3000.0]), np.array([50.0, 700.0]), np.array([999.0, 12345.0]))
    np.testing.assert_allclose(ms, expect, rtol=1e-5)  # tables keep 6 significant digits
    assert not ex.any()


def test_extrapolation_is_flagged_and_continuous(prof):
    t = cost.tables(prof)["linear_fwd"]
    top = prof.kernels["linear_fwd"]["axes"]["out"][-1]
    at, ex_at = t(512, 512, top)
    beyond, ex_beyond = t(512, 512, 4 * top)
    below, ex_below = t(1, 512, top)  # below the grid: clamped (launch-bound), not flagged
    assert not ex_at and ex_beyond and not ex_below
    assert beyond > at  # scaled up along the roofline
    just, _ = t(512, 512, top * 1.0001)
    assert just == pytest.approx(at, rel=1e-3)  # no jump at the edge


def test_unmeasured_points_are_filled_along_the_roofline():
    axes = [np.array([8.0, 64.0, 512.0]), np.array([8.0, 64.0, 512.0]), np.array([16.0, 256.0, 4096.0])]
    roof = {"overhead_ms": 0.01, "peak_gflops": 100.0, "bandwidth_gbs": 50.0}
    mesh = np.meshgrid(*axes, indexing="ij")
    truth = cost.roofline_ms(roof, "linear_fwd", mesh, 4)
    measured = 2.0 * mesh[0] * mesh[1] * mesh[2] <= 2e6
    filled = cost.fill_unmeasured("linear_fwd", axes, np.where(measured, truth, np.nan), measured, roof, 4)
    np.testing.assert_allclose(filled, truth, rtol=1e-9)


def test_unmeasured_points_lie_between_their_bounds():
    """Measured at half the peak rate: a filled point is the geometric mean of q's rate (upper bound on time) and
    the peak rate (lower bound)."""
    axes = [np.array([8.0, 64.0, 512.0]), np.array([8.0, 64.0, 512.0]), np.array([16.0, 256.0, 4096.0])]
    roof = {"overhead_ms": 0.0, "peak_gflops": 100.0, "bandwidth_gbs": 1e9}  # compute-bound everywhere
    mesh = np.meshgrid(*axes, indexing="ij")
    peak = cost.roofline_ms(roof, "linear_fwd", mesh, 4)
    measured = 2.0 * mesh[0] * mesh[1] * mesh[2] <= 2e6
    filled = cost.fill_unmeasured("linear_fwd", axes, np.where(measured, 2.0 * peak, np.nan), measured, roof, 4)
    np.testing.assert_allclose(filled[~measured], np.sqrt(2.0) * peak[~measured], rtol=1e-9)
    np.testing.assert_allclose(filled[measured], 2.0 * peak[measured], rtol=1e-12)


def test_predict_is_the_sum_of_its_parts(prof):
    counts = zipf_counts(20000)
    p = cost.predict(prof, counts, 256, [1000, 5000], [64, 16], 1024)
    parts = [c["time_ms"] for c in p.clusters]
    assert p.time_ms == pytest.approx(sum(parts), rel=1e-12)
    assert all(t > 0 for t in parts) and p.time_ms >= max(parts)
    assert sum(c["size"] for c in p.clusters) == 20000 + 2  # head holds one logit per tail
    assert sum(c["share"] for c in p.clusters) == pytest.approx(1.0)
    assert p.memory_bytes > 0
    full = cost.predict(prof, counts, 256, [], [], 1024)
    assert full.time_ms > p.time_ms  # the power-law device rewards skipping rare tails
    assert full.memory_bytes > p.memory_bytes


def test_modes(prof):
    counts = zipf_counts(20000)
    train = cost.predict(prof, counts, 256, [1000, 5000], [64, 16], 1024, mode="train")
    full = cost.predict(prof, counts, 256, [1000, 5000], [64, 16], 1024, mode="infer", decode="full")
    greedy = cost.predict(prof, counts, 256, [1000, 5000], [64, 16], 1024, mode="infer", decode="greedy")
    assert greedy.time_ms < full.time_ms  # greedy skips tails for most rows
    assert greedy.time_ms < train.time_ms  # no backward
    with pytest.raises(InputError, match="mode"):
        cost.predict(prof, counts, 256, [1000], [64], 1024, mode="eval")


def test_cutoffs_beyond_the_vocabulary_name_it(prof):
    with pytest.raises(InputError, match="vocabulary of 5000 ids"):
        cost.predict(prof, zipf_counts(5000), 64, [2000, 10000], [16, 4], 256)
    with pytest.raises(InputError, match="one per cutoff"):
        cost.predict(prof, zipf_counts(5000), 64, [200, 1000], [16], 256)


def test_empty_tail_pays_only_its_fixed_cost(prof):
    ms_empty, _ = cost.tail_ms(prof, 1024, 256, 64, 5000, 0.0)
    fixed, _ = cost.tables(prof)["cluster_fixed_train"](1024, 256)
    assert float(ms_empty) == pytest.approx(float(fixed))


def test_recipes_follow_the_layers_kernel_choice(prof):
    from vocabopt.adaptive_head import AdaptiveHeadConfig

    assert cost.CHUNK_ABOVE == AdaptiveHeadConfig.chunk_above  # the model and the layer switch at one size
    t = cost.tables(prof)
    n, d, proj = 1024, 256, 64
    share = 1.0 - 1e-13  # every row busy: rows = n, P(busy) = 1
    common = sum(float(t[k](n, d, proj)[0]) for k in ("linear_fwd", "linear_dinput", "linear_dweight"))
    common += float(t["gather_fwd"](n, d)[0]) + float(t["gather_bwd"](n, d)[0])
    common += float(t["cluster_fixed_train"](n, d)[0])
    small = cost.CHUNK_ABOVE // n  # logits kept: the head's kernel
    kept = float(t["linear_nll_keep_fwd"](n, proj, small)[0]) + float(t["linear_nll_keep_bwd"](n, proj, small)[0])
    assert float(cost.tail_ms(prof, n, d, proj, small, share)[0]) == pytest.approx(common + kept, rel=1e-9)
    big = 2 * small  # chunked: the fused kernel that recomputes the logits
    chunked = float(t["linear_nll_fwd"](n, proj, big)[0]) + float(t["linear_nll_bwd"](n, proj, big)[0])
    assert float(cost.tail_ms(prof, n, d, proj, big, share)[0]) == pytest.approx(common + chunked, rel=1e-9)
    # The head (train): step bookkeeping plus the kept-logits kernel over all N rows, one logit per tail included.
    head = float(t["step_fixed_train"](n, d)[0]) + sum(
        float(t[k](n, d, 1002)[0]) for k in ("linear_nll_keep_fwd", "linear_nll_keep_bwd")
    )
    assert float(cost.head_ms(prof, n, d, 1002)[0]) == pytest.approx(head, rel=1e-9)
