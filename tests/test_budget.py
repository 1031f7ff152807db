"""tune's wall-time budget (vocabopt/budget.py): costs shared by step times, estimates, the stop record."""

from __future__ import annotations

import pytest

from vocabopt import budget as budget_mod

FULL = "full softmax"


def test_budget_estimates_a_round_from_the_step_times_of_the_trainings_so_far(monkeypatch):
    """A lockstep call's time is shared by step times: 15 s for the full softmax (2 ms steps) and one design on two
    seeds (1 ms each) -> 5 s per full-softmax training, 2.5 s per design training; a round of 2 design trainings
    needs 5 s (5.5 s with the margin), and 12.5 s (13.75 s) with the confirmation (one design, one full softmax)
    kept in reserve. Once a refinement round ran, its cost per seed is what the next round is estimated from."""
    now = [100.0]
    monkeypatch.setattr(budget_mod.time, "perf_counter", lambda: now[0])
    margin = 1 + budget_mod.MARGIN
    budget = budget_mod.Budget(started=100.0, minutes=1.0)
    budget.add(15.0, {FULL: [2.0, 2.0], "d0": [1.0, 1.0]}, full=FULL)
    assert budget.design_s == [2.5, 2.5] and budget.full_s == [5.0, 5.0]
    budget.add(3.0, {"r1": [0.0]}, full=FULL, refined=True)  # step times all 0 (a coarse clock): no share to give
    assert budget.refined_s == [] and budget.estimate(2) == pytest.approx(5.0 * margin)
    now[0] = 160.0 - 5.0 * margin  # just enough left for 2 trainings
    assert budget.fits(2, 1) and budget.stopped is None
    assert not budget.fits(3, 2)
    left = 5.0 * margin / 60
    assert budget.stopped == pytest.approx({"round": 2, "estimate_minutes": 7.5 * margin / 60, "left_minutes": left})
    budget.add(8.0, {"r1": [1.0, 1.0]}, full=FULL, refined=True)  # a refinement round: 4 s per seed
    assert budget.refined_s == [4.0, 4.0] and budget.estimate(2) == pytest.approx(8.0 * margin)
    assert budget.estimate(1, full=1) == pytest.approx((4.0 + 5.0) * margin)  # a tie-break's seed: design + full
    confirming = budget_mod.Budget(started=100.0, minutes=1.0, confirm=True, design_s=[2.5], full_s=[5.0])
    now[0] = 160.0 - 12.5 * margin  # 2 designs (5 s) + the confirmation (7.5 s)
    assert confirming.fits(2, 1) and not confirming.fits(3, 1)
    assert budget_mod.Budget(started=0.0, minutes=None, design_s=[1e9]).fits(10, 1)  # no limit
