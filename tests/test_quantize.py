"""Weight-only int8 adaptive heads (vocabopt.adaptive_head.Int8Linear / AdaptiveSoftmax.quantize_): per-channel
scales against a brute-force quantiser, bytes counted by hand, outputs of a trained layer against its fp32 self,
exactness of the generation methods, training refusal, state-dict and exported-file round trips, the validate
comparison and the CLI options."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vocabopt
from vocabopt.adaptive_head import Int8Linear, int8_path, quantize_int8
from vocabopt.cli import main
from vocabopt.errors import InputError
from vocabopt.export import export_layer
from vocabopt.layer import build_layer
from vocabopt.plan import Plan
from vocabopt.validate import ValidationResult, compare_quantized

V, D = 2000, 32
BPE = Path(__file__).resolve().parents[1] / "corpora" / "kjv-bpe-8k" / "tokenizer.json"


@pytest.fixture(scope="module")
def plan() -> Plan:
    counts = np.random.default_rng(0).permutation(np.round(1e5 / np.arange(1, V + 1)).astype(np.int64))
    return Plan.from_cutoffs(counts, hidden=D, cutoffs=[100, 600], proj_dims=[16, 16], provenance={"name": "q"})


@pytest.fixture(scope="module")
def trained(plan):
    """A tiny layer trained to predict Zipfian targets from a linear map of random hidden states."""
    torch.manual_seed(0)
    layer = build_layer(plan)
    teacher = torch.randn(D, V) * 1.5
    opt = torch.optim.Adam(layer.parameters(), lr=3e-2)
    for _ in range(150):
        x = torch.randn(256, D)
        t = torch.distributions.Categorical(logits=x @ teacher).sample()
        loss = layer(x, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return layer.eval()


def brute_force_quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row by row, element by element: scale = max |w| / 127 (1 if the row is zero), q = round half to even."""
    q, scale = np.zeros(w.shape, dtype=np.int8), np.zeros(w.shape[0], dtype=np.float32)
    for j, row in enumerate(w):
        s = np.float32(np.abs(row).max() / np.float32(127)) if np.abs(row).max() > 0 else np.float32(1)
        scale[j] = s
        for k, v in enumerate(row):
            q[j, k] = int(min(127, max(-127, round(float(np.float32(v) / s)))))
    return q, scale


def test_per_channel_scales_match_a_brute_force_quantiser():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(7, 11, generator=g) * torch.logspace(-3, 2, 7)[:, None]  # rows of very different ranges
    w[3] = 0.0
    w[5, 2] = 40.0  # an outlier sets its row's scale alone
    q, scale = quantize_int8(w)
    q_ref, s_ref = brute_force_quantize(w.numpy())
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and q.shape == w.shape and scale.shape == (7,)
    np.testing.assert_array_equal(q.numpy(), q_ref)
    np.testing.assert_allclose(scale.numpy(), s_ref, rtol=1e-7)
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 * (1 + 1e-5)).all())  # round to nearest: within half a step
    assert int(q.abs().max()) == 127 and bool((q[3] == 0).all())
    # bf16 scales are rounded first, so the stored scale is the one q was rounded against
    qb, sb = quantize_int8(w, torch.bfloat16)
    assert sb.dtype == torch.bfloat16
    assert bool(((qb.float() * sb.float()[:, None] - w).abs() <= sb.float()[:, None] / 2 * (1 + 1e-5)).all())


def test_int8_linear_computes_with_its_dequantised_weight():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 50)
    m = Int8Linear.from_linear(lin)
    x = torch.randn(9, 32)
    ref = torch.nn.functional.linear(x.double(), m.dequantize().double(), m.bias.double())
    assert int8_path(x.device, x.dtype, 32) == "dequantize per call"
    torch.testing.assert_close(m(x).double(), ref, atol=1e-5, rtol=1e-5)
    assert (m(x) - lin(x)).abs().max() < 0.05  # and close to the unquantised layer
    mb = copy.deepcopy(m).to(torch.bfloat16)  # bf16 inputs on CPU: torch's own kernel where this torch has it
    path = int8_path(x.device, torch.bfloat16, 32)
    assert path == ("torch._weight_int8pack_mm" if hasattr(torch, "_weight_int8pack_mm") else "dequantize per call")
    refb = torch.nn.functional.linear(x.bfloat16().double(), mb.dequantize().double(), mb.bias.double())
    torch.testing.assert_close(mb(x.bfloat16()).double(), refb, atol=0.05, rtol=0.01)  # bf16 output rounding
    assert int8_path(x.device, torch.bfloat16, 24) == "dequantize per call"  # rows the kernel cannot read


def _bytes_by_hand(plan: Plan, int8_tails: bool) -> int:
    edges = [*plan.cutoffs, plan.vocab_size]
    total = 0
    for p, lo, hi in zip(plan.proj_dims, edges[:-1], edges[1:]):
        size = hi - lo
        if int8_tails:  # int8 weights + fp32 scale per output row; fp32 bias
            total += (p * plan.hidden + 4 * p) + (size * p + 4 * size) + 4 * size
        else:
            total += 4 * (p * plan.hidden) + 4 * (size * p) + 4 * size
    return total


