"""vocabopt.tune and `vocabopt tune`: candidates span the frontier, a tiny end-to-end run on a slice of the shipped
corpus, and the evidence round-trips through Plan.save/load."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vocabopt
from vocabopt import budget as budget_mod
from vocabopt import tradeoff
from vocabopt.cli import main
from vocabopt.cli.tune import _print_table
from vocabopt.errors import InputError
from vocabopt.evidence import design_record
from vocabopt.plan import Plan
from vocabopt.profile import synthetic_profile
from vocabopt.search import SearchSpace, pareto, search
from vocabopt.training import TrainSettings
from vocabopt.tune import select_candidates

BPE = Path(__file__).resolve().parents[1] / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
TINY = TrainSettings(model="lstm", seq_len=16, batch_size=8, steps=24, lr=1e-2, eval_tokens=1024)


def _frontier(caps):
    return [
        {"cutoffs": [i + 1], "proj_dims": [4], "time_ms": 1.0 + c, "capacity": c, "params": 0}
        for i, c in enumerate(caps)
    ]


def test_candidates_span_the_frontier():
    frontier = _frontier([0.30, 0.35, 0.41, 0.55, 0.62, 0.70, 0.88, 0.93, 0.97])
    picks = select_candidates(frontier, 4)
    caps = [p["capacity"] for p in picks]
    assert caps[0] == 0.30 and caps[-1] == 0.97  # both ends
    assert len(picks) == 4 and caps == sorted(caps)
    assert max(np.diff(caps)) < 0.5  # spread along the range, not bunched at one end
    assert [p["name"] for p in picks] == ["d0", "d1", "d2", "d3"]
    assert len(select_candidates(_frontier([0.5]), 4)) == 1
    bunched = select_candidates(_frontier([0.60, 0.61, 0.62, 0.63, 0.95]), 4)
    assert len(bunched) == 4 and len({p["capacity"] for p in bunched}) == 4  # no design picked twice
    with pytest.raises(InputError, match="full softmax is the answer"):
        select_candidates([], 4)


def test_no_trained_choice_when_every_trained_design_left_the_race():
    """Every trained design raced out (fewer seeds than the proxy's 2): none may be chosen, and the fallback to the
    trained designs says so (None) instead of raising; with one that kept its seeds, that one."""
    tune_mod = sys.modules["vocabopt.tune"]
    frontier = _frontier([0.5, 0.7, 0.9])
    measured = [
        {**d, "name": f"d{i}", "penalty": 0.2, "low": 0.15, "high": 0.25, "seeds": 1}
        for i, d in enumerate(frontier[::2])
    ]
    model = tradeoff.penalty_model(measured)
    assert tune_mod._trained_choice(frontier, measured, measured, model, 0.01, 2) is None
    measured[1]["seeds"] = 2
    chosen, met = tune_mod._trained_choice(frontier, measured, measured, model, 0.01, 2)
    assert chosen["capacity"] == 0.9 and chosen["measured"] and not met


def test_tie_break_is_judged_against_the_fastest_trained_pass_even_under_an_interpolated_choice():
    """An undecided design (seeds within 1%, bound above) 15% faster than the fastest trained pass gets the extra
    seed while the choice is an interpolated design a little slower than it (its pass would take the choice); not
    when it is under 10% faster than that pass, nor when the interpolated choice is far faster (a pass could not
    take it); against a trained choice, as `tradeoff.tie_break` alone."""
    tune_mod = sys.modules["vocabopt.tune"]

    def m(name, ms, high=0.0112, seeds=(0.004, 0.009)):
        return {"name": name, "predicted_ms": ms, "time_ms": ms, "high": high, "seed_penalties": list(seeds),
                "seeds": 2, "measured": True}  # fmt: skip

    passed = m("pass", 1.30, high=0.005)
    undecided = m("undecided", 1.13)  # 15% faster than the pass
    interpolated = {"time_ms": 1.18, "measured": False}  # the model's choice between the two
    assert tune_mod._tie_break([passed, undecided], interpolated, True, (passed, True), 0.01, 3)["name"] == "undecided"
    close = m("close", 1.25)  # 4% faster than the pass: a pass would not change the trained answer
    assert tune_mod._tie_break([passed, close], interpolated, True, (passed, True), 0.01, 3) is None
    far = {"time_ms": 0.9, "measured": False}  # an interpolated choice 26% faster than the undecided design
    assert tune_mod._tie_break([passed, undecided], far, True, (passed, True), 0.01, 3) is None
    chosen = {**passed, "time_ms": 1.30}
    assert tune_mod._tie_break([passed, undecided], chosen, True, None, 0.01, 3)["name"] == "undecided"
    assert tune_mod._tie_break([passed, undecided], interpolated, False, None, 0.01, 3)["name"] == "undecided"


def test_folklore_designs_off_the_frontier_are_eligible_once():
    frontier = _frontier([0.5, 0.9])
    folk = {"cutoffs": [2000], "proj_dims": [64], "time_ms": 1.2, "capacity": 0.95, "name": "paper/Lua"}
    picks = [{**frontier[0], "name": "d0"}, folk]
    assert tradeoff.eligible(frontier, picks) == [*frontier, folk]  # the frontier's own pick is not repeated


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_slice):
    path = tmp_path_factory.mktemp("tune") / "tiny.txt"
    text = corpus_slice.read_text(encoding="utf-8")[:120_000]
    path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    stats = vocabopt.analyze([str(path)], tokenizer=str(BPE))
    prof = synthetic_profile(lambda kernel, *c: 0.01 + 1e-7 * np.prod(c, axis=0))
    return path, stats, prof


@pytest.fixture(scope="module")
def tuned(tiny):
    path, stats, prof = tiny
    return vocabopt.tune(
        stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
        seeds=1, candidates=3, train=TINY, max_tokens=25_000, tolerance=0.05,
    )  # fmt: skip


def test_end_to_end_tune_records_its_evidence(tuned):
    t = tuned.provenance["tune"]
    assert tuned.provenance["method"] == "vocabopt.tune"
    assert len(t["measured"]) >= 2
    for m in t["measured"]:
        assert m["low"] <= m["penalty"] <= m["high"]
        assert m["heldout_ppl"] > 1 and m["proxy_step_ms"] > 0
        assert sum(1 for b in m["bands"]) >= 2
        assert m["equal_time_basis"] == "measured"  # no train_tokens: measured in the run, never fitted
        covered = 1 <= m["proxy_speedup"] <= 8  # the full softmax's curve (steps 3..24) holds step 24 / speed-up
        assert (m["equal_time_penalty"] is not None) == covered
        assert len(m["curves"]) == 1 and m["curves"][0][-1][0] == TINY.steps  # per seed, ending at the last step
        assert m["seeds"] == 1 and m["seed_swing"] is None
    assert np.all(np.diff(t["model"]["penalty"]) <= 1e-12)  # monotone in capacity
    assert tuned.cutoffs == t["chosen"]["cutoffs"] and tuned.proj_dims == t["chosen"]["proj_dims"]
    assert isinstance(t["met"], bool)
    if t["met"]:
        assert t["chosen"]["predicted_high"] <= t["tolerance"]
    assert t["basis"]


def test_evidence_round_trips_through_save_and_load(tuned, tmp_path):
    tuned.save(tmp_path / "plan.json")
    back = Plan.load(tmp_path / "plan.json")
    assert back.provenance["tune"] == json.loads(json.dumps(tuned.provenance["tune"]))
    assert back.cutoffs == tuned.cutoffs


def test_cli_tune(tiny, tmp_path):
    path, stats, prof = tiny
    stats.save(tmp_path / "stats.json")
    prof.save(tmp_path / "prof.json")
    args = [
        "tune", str(tmp_path / "stats.json"), "--corpus", str(path), "-t", str(BPE), "--hidden", "16",
        "--batch-tokens", "512", "--profile", str(tmp_path / "prof.json"), "--steps", "16", "--seq-len", "16",
        "--batch-size", "8", "--seeds", "1", "--candidates", "2", "--max-tokens", "20000",
        "--budget-minutes", "0", "--confirm", "-o", str(tmp_path / "plan.json"), "--plot", str(tmp_path / "tune.png"),
    ]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "penalty" in res.output and "chosen:" in res.output
    assert "confirmation (seed 1, one more run)" in res.output
    assert (tmp_path / "tune.png").read_bytes()[:4] == b"\x89PNG"
    assert Plan.load(tmp_path / "plan.json").provenance["tune"]["budget"]["minutes"] is None  # 0: no limit
    replan = CliRunner().invoke(
        main,
        ["optimize", str(tmp_path / "stats.json"), "--hidden", "16", "--batch-tokens", "4096", "--profile",
         str(tmp_path / "prof.json"), "--from-tune", str(tmp_path / "plan.json"), "-o", str(tmp_path / "p2.json")],
    )  # fmt: skip
    assert replan.exit_code == 0, replan.output
    assert "measured quality (--from-tune" in replan.output
    assert "from_tune" in Plan.load(tmp_path / "p2.json").provenance["options"]
    bad = CliRunner().invoke(main, [*args[:-4], "--tolerance", "2", "-o", str(tmp_path / "x.json")])
    assert bad.exit_code == 1 and "tolerance=2" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(main, [*args[:-4], "--budget-minutes", "-1", "-o", str(tmp_path / "x.json")])
    assert bad.exit_code == 1 and "budget_minutes=-1" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x.json").exists()


def test_optimize_from_tune_recommends_on_the_measured_model(tiny):
    """With a tuned plan's penalty model, optimize picks the fastest frontier design whose modelled upper bound is
    within tune's tolerance, on any profile or batch size (quality does not depend on the device)."""
    _, stats, prof = tiny
    tuned = Plan.from_cutoffs(stats, hidden=16, cutoffs=[100])
    model = {"capacity": [0.5, 1.0], "penalty": [0.04, 0.0], "high": [0.05, 0.0], "monotone_violations": 0}
    tuned.provenance["tune"] = {"model": model, "tolerance": 0.01, "basis": "test model"}
    plan = vocabopt.optimize(stats, hidden=16, profile=prof, batch_tokens=4096, from_tune=tuned, min_capacity=0.0)
    measured = plan.provenance["options"]["from_tune"]
    assert measured["met"] and measured["predicted_high"] <= 0.01
    assert plan.capacity >= 0.9 - 1e-9  # high(c) = 0.05 * (1 - c) / 0.5 <= 0.01 <=> c >= 0.9
    faster = [d for d in plan.predicted["frontier"] if d["time_ms"] < plan.predicted["plan"]["time_ms"] - 1e-9]
    assert all(d["capacity"] < 0.9 for d in faster)  # every faster frontier design misses the tolerance
    with pytest.raises(vocabopt.MismatchError, match="hidden=16"):
        vocabopt.optimize(stats, hidden=32, profile=prof, batch_tokens=4096, from_tune=tuned)
    with pytest.raises(InputError, match="not a plan made by `vocabopt tune`"):
        vocabopt.optimize(
            stats, hidden=16, profile=prof, batch_tokens=4096, from_tune=Plan.from_cutoffs(stats, 16, [9])
        )


def test_optimize_from_tune_can_choose_a_trained_folklore_design_as_tune_does(tiny):
    """A folklore design tune trained, off the frontier, whose own bound clears the tolerance while the model's
    bound clears it nowhere: optimize --from-tune chooses it (tune's rule: `tradeoff.eligible`, own bounds)."""
    _, stats, prof = tiny
    plain = vocabopt.optimize(stats, hidden=16, profile=prof, batch_tokens=4096, min_capacity=0.0)
    folk = next(f for f in plain.predicted["folklore"] if f["name"] == "paper/Lua")
    tuned = Plan.from_cutoffs(stats, hidden=16, cutoffs=folk["cutoffs"], proj_dims=folk["proj_dims"])
    model = {"capacity": [0.3, 1.0], "penalty": [0.04, 0.02], "high": [0.05, 0.03], "monotone_violations": 0}
    mine = {**{k: folk[k] for k in ("cutoffs", "proj_dims", "capacity")}, "penalty": 0.0, "low": -0.005, "high": 0.005}
    tuned.provenance["tune"] = {"model": model, "tolerance": 0.01, "basis": "test", "measured": [mine]}
    plan = vocabopt.optimize(stats, hidden=16, profile=prof, batch_tokens=4096, from_tune=tuned, min_capacity=0.0)
    chosen = plan.provenance["options"]["from_tune"]
    assert plan.cutoffs == folk["cutoffs"] and plan.proj_dims == folk["proj_dims"]
    assert chosen["met"] and chosen["bound"] == "measured" and chosen["predicted_high"] == 0.005


def _fake_training(gap_of_capacity, stats):
    """A stand-in for the proxy-LM trainings: each layer's held-out windows are the full softmax's plus a known
    gap that falls with the design's capacity (so the answer is known), plus a small noise."""
    from types import SimpleNamespace

    tune = sys.modules["vocabopt.tune"]

    rng = np.random.default_rng(0)
    windows = rng.normal(5.0, 0.3, size=64)
    trained: list[list[int]] = []

    def record(loss_windows):
        quality = SimpleNamespace(
            window_losses=list(loss_windows), loss=float(np.mean(loss_windows)),
            bands=[{"ranks": [0, 10], "loss": 1.0}], ece=0.01, temperature=1.0,
        )  # fmt: skip
        curve = [(k, float(np.mean(loss_windows)) + 1.0 / k) for k in (4, 8, 12, 16, 20)]
        return {"step_ms": 1.0, "curve": curve, "quality": quality}

    def train_seeds(layers, base, data, train, seeds, dev, tdtype, progress, full_runs=None, race=None):
        runs = {} if full_runs else {tune.FULL: [record(windows)]}
        for name, plan in layers.items():
            trained.append(list(plan.cutoffs))
            cap = plan.capacity
            runs[name] = [record(windows + gap_of_capacity(cap) + rng.normal(0, 1e-4, size=windows.size))]
        if full_runs:
            runs[tune.FULL] = full_runs
        return runs

    return train_seeds, trained


def test_refinement_trains_the_interpolated_choice_until_the_choice_is_a_trained_design(tiny, monkeypatch):
    """A penalty that crosses the tolerance between two first-round designs: the interpolated choice is trained in a
    refinement round (paired with the first round's full-softmax runs, not retrained), and the final choice is a
    trained design whose own measured bound clears the tolerance; without refinement it stays interpolated."""
    tune_mod = sys.modules["vocabopt.tune"]  # the package's `tune` attribute is the function

    path, stats, prof = tiny

    def gap(cap):  # nats: 0 at capacity 1, 0.02 (about 2%) at capacity 0.8
        return 0.1 * max(0.0, 1.0 - cap)

    results = {}
    for refine in (0, 3):
        fake, trained = _fake_training(gap, stats)
        monkeypatch.setattr(tune_mod, "_train_seeds", fake)
        results[refine] = (
            vocabopt.tune(
                stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
                seeds=1, candidates=3, train=TINY, max_tokens=25_000, tolerance=0.01, refine=refine,
            ),
            trained,
        )  # fmt: skip
    plain, first_round = results[0]
    refined, all_rounds = results[3]
    t0, t = plain.provenance["tune"], refined.provenance["tune"]
    assert not t0["chosen"]["measured"], "the fixture must make the first-round choice an interpolation"
    assert all_rounds[: len(first_round)] == first_round and len(all_rounds) > len(first_round)
    assert all_rounds[len(first_round)] == t0["chosen"]["cutoffs"]  # round 1 trains the interpolated choice
    assert [m["round"] for m in t["measured"]][-1] >= 1
    chosen = t["chosen"]
    assert chosen["measured"] and refined.cutoffs == chosen["cutoffs"]
    own = next(m for m in t["measured"] if m["cutoffs"] == chosen["cutoffs"])
    assert own["high"] <= 0.01  # its own measurement, not an interpolation, clears the tolerance
    passing = [m for m in t["measured"] if m["high"] <= 0.01]
    assert chosen["time_ms"] == min(m["predicted_ms"] for m in passing)  # the fastest trained design that passed


def test_the_full_softmax_run_repeats_exactly_so_refinement_rounds_may_reuse_it(tiny):
    """Refinement pairs new designs with the first round's full-softmax runs; that is exact only if a run with the
    same seed and batches is the same run (no dropout, deterministic kernels): check it."""
    import torch

    tune_mod = sys.modules["vocabopt.tune"]  # the package's `tune` attribute is the function
    from vocabopt.validate import load_tokens

    path, stats, _ = tiny
    base = Plan.from_cutoffs(stats, hidden=16, cutoffs=[100])
    data = load_tokens(base, [str(path)], str(BPE), seq_len=TINY.seq_len, max_tokens=25_000)
    train = tune_mod._train_settings(TINY)
    cpu = torch.device("cpu")
    runs = [
        tune_mod._train_seeds(layers, base, data, train, 1, cpu, torch.float32, None)[tune_mod.FULL][0]
        for layers in ({}, {}, {"d": Plan.from_cutoffs(stats, hidden=16, cutoffs=[200])})
    ]  # alone twice, then in lockstep beside an adaptive design (as in a first round)
    for other in runs[1:]:
        assert runs[0]["curve"] == other["curve"]
        assert runs[0]["quality"].window_losses == other["quality"].window_losses


def test_a_design_out_of_the_race_trains_no_more_seeds(tiny):
    """Racing with real training: a design out of the race after seed 1 keeps one record, the full softmax trains
    every seed (later rounds pair with all of them), and the evidence pairs the design with the same first seed."""
    import torch

    tune_mod = sys.modules["vocabopt.tune"]
    from vocabopt.validate import load_tokens

    path, stats, _ = tiny
    base = Plan.from_cutoffs(stats, hidden=16, cutoffs=[100])
    data = load_tokens(base, [str(path)], str(BPE), seq_len=TINY.seq_len, max_tokens=25_000)
    train = tune_mod._train_settings(TINY)
    layers = {"d": Plan.from_cutoffs(stats, hidden=16, cutoffs=[200])}
    cpu = torch.device("cpu")
    for race, design_seeds in ((None, 2), (100.0, 2), (-1.0, 1)):  # no race; nobody out; everybody out at once
        runs = tune_mod._train_seeds(layers, base, data, train, 2, cpu, torch.float32, None, None, race)  # tolerance
        assert len(runs[tune_mod.FULL]) == 2 and len(runs["d"]) == design_seeds
        pick = {"name": "d", "cutoffs": [200], "proj_dims": [16], "capacity": 0.9, "time_ms": 1.0}
        ev = design_record(pick, runs, None, train.steps)
        assert ev["seeds"] == design_seeds == len(ev["curves"])
        assert ev["at_end"]["runs"] == design_seeds
        assert (ev["seed_swing"] is None) == (design_seeds == 1)
        windows = [[r["quality"].window_losses for r in runs[name][:design_seeds]] for name in ("d", tune_mod.FULL)]
        assert ev["at_end"] == tradeoff.penalty_at_end(*windows)  # paired with the full softmax's same (first) seeds
        ev.update(ev["at_end"])
        chosen_from = tune_mod._eligible([pick], [pick], [ev], 2)
        assert chosen_from == ([] if design_seeds == 1 else [pick])  # a design out of the race is never chosen


def test_out_of_race_needs_the_interval_clearly_above_the_tolerance():
    rng = np.random.default_rng(0)
    full = [list(rng.normal(5.0, 0.3, size=128))]
    noise = rng.normal(0.0, 0.01, size=128)

    def design(gap):  # nats over the full softmax on every window, a little noise
        return [list(np.asarray(full[0]) + gap + noise)]

    margin = tradeoff.RACE_MARGIN  # (4 or more seeds)
    assert tradeoff.out_of_race(design(0.10), full, 0.01, margin)  # +10.5%: beyond 1% + the 5% margin
    assert not tradeoff.out_of_race(design(0.03), full, 0.01, margin)  # +3%: over the tolerance, not clearly
    assert tradeoff.out_of_race(design(0.03), full, 0.01, tradeoff.race_margin(2))  # with 2 seeds: over it
    assert not tradeoff.out_of_race(design(0.10), full, 0.01, margin=0.2)
    assert tradeoff.seed_swing(design(0.02) + design(0.05), full + full) == pytest.approx(
        np.expm1(0.05 + noise.mean()) - np.expm1(0.02 + noise.mean())
    )
    assert tradeoff.seed_swing(design(0.02), full) is None


def test_confirm_trains_the_chosen_design_on_a_new_seed(tiny):
    """--confirm: the chosen design and the full softmax train once more with a seed no round used; the record
    is that run's paired end-of-run penalty, "confirmed" when it is within the tolerance."""
    path, stats, prof = tiny
    plan = vocabopt.tune(
        stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
        seeds=2, candidates=2, train=TINY, max_tokens=25_000, tolerance=0.05, refine=0, confirm=True,
    )  # fmt: skip
    t = plan.provenance["tune"]
    conf = t["confirmation"]
    assert conf["seed"] == TINY.seed + 2 and conf["runs"] == 1  # the rounds used seeds 0 and 1
    assert conf["low"] <= conf["penalty"] <= conf["high"]
    assert conf["confirmed"] == (conf["penalty"] <= 0.05)
    assert all(len(m["curves"]) <= 2 for m in t["measured"])  # the confirming run is not part of the evidence


def test_refinement_probes_the_gap_below_a_passing_choice_until_it_finds_the_crossing(tiny, monkeypatch):
    """A penalty that steps from 5% to 0.9% (within the 1% tolerance, barely) at capacity 0.96: the monotone model,
    interpolating between a failing design and one that passed with little room, predicts no untrained design
    within the tolerance, so the choice is a trained design. Refinement then narrows the gap between the choice and
    the most capacious faster failure (`tradeoff.gap_probe`) and ends at or above the step, within a probe's minimum
    gain of the fastest frontier design there (the known answer), which the first round alone does not reach."""
    tune_mod = sys.modules["vocabopt.tune"]
    path, stats, prof = tiny
    step = 0.96

    def gap(cap):  # nats
        return 0.05 if cap < step else 0.009

    plans = {}
    for refine in (0, 4):
        fake, _ = _fake_training(gap, stats)
        monkeypatch.setattr(tune_mod, "_train_seeds", fake)
        plans[refine] = vocabopt.tune(
            stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
            seeds=1, candidates=3, train=TINY, max_tokens=25_000, tolerance=0.01, refine=refine, budget_minutes=None,
        )  # fmt: skip
    frontier = plans[4].predicted["frontier"]
    answer = min((d for d in frontier if d["capacity"] >= step), key=lambda d: d["time_ms"])
    first, t = plans[0].provenance["tune"], plans[4].provenance["tune"]
    assert first["chosen"]["measured"], "the fixture must make the first round's choice a trained design"
    assert plans[0].cutoffs != answer["cutoffs"]
    assert {m["refined"] for m in t["measured"] if m["round"]} == {"probe"}
    chosen = t["chosen"]  # the answer, up to the gain a probe must promise (`tradeoff.PROBE_MIN_GAIN`)
    assert chosen["measured"] and chosen["capacity"] >= step
    assert chosen["time_ms"] <= answer["time_ms"] * (1 + tradeoff.PROBE_MIN_GAIN)
    assert first["chosen"]["time_ms"] > answer["time_ms"] * (1 + tradeoff.PROBE_MIN_GAIN)
    for m in t["measured"]:  # every probe lay between a failure and a pass
        if m["refined"] == "probe":
            assert any(o["high"] > 0.01 and o["capacity"] < m["capacity"] for o in t["measured"])
            assert any(o["high"] <= 0.01 and o["capacity"] > m["capacity"] for o in t["measured"])


def test_budget_stops_refinement_rounds_that_would_not_fit(tiny, monkeypatch, capsys):
    """A budget already spent by the first round: no refinement round starts, the plan says which round the budget
    left out, and the choice falls back to the fastest trained design that passed."""
    tune_mod = sys.modules["vocabopt.tune"]
    path, stats, prof = tiny
    fake, _ = _fake_training(lambda cap: 0.05 if cap < 0.96 else 0.0, stats)
    monkeypatch.setattr(tune_mod, "_train_seeds", fake)
    plan = vocabopt.tune(
        stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
        seeds=1, candidates=3, train=TINY, max_tokens=25_000, tolerance=0.01, refine=4, budget_minutes=1e-6,
    )  # fmt: skip
    t = plan.provenance["tune"]
    assert not any(m["round"] for m in t["measured"])
    assert t["budget"]["stopped"]["round"] == 1 and t["budget"]["minutes"] == 1e-6
    folklore = {f["name"] for f in plan.predicted["folklore"]}  # trained by default (the refinement's anchor)
    assert folklore and folklore <= {m["name"] for m in t["measured"]}
    assert t["chosen"]["measured"] and t["chosen"]["predicted_high"] <= 0.01
    _print_table(plan)  # the CLI's table says so
    assert "refinement round 1 not run" in capsys.readouterr().out
    with pytest.raises(InputError, match="budget_minutes"):
        vocabopt.tune(
            stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
            train=TINY, budget_minutes=0,
        )  # fmt: skip


def test_cli_no_folklore_leaves_the_folklore_designs_out(tiny, tmp_path, monkeypatch):
    """The folklore designs train by default (the refinement's anchor); --no-folklore trains the frontier's alone."""
    path, stats, prof = tiny
    stats.save(tmp_path / "stats.json")
    prof.save(tmp_path / "prof.json")
    folklore = {f["name"] for f in stats_plan_folklore(stats, prof)}
    assert folklore
    names = {}
    for flag in ("--folklore", "--no-folklore"):
        fake, _ = _fake_training(lambda cap: 0.05 if cap < 0.96 else 0.0, stats)
        monkeypatch.setattr(sys.modules["vocabopt.tune"], "_train_seeds", fake)
        out = tmp_path / f"{flag}.json"
        res = CliRunner().invoke(
            main,
            ["tune", str(tmp_path / "stats.json"), "--corpus", str(path), "-t", str(BPE), "--hidden", "16",
             "--batch-tokens", "512", "--profile", str(tmp_path / "prof.json"), "--steps", "16", "--seq-len", "16",
             "--batch-size", "8", "--seeds", "1", "--max-tokens", "20000", "--refine", "0", flag, "-o", str(out)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        names[flag] = {m["name"] for m in Plan.load(out).provenance["tune"]["measured"]}
    assert folklore <= names["--folklore"] and not folklore & names["--no-folklore"]
    with pytest.raises(InputError, match="ema=1.5"):
        vocabopt.tune(
            stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
            train=TrainSettings(**{**TINY.__dict__, "ema": 1.5}),
        )  # fmt: skip


def stats_plan_folklore(stats, prof) -> list[dict]:
    """The folklore designs tune trains: optimize's, faster than the full softmax (as tune's candidates)."""
    base = vocabopt.optimize(stats, hidden=16, profile=prof, batch_tokens=512, min_capacity=0.0)
    full = base.predicted["full_softmax"]["time_ms"]
    return [f for f in base.predicted["folklore"] if f["time_ms"] < full]


def test_an_undecided_faster_design_gets_one_more_seed_and_is_chosen_when_it_then_passes(tiny, monkeypatch, capsys):
    """Designs of capacity 0.8 to 0.95 lose -0.8%, +0.8% and -0.8% on seeds 0, 1, 2: every seed within the 1%
    tolerance, but with 2 seeds the bootstrap's upper end is over it (about a quarter of its draws are seed 1
    alone), with 3 under it (end-of-run basis: no curve to fit). The probes below the passing designs reach that
    band; tune then gives the design there a third seed (`tradeoff.tie_break`), trained with the seed after the
    rounds' and paired with a full softmax trained on that seed too, and chooses it."""
    from types import SimpleNamespace

    tune_mod = sys.modules["vocabopt.tune"]
    path, stats, prof = tiny
    rng = np.random.default_rng(0)
    full_windows = [rng.normal(5.0, 0.3, size=64) for _ in range(4)]
    seen = []  # (layer names, seed) per training

    def record(windows):
        q = SimpleNamespace(window_losses=list(windows), loss=float(np.mean(windows)),
                            bands=[{"ranks": [0, 10], "loss": 1.0}], ece=0.01, temperature=1.0)  # fmt: skip
        return {"step_ms": 1.0, "curve": [(16, float(np.mean(windows)))], "quality": q}  # no curve to fit

    def gap(cap, seed):  # nats
        noise = np.random.default_rng(100 + seed).normal(0.0, 0.02, size=64)
        return (0.05 if cap < 0.8 else 0.0 if cap >= 0.95 else [-0.008, 0.008, -0.008][seed]) + noise - noise.mean()

    def fake(layers, base, data, train, seeds, dev, tdtype, progress, full_runs=None, race=None):
        runs = {name: [] for name in [*([] if full_runs else [tune_mod.FULL]), *layers]}
        for s in range(seeds):
            seed = train.seed - TINY.seed + s
            seen.append(([*layers] + ([] if full_runs else [tune_mod.FULL]), seed))
            if not full_runs:
                runs[tune_mod.FULL].append(record(full_windows[seed]))
            for name, plan in layers.items():
                runs[name].append(record(full_windows[seed] + gap(plan.capacity, seed)))
        return {**runs, **({tune_mod.FULL: full_runs} if full_runs else {})}

    monkeypatch.setattr(tune_mod, "_train_seeds", fake)
    asked = []  # the budget's questions: (design trainings, full-softmax trainings)
    fits = budget_mod.Budget.fits
    monkeypatch.setattr(
        budget_mod.Budget,
        "fits",
        lambda self, n, r, full=0, record=True: asked.append((n, full)) or fits(self, n, r, full, record),
    )
    plan = vocabopt.tune(
        stats, sources=[str(path)], tokenizer=str(BPE), hidden=16, batch_tokens=512, profile=prof,
        seeds=2, candidates=2, train=TINY, max_tokens=25_000, tolerance=0.01, refine=4, budget_minutes=60,
    )  # fmt: skip
    t = plan.provenance["tune"]
    broken = sorted((m for m in t["measured"] if m["tie_break"]), key=lambda m: m["tie_break"])
    assert broken, [(m["name"], m["capacity"], m["high"], m["seeds"]) for m in t["measured"]]
    assert broken[0]["tie_break"] == (broken[0].get("round") or 0) + 1  # the round after it came out undecided
    trained = [(sorted(names), seed) for names, seed in seen]
    for k, m in enumerate(broken):  # the first trains the full softmax's seed 2 beside it; later ones reuse it
        assert m["seeds"] == 3 and m["seed_penalties"] == pytest.approx(np.expm1([-0.008, 0.008, -0.008]))
        assert (sorted([m["name"], *([] if k else [tune_mod.FULL])]), 2) in trained
        assert asked.count((1, 0 if k else 1)) >= 1  # the budget was asked for one design (+ one full softmax)
        two = [[list(full_windows[s] + gap(m["capacity"], s))] for s in (0, 1)]
        before = tradeoff.penalty_at_end([two[0][0], two[1][0]], [list(full_windows[0]), list(full_windows[1])])
        assert m["high"] <= 0.01 < before["high"]  # undecided with 2 seeds, a pass with 3
    assert len(t["full_softmax"]["curves"]) == 2  # its record: the seeds every design trained
    assert sum(1 for names, seed in seen if tune_mod.FULL in names and seed == 2) == 1
    chosen = t["chosen"]
    assert chosen["measured"] and chosen["cutoffs"] == min(broken, key=lambda m: m["predicted_ms"])["cutoffs"]
    _print_table(plan)
    assert f"+ {broken[0]['name']}: undecided after 2 seeds" in capsys.readouterr().out


def test_tunes_frontier_spans_both_projection_rules_and_is_pareto(tiny, monkeypatch):
    """tune's frontier is the Pareto set of the space's projection rule (d/4 per tail) and d/2 (WIDE_DIV_VALUE): it
    holds designs of both, none beaten on both step time and capacity by another; the plan keeps the chosen
    design's own projections. `search.pareto` on JSON designs by hand: dominated and repeated designs drop out."""
    tune_mod = sys.modules["vocabopt.tune"]
    path, stats, prof = tiny
    fake, _ = _fake_training(lambda cap: 0.05 if cap < 0.96 else 0.0, stats)
    monkeypatch.setattr(tune_mod, "_train_seeds", fake)
    plan = vocabopt.tune(
        stats, sources=[str(path)], tokenizer=str(BPE), hidden=64, batch_tokens=512, profile=prof,
        seeds=1, candidates=2, train=TINY, max_tokens=25_000, tolerance=0.01, refine=0,
    )  # fmt: skip
    frontier = plan.predicted["frontier"]
    assert {d["proj_dims"][0] for d in frontier if d["proj_dims"]} >= {
        64 // 4,
        64 // 2,
    }  # (at 16 wide the profile's floor of 8 merges them)
    for a in frontier:
        assert not any(b["time_ms"] <= a["time_ms"] and b["capacity"] > a["capacity"] for b in frontier)
    assert plan.proj_dims == plan.provenance["tune"]["chosen"]["proj_dims"]
    assert plan.provenance["tune"]["frontier_rules"] == [4.0, 2.0]
    for f in plan.predicted["folklore"]:  # the folklore rows are the designs tune trained: the space's d/4 rule
        assert f["proj_dims"][0] == 64 // 4
    searched = [  # every design of each rule's search frontier that the other rule does not beat: nothing thinned
        d.to_json()
        for rule in (4.0, 2.0)
        for d in search(prof, plan.counts_by_rank, 64, 512, space=SearchSpace(div_value=rule))["frontier"]
    ]
    full_ms = plan.predicted["full_softmax"]["time_ms"]  # (its JSON: rounded, as tune reads it)
    unbeaten = {
        (a["time_ms"], a["capacity"])  # (one of equal designs is kept)
        for a in searched
        if a["time_ms"] < full_ms
        and not any(b["time_ms"] <= a["time_ms"] and b["capacity"] > a["capacity"] for b in searched)
    }
    assert len(unbeaten) > 12 and unbeaten == {(d["time_ms"], d["capacity"]) for d in frontier}
    rows = [{"time_ms": t, "capacity": c} for t, c in [(2.0, 0.9), (1.0, 0.8), (2.5, 0.85), (3.0, 1.0), (2.0, 0.9)]]
    assert [(d["time_ms"], d["capacity"]) for d in pareto(rows, dict.get)] == [(1.0, 0.8), (2.0, 0.9), (3.0, 1.0)]


def test_optimize_from_tune_can_choose_a_trained_design_of_the_second_projection_rule(tiny):
    """A tuned plan whose frontier spanned d/2 tails (`frontier_rules`): optimize --from-tune searches those too, so
    a trained d/2 design that passed is eligible, as in tune, and the plan keeps its projections; without the
    rule recorded, optimize's own d/4 frontier cannot hold it."""
    _, stats, prof = tiny
    wide = vocabopt.optimize(stats, hidden=64, profile=prof, batch_tokens=4096, min_capacity=0.0, div_value=2.0)
    mine = max(wide.predicted["frontier"], key=lambda d: d["capacity"] if d["capacity"] < 0.95 else 0)
    assert mine["proj_dims"][0] == 32
    tuned = Plan.from_cutoffs(stats, hidden=64, cutoffs=mine["cutoffs"], proj_dims=mine["proj_dims"])
    model = {"capacity": [0.3, 1.0], "penalty": [0.04, 0.02], "high": [0.05, 0.03], "monotone_violations": 0}
    ev = {**{k: mine[k] for k in ("cutoffs", "proj_dims", "capacity")}, "penalty": 0.0, "low": -0.005, "high": 0.005}
    tuned.provenance["tune"] = {"model": model, "tolerance": 0.01, "basis": "test", "measured": [ev],
                                "frontier_rules": [4.0, 2.0]}  # fmt: skip
    plan = vocabopt.optimize(stats, hidden=64, profile=prof, batch_tokens=4096, from_tune=tuned, min_capacity=0.0)
    assert plan.cutoffs == mine["cutoffs"] and plan.proj_dims == mine["proj_dims"]
    assert plan.provenance["options"]["from_tune"]["bound"] == "measured"
    del tuned.provenance["tune"]["frontier_rules"]
    plain = vocabopt.optimize(stats, hidden=64, profile=prof, batch_tokens=4096, from_tune=tuned, min_capacity=0.0)
    assert plain.proj_dims != mine["proj_dims"]
