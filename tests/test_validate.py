"""vocabopt.validate and `vocabopt validate`: identical training runs, a held-out split never trained on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vocabopt
from vocabopt.cli import main
from vocabopt.errors import InputError, MismatchError
from vocabopt.plan import Plan
from vocabopt.plots import curves_png
from vocabopt.validate import ValidationResult, batch_offsets, load_tokens

BPE = Path(__file__).resolve().parents[1] / "corpora" / "kjv-bpe-8k" / "tokenizer.json"

SMALL = dict(steps=30, seq_len=16, batch_size=8, eval_tokens=2048, max_tokens=30_000, lr=1e-2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_slice):
    path = tmp_path_factory.mktemp("validate") / "tiny.txt"
    text = corpus_slice.read_text(encoding="utf-8")[:150_000]
    path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    stats = vocabopt.analyze([str(path)], tokenizer=str(BPE))
    return path, Plan.from_cutoffs(stats, hidden=32, cutoffs=[200, 1000], provenance={"name": "tiny"})


@pytest.fixture(scope="module")
def result(tiny, tmp_path_factory):
    path, plan = tiny
    png = tmp_path_factory.mktemp("plot") / "curves.png"
    res = vocabopt.validate(plan, [str(path)], str(BPE), folklore=[500], **SMALL)
    png.write_bytes(curves_png(res))
    return res, png


def test_runs_train_and_compare_to_full_softmax(result):
    res, png = result
    assert [r.name for r in res.runs] == ["vocabopt", "full softmax", "folklore"]
    for r in res.runs:
        losses = [loss for _, loss in r.train_curve]
        assert len(losses) == SMALL["steps"]
        assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2  # it learns
        assert math.isfinite(r.heldout_ppl) and r.heldout_ppl == pytest.approx(math.exp(r.heldout_loss))
        assert r.heldout_ppl < 8000  # better than uniform over the vocabulary
        assert r.step_ms > 0 and r.tokens_per_s > 0 and r.saved_bytes > 0
    assert res.runs[0].cutoffs == [200, 1000] and res.run("folklore").cutoffs == [500]
    assert res.run("full softmax").layer_params == 8000 * 33
    summ = res.summary()["vocabopt"]
    assert summ["ppl_gap"] == pytest.approx(res.runs[0].heldout_ppl / res.run("full softmax").heldout_ppl - 1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summ["equal_time_ppl_gap"] is None  # no held-out curve recorded (eval_every = 0): no equal-time figure
    json.dumps(res.to_json())


def test_equal_time_gap_is_the_full_softmax_after_the_same_wall_time(result):
    """Twice as fast: the layer after its 30 steps meets the full softmax after 15 (interpolated in log step
    between its points at 10 and 20; the curves end at the final held-out loss, which is not counted twice)."""
    from dataclasses import replace

    res, _ = result
    ours = replace(res.runs[0], step_ms=1.0, eval_curve=[(10, 6.2), (20, 5.1), (30, 4.6)])
    full = replace(res.run("full softmax"), step_ms=2.0, eval_curve=[(10, 6.0), (20, 5.0), (30, 4.5)])
    two = replace(res, runs=[ours, full])
    at_15 = 6.0 - (math.log(15) - math.log(10)) / (math.log(20) - math.log(10)) * 1.0
    assert two.summary()["vocabopt"]["equal_time_ppl_gap"] == pytest.approx(math.expm1(4.6 - at_15), rel=1e-9)


def test_runs_report_band_perplexity_and_calibration(result):
    """Every run is scored on the plan's clusters (head, tail 0, tail 1), with ECE and a fitted temperature."""
    res, _ = result
    for r in res.runs:
        assert [b["ranks"] for b in r.bands] == [[0, 200], [200, 1000], [1000, 8000]]
        scored = sum(b["tokens"] for b in r.bands)
        assert scored == res.settings["eval_tokens"] // SMALL["seq_len"] * SMALL["seq_len"]
        mean = sum(b["loss"] * b["tokens"] for b in r.bands if b["tokens"]) / scored
        assert mean == pytest.approx(r.heldout_loss)  # the bands partition the held-out tokens
        assert 0 <= r.ece <= 1 and 0.5 <= r.temperature <= 2.0 and 0 <= r.accuracy <= 1


def test_heldout_split_is_never_trained_on(tiny):
    path, plan = tiny
    data = load_tokens(plan, [str(path)], str(BPE), heldout=0.1, seq_len=16, max_tokens=30_000)
    assert data.split == int(data.ids.size * 0.9) and data.ids.size == 30_000
    offsets = batch_offsets(data.split, 16, 8, 500, seed=3)
    assert offsets.min() >= 0 and offsets.max() + 16 + 1 <= data.split  # the last target is ids[o + 16]


def test_identical_seeds_give_identical_results(tiny):
    path, plan = tiny
    kw = {**SMALL, "steps": 8, "full_softmax": False}
    a = vocabopt.validate(plan, [str(path)], str(BPE), seed=7, **kw)
    b = vocabopt.validate(plan, [str(path)], str(BPE), seed=7, **kw)
    c = vocabopt.validate(plan, [str(path)], str(BPE), seed=8, **kw)
    assert a.runs[0].train_curve == b.runs[0].train_curve and a.runs[0].heldout_loss == b.runs[0].heldout_loss
    assert a.runs[0].train_curve != c.runs[0].train_curve


