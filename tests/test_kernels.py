"""The kernel catalogue: interpolation reproduces the grid, extrapolation is flagged, unmeasured points are filled."""

from __future__ import annotations

import numpy as np
import pytest

from vocabopt import kernels
from vocabopt.profile import synthetic_profile


def power_law(name, *c):
    """Exactly linear in log space: multilinear log interpolation must reproduce it between grid points."""
    t = 1e-3 * np.ones_like(c[0], dtype=float)
    for x, e in zip(c, (0.9, 0.7, 0.8), strict=False):
        t = t * x**e
    return t


@pytest.fixture(scope="module")
def prof():
    return synthetic_profile(power_law)


def test_grid_points_reproduced_exactly(prof):
    rng = np.random.default_rng(0)
    for name, axes in kernels.KERNEL_AXES.items():
        table = prof.kernels[name]
        grid = [np.asarray(table["axes"][a]) for a in axes]
        med = np.asarray(table["median_ms"])
        for _ in range(10):
            idx = tuple(int(rng.integers(len(g))) for g in grid)
            ms, ex = kernels.tables(prof)[name](*[g[i] for g, i in zip(grid, idx, strict=True)])
            assert ms == pytest.approx(med[idx], rel=1e-9)
            assert not ex


def test_interpolates_power_laws_exactly_between_points(prof):
    ms, ex = kernels.tables(prof)["linear_fwd"](
        np.array([100.0, 3000.0]), np.array([50.0, 700.0]), np.array([999.0, 12345.0])
    )
    expect = power_law("linear_fwd", np.array([100.0, 3000.0]), np.array([50.0, 700.0]), np.array([999.0, 12345.0]))
    np.testing.assert_allclose(ms, expect, rtol=1e-5)  # tables keep 6 significant digits
    assert not ex.any()


def test_extrapolation_is_flagged_and_continuous(prof):
    t = kernels.tables(prof)["linear_fwd"]
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
    truth = kernels.roofline_ms(roof, "linear_fwd", mesh, 4)
    measured = 2.0 * mesh[0] * mesh[1] * mesh[2] <= 2e6
    filled = kernels.fill_unmeasured("linear_fwd", axes, np.where(measured, truth, np.nan), measured, roof, 4)
    np.testing.assert_allclose(filled, truth, rtol=1e-9)


def test_unmeasured_points_lie_between_their_bounds():
    """Measured at half the peak rate: a filled point is the geometric mean of q's rate (upper bound on time) and
    the peak rate (lower bound)."""
    axes = [np.array([8.0, 64.0, 512.0]), np.array([8.0, 64.0, 512.0]), np.array([16.0, 256.0, 4096.0])]
    roof = {"overhead_ms": 0.0, "peak_gflops": 100.0, "bandwidth_gbs": 1e9}  # compute-bound everywhere
    mesh = np.meshgrid(*axes, indexing="ij")
    peak = kernels.roofline_ms(roof, "linear_fwd", mesh, 4)
    measured = 2.0 * mesh[0] * mesh[1] * mesh[2] <= 2e6
    filled = kernels.fill_unmeasured("linear_fwd", axes, np.where(measured, 2.0 * peak, np.nan), measured, roof, 4)
    np.testing.assert_allclose(filled[~measured], np.sqrt(2.0) * peak[~measured], rtol=1e-9)
    np.testing.assert_allclose(filled[measured], 2.0 * peak[measured], rtol=1e-12)
