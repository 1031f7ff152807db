"""The profiler: a tiny real measurement of every kernel, through the layer's public entry points, and the CLI."""

from __future__ import annotations

import inspect
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from vocabopt import adaptive_head, kernels, profiler
from vocabopt.cli import main
from vocabopt.profile import DeviceProfile
from vocabopt.profiler import profile_device

TINY = {
    "rows": [4, 64],
    "in": [8, 32],
    "out": [16, 256],
    "width": [16, 256],
    "tokens": [64, 256],
    "hidden": [8, 32],
    "elements": [256, 4096],
    "samples": 3,
    "min_sample_ms": 0.05,
    "max_flops": 2e5,
}


@pytest.fixture(scope="module")
def tiny():
    return profile_device("cpu", grid=TINY)


def test_tiny_profile_measures_every_kernel(tiny):
    assert tiny.device.startswith("cpu:") and tiny.device_type == "cpu" and tiny.dtype == "float32"
    assert tiny.environment["torch"] and tiny.environment["threads"] >= 1
    assert tiny.settings["samples"] == 3 and tiny.alignment in (8, 64)
    for name in kernels.KERNEL_AXES:
        table = tiny.kernels[name]
        med, lo, hi = (np.asarray(table[k]) for k in ("median_ms", "p20_ms", "p80_ms"))
        assert np.all(med > 0) and np.all(lo <= med + 1e-12) and np.all(med <= hi + 1e-12)
    measured = np.asarray(tiny.kernels["linear_fwd"]["measured"])
    assert measured[0, 0, 0] and not measured[-1, -1, -1]  # 64 x 32 x 256 x 2 FLOPs is over the tiny budget


def test_cost_model_reproduces_measured_points(tiny):
    for name, axes in kernels.KERNEL_AXES.items():
        table = tiny.kernels[name]
        grid = [np.asarray(table["axes"][a]) for a in axes]
        mesh = np.meshgrid(*grid, indexing="ij")
        ms, extrap = kernels.tables(tiny)[name](*mesh)
        measured = np.asarray(table["measured"])
        np.testing.assert_allclose(ms[measured], np.asarray(table["median_ms"])[measured], rtol=1e-9)
        assert not extrap[measured].any() and extrap[~measured].all()


def test_round_trip(tmp_path, tiny):
    tiny.save(tmp_path / "d.json")
    back = DeviceProfile.load(tmp_path / "d.json")
    assert back.to_json() == json.loads((tmp_path / "d.json").read_text())
    assert back.kernels == tiny.kernels and back.device == tiny.device


