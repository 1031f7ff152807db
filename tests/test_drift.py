"""drift: cluster shares then and now, cutoff crossings (against a brute-force count), predicted times from the cost
model, and the keep / replan recommendation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vocabopt import CorpusStats, MismatchError, Plan, drift, optimize, predict
from vocabopt.cli import main
from vocabopt.profile import synthetic_profile

V, D, N = 4000, 64, 2048


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile(lambda name, *c: 0.05 + 1e-8 * np.prod(c, axis=0))


def _zipf(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1e6 / np.arange(1, V + 1) ** 1.1).astype(np.int64)[rng.permutation(V)]


def _brute_crossings(plan: Plan, new: np.ndarray) -> tuple[int, int]:
    now_order = sorted(range(V), key=lambda t: (-new[t], t))
    now_rank = {t: r for r, t in enumerate(now_order)}
    edges = [0, *plan.cutoffs, V]

    def cluster(r):
        return next(c for c in range(len(edges) - 1) if edges[c] <= r < edges[c + 1])

    then_rank = {int(t): r for r, t in enumerate(plan.order)}
    moved = [t for t in range(V) if cluster(then_rank[t]) != cluster(now_rank[t])]
    up = [t for t in moved if cluster(now_rank[t]) < cluster(then_rank[t])]
    return len(moved), len(up)


def test_same_frequencies_keep_the_plan(profile):
    old = CorpusStats.from_counts(_zipf(0))
    plan = optimize(old, hidden=D, profile=profile, batch_tokens=N)
    rep = drift(old, old, plan, profile=profile)
    assert rep.shares_then == rep.shares_now and rep.crossed == 0 and rep.total_variation == 0
    assert rep.new_cutoffs == plan.cutoffs and rep.gain == pytest.approx(0, abs=1e-12)
    assert rep.recommendation == "keep"


def test_drifted_frequencies_against_references(profile):
    old_counts, new_counts = _zipf(0), _zipf(1)  # the same law over a reshuffled vocabulary
    old, new = CorpusStats.from_counts(old_counts), CorpusStats.from_counts(new_counts)
    plan = optimize(old, hidden=D, profile=profile, batch_tokens=N)
    rep = drift(old, new, plan, profile=profile)
    shares_now = [new_counts[plan.order[lo:hi]].sum() / new_counts.sum() for lo, hi in plan.bounds]
    assert rep.shares_now == pytest.approx(shares_now, rel=1e-12)
    assert rep.shares_now[0] < 0.6 * rep.shares_then[0]  # the head (half the ids) lost 45% of its share
    assert (rep.crossed, rep.crossed_up) == _brute_crossings(plan, new_counts)
    assert rep.examples[0]["count_now"] == max(e["count_now"] for e in rep.examples)
    kw = dict(hidden=D, batch_tokens=N)
    old_ms = predict(profile, new_counts[plan.order], cutoffs=plan.cutoffs, proj_dims=plan.proj_dims, **kw).time_ms
    assert rep.old_plan_ms == pytest.approx(old_ms)
    best = optimize(new, profile=profile, **kw)
    assert rep.new_cutoffs == best.cutoffs
    assert rep.gain == pytest.approx(rep.old_plan_ms / rep.new_plan_ms - 1)
    assert rep.recommendation == ("replan" if rep.gain >= 0.05 and rep.new_capacity >= rep.old_capacity else "keep")
    assert rep.recommendation == "replan" and rep.gain > 0.05
    assert rep.total_variation == pytest.approx(
        0.5 * np.abs(old_counts / old_counts.sum() - new_counts / new_counts.sum()).sum()
    )


def test_a_different_vocabulary_is_refused(profile):
    old = CorpusStats.from_counts(_zipf(0))
    plan = Plan.from_cutoffs(old, hidden=D, cutoffs=[100, 1000])
    with pytest.raises(MismatchError, match="vocabopt expand"):
        drift(old, np.ones(V + 5, dtype=np.int64), plan, profile=profile)


def test_cli_drift(tmp_path, profile):
    old, new = CorpusStats.from_counts(_zipf(0)), CorpusStats.from_counts(_zipf(1))
    plan = optimize(old, hidden=D, profile=profile, batch_tokens=N)
    for name, obj in (("old.json", old), ("new.json", new), ("plan.json", plan), ("prof.json", profile)):
        obj.save(tmp_path / name)
    args = ["drift", *(str(tmp_path / n) for n in ("old.json", "new.json", "plan.json"))]
    res = CliRunner().invoke(main, [*args, "--profile", str(tmp_path / "prof.json"), "-o", str(tmp_path / "np.json")])
    assert res.exit_code == 0, res.output
    assert "recommendation: replan" in res.output
    assert not np.array_equal(Plan.load(tmp_path / "np.json").order, plan.order)  # same law, new frequency order
    res = CliRunner().invoke(main, [*args, "--profile", str(tmp_path / "prof.json"), "--json"])
    assert json.loads(res.output)["recommendation"] == "replan"
    res = CliRunner().invoke(main, [args[0], args[1], args[2], args[1], "--profile", str(tmp_path / "prof.json")])
    assert res.exit_code == 1 and "Error" in res.output
