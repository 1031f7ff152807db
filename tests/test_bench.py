"""vocabopt.bench and `vocabopt bench`: rows for the plan's own layer and its peers, predictions, bad input."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import vocabopt
from vocabopt.bench import CHUNKED, BenchResult, BenchRow, noise_warnings, sample_ranks
from vocabopt.cli import main
from vocabopt.design import alswl_div_value
from vocabopt.errors import InputError
from vocabopt.plan import Plan
from vocabopt.profile import synthetic_profile

V, D, N = 3000, 128, 256  # D: the chunked linear CE runs ~2V/D chunks; fewer keep the test fast


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
    assert methods[0] == "vocabopt" and {"ALSWL", "full softmax", CHUNKED} <= set(methods)
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
    out = json.loads(run.stdout)  # progress lines go to stderr
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


def _bench_methods(plan, n, full=True):
    """The closures `bench` times, built exactly as it builds them."""
    import torch

    from vocabopt.bench import _methods, _needs

    notes: list[str] = []
    out = _methods(plan, n, torch.device("cpu"), torch.float32, full, 0, _needs(plan, {}, n), notes)
    return out, notes


def test_alswl_runs_with_the_timed_layers_own_weights(plan):
    """Issue 18 item 2: ALSWL (rank space) and the timed layer (tokenizer ids) give the same loss on one batch."""
    import torch

    out, _ = _bench_methods(plan, 128, full=False)
    ours, alswl = out["vocabopt"]["modules"][0], out["ALSWL"]["modules"][0]
    assert torch.equal(ours.head.weight, alswl.head.weight) and torch.equal(
        ours.proj[1].weight, alswl.tail[1][0].weight
    )
    assert not torch.equal(ours.order, torch.arange(V))  # the targets really are mapped through the order
    torch.testing.assert_close(out["vocabopt"]["fn"](), out["ALSWL"]["fn"](), rtol=1e-5, atol=1e-5)


def test_chunked_linear_cross_entropy_really_chunks():
    """Issue 18 item 1: at N >= d, V > d the chunked kernel keeps no (N, V) logits: far less saved and peak memory
    than the full softmax on the same weights, and the same loss."""
    import torch

    from vocabopt.device import rss_peak_bytes, saved_bytes

    n, d, v = 1024, 128, 12_000  # (N, V) fp32 logits: 49 MB, above glibc's largest mmap threshold
    counts = np.round(1e7 / np.arange(1, v + 1)).astype(np.int64)
    out, _ = _bench_methods(Plan.from_cutoffs(counts, hidden=d, cutoffs=[500, 3000]), n)
    full, chunked = out["full softmax"]["fn"], out[CHUNKED]["fn"]
    torch.testing.assert_close(full(), chunked(), rtol=1e-5, atol=1e-5)
    logits = 4 * n * v
    assert saved_bytes(full) >= logits
    assert saved_bytes(chunked) < logits / 3  # its precomputed gradients: (V, d) + (N, d) + (V,) fp32
    assert saved_bytes(chunked) >= 4 * v * d  # ... which the ctx-stash count does see
    peak_full = rss_peak_bytes(lambda: full().backward())
    if peak_full is None:
        pytest.skip("no /proc/self/clear_refs: the resident-set peak cannot be read here")
    assert peak_full >= 2 * logits  # logits and their log-softmax at least
    assert rss_peak_bytes(lambda: chunked().backward()) < logits


def test_memory_rows_match_independent_counts(result, plan):
    full, chunked = result.row("full softmax"), result.row(CHUNKED)
    weights = 4 * (V * D + V)  # nn.Linear(D, V) fp32 weight and bias
    assert full.resident_bytes == 2 * weights and full.scratch_bytes == 0  # parameters and their gradients
    assert chunked.resident_bytes == 2 * weights
    assert full.saved_bytes > chunked.saved_bytes
    if full.peak_bytes is None:
        from vocabopt.device import rss_peak_bytes

        assert rss_peak_bytes(lambda: None) is None  # None only where the resident-set peak cannot be read
        pytest.skip("no /proc/self/clear_refs: the resident-set peak cannot be read here")
    assert full.peak_bytes >= 2 * 4 * N * V  # the (N, V) fp32 logits and their gradient, at least


def test_the_layers_resident_row_counts_its_scratch_pool(plan, monkeypatch):
    """The vocabopt row's resident and scratch bytes against the timed layer's own scratch pool (CPU)."""
    import torch

    import vocabopt.layer

    built = []

    def keep(*a, **k):
        built.append(real(*a, **k))
        return built[-1]

    real = vocabopt.layer.build_layer
    monkeypatch.setattr(vocabopt.layer, "build_layer", keep)  # bench imports it at call time
    n = 4096  # the (N, head) fp32 log-probs, 1.7 MB: above the pool's 1 MiB floor
    ours = vocabopt.bench(plan, device="cpu", batch_tokens=n, reps=1, full_softmax=False).rows[0]
    (layer,) = built
    pool = sum(b.untyped_storage().nbytes() for b, _ in layer._scratch.bases)  # the layer's CPU scratch pool
    assert pool >= 4 * n * (plan.cutoffs[0] + len(plan.cutoffs))  # (N, head) fp32 log-probs at least
    params = sum(4 * p.numel() for p in layer.parameters())
    buffers = sum(b.nbytes for b in layer.buffers())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())
    assert (ours.resident_bytes, ours.scratch_bytes) == (2 * params + buffers + pool, pool)


def test_an_inference_plans_memory_check_uses_training_bytes(plan, monkeypatch):
    """Review of issue 18: a --mode infer plan records inference memory; bench times a training step, so its
    memory check takes the cost model's train-mode bytes (checked against predict with another profile)."""
    import dataclasses

    from vocabopt.bench import _needs
    from vocabopt.layer import build_layer

    n = 64
    prof = synthetic_profile(lambda k, *c: 0.5 + 1e-6 * np.prod(c, axis=0))
    kw = {"hidden": D, "batch_tokens": n}
    designs = {"plan": (plan.cutoffs, plan.proj_dims), "full": ([], [])}
    train = {
        k: vocabopt.predict(prof, plan.counts_by_rank, cutoffs=c, proj_dims=p, **kw).memory_bytes
        for k, (c, p) in designs.items()
    }
    infer = {
        k: vocabopt.predict(prof, plan.counts_by_rank, cutoffs=c, proj_dims=p, mode="infer", **kw).memory_bytes
        for k, (c, p) in designs.items()
    }
    assert infer["plan"] > 2 * train["plan"]  # the assembled (N, V) log-probs of a full decode
    recorded = {
        "plan": {"memory_bytes": infer["plan"]},
        "full_softmax": {"memory_bytes": infer["full"]},
        "batch_tokens": n,
    }
    inf_plan = dataclasses.replace(plan, mode="infer", batch_tokens=n, predicted=recorded)
    assert _needs(inf_plan, {}, n) == pytest.approx(train)
    train_plan = dataclasses.replace(inf_plan, mode="train")  # a train plan's own record is still used
    assert _needs(train_plan, {}, n)["plan"] == pytest.approx(infer["plan"])
    weights = 2 * sum(4 * p.numel() for p in build_layer(plan).parameters())  # parameters and their gradients
    between = (train["plan"] + infer["plan"]) / 2 + weights  # enough for a training step, not for the infer record
    monkeypatch.setattr(sys.modules["vocabopt.bench"], "available_bytes", lambda device_type: int(between))
    res = vocabopt.bench(inf_plan, device="cpu", batch_tokens=n, reps=1, full_softmax=False)
    assert res.rows[0].method == "vocabopt" and not any(note.startswith("vocabopt skipped") for note in res.notes)


