"""vocabopt.tradeoff: penalties and their intervals, learning-curve fits, the monotone penalty model and the
tolerance decision, against brute force and synthetic data with a known answer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vocabopt import tradeoff


def test_penalty_at_end_is_the_paired_mean_with_an_interval_that_covers_it():
    rng = np.random.default_rng(0)
    full = rng.normal(4.0, 0.3, size=(2, 400))  # 2 seeds x 400 windows
    design = full + 0.02 + rng.normal(0, 0.01, size=full.shape)  # 2% worse in loss
    p = tradeoff.penalty_at_end(design.tolist(), full.tolist())
    assert p["penalty"] == pytest.approx(math.expm1(np.mean(design - full)))
    assert p["low"] < p["penalty"] < p["high"]
    assert p["low"] < math.expm1(0.02) < p["high"]
    assert p["high"] - p["low"] < 0.01  # paired differences: the shared window noise cancels


T = np.array([25, 50, 75, 100, 150, 200, 250, 300], float)


def _curve(a: float, b: float, c: float) -> list[tuple[float, float]]:
    return list(zip(T.tolist(), (a + b * T**-c).tolist()))


def test_pair_fit_recovers_known_power_laws_with_a_shared_exponent():
    fit = tradeoff.fit_pair([_curve(3.1, 4.0, 0.6)], [_curve(3.0, 5.0, 0.6)])
    assert fit is not None
    np.testing.assert_allclose(fit.params, [3.1, 4.0, 3.0, 5.0, 0.6], atol=1e-4)
    assert fit.gap(None)[0] == pytest.approx(0.1, abs=1e-4)  # asymptote
    assert fit.gap(1e4)[0] == pytest.approx(0.1 + (4.0 - 5.0) * 1e4**-0.6, abs=1e-4)
    assert fit.gap(600, 300)[0] == pytest.approx(3.1 + 4 * 600**-0.6 - 3.0 - 5 * 300**-0.6, abs=1e-4)
    assert tradeoff.fit_pair([_curve(3, 4, 0.6)[:3]], [_curve(3, 5, 0.6)]) is None  # too few points


def test_short_run_bias_is_corrected_at_the_fitted_length():
    """A small head ahead early but behind at convergence: the end-of-run gap is negative, the asymptote's is not."""
    rng = np.random.default_rng(0)
    noisy = [[(t, y + rng.normal(0, 0.002)) for t, y in _curve(3.03, 4.0, 0.5)] for _ in range(2)]
    full = [[(t, y + rng.normal(0, 0.002)) for t, y in _curve(3.00, 6.0, 0.5)] for _ in range(2)]
    fit = tradeoff.fit_pair(noisy, full)
    assert fit.gap(300)[0] < 0  # what a 300-step comparison sees
    p = tradeoff.penalty_at_length(fit, None)
    assert p["low"] <= p["penalty"] <= p["high"]
    assert p["low"] < math.expm1(0.03) < p["high"]
    assert p["low"] > 0  # the interval excludes "no penalty": the bias is corrected, not hidden in noise


def _brute_isotonic(y: np.ndarray) -> float:
    """Least squares over every split of y (sorted by x) into contiguous blocks whose means do not increase."""
    best = np.inf
    for cuts in itertools.product([False, True], repeat=len(y) - 1):
        edges = [0, *[i + 1 for i, c in enumerate(cuts) if c], len(y)]
        means = [y[a:b].mean() for a, b in zip(edges[:-1], edges[1:])]
        if all(m1 >= m2 - 1e-12 for m1, m2 in zip(means, means[1:])):
            fit = np.concatenate([np.full(b - a, m) for (a, b), m in zip(zip(edges[:-1], edges[1:]), means)])
            best = min(best, float(np.sum((fit - y) ** 2)))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_isotonic_fit_is_the_brute_force_least_squares_monotone_fit(seed):
    rng = np.random.default_rng(seed)
    x = rng.permutation(8).astype(float)
    y = rng.normal(size=8)
    fit = tradeoff.isotonic_decreasing(x.tolist(), y.tolist())
    order = np.argsort(x)
    assert np.all(np.diff(fit[order]) <= 1e-12)
    assert np.sum((fit - y) ** 2) == pytest.approx(_brute_isotonic(y[order]))


def _measured(points):
    return [{"capacity": c, "penalty": p, "low": p - w, "high": p + w} for c, p, w in points]