def test_cli_profile(tmp_path, monkeypatch):
    import vocabopt.profile as vp

    monkeypatch.setitem(vp.GRIDS, "quick", {**vp.GRIDS["quick"], **TINY})
    r = CliRunner().invoke(main, ["profile", "--device", "cpu", "--quick", "-o", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    assert "GFLOP/s" in r.output and DeviceProfile.load(tmp_path / "d.json").settings["quick"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_profile_without_cuda_names_the_fix(tmp_path):
    r = CliRunner().invoke(main, ["profile", "--device", "cuda", "-o", str(tmp_path / "e.json")])
    assert r.exit_code == 1 and "--device cpu" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "e.json").exists()


@pytest.mark.gpu
def test_cli_profile_cuda_bf16_tiny(tmp_path, monkeypatch):
    """On a GPU: the CUDA grid (monkeypatched to TINY) measures every kernel in bf16, L2 flushed per call."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import vocabopt.profile as vp

    monkeypatch.setitem(vp.GRIDS, "cuda-quick", {**vp.GRIDS["cuda-quick"], **TINY, "max_elements": 2**20})
    out = tmp_path / "g.json"
    r = CliRunner().invoke(main, ["profile", "--device", "cuda", "--dtype", "bfloat16", "--quick", "-o", str(out)])
    assert r.exit_code == 0, r.output
    prof = DeviceProfile.load(out)
    assert prof.device.startswith("cuda:") and prof.device_type == "cuda" and prof.dtype == "bfloat16"
    assert prof.environment["cuda"] and all(np.any(prof.kernels[k]["measured"]) for k in kernels.KERNEL_AXES)
    assert prof.settings["max_call_ms"] == vp.GRIDS["cuda-quick"]["max_call_ms"]


def test_cpu_grids_unchanged_and_cuda_grids_reach_llm_shapes():
    """The CPU grid is the one the shipped CPU profile was measured on; the CUDA grids reach N = 16K, d = 8K and
    widths of 262,144 (the largest LLM vocabularies) under a time budget, and budget LLM-shape matmuls in."""
    import vocabopt.profile as vp

    shipped = DeviceProfile.load("configs/devices/cpu-xeon-2core-float32.json").settings
    for key in ("rows", "in", "out", "width", "tokens", "hidden", "elements", "max_flops", "max_elements"):
        assert vp.GRIDS["full"][key] == shipped[key], key
    assert "budget_s" not in vp.GRIDS["full"] and "max_call_ms" not in vp.GRIDS["quick"]
    assert vp.grid_name("cpu", False) == "full" and vp.grid_name("mps", True) == "quick"
    for name in ("cuda", "cuda-quick"):
        g = vp.GRIDS[name]
        assert vp.grid_name("cuda", name == "cuda-quick") == name
        assert max(g["rows"]) >= 16384 and max(g["in"]) >= 8192 and max(g["out"]) == max(g["width"]) == 262144
        assert 8192 * 262144 <= g["max_elements"] and g["budget_s"] <= 300
        assert 2.0 * 8192 * 4096 * 262144 <= g["max_flops"]  # measured, not extrapolated from small points


def test_time_budget_drops_slow_points_and_caps_rounds():
    settings = {**TINY, "max_elements": 4096, "max_call_ms": 5.0, "budget_s": 0.05, "min_samples": 2}
    harness = profiler._Harness("cpu", torch.float32, settings, seed=0)
    assert harness._reps(lambda: time.sleep(0.02)) is None  # one call over max_call_ms: left to the roofline
    assert 1 <= harness._reps(lambda: None) <= 1000  # fast: repeated to last min_sample_ms
    assert len(harness.sample_ms) == 1  # only the kept point counts toward the round time
    harness.sample_ms = [10.0, 20.0]  # 30 ms per round: one round fits 0.05 s, but never fewer than min_samples
    assert harness._rounds([1, 1]) == 2
    harness.settings = {**settings, "budget_s": 10.0}
    assert harness._rounds([1, 1]) == TINY["samples"]  # 333 rounds fit: samples bounds it
    harness.settings = {k: v for k, v in settings.items() if k != "budget_s"}
    assert harness._rounds([1, 1]) == TINY["samples"]  # no time budget (the CPU grids)


def test_fixed_costs_are_measured_on_the_path_the_cost_model_assumes(monkeypatch):
    """The tiny layer behind cluster_fixed / step_fixed runs the exact path (one row per tail), the path `cost`
    models on every device, so no N-row gather is counted there and again in `cost.tail_ms`."""
    from vocabopt import cost
    from vocabopt.profile import synthetic_profile

    harness = profiler._Harness("cpu", torch.float32, {**TINY, "max_elements": 8192}, seed=0)
    paths = []
    real_exact = adaptive_head.AdaptiveSoftmax._tails_exact
    monkeypatch.setattr(
        adaptive_head.AdaptiveSoftmax, "_tails_exact", lambda self, *a: paths.append("exact") or real_exact(self, *a)
    )
    monkeypatch.setattr(adaptive_head.AdaptiveSoftmax, "_tails_static", lambda *a: paths.append("static"))
    for kname in ("step_fixed_train", "cluster_fixed_train", "step_fixed_fwd", "cluster_fixed_fwd"):
        harness.make(kname, (256, 32))()
    assert paths == ["exact"] * 4
    cpu = synthetic_profile(lambda k, *c: 0.01 + 1e-9 * np.prod(c, axis=0))
    gpu = synthetic_profile(lambda k, *c: 0.01 + 1e-9 * np.prod(c, axis=0))
    gpu.device_type = "cuda"  # the recipes are the eager (exact) path's on every device
    args = dict(proj=np.array([64, 16]), size=np.array([4000, 40000]), share=np.array([0.1, 0.01]))
    np.testing.assert_array_equal(cost.tail_ms(cpu, 2048, 512, **args)[0], cost.tail_ms(gpu, 2048, 512, **args)[0])


def test_harness_times_public_entry_points_only():
    """The profiler measures the code the layer runs: no private autograd Function, no hand-made ctx."""
    source = inspect.getsource(profiler)
    assert "_LinearNLL" not in source and "_Ctx" not in source and "._NLL" not in source
    assert not hasattr(adaptive_head, "_NLL")  # the exported layer ships only what it runs


@pytest.mark.parametrize("chunk", [0, 7])
def test_linear_nll_entry_point_is_the_layer_loss(chunk):
    """`linear_nll` (what the profiler times) equals cross-entropy of x @ W.T + b, values and gradients."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = (
        torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True) for s in [(9, 5), (20, 5), (20,)]
    )
    t = torch.randint(0, 20, (9,), generator=gen)
    got = adaptive_head.linear_nll(x, w, b, t, chunk, adaptive_head.LossScratch())
    want = F.cross_entropy(F.linear(x, w, b), t, reduction="none")
    torch.testing.assert_close(got, want)
    g = torch.rand(9, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(got, [x, w, b], g), torch.autograd.grad(want, [x, w, b], g))