def test_quantized_tails_take_at_most_half_the_bytes(plan, trained):
    q = copy.deepcopy(trained).quantize_("int8-tails")
    fp, qb = trained.weight_bytes(), q.weight_bytes()
    assert fp["tails"] == _bytes_by_hand(plan, False) and qb["tails"] == _bytes_by_hand(plan, True)
    assert qb["tails"] <= fp["tails"] / 2 and qb["head"] == fp["head"]
    q8 = copy.deepcopy(trained).quantize_("int8")
    assert q8.weight_bytes()["head"] == (102 * D + 4 * 102) + 4 * 102  # int8 rows, fp32 scales, fp32 bias
    assert sum(p.numel() for p in q8.parameters()) == 0  # nothing left to train


@pytest.mark.parametrize("mode", ["int8-tails", "int8"])
def test_trained_layer_agrees_with_its_fp32_self(trained, mode):
    q = copy.deepcopy(trained).quantize_(mode)
    x = torch.randn(512, D, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        lp, lq = trained.log_prob(x), q.log_prob(x)
    kl = float((lp.exp() * (lp - lq)).sum(1).mean())
    agree = float((lp.argmax(1) == lq.argmax(1)).float().mean())
    assert agree >= 0.97 and 0 <= kl < 5e-3, (agree, kl)
    assert float((lp.argmax(1) == trained.predict(x)).float().mean()) == 1.0
    # the generation methods stay exact against the quantized layer's own distribution
    assert torch.equal(lq.gather(1, q.predict(x)[:, None]).squeeze(1), lq.amax(1))
    vals, ids = q.topk(x, 10)
    torch.testing.assert_close(vals, lq.topk(10, dim=1).values, atol=1e-4, rtol=0)
    torch.testing.assert_close(lq.gather(1, ids), vals, atol=1e-4, rtol=0)
    trained.predict(x)
    fp_skipped = trained.last_tail_evals["skipped"]
    q.predict(x)
    assert fp_skipped > 0 and q.last_tail_evals["skipped"] >= 0.9 * fp_skipped  # the bounds still skip tails
    draws = q.sample(x[:64], top_k=5, generator=torch.Generator().manual_seed(0))
    assert bool((draws[:, None] == ids[:64, :5]).any(1).all())
    # eval-mode losses are the quantized log-probs of the targets
    t = torch.randint(0, V, (512,), generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(q(x, t, reduction="none"), -lq.gather(1, t[:, None]).squeeze(1), atol=1e-4, rtol=0)


def test_training_a_quantized_layer_is_refused(plan, trained):
    q = copy.deepcopy(trained).quantize_("int8-tails")
    x, t = torch.randn(4, D), torch.tensor([0, 1, 2, 3])
    q.train()
    with pytest.raises(InputError, match="quantized .*inference only.*quantize_"):
        q(x, t)
    fresh = build_layer(plan, quantize="int8")
    assert not fresh.training  # built for inference
    with pytest.raises(InputError, match="inference only"):
        fresh.train()(x, t)
    with pytest.raises(InputError, match="cannot undo"):
        build_layer(plan, quantize="int8").quantize_("int8-tails")
    with pytest.raises(InputError, match="quantize"):
        build_layer(plan, quantize="int4")


def test_built_quantized_layer_loads_int8_and_fp32_checkpoints(plan, trained):
    q = copy.deepcopy(trained).quantize_("int8-tails")
    x = torch.randn(64, D)
    want = q.log_prob(x)
    from_int8 = build_layer(plan, quantize="int8-tails")
    from_int8.load_state_dict(q.state_dict())
    from_fp32 = build_layer(plan, quantize="int8-tails")
    from_fp32.load_state_dict(trained.state_dict())  # quantized on load
    assert torch.equal(from_int8.log_prob(x), want) and torch.equal(from_fp32.log_prob(x), want)
    assert {k for k in q.state_dict() if k.startswith("out.0.")} == {"out.0.qweight", "out.0.scale", "out.0.bias"}


def test_exported_file_round_trips_a_quantized_layer(plan, trained, tmp_path):
    q = copy.deepcopy(trained).quantize_("int8-tails")
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(2))
    torch.save(
        {"int8": q.state_dict(), "fp32": trained.state_dict(), "x": x, "lp": q.log_prob(x), "top": q.topk(x, 5)[1]},
        tmp_path / "ref.pt",
    )
    export_layer(plan, tmp_path / "adaptive_head.py", quantize="int8-tails")
    script = textwrap.dedent(
        """
        import sys
        sys.modules["vocabopt"] = None  # the exported file must not need vocabopt
        sys.path.insert(0, ".")
        import torch
        from adaptive_head import build_head

        ref = torch.load("ref.pt", weights_only=True)
        for key in ("int8", "fp32"):  # an fp32 checkpoint is quantized on load
            head = build_head()
            assert head.config.quantize == "int8-tails" and not head.training
            head.load_state_dict(ref[key])
            assert torch.equal(head.log_prob(ref["x"]), ref["lp"]), key
            assert torch.equal(head.topk(ref["x"], 5)[1], ref["top"]), key
        head.train()
        try:
            head(ref["x"], torch.zeros(16, dtype=torch.long))
        except ValueError as e:
            print("refused:", e)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "inference only" in out.stdout


def test_cli_export_quantize(plan, tmp_path):
    plan.save(tmp_path / "plan.json")
    run = CliRunner().invoke(
        main, ["export", str(tmp_path / "plan.json"), "-o", str(tmp_path / "h.json"), "--format", "config",
               "--quantize", "int8"]
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "h.json").read_text())["config"]["quantize"] == "int8"
    bad = CliRunner().invoke(
        main, ["export", str(tmp_path / "plan.json"), "-o", str(tmp_path / "a.py"), "--format", "torch",
               "--quantize", "int8-tails"]
    )  # fmt: skip
    assert bad.exit_code == 1 and "--format module" in bad.output and "Traceback" not in bad.output


def test_compare_quantized_against_a_direct_computation(trained):
    q = copy.deepcopy(trained).quantize_("int8-tails")
    g = torch.Generator().manual_seed(3)
    chunks = [(torch.randn(100, D, generator=g), torch.randint(0, V, (100,), generator=g)) for _ in range(3)]
    res = compare_quantized(trained, q, chunks)
    x, t = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
    with torch.no_grad():
        lp, lq = trained.log_prob(x).double(), q.log_prob(x).double()
    kl = float((lp.exp() * (lp - lq)).sum(1).mean())
    nll_r, nll_q = float(-lp.gather(1, t[:, None]).mean()), float(-lq.gather(1, t[:, None]).mean())
    assert res.tokens == 300 and res.mode == "int8-tails" and res.matmul == "dequantize per call"
    assert res.kl == pytest.approx(kl, rel=1e-3, abs=1e-7) and res.kl > 0
    assert res.top1_agreement == pytest.approx(float((lp.argmax(1) == lq.argmax(1)).double().mean()))
    assert res.loss_fp32 == pytest.approx(nll_r, rel=1e-5) and res.loss_quantized == pytest.approx(nll_q, rel=1e-5)
    assert res.ppl_change == pytest.approx(math.exp(nll_q - nll_r) - 1, abs=1e-6)
    assert res.bytes_quantized["tails"] <= res.bytes_fp32["tails"] / 2
    with pytest.raises(InputError, match="no held-out tokens"):
        compare_quantized(trained, q, [])


def test_validate_quantize_compares_the_trained_head(corpus_slice, tmp_path):
    path = tmp_path / "tiny.txt"
    text = corpus_slice.read_text(encoding="utf-8")[:60_000]
    path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    stats = vocabopt.analyze([str(path)], tokenizer=str(BPE))
    Plan.from_cutoffs(stats, hidden=32, cutoffs=[200, 1000], proj_dims=[16, 16]).save(tmp_path / "plan.json")
    args = ["validate", str(tmp_path / "plan.json"), "--corpus", str(path), "-t", str(BPE), "--steps", "20"]
    args += ["--seq-len", "16", "--batch-size", "8", "--lr", "0.01", "--quantize", "int8-tails"]
    run = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "v.json")])
    assert run.exit_code == 0, run.output
    assert "int8-tails head (dequantize per call) vs fp32" in run.output and "top-1 agreement" in run.output
    res = ValidationResult.load(tmp_path / "v.json")
    qc = res.quantized
    assert qc["mode"] == "int8-tails" and qc["tokens"] > 0 and qc["top1_agreement"] >= 0.9
    assert 0 <= qc["kl"] < 0.05 and abs(qc["ppl_change"]) < 0.05
    assert qc["loss_fp32"] == pytest.approx(res.runs[0].heldout_loss, rel=1e-4)  # the same held-out tokens
    assert qc["bytes_quantized"]["tails"] <= qc["bytes_fp32"]["tails"] / 2


def test_quantize_benchmark_smoke_run(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quantize_head.py"
    out = subprocess.run(
        [sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "| int8-tails |" in out.stdout and "KL" in out.stdout


def test_generation_stays_exact_on_bf16_rows_through_the_int8_kernel(trained):
    """An fp32 layer quantized whole and fed bf16 rows runs torch's int8 kernel in bf16: the skipping bounds must
    allow for bf16 rounding, so greedy and top-k still equal the layer's own log_prob."""
    q = copy.deepcopy(trained).quantize_("int8")
    x = torch.randn(512, D, generator=torch.Generator().manual_seed(7)).bfloat16()
    with torch.no_grad():
        lq = q.log_prob(x)
    assert torch.equal(lq.gather(1, q.predict(x)[:, None]).squeeze(1), lq.amax(1))
    # (the slack at bf16 precision is wide: on these rows no tail is skipped; exactness is what is asserted)
    vals, _ = q.topk(x, 10)
    torch.testing.assert_close(vals, lq.topk(10, dim=1).values, atol=1e-4, rtol=0)