def test_penalty_model_is_monotone_and_interpolates():
    model = tradeoff.penalty_model(
        _measured([(0.6, 0.05, 0.01), (0.8, 0.02, 0.01), (0.7, 0.01, 0.01), (0.95, 0.0, 0.005)])
    )
    assert model["capacity"] == [0.6, 0.7, 0.8, 0.95]
    assert np.all(np.diff(model["penalty"]) <= 0) and np.all(np.diff(model["high"]) <= 0)
    assert model["penalty"][1] == model["penalty"][2] == pytest.approx(0.015)  # the violating pair pooled
    assert model["monotone_violations"] == 0  # their intervals overlap
    mid = tradeoff.predict_penalty(model, 0.65)
    assert mid["penalty"] == pytest.approx((0.05 + 0.015) / 2)
    assert tradeoff.predict_penalty(model, 0.5) is None  # no extrapolation below the measured range
    strict = tradeoff.penalty_model(_measured([(0.6, 0.0, 0.001), (0.9, 0.05, 0.001)]))
    assert strict["monotone_violations"] == 1


def test_choose_takes_the_fastest_design_whose_upper_bound_is_within_tolerance():
    model = tradeoff.penalty_model(_measured([(0.6, 0.05, 0.01), (0.8, 0.008, 0.001), (0.95, 0.0, 0.001)]))
    frontier = [
        {"cutoffs": [1], "time_ms": 1.0, "capacity": 0.6},
        {"cutoffs": [2], "time_ms": 2.0, "capacity": 0.8},
        {"cutoffs": [3], "time_ms": 3.0, "capacity": 0.95},
        {"cutoffs": [4], "time_ms": 0.5, "capacity": 0.4},  # outside the measured range: never chosen
    ]
    chosen, met = tradeoff.choose(frontier, model, tolerance=0.01)
    assert met and chosen["cutoffs"] == [2] and chosen["predicted_high"] <= 0.01
    chosen, met = tradeoff.choose(frontier, model, tolerance=0.0005)
    assert not met and chosen["cutoffs"] == [3]  # nothing within: the lowest upper bound, flagged


def test_choose_does_not_let_pooling_hide_a_trained_designs_own_bound():
    """Isotonic pooling averages neighbours' bounds; a trained design must also clear its own measured bound."""
    measured = [
        {"cutoffs": [1], "proj_dims": [4], "capacity": 0.6, "penalty": -0.01, "low": -0.02, "high": -0.005},
        {"cutoffs": [2], "proj_dims": [4], "capacity": 0.8, "penalty": 0.012, "low": 0.005, "high": 0.02},
    ]
    model = tradeoff.penalty_model(measured)
    assert model["high"][1] < 0.01  # pooled: the model alone would call the 0.8 design within 1%
    frontier = [
        {"cutoffs": [2], "proj_dims": [4], "time_ms": 1.0, "capacity": 0.8},
        {"cutoffs": [3], "proj_dims": [4], "time_ms": 2.0, "capacity": 0.6},
    ]
    chosen, met = tradeoff.choose(frontier, model, 0.01, measured)
    assert chosen["cutoffs"] == [3] and met  # the slower design, whose bound holds
    assert chosen["measured"] is False  # interpolated: [3] was not trained
    chosen, _ = tradeoff.choose(frontier, model, 0.01)  # without the measured bounds, pooling decides
    assert chosen["cutoffs"] == [2]


def test_a_wild_interval_does_not_overflow():
    p = tradeoff._summary(2000.0, np.array([-5000.0, 0.0, 5000.0]))
    assert math.isfinite(p["penalty"]) and math.isfinite(p["high"]) and p["low"] >= -1


def test_a_fit_whose_exponent_sits_on_a_bound_is_refused():
    """Curves straight in log t never level off: the asymptote is undetermined, so no fit (end-of-run basis)."""
    log_linear = [(t, 6.0 - 0.5 * math.log(t)) for t in T]
    assert tradeoff.fit_pair([log_linear], [[(t, y - 0.01) for t, y in log_linear]]) is None