def test_older_result_files_load(result, tmp_path):
    js = result.to_json()
    for r in js["rows"]:
        del r["resident_bytes"], r["scratch_bytes"]
    (tmp_path / "old.json").write_text(json.dumps(js))
    back = BenchResult.load(tmp_path / "old.json")
    assert back.rows[0].resident_bytes is None and back.rows[0].measured_ms == result.rows[0].measured_ms


def test_a_method_that_cannot_fit_is_skipped_with_a_note(plan, monkeypatch, tmp_path):
    """Issue 18 item 9: the cost model's memory against the available memory, before anything is allocated."""
    bench_mod = sys.modules["vocabopt.bench"]  # `vocabopt.bench` the attribute is the function

    full_need = 8 * 64 * V  # the cost model's (N, V) fp32 log-probs and gradient, N=64
    monkeypatch.setattr(bench_mod, "available_bytes", lambda device_type: full_need // 2)
    res = vocabopt.bench(plan, device="cpu", batch_tokens=64, reps=1)
    assert [r.method for r in res.rows] == ["vocabopt", "ALSWL"]
    assert any(n.startswith("full softmax skipped: it needs") and "available" in n for n in res.notes)
    plan.save(tmp_path / "plan.json")
    run = CliRunner().invoke(
        main, ["bench", str(tmp_path / "plan.json"), "--device", "cpu", "--batch-tokens", "64", "--reps", "1"]
    )
    assert run.exit_code == 0 and "full softmax skipped" in run.output and "Traceback" not in run.output


def test_an_allocation_failure_becomes_a_skip_note(plan, monkeypatch, tmp_path):
    import torch.nn.functional as F

    def oom(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 18700000000 bytes.")

    monkeypatch.setattr(F, "cross_entropy", oom)  # only the full softmax row calls it
    res = vocabopt.bench(plan, device="cpu", batch_tokens=64, reps=1)
    assert res.row("full softmax") is None and res.row(CHUNKED) is not None
    assert any(n.startswith("full softmax skipped: its allocation failed") for n in res.notes)
    plan.save(tmp_path / "plan.json")
    run = CliRunner().invoke(
        main, ["bench", str(tmp_path / "plan.json"), "--device", "cpu", "--batch-tokens", "64", "--reps", "1"]
    )
    assert run.exit_code == 0 and "allocation failed" in run.output and "Traceback" not in run.output


def test_noise_warning_names_the_spread():
    def row(method, p20, p80):
        return BenchRow(method, [], [], measured_ms=(p20 + p80) / 2, p20_ms=p20, p80_ms=p80, samples=7, saved_bytes=0)

    quiet = [row("vocabopt", 55.0, 58.0), row("full softmax", 900.0, 950.0)]
    assert noise_warnings(quiet) == []
    (w,) = noise_warnings([*quiet, row("ALSWL", 551.0, 783.0)])
    assert "noisy" in w and "ALSWL 551.0-783.0 ms (1.42x)" in w and "vocabopt" not in w


def test_cli_shows_spread_progress_and_noise(plan, tmp_path, monkeypatch):
    import vocabopt.cli.bench as cli_bench

    monkeypatch.setattr(cli_bench, "PROGRESS_EVERY_S", 0.0)
    plan.save(tmp_path / "plan.json")
    args = ["bench", str(tmp_path / "plan.json"), "--device", "cpu", "--batch-tokens", "64", "--reps", "2", "--no-full"]
    run = CliRunner().invoke(main, args)  # CliRunner's stderr is no terminal: plain lines
    assert run.exit_code == 0, run.output
    assert "p20-p80 ms" in run.stdout and "resident" in run.stdout
    assert "bench: warm-up, vocabopt ran" in run.stderr and "bench: round 2/2" in run.stderr
    noisy = [BenchRow("vocabopt", [], [], measured_ms=60.0, p20_ms=55.0, p80_ms=583.0, samples=7, saved_bytes=0)]
    fake = BenchResult("p", V, D, 64, "cpu", "float32", noisy, {}, [])
    monkeypatch.setattr(sys.modules["vocabopt.bench"], "bench", lambda *a, **k: fake)
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0 and "Warning: the machine was noisy" in run.stderr and "55.0-583.0" in run.stderr


def test_inference_plan_says_the_timed_step_is_training(plan):
    import dataclasses

    infer = dataclasses.replace(plan, mode="infer")
    res = vocabopt.bench(infer, device="cpu", batch_tokens=64, reps=1, full_softmax=False)
    assert any("training step" in n and "--mode infer" in n for n in res.notes)


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
    assert {(r.method, r.layout) for r in res.rows} == {
        (m, lay) for m in ("vocabopt", "full lm_head") for lay in ("row-major", "column-major")
    }
    for method in ("vocabopt", "full lm_head"):  # row() is the method's fastest layout
        times = [r.ms_per_call for r in res.rows if (r.decode, r.batch, r.method) == ("greedy", 4, method)]
        assert len(times) == 2 and res.row("greedy", 4, method).ms_per_call == min(times)
    assert res.speedup("greedy", 4) == pytest.approx(
        res.row("greedy", 4, "full lm_head").ms_per_call / res.row("greedy", 4).ms_per_call
    )
    row_major = {
        r.method: r.ms_per_call for r in res.rows if (r.decode, r.batch, r.layout) == ("greedy", 4, "row-major")
    }
    assert res.speedup_in("row-major", "greedy", 4) == pytest.approx(row_major["full lm_head"] / row_major["vocabopt"])


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
    assert len(vocabopt.DecodeResult.load(out).rows) == 8  # 2 batches x 2 heads x 2 weight layouts
    bad = CliRunner().invoke(main, [*args[:-1], "beam", "--reps", "1"])
    assert bad.exit_code == 1 and "beam" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(main, [*args[:4], "--batch", "1,x"])
    assert bad.exit_code == 1 and "--batch" in bad.output


def test_decode_latency_benchmark_smoke_run():
    """benchmarks/decode_latency.py end to end on a small shape (seconds), both designs (the rule's and the one the
    optimizer recommends with the shipped CPU profile); it never writes docs without --docs."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_latency.py"
    args = [
        sys.executable,
        str(script),
        "--shapes",
        "8192:256",
        "--batch",
        "1",
        "--reps",
        "1",
        "--decode",
        "greedy,topk",
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for design in ("rule [V/32, V/8]", "optimize --mode infer ["):
        for decode in ("greedy", "top-50"):
            assert re.search(rf"\| 8192 \| 256 \| {re.escape(design)}[^|]* \| {decode} \| 1 \|", out.stdout), out.stdout


def test_layer_speed_benchmark_smoke_run():
    """benchmarks/layer_speed.py end to end on its tiny design with every eager peer (seconds); --smoke never writes."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "layer_speed.py"
    out = subprocess.run(
        [sys.executable, str(script), "--smoke", "--no-compile", "--reps", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for method in ("vocabopt", "ALSWL", "full softmax", CHUNKED):
        assert f"| 256 | 64 | 4000 | [500, 1500] | {method} |" in out.stdout


def test_decode_bench_times_an_all_int8_head_in_one_layout(plan):
    """Re-laying an all-int8 head changes nothing: it is timed once (the faster of two timings of the same thing
    would flatter it); an int8-tails head keeps its float head, so both layouts are timed."""
    from vocabopt.layer import build_layer

    layouts = {}
    for mode in ("int8", "int8-tails"):
        layer = build_layer(plan).quantize_(mode)
        res = vocabopt.bench_decode(plan, layer=layer, batches=[1], decodes=["greedy"], reps=1, full=False)
        layouts[mode] = sorted(r.layout for r in res.rows)
    assert layouts == {"int8": ["row-major"], "int8-tails": ["column-major", "row-major"]}


def test_decode_bench_times_an_int8_head_against_its_dequantised_lm_head(plan):
    """full=True on an int8 layer: the float lm_head it is timed against carries the int8 weights dequantised, so it
    is the fp32 layer's lm_head up to int8 rounding (and exactly it where the weights stayed float)."""
    import copy

    import torch

    from vocabopt.decode import _full_head
    from vocabopt.layer import build_layer

    fp = build_layer(plan).eval()
    with torch.no_grad():
        ref = _full_head(fp).weight.detach()
    S = fp.shortlist
    for mode in ("int8-tails", "int8"):
        layer = copy.deepcopy(fp).quantize_(mode)
        res = vocabopt.bench_decode(plan, layer=layer, batches=[2], decodes=["greedy"], reps=1, full=True)
        assert {r.method for r in res.rows} == {"vocabopt", "full lm_head"}
        with torch.no_grad():
            got = _full_head(layer).weight.detach()
        head = fp.rank_of < S  # token ids in the shortlist
        assert float((got - ref).abs().max()) <= 0.02 * float(ref.abs().max())
        assert torch.equal(got[head], ref[head]) == (mode == "int8-tails")