def test_transformer_body(tiny):
    path, plan = tiny
    res = vocabopt.validate(plan, [str(path)], str(BPE), model="transformer", **{**SMALL, "steps": 10})
    assert all(math.isfinite(r.heldout_loss) for r in res.runs)


def test_tokenizer_must_be_the_plans(tiny):
    path, plan = tiny
    with pytest.raises(MismatchError, match="8000 ids"):
        vocabopt.validate(Plan.from_cutoffs(plan.counts_by_rank[:500], hidden=32, cutoffs=[50]), [str(path)], str(BPE))
    other = Plan.from_cutoffs(
        np.ones(8000, dtype=np.int64),
        hidden=32,
        cutoffs=[50],
        provenance={"tokenizer": {"name": "other", "sha256": "ab" * 32}},
    )
    with pytest.raises(MismatchError, match="other"):
        vocabopt.validate(other, [str(path)], str(BPE))
    with pytest.raises(InputError, match="model"):
        vocabopt.validate(plan, [str(path)], str(BPE), model="gru")
    with pytest.raises(InputError, match="too few"):
        vocabopt.validate(plan, [str(path)], str(BPE), max_tokens=20, seq_len=16)
    with pytest.raises(InputError, match="strictly increasing"):  # not silently clipped to [100]
        vocabopt.validate(plan, [str(path)], str(BPE), folklore=[9000, 100])


def test_cli(tiny, tmp_path):
    path, plan = tiny
    plan.save(tmp_path / "plan.json")
    args = [
        "validate",
        str(tmp_path / "plan.json"),
        "--corpus",
        str(path),
        "-t",
        str(BPE),
        "--steps",
        "5",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--max-tokens",
        "20000",
    ]
    run = CliRunner().invoke(main, [*args, "--json", "-o", str(tmp_path / "v.json")])
    assert run.exit_code == 0, run.output
    assert [r["name"] for r in json.loads(run.output)["runs"]] == ["vocabopt", "full softmax"]
    text = CliRunner().invoke(main, [*args, "--plot", str(tmp_path / "c.png")])
    assert text.exit_code == 0 and "held-out ppl" in text.output and (tmp_path / "c.png").exists()
    bad = CliRunner().invoke(main, [*args[:4], "-t", "bytes"])
    assert bad.exit_code == 1 and "not the plan" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_result_round_trips_through_save_and_load(result, tmp_path):
    res, _ = result
    res.save(tmp_path / "v.json")
    back = ValidationResult.load(tmp_path / "v.json")
    assert back == res
    assert back.summary() == res.summary()


@pytest.mark.parametrize("sequence", [None, "line"])
def test_load_tokens_tokenises_as_analyze_counts(tiny, sequence):
    """The held-out stream holds the tokens analyze counted (same sequence mode: newlines kept by default)."""
    path, plan = tiny
    data = load_tokens(plan, [str(path)], str(BPE), heldout=0.1, seq_len=16, sequence=sequence)
    stats = vocabopt.analyze([str(path)], str(BPE), sequence=sequence, add_special_tokens=False)
    np.testing.assert_array_equal(np.bincount(data.ids, minlength=stats.vocab_size), stats.counts)
    assert (stats.counts[stats.tokens.index("Ċ")] > 0) == (sequence is None)
    as_paths = load_tokens(plan, Path(path), Path(BPE), heldout=0.1, seq_len=16, sequence=sequence)  # os.PathLike
    np.testing.assert_array_equal(as_paths.ids, data.ids)


def test_load_tokens_ignores_a_tokenizer_files_truncation(tiny, tmp_path):
    """A tokenizer.json saved with truncation on (common in exported ones) is read as analyze reads it: whole."""
    path, _ = tiny
    config = json.loads(Path(BPE).read_text(encoding="utf-8"))
    config["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    truncating = tmp_path / "truncating.json"
    truncating.write_text(json.dumps(config), encoding="utf-8")
    stats = vocabopt.analyze([str(path)], str(truncating), add_special_tokens=False)
    plan = Plan.from_cutoffs(stats, hidden=32, cutoffs=[200, 1000])
    data = load_tokens(plan, [str(path)], str(truncating), heldout=0.1, seq_len=16)
    np.testing.assert_array_equal(np.bincount(data.ids, minlength=stats.vocab_size), stats.counts)


def test_load_tokens_reads_the_corpus_in_the_mode_the_plans_stats_were_counted_in(tiny):
    """A plan made from line-mode stats records the mode; validate and tune then read lines without being told."""
    path, _ = tiny
    stats = vocabopt.analyze([str(path)], str(BPE), sequence="line", add_special_tokens=False)
    plan = Plan.from_cutoffs(stats, hidden=32, cutoffs=[200, 1000])
    assert plan.provenance["tokenizer"]["sequence"] == "line"
    data = load_tokens(plan, [str(path)], str(BPE), heldout=0.1, seq_len=16)
    np.testing.assert_array_equal(np.bincount(data.ids, minlength=stats.vocab_size), stats.counts)
    prof = vocabopt.profile.synthetic_profile(lambda kernel, *c: 0.01 + 1e-7 * np.prod(c, axis=0))
    optimized = vocabopt.optimize(stats, hidden=32, profile=prof, batch_tokens=512)
    assert optimized.provenance["tokenizer"]["sequence"] == "line"
    document = load_tokens(plan, [str(path)], str(BPE), heldout=0.1, seq_len=16, sequence="document")
    assert document.ids.size > data.ids.size  # an explicit mode still wins (document keeps the newlines)