def test_choose_trained_only_keeps_the_fastest_trained_design_within_tolerance():
    measured = [
        {"cutoffs": [1], "proj_dims": [4], "capacity": 0.6, "penalty": 0.03, "low": 0.02, "high": 0.04},
        {"cutoffs": [3], "proj_dims": [4], "capacity": 1.0, "penalty": 0.0, "low": -0.002, "high": 0.002},
    ]
    model = tradeoff.penalty_model(measured)
    frontier = [
        {"cutoffs": [1], "proj_dims": [4], "time_ms": 1.0, "capacity": 0.6},
        {"cutoffs": [2], "proj_dims": [4], "time_ms": 2.0, "capacity": 0.95},  # interpolated high 0.0039
        {"cutoffs": [3], "proj_dims": [4], "time_ms": 3.0, "capacity": 1.0},
    ]
    chosen, met = tradeoff.choose(frontier, model, 0.01, measured)
    assert chosen["cutoffs"] == [2] and met and not chosen["measured"]
    chosen, met = tradeoff.choose(frontier, model, 0.01, measured, trained_only=True)
    assert chosen["cutoffs"] == [3] and met and chosen["measured"]
    # min_gain: the interpolated [2] (2 ms) is 1.5x faster than the trained pass [3] (3 ms): still chosen with a
    # 10% minimum gain; made 2.8 ms (under 10% faster), the trained pass is chosen instead
    chosen, met = tradeoff.choose(frontier, model, 0.01, measured, min_gain=0.1)
    assert chosen["cutoffs"] == [2] and met and not chosen["measured"]
    close = [frontier[0], {**frontier[1], "time_ms": 2.8}, frontier[2]]
    assert tradeoff.choose(close, model, 0.01, measured)[0]["cutoffs"] == [2]  # no minimum gain: the faster
    chosen, met = tradeoff.choose(close, model, 0.01, measured, min_gain=0.1)
    assert chosen["cutoffs"] == [3] and met and chosen["measured"]


def test_the_interval_at_end_includes_run_to_run_variance():
    """Two seeds that disagree by 4% in loss (each with tight windows): the two-level bootstrap's interval spans
    both runs' penalties; one run alone gives a tight interval that misses the other."""
    rng = np.random.default_rng(1)
    full = rng.normal(4.0, 0.3, size=(2, 400))
    design = full + np.array([[-0.01], [0.03]]) + rng.normal(0, 0.005, size=full.shape)
    both = tradeoff.penalty_at_end(design.tolist(), full.tolist())
    assert both["runs"] == 2
    assert both["low"] < math.expm1(-0.005) and both["high"] > math.expm1(0.025)
    one = tradeoff.penalty_at_end(design[:1].tolist(), full[:1].tolist())
    assert one["runs"] == 1 and one["high"] < math.expm1(0.0)  # blind to the other run's +3%


def test_equal_time_penalty_is_the_full_softmax_at_the_same_wall_time():
    """A full-softmax curve linear in log step is interpolated exactly: at speed-up 2 a design ending at step 300
    meets the full softmax at step 150; seeds are averaged; outside the curve there is no answer."""

    def full(t):
        return 6.0 - 0.3 * math.log(t)

    full_curve = [(t, full(t)) for t in (40, 80, 120, 200, 300)]
    design = [[(40, 5.0), (300, 4.4)], [(40, 5.0), (300, 4.5)]]
    got = tradeoff.penalty_at_equal_time(design, [full_curve, full_curve], 2.0)
    assert got == pytest.approx(math.expm1(np.mean([4.4, 4.5]) - full(150.0)), rel=1e-12)
    assert tradeoff.penalty_at_equal_time(design[:1], [full_curve], 1.0) == pytest.approx(math.expm1(4.4 - full(300)))
    assert tradeoff.penalty_at_equal_time(design[:1], [full_curve], 0.8) is None  # slower: past the full's run
    assert tradeoff.penalty_at_equal_time(design[:1], [full_curve], 10.0) is None  # step 30: before its first point


def test_pooling_does_not_lift_a_trained_design_whose_own_bound_clears():
    """benchmarks/tune_corpora.py's KJV case: a design at +0.68% upper bound next to a higher-capacity one at +1.73%
    (noise: capacity 1.0 is the full softmax's in effect); pooled, both bounds exceed 1%, but the trained design is
    judged by its own interval and chosen; an untrained design between them still takes the model's bound."""
    measured = [
        {"cutoffs": [2000], "proj_dims": [64], "capacity": 0.947, "penalty": -0.0046, "low": -0.0166, "high": 0.0068},
        {"cutoffs": [7376], "proj_dims": [64], "capacity": 1.0, "penalty": 0.0001, "low": -0.0165, "high": 0.0173},
    ]
    model = tradeoff.penalty_model(measured)
    assert min(model["high"]) > 0.01  # pooled: the model alone calls neither within 1%
    frontier = [
        {"cutoffs": [2000], "proj_dims": [64], "time_ms": 1.0, "capacity": 0.947},
        {"cutoffs": [5000], "proj_dims": [64], "time_ms": 2.0, "capacity": 0.98},  # untrained: model's bound
        {"cutoffs": [7376], "proj_dims": [64], "time_ms": 3.0, "capacity": 1.0},
    ]
    chosen, met = tradeoff.choose(frontier, model, 0.01, measured)
    assert met and chosen["cutoffs"] == [2000] and chosen["measured"]
    assert chosen["predicted_high"] == 0.0068 and chosen["predicted_penalty"] == -0.0046  # its own measurement
    chosen, met = tradeoff.choose(frontier[1:], model, 0.01, measured)
    assert not met  # neither the interpolated [5000] nor [7376] (own +1.73%) is within 1%


