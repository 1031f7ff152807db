"""Tests for vocabopt.zipf: synthetic data of known exponent, `powerlaw` as the oracle, brute force."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from vocabopt import zipf
from vocabopt.errors import MismatchError

PL_KEYS = {"alpha", "alpha_se", "xmin", "n_tail", "ks", "n", "zipf_exponent"}
ZM_KEYS = {"s", "q", "loglik_per_token", "V"}


def draw_power_law(rng: np.random.Generator, alpha: float, xmin: int, n: int) -> np.ndarray:
    """n exact samples of p(x) = x^-alpha / zeta(alpha, xmin), x >= xmin.

    numpy's zipf is the exact discrete power law with xmin = 1; conditioning it on x >= xmin (rejection) gives
    exactly the one with the larger xmin.
    """
    out = np.empty(0, dtype=np.int64)
    while out.size < n:
        x = rng.zipf(alpha, size=4 * n)
        out = np.concatenate((out, x[x >= xmin]))
    return out[:n]


def draw_counts(rng: np.random.Generator, alpha: float, xmin: int, n_tail: int, n_body: int) -> np.ndarray:
    """A counts array whose entries are the samples: a power-law tail plus a flat body on 1..xmin-1."""
    x = draw_power_law(rng, alpha, xmin, n_tail)
    if xmin > 1:
        x = np.concatenate((x, rng.integers(1, xmin, n_body)))
    return rng.permutation(x)


def zm_counts(rng: np.random.Generator, s: float, q: float, V: int, tokens: int) -> np.ndarray:
    """Token counts of `tokens` draws from the Zipf-Mandelbrot law, ids shuffled (ids are not ranks)."""
    p = zipf.zipf_mandelbrot_pmf(np.arange(1, V + 1), s, q, V)
    return rng.permutation(rng.multinomial(tokens, p))


# --- power law: recovery, standard error, oracle ------------------------------------------------------------


@pytest.mark.parametrize("alpha", [2.0, 2.5])
@pytest.mark.parametrize("xmin", [1, 5])
def test_power_law_recovers_alpha_and_xmin(alpha: float, xmin: int) -> None:
    for seed in range(3):
        counts = draw_counts(np.random.default_rng(seed), alpha, xmin, n_tail=5000, n_body=2000)
        pl = zipf.fit(counts)["power_law"]
        assert abs(pl["alpha"] - alpha) < 3 * pl["alpha_se"], (seed, pl)
        # Any xmin at or above the true one is also a power law; below it the flat body must be rejected.
        assert xmin <= pl["xmin"] <= xmin + 5, (seed, pl)
        assert pl["n"] == counts.size
        assert pl["n_tail"] == int(np.count_nonzero(counts >= pl["xmin"]))
        assert pl["zipf_exponent"] == pytest.approx(1 / (pl["alpha"] - 1))


@pytest.mark.parametrize(("alpha", "xmin"), [(2.0, 1), (2.5, 5), (1.7, 3)])
def test_power_law_standard_error_matches_spread_over_draws(alpha: float, xmin: int) -> None:
    # xmin held fixed, so the spread is that of the alpha MLE alone, which is what alpha_se describes.
    n, draws = 2000, 40
    alphas, ses = [], []
    for seed in range(draws):
        x = draw_power_law(np.random.default_rng(1000 + seed), alpha, xmin, n)
        pl = zipf.fit_power_law(x, xmin=xmin)
        alphas.append(pl["alpha"])
        ses.append(pl["alpha_se"])
    spread = float(np.std(alphas, ddof=1))
    # The sample std of 40 draws is itself uncertain by ~11%: a factor of 1.5 is > 3 of those.
    assert 1 / 1.5 < float(np.mean(ses)) / spread < 1.5, (np.mean(ses), spread)
    # And the MLE is unbiased to within the precision of the mean of 40 draws.
    assert abs(float(np.mean(alphas)) - alpha) < 4 * spread / np.sqrt(draws)


def test_standard_error_is_the_discrete_fisher_information() -> None:
    # At xmin = 1 the continuous formula (alpha - 1) / sqrt(n) is ~11% low for alpha = 2.5; ours is the exact
    # discrete one, checked against a brute-force variance of log X.
    pl = zipf.fit_power_law(draw_power_law(np.random.default_rng(7), 2.5, 1, 4000), xmin=1)
    a, n = pl["alpha"], pl["n_tail"]
    k = np.arange(1, 2_000_001, dtype=np.float64)
    w = k**-a
    w /= w.sum()
    var_log = float(w @ np.log(k) ** 2 - (w @ np.log(k)) ** 2)  # d2/da2 log zeta(a, 1) = Var(log X)
    assert pl["alpha_se"] == pytest.approx(1 / np.sqrt(n * var_log), rel=1e-3)
    assert (a - 1) / np.sqrt(n) < 0.95 * pl["alpha_se"]


def _powerlaw_fit(x: np.ndarray, **kw):
    powerlaw = pytest.importorskip("powerlaw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # estimate_discrete=False: the exact discrete likelihood, as ours (its default switches to a
        # continuous approximation for xmin >= 10, which differs from the exact MLE by ~0.01).
        return powerlaw.Fit(x, discrete=True, estimate_discrete=False, verbose=False, **kw)


@pytest.mark.parametrize(("alpha", "xmin", "seed"), [(2.0, 1, 0), (2.5, 5, 1), (2.0, 5, 2)])
def test_power_law_agrees_with_powerlaw_package(alpha: float, xmin: int, seed: int) -> None:
    x = draw_counts(np.random.default_rng(seed), alpha, xmin, n_tail=4000, n_body=1500)
    ours, ref = zipf.fit_power_law(x), _powerlaw_fit(x)
    # Same likelihood, same KS criterion; with < 200 distinct values nothing is capped, so xmin agrees
    # exactly. alpha differs only by the optimisers' tolerances (powerlaw's fmin stops at ~1e-4).
    assert ours["xmin"] == ref.xmin
    assert ours["alpha"] == pytest.approx(ref.alpha, abs=2e-3)
    # powerlaw's KS looks only at P(X < u) at data values u; ours also at P(X <= u), so it is not smaller
    # (up to the ~1e-5 that the small difference in alpha moves it).
    assert ref.D - 1e-4 <= ours["ks"] <= ref.D + 0.01


def test_power_law_agrees_with_powerlaw_package_on_zipfian_counts() -> None:
    # Token counts: ~1,800 distinct values, so our xmin scan is capped at 200 log-spaced candidates plus a
    # refinement round, while powerlaw tries all. Tolerance: alpha within 0.02 (one standard error), xmin
    # within 20%; on this data both give exactly the same answer.
    counts = zm_counts(np.random.default_rng(3), 1.05, 2.7, V=8000, tokens=10**7)
    x = counts[counts > 0]
    ours, ref = zipf.fit_power_law(x), _powerlaw_fit(x)
    assert np.unique(x).size > 4 * zipf.MAX_XMIN_CANDIDATES
    assert ours["alpha"] == pytest.approx(ref.alpha, abs=0.02)
    assert ours["xmin"] == pytest.approx(ref.xmin, rel=0.2)
    # At powerlaw's xmin the two maximum-likelihood alphas are the same number.
    at_ref = zipf.fit_power_law(x, xmin=int(ref.xmin))
    assert at_ref["alpha"] == pytest.approx(ref.alpha, abs=2e-3)


@pytest.mark.parametrize("case", ["scanned", "below_data", "gappy"])
def test_ks_is_the_exact_sup_over_all_integers(case: str) -> None:
    rng = np.random.default_rng(11)
    if case == "scanned":  # a tail from 3 over a flat body, xmin found by the scan
        x, fixed_xmin = draw_counts(rng, 2.2, 3, n_tail=300, n_body=100), None
    elif case == "below_data":  # the fit's support starts below the smallest sample
        x, fixed_xmin = draw_power_law(rng, 2.2, 3, 300), 2
    else:  # only multiples of 3: the largest gaps sit right after the data's jumps, not before them
        x, fixed_xmin = 3 * draw_power_law(rng, 2.2, 1, 300), 3
    pl = zipf.fit_power_law(x, xmin=fixed_xmin)
    a, xm = pl["alpha"], pl["xmin"]
    assert fixed_xmin is None or xm == fixed_xmin
    tail = np.sort(x[x >= xm])
    k = np.arange(xm, tail[-1] + 1)  # every integer of the tail's range
    data_cdf = np.searchsorted(tail, k, side="right") / tail.size
    fit_cdf = 1 - special.zeta(a, k + 1) / special.zeta(a, xm)
    assert pl["ks"] == pytest.approx(float(np.max(np.abs(data_cdf - fit_cdf))), abs=1e-9)
    # The likelihood is normalised from xmin, not from the smallest sample.
    nll = lambda alpha: np.log(special.zeta(alpha, xm)) + alpha * np.mean(np.log(tail))  # noqa: E731
    assert nll(a) < min(nll(a - 1e-3), nll(a + 1e-3))


def test_euler_maclaurin_zeta_matches_scipy() -> None:
    x = np.unique(np.geomspace(1, 1e9, 400).round())
    for a in (1.0001, 1.3, 2.0, 3.7, 6.0):
        ours = zipf._hurwitz_zeta(a, x, x**-a)
        np.testing.assert_allclose(ours, special.zeta(a, x), rtol=1e-9)


def test_power_law_helpers_are_consistent() -> None:
    a, xm = 2.3, 4
    x = np.arange(xm, 200)
    np.testing.assert_allclose(
        zipf.power_law_ccdf(x, a, xm) - zipf.power_law_ccdf(x + 1, a, xm),
        zipf.power_law_pmf(x, a, xm),
        rtol=1e-9,
    )
    assert zipf.power_law_ccdf(xm, a, xm) == pytest.approx(1.0)
    assert zipf.power_law_ccdf(1, a, xm) == 1.0 and zipf.power_law_pmf(1, a, xm) == 0.0
    ranks, values = zipf.power_law_rank_curve(a, xm, n_tail=10_000)
    assert ranks[0] == pytest.approx(10_000) and values[0] == xm
    assert np.all(np.diff(ranks) < 0) and np.all(np.diff(values) > 0)
    assert 0.1 < ranks[-1] < 10  # the curve runs up to the top rank


# --- Zipf-Mandelbrot ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("s", "q", "V"), [(1.1, 2.5, 3000), (0.9, 0.0, 5000), (1.3, 8.0, 2000)])
def test_zipf_mandelbrot_recovers_parameters(s: float, q: float, V: int) -> None:
    counts = zm_counts(np.random.default_rng(5), s, q, V, tokens=2 * 10**7)
    zm = zipf.fit(counts)["zipf_mandelbrot"]
    # Ranks come from sorting noisy counts, which reorders neighbours in the tail (the known weakness of rank
    # fits); with >= 1e3 expected tokens per rank the bias stays well under these tolerances.
    assert zm["s"] == pytest.approx(s, abs=0.01)
    assert zm["q"] == pytest.approx(q, abs=0.1 + 0.05 * q)
    assert zm["V"] == V


def test_zipf_mandelbrot_loglik_is_the_mean_log_probability() -> None:
    counts = zm_counts(np.random.default_rng(6), 1.0, 1.5, 2000, tokens=10**6)
    counts[:300] = 0  # zero-count ids still hold ranks (the last ones)
    zm = zipf.fit(counts)["zipf_mandelbrot"]
    c = np.sort(counts)[::-1]
    logp = np.log(zipf.zipf_mandelbrot_pmf(np.arange(1, c.size + 1), zm["s"], zm["q"], zm["V"]))
    assert zm["loglik_per_token"] == pytest.approx(float(c @ logp / c.sum()), abs=1e-9)
    # ... and it is a maximum: nudging either parameter lowers it.
    for ds, dq in ((1e-3, 0), (-1e-3, 0), (0, 1e-2), (0, -1e-2)):
        other = np.log(zipf.zipf_mandelbrot_pmf(np.arange(1, c.size + 1), zm["s"] + ds, zm["q"] + dq, zm["V"]))
        assert c @ other / c.sum() < zm["loglik_per_token"]


@pytest.mark.parametrize(("s", "q", "V"), [(1.0, 0.0, 10), (1.2, 3.0, 50_000), (0.5, -0.9, 1000), (3.0, 100.0, 7)])
def test_zipf_mandelbrot_pmf_is_normalised_and_matches_the_formula(s: float, q: float, V: int) -> None:
    r = np.arange(1, V + 1)
    p = zipf.zipf_mandelbrot_pmf(r, s, q, V)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(p, (r + q) ** -s / np.sum((r + q) ** -s), rtol=1e-12)
    assert np.all(np.diff(p) < 0)


# --- degenerate inputs, types, invariants -------------------------------------------------------------------


def _assert_plain_json(result: dict) -> None:
    assert set(result) == {"power_law", "zipf_mandelbrot"}
    assert set(result["power_law"]) == PL_KEYS and set(result["zipf_mandelbrot"]) == ZM_KEYS
    for part in result.values():
        for key, value in part.items():
            assert value is None or type(value) in (int, float), (key, type(value))
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize(
    "counts",
    [
        np.zeros(0, dtype=np.int64),
        np.zeros(1000, dtype=np.int64),
        np.array([0, 0, 7, 0]),
        np.full(50, 3),
        np.arange(1, 6),  # five distinct values: too few to fit two parameters
        np.array([0, 10**12, 0, 1]),
    ],
)
def test_degenerate_counts_give_nones(counts: np.ndarray) -> None:
    result = zipf.fit(counts)
    _assert_plain_json(result)
    pl, zm = result["power_law"], result["zipf_mandelbrot"]
    assert pl["n"] == int(np.count_nonzero(counts))
    assert all(pl[k] is None for k in PL_KEYS - {"n"})
    assert zm["V"] == counts.size
    assert zm["s"] is None and zm["q"] is None and zm["loglik_per_token"] is None


@pytest.mark.parametrize(
    "counts",
    [
        np.round(1e6 * 0.7 ** np.arange(40)).astype(np.int64),  # geometric: q -> inf, s -> inf
        np.random.default_rng(4).integers(100, 200, 5000),  # flat
    ],
)
def test_non_zipfian_counts_give_no_zipf_mandelbrot_fit(counts: np.ndarray) -> None:
    result = zipf.fit(counts)
    _assert_plain_json(result)
    assert result["zipf_mandelbrot"]["s"] is None and result["zipf_mandelbrot"]["q"] is None


def test_fit_result_is_plain_json_and_integer_like_floats_are_accepted() -> None:
    counts = draw_counts(np.random.default_rng(9), 2.0, 1, n_tail=3000, n_body=0)
    result = zipf.fit(counts)
    _assert_plain_json(result)
    assert result["power_law"]["alpha"] is not None and result["zipf_mandelbrot"]["s"] is not None
    assert zipf.fit(counts.astype(np.float64)) == result


@pytest.mark.parametrize("bad", [np.ones((3, 4), dtype=np.int64), np.array([3, -1, 2]), np.array([1.5, 2.0])])
def test_invalid_counts_raise(bad: np.ndarray) -> None:
    with pytest.raises(MismatchError):
        zipf.fit(bad)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=10**6), min_size=0, max_size=300),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_fit_is_total_and_ignores_id_order(counts: list[int], seed: int) -> None:
    # Shrink a third of the values so that small counts and ties are common, as in real token counts.
    arr = np.array(counts, dtype=np.int64)
    arr = np.where(arr % 3 == 0, arr // 1000, arr)
    result = zipf.fit(arr)
    _assert_plain_json(result)
    assert zipf.fit(np.random.default_rng(seed).permutation(arr)) == result
