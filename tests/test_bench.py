"""vocabopt.bench and `vocabopt bench`: rows for the plan's own layer and its peers, predictions, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import vocabopt
from vocabopt.bench import BenchResult, sample_ranks
from vocabopt.cli import main
from vocabopt.design import alswl_div_value
from vocabopt.errors import InputError
from vocabopt.plan import Plan
from vocabopt.profile import synthetic_profile

V, D, N = 3000, 32, 256


@pytest.fixture(scope="module")
def plan() -> Plan:
    counts = np.round(1e7 / np.arange(1, V + 1) ** 1.1).astype(np.int64)[np.random.default_rng(0).permutation(V)]
    return Plan.from_cutoffs(counts, hidden=D, cutoffs=[100, 800], provenance={"name": "zipf-test"})


@pytest.fixture(scope="module")
def result(plan):
    prof = synthetic_profile(lambda k, *c: 0.01 + 1e-9 * np.prod(c, axis=0))
    return vocabopt.bench(plan, device="cpu", batch_tokens=N, profile=prof, reps=2)


def test_rows_and_the_measured_layer_is_the_plans(result, plan):
    methods = [r.method for r in result.rows]
    assert methods[0] == "vocabopt" and {"ALSWL", "full softmax"} <= set(methods)
    ours = result.rows[0]
    assert (ours.cutoffs, ours.proj_dims) == (plan.cutoffs, plan.proj_dims)
    assert (result.vocab_size, result.hidden, result.batch_tokens) == (V, D, N)
    assert result.row("full softmax").cutoffs == []
    for r in result.rows:
        assert r.measured_ms > 0 and r.samples == 2 and r.p20_ms <= r.p80_ms
    # The adaptive layer keeps far less for backward than the (N, V) fp32 log-probs of the full softmax.
    assert ours.saved_bytes < result.row("full softmax").saved_bytes / 3
    assert result.row("full softmax").saved_bytes >= 4 * N * V


def test_predictions_come_from_the_cost_model(result, plan):
    prof = synthetic_profile(lambda k, *c: 0.01 + 1e-9 * np.prod(c, axis=0))
    want = vocabopt.predict(
        prof, plan.counts_by_rank, hidden=D, cutoffs=plan.cutoffs, proj_dims=plan.proj_dims, batch_tokens=N
    )
    assert result.rows[0].predicted_ms == pytest.approx(want.time_ms)
    ours = result.rows[0]
    assert ours.error == pytest.approx((want.time_ms - ours.measured_ms) / ours.measured_ms)
    assert result.row("ALSWL").predicted_ms is None  # other kernels than the cost model describes
    js = result.to_json()
    assert js["rows"][0]["speedup_vs_full"] == pytest.approx(result.row("full softmax").measured_ms / ours.measured_ms)
    json.dumps(js)


def test_targets_follow_the_plans_distribution(plan):
    ranks = sample_ranks(plan.counts_by_rank, 200_000, seed=1)
    head_share = np.mean(ranks < plan.cutoffs[0])
    assert head_share == pytest.approx(plan.cluster_shares[0], abs=0.01)


def test_alswl_only_when_projections_follow_div_value(plan):
    assert alswl_div_value(plan.hidden, plan.proj_dims) == 4.0
    odd = Plan(
        vocab_size=V,
        hidden=D,
        order=plan.order,
        cutoffs=plan.cutoffs,
        proj_dims=[16, 16],
        counts_by_rank=plan.counts_by_rank,
    )
    assert alswl_div_value(odd.hidden, odd.proj_dims) is None
    res = vocabopt.bench(odd, device="cpu", batch_tokens=64, reps=1, full_softmax=False)
    assert [r.method for r in res.rows] == ["vocabopt"] and res.rows[0].predicted_ms is None
    assert "div_value" in res.notes[0]


def test_bfloat16_autocast_runs_and_says_what_it_left_out(plan):
    res = vocabopt.bench(plan, device="cpu", dtype="bf16", batch_tokens=64, reps=1)
    assert res.dtype == "bfloat16" and res.rows[0].method == "vocabopt" and res.row("full softmax") is not None
    if res.row("ALSWL") is None:  # torch 2.13's ALSWL fails under bf16 autocast
        assert any("ALSWL" in n for n in res.notes)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"device": "tpu"}, "tpu"),
        ({"dtype": "int8"}, "int8"),
        ({"batch_tokens": -5}, "-5"),
        ({"reps": 0}, "reps"),
    ],
)
def test_bad_input_is_a_vocabopt_error(plan, kw, match):
    with pytest.raises(InputError, match=match):
        vocabopt.bench(plan, **kw)


def test_not_a_plan():
    with pytest.raises(InputError, match="Plan.load"):
        vocabopt.bench({"cutoffs": [1]})


def test_cli_json_and_errors(plan, tmp_path):
    plan.save(tmp_path / "plan.json")
    run = CliRunner().invoke(
        main,
        [
            "bench",
            str(tmp_path / "plan.json"),
            "--device",
            "cpu",
            "--batch-tokens",
            "64",
            "--reps",
            "1",
            "--json",
            "-o",
            str(tmp_path / "bench.json"),
        ],
    )
    assert run.exit_code == 0, run.output
    out = json.loads(run.output)
    assert out["rows"][0]["method"] == "vocabopt" and out["rows"][0]["cutoffs"] == plan.cutoffs
    assert json.loads((tmp_path / "bench.json").read_text())["batch_tokens"] == 64
    text = CliRunner().invoke(
        main, ["bench", str(tmp_path / "plan.json"), "--device", "cpu", "--batch-tokens", "64", "--reps", "1"]
    )
    assert text.exit_code == 0 and "full softmax" in text.output
    bad = CliRunner().invoke(main, ["bench", str(tmp_path / "missing.json")])
    assert bad.exit_code == 1 and bad.output.startswith("Error:") and len(bad.output.strip().splitlines()) == 1


def test_result_round_trips_through_save_and_load(result, tmp_path):
    result.save(tmp_path / "bench.json")
    back = BenchResult.load(tmp_path / "bench.json")
    assert back == result
    assert back.to_json() == result.to_json()


def test_decode_bench_rows_exactness_and_full_head(plan):
    res = vocabopt.bench_decode(
        plan, device="cpu", batches=[1, 4], decodes=["greedy", "topk", "sample", "topp"], reps=1
    )
    names = {r.decode for r in res.rows}
    assert names == {
        "greedy",
        "top-50",
        "sample T=0.7",
        "sample T=0.7 top-50",
        "sample T=1.0",
        "sample T=1.0 top-50",
        "top-p 0.9",
    }
    for r in res.rows:
        assert r.ms_per_call > 0 and r.ms_per_token == pytest.approx(r.ms_per_call / r.batch)
        if r.method == "vocabopt":
            assert r.exact is True and r.tails_evaluated + r.tails_skipped == r.batch * len(plan.cutoffs)
        else:
            assert r.tails_evaluated is None and r.exact is None
    assert res.speedup("greedy", 4) == pytest.approx(
        res.row("greedy", 4, "full lm_head").ms_per_call / res.row("greedy", 4).ms_per_call
    )


def test_full_head_scores_like_the_adaptive_head_where_rows_correspond(plan):
    import torch

    from vocabopt.decode import _full_head
    from vocabopt.layer import build_layer

    layer = build_layer(plan)
    x = torch.randn(5, D)
    with torch.no_grad():
        lin = _full_head(layer)
        logits = lin(x)  # (5, V) by original id
        short = layer.order[: plan.cutoffs[0]]
        torch.testing.assert_close(logits[:, short], layer.head(x)[:, : plan.cutoffs[0]], atol=1e-5, rtol=1e-5)
        tail0 = layer.order[plan.cutoffs[0] : plan.cutoffs[1]]
        torch.testing.assert_close(logits[:, tail0], layer.out[0](layer.proj[0](x)), atol=1e-4, rtol=1e-4)


def test_cli_bench_infer_prints_and_writes(plan, tmp_path):
    plan.save(tmp_path / "plan.json")
    out = tmp_path / "decode.json"
    args = ["bench", str(tmp_path / "plan.json"), "--mode", "infer", "--batch", "1,2", "--decode", "greedy"]
    res = CliRunner().invoke(main, [*args, "--reps", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "greedy" in res.output and "checked" in res.output
    assert len(vocabopt.DecodeResult.load(out).rows) == 4
    bad = CliRunner().invoke(main, [*args[:-1], "beam", "--reps", "1"])
    assert bad.exit_code == 1 and "beam" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(main, [*args[:4], "--batch", "1,x"])
    assert bad.exit_code == 1 and "--batch" in bad.output


def test_decode_latency_benchmark_smoke_run():
    """benchmarks/decode_latency.py end to end on a tiny shape (seconds); it never writes docs without --docs."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_latency.py"
    args = [
        sys.executable,
        str(script),
        "--shapes",
        "4000:32",
        "--batch",
        "1",
        "--reps",
        "1",
        "--decode",
        "greedy,topk",
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| 4000 | 32 | greedy | 1 |" in out.stdout and "| 4000 | 32 | top-50 | 1 |" in out.stdout