def test_gap_probe_aims_where_the_bounds_line_crosses_the_tolerance_kept_off_the_gaps_ends():
    """A trained choice that passed, faster trained designs that failed: the probe is the untrained design nearest
    the capacity where the line through the most capacious failure's upper bound and the choice's crosses the
    tolerance, that target kept PROBE_SAFEGUARD's shares of the gap from the choice's and the failure's ends
    (safeguarded false position), at least
    PROBE_MIN_GAIN faster than the choice; trained designs, designs outside the gap and designs too little faster are
    never probed. The frontier has designs on both sides of each clamped target, so that the line's own target
    (unclamped) would pick another design."""
    assert tradeoff.PROBE_SAFEGUARD == (0.1, 0.25)  # the targets below are worked out for it

    def design(cap, ms, cut):
        return {"cutoffs": [cut], "proj_dims": [8], "capacity": cap, "time_ms": ms}

    points = [(0.70, 1.0), (0.82, 1.5), (0.835, 1.7), (0.85, 2.0), (0.87, 2.5), (0.90, 3.0), (0.92, 3.5),
              (0.94, 3.52), (0.946, 3.53), (0.95, 3.9), (1.0, 5.0)]  # fmt: skip
    frontier = [design(c, ms, k) for k, (c, ms) in enumerate(points)]
    at = {d["capacity"]: d for d in frontier}
    passed = {**at[0.95], "measured": True, "predicted_high": 0.0}  # the choice: 1% below the tolerance

    def trained(cap, high):
        d = at[cap] if cap in at else design(cap, 3.0, 99)
        return {**d, "predicted_ms": d["time_ms"], "penalty": high - 0.01, "low": high - 0.02, "high": high}

    def probe(failures, chosen=passed, **kw):
        measured = [*(trained(c, h) for c, h in failures), trained(0.95, chosen["predicted_high"])]
        found = tradeoff.gap_probe(frontier, measured, chosen, 0.01, **kw)
        return None if found is None else found["capacity"]

    # the failure 0.82 at +3%: the line crosses 1% a third of the way down the gap, 0.907 -> 0.90
    assert probe([(0.70, 0.2), (0.82, 0.03)]) == 0.90
    # the failure 0.70 at +3%: 0.867 -> 0.87; bisection (safeguard 0.5) takes the middle, 0.825 -> 0.82
    assert probe([(0.70, 0.03)]) == 0.87
    assert probe([(0.70, 0.03)], safeguard=(0.5, 0.5)) == 0.82
    # a far failure (+21%): the line crosses at 0.944 (-> 0.946); a tenth of the gap kept from the choice: 0.937 -> 0.94
    assert probe([(0.82, 0.21)]) == 0.94
    assert probe([(0.82, 0.21)], safeguard=(0.25, 0.25)) == 0.92  # a quarter: 0.9175
    # a choice barely within (0.99%): the line crosses at 0.949 (-> 0.946); kept a tenth down, 0.937 -> 0.94
    assert probe([(0.82, 0.03)], {**passed, "predicted_high": 0.0099}) == 0.94
    # a failure barely above (1.01%): the line crosses at 0.821 (-> 0.835); kept a quarter up, 0.8525 -> 0.85
    assert probe([(0.82, 0.0101)]) == 0.85
    # a more capacious failure narrows the gap from below: (0.90, 0.95): 0.925 -> 0.92; (0.92, 0.95): 0.935 -> 0.94
    assert probe([(0.82, 0.03), (0.90, 0.02)]) == 0.92
    assert probe([(0.82, 0.03), (0.92, 0.02)]) == 0.94
    assert probe([(0.82, 0.03), (0.946, 0.02)]) is None  # (0.946, 0.95): empty
    assert probe([(0.82, 0.03)], {**passed, "predicted_high": 0.02}) is None  # did not pass
    assert probe([(0.82, 0.03)], {**passed, "predicted_high": float("nan")}) is None  # no bound: not a pass
    assert probe([(0.82, 0.03)], {**passed, "measured": False}) is None  # not trained
    assert probe([(0.70, 0.005)]) is None  # no faster design failed
    # 0.90 (3.0 ms) is under 10% faster than 3.2 ms: not worth a round; the nearest to 0.907 of those left: 0.87
    assert probe([(0.82, 0.03)], {**passed, "time_ms": 3.2}) == 0.87
    # an off-frontier choice (a folklore design) dominated by a faster design with more capacity that failed: that
    # failure bounds no gap below the choice, the one below is still probed
    assert probe([(0.82, 0.03), (0.97, 0.02)]) == 0.90


def test_tie_break_gives_a_seed_only_to_a_faster_design_whose_every_seed_passes():
    """The fastest trained design whose seeds all passed but whose interval's upper end did not, with seeds left
    and (when a choice met the tolerance) at least the minimum gain faster than it; a worst seed above the
    tolerance, a penalty above it, a design already passing, too few gains or no seeds left: None."""

    def m(name, ms, seeds, high, per_seed):
        return {"name": name, "predicted_ms": ms, "seeds": seeds, "high": high, "seed_penalties": per_seed}

    chosen = {"name": "c", "time_ms": 50.0}
    measured = [
        m("c", 50.0, 2, 0.004, [-0.01, 0.0]),  # the choice: passes
        m("undecided", 40.0, 2, 0.0107, [-0.009, 0.0093]),  # every seed within 1%, the bound just outside
        m("slower", 44.0, 2, 0.0105, [0.0, 0.009]),  # undecided too, but not the fastest
        m("worst seed fails", 30.0, 2, 0.013, [-0.01, 0.012]),  # mean within, a seed above: more seeds cannot help
        m("fails", 20.0, 2, 0.05, [0.03, 0.04]),
    ]
    assert tradeoff.tie_break(measured, chosen, True, 0.01, 3)["name"] == "undecided"
    assert tradeoff.tie_break(measured, chosen, True, 0.01, 2) is None  # no seed left to give
    assert tradeoff.tie_break(measured[:1] + measured[2:], chosen, True, 0.01, 3)["name"] == "slower"
    passing = [m("passes", 30.0, 2, 0.009, [-0.009, 0.008])]  # faster but decided already: its bound is within
    assert tradeoff.tie_break(passing, chosen, True, 0.01, 3) is None
    assert tradeoff.tie_break(passing, chosen, False, 0.01, 3) is None
    near = [m("near", 48.0, 2, 0.0107, [-0.009, 0.0093])]  # 4% faster: a pass would not be worth the choice
    assert tradeoff.tie_break(near, chosen, True, 0.01, 3) is None
    assert tradeoff.tie_break(near, chosen, False, 0.01, 3)["name"] == "near"  # nothing passed: any undecided one
    assert tradeoff.seed_penalties([[1.0, 1.2], [2.0, 2.0]], [[1.0, 1.0], [1.9, 2.1]]) == pytest.approx(
        [np.expm1(0.1), 0.0]
    )


def test_with_up_to_3_seeds_a_design_above_the_tolerance_after_its_first_seed_never_passes():
    """race_margin's premise: a design whose first seed's interval lies just above the tolerance keeps its final
    upper end above it however much better its later seeds are (2 or 3 seeds), for small and large window noise; so
    racing it out at the tolerance itself (margin 0) loses no pass. With 4 seeds the margin comes back."""
    rng = np.random.default_rng(3)
    for trial in range(12):
        full = [rng.normal(5.0, 0.3, 256) for _ in range(3)]
        sd = [0.01, 0.03, 0.1][trial % 3]
        noise = [rng.normal(0.0, sd, 256) for _ in range(3)]
        first = tradeoff.penalty_at_end([list(full[0] + noise[0])], [list(full[0])])
        lift = np.log1p(0.01) - np.log1p(first["low"]) + 1e-4  # seed 0's interval now starts just above 1%
        design = [list(full[0] + noise[0] + lift)]
        assert tradeoff.out_of_race(design, [list(full[0])], 0.01, tradeoff.race_margin(2))
        for s in (1, 2):
            design.append(list(full[s] + noise[s] + rng.uniform(-0.05, -0.02)))  # 2% to 5% better than the full
            high = tradeoff.penalty_at_end(design, [list(f) for f in full[: s + 1]], seed=trial)["high"]
            assert high > 0.01, (trial, s, high)
    assert tradeoff.race_margin(3) == 0.0 and tradeoff.race_margin(4) == tradeoff.RACE_MARGIN
