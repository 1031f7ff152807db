"""The one-shot device suite (issue 14): what a GPU user needs, measured in one run (target: < 8 minutes, one H200).

Run from the repository root on a machine with one NVIDIA GPU (no internet needed; Liger Kernel and Cut
Cross-Entropy rows run only when their wheels are installed):

    python benchmarks/gpu_suite.py out/gpu

Writes under OUT: pytest-gpu.txt (`pytest -m gpu`), profile.json and <gpu-name>-bf16.json (to ship in
configs/devices/), suite.json (every figure) and suite.md (the tables docs/benchmarks.md includes). Steps:
  1. pytest -m gpu: layer parity, fp64 gradients on CUDA, sync-free static step, CUDA-graph capture, compile, HF bf16
  2. vocabopt profile --device cuda --dtype bfloat16 on the time-budgeted quick CUDA grid
  3. the layer at LLM shapes (N=8192, d=4096, V in 32,000 / 128,256 / 262,144, cutoffs from `optimize` with that
     profile on Zipf-Mandelbrot counts): fwd+bwd ms and peak bytes against ALSWL, the full softmax (eager and
     compiled), torch's chunked linear_cross_entropy, Liger, CCE; each one's share of the measured bf16 matmul peak
  4. cost-model fidelity: predicted vs measured fwd+bwd for 12 random designs
  5. greedy decode latency (layer.predict vs the full lm_head's argmax) at batch 1-64
--dry-run runs the same steps on CPU in float32 at tiny shapes in seconds (tests/test_gpu_suite.py runs it in CI).
--steps picks a subset, e.g. to rerun one step. Nothing here is timed on import; numbers are medians of one run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("pytest", "profile", "layer", "fidelity", "decode")
SHAPES = {  # N tokens, d hidden, vocabularies; fidelity shape; decode batches; timing rounds
    "gpu": {"N": 8192, "d": 4096, "V": [32_000, 128_256, 262_144], "fid": (4096, 2048, 65_536), "batches": [1, 8, 64]},
    "dry": {"N": 256, "d": 32, "V": [1_000, 3_000], "fid": (128, 32, 2_000), "batches": [1, 4]},
}
TINY_GRID = {  # the dry run's profile grid (as tests/test_profiler.py's): seconds on a CPU
    "rows": [4, 64, 256],
    "in": [8, 32],
    "out": [16, 256, 4096],
    "width": [16, 256, 4096],
    "tokens": [64, 256],
    "hidden": [8, 32],
    "elements": [256, 4096],
    "samples": 3,
    "min_sample_ms": 0.05,
    "max_flops": 2e6,
    "max_elements": 2**21,  # the alignment probe views a (4104, 256) operand
}
TARGETS = "plan >= 5x faster than the fastest exact peer at V >= 128,256 with <= 1/10 of its peak memory; >= 1.3x ALSWL"


def zipf_mandelbrot(V: int, tokens: float = 1e9) -> np.ndarray:
    """(V,) counts f(r) ~ (r + 2.7)^-1.07, ids in rank order: a stand-in for an LLM tokenizer's counts."""
    w = (np.arange(1, V + 1) + 2.7) ** -1.07
    return np.maximum(np.round(tokens * w / w.sum()), 1).astype(np.int64)


def run_pytest(out: Path, dry: bool) -> dict[str, Any]:
    """`pytest -m gpu` (the dry run only collects: without CUDA every gpu test skips)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-o", "addopts="]
    cmd += ["--collect-only"] if dry else ["-x", "--timeout=170"] if _has_timeout() else ["-x"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    (out / "pytest-gpu.txt").write_text(r.stdout + r.stderr)
    last = [ln for ln in r.stdout.splitlines() if ln.strip()][-1:] or [""]
    return {"returncode": r.returncode, "summary": last[0], "wall_s": round(time.perf_counter() - t0, 1)}


def _has_timeout() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytest_timeout") is not None


def run_profile(out: Path, dev: str, dtype: str, dry: bool) -> Any:
    from vocabopt.profiler import profile_device

    prof = profile_device(dev, dtype, quick=True, grid=TINY_GRID if dry else None)
    prof.save(out / "profile.json")
    slug = re.sub(r"[^a-z0-9]+", "-", prof.device.split(":", 1)[-1].lower()).strip("-")
    prof.save(out / f"{slug}-{'bf16' if dtype == 'bfloat16' else dtype}.json")
    return prof


def timed(step: Callable[[], Any], dev: Any, rounds: int) -> float:
    """Median ms of `step` over interleaved samples (warm-up first), L2 flushed before each call on CUDA."""
    from vocabopt.device import interleaved_ms

    flush = _flush(dev)
    return float(np.median(interleaved_ms([step], dev, rounds=rounds, warmup_rounds=1, flush=flush)[0]))


def _flush(dev: Any) -> Any:
    import torch

    return torch.empty(64 * 2**20, dtype=torch.int32, device=dev) if dev.type == "cuda" else None


def peak_bytes(step: Callable[[], Any], dev: Any) -> int | None:
    from vocabopt.device import cuda_peak_bytes

    return cuda_peak_bytes(step) if dev.type == "cuda" else None


def matmul_peak_tflops(dev: Any, dtype: Any, n: int, d: int) -> float:
    """The device's measured matmul rate (TFLOP/s) on an (n, d) x (d, n) product in `dtype`."""
    import torch

    a, b = torch.randn(n, d, device=dev, dtype=dtype), torch.randn(d, n, device=dev, dtype=dtype)
    ms = timed(lambda: a @ b, dev, rounds=10)
    return 2.0 * n * n * d / (ms * 1e-3) / 1e12


def fwd_bwd(loss_fn: Callable[[], Any]) -> Callable[[], None]:
    return lambda: loss_fn().backward()


def methods(plan: Any, x: Any, t: Any, dev: Any, dtype: Any, dry: bool) -> dict[str, tuple[Callable | None, str]]:
    """name -> (fwd+bwd step or None, note): the plan's layer (exact and static paths), ALSWL at the same cutoffs,
    and the exact peers over the full (V, d) matrix. `t` holds original ids; ALSWL takes ranks."""
    import torch
    import torch.nn.functional as F

    from vocabopt.layer import build_layer

    V, d = plan.vocab_size, plan.hidden
    layer = build_layer(plan).to(dev, dtype)
    static = build_layer(plan, path="static").to(dev, dtype)
    alswl = torch.nn.AdaptiveLogSoftmaxWithLoss(d, V, list(plan.cutoffs), div_value=4.0).to(dev, dtype)
    same = [m[0].out_features for m in alswl.tail] == list(plan.proj_dims)
    ranks = layer.rank_of[t]
    w = torch.nn.Parameter(torch.randn(V, d, device=dev, dtype=dtype) * d**-0.5)
    full = lambda: F.cross_entropy(F.linear(x, w).float(), t)  # noqa: E731
    compiled = torch.compile(full, backend="eager" if dry else "inductor")
    rows: dict[str, tuple[Callable | None, str]] = {
        "adaptive (plan, exact)": (fwd_bwd(lambda: layer(x, t)), "the default eager path"),
        "adaptive (plan, static)": (fwd_bwd(lambda: static(x, t)), "compile/CUDA-graph path, eager here"),
        "ALSWL": (fwd_bwd(lambda: alswl(x, ranks).loss), "same design" if same else "div_value=4 projections"),
        "full softmax (eager)": (fwd_bwd(full), ""),
        "full softmax (compiled)": (fwd_bwd(compiled), "backend=eager in --dry-run" if dry else "inductor"),
    }
    opts = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    rows["torch linear_cross_entropy (chunked)"] = (
        (fwd_bwd(lambda: F.linear_cross_entropy(x, w, t, options=opts())), "options=LinearCrossEntropyOptions()")
        if opts is not None and hasattr(F, "linear_cross_entropy")
        else (None, "skipped: this torch has no chunked linear_cross_entropy")
    )
    rows["Liger fused linear CE"] = _liger(x, w, t, dev)
    rows["Cut Cross-Entropy"] = _cce(x, w, t, dev)
    return rows


def _liger(x: Any, w: Any, t: Any, dev: Any) -> tuple[Callable | None, str]:
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except Exception as e:  # optional: not installed, or no triton/GPU
        return None, f"skipped: liger-kernel not importable ({type(e).__name__})"
    if dev.type != "cuda":
        return None, "skipped: Liger needs CUDA"
    loss = LigerFusedLinearCrossEntropyLoss()
    return fwd_bwd(lambda: loss(w, x, t)), "liger-kernel"


def _cce(x: Any, w: Any, t: Any, dev: Any) -> tuple[Callable | None, str]:
    try:
        from cut_cross_entropy import linear_cross_entropy
    except Exception as e:
        return None, f"skipped: cut-cross-entropy not importable ({type(e).__name__})"
    if dev.type != "cuda":
        return None, "skipped: CCE needs CUDA"
    return fwd_bwd(lambda: linear_cross_entropy(x, w, t)), "cut-cross-entropy"


def flops(plan: Any, N: int, name: str) -> float:
    """Multiply-add FLOPs x 2 of fwd+bwd (x 3): 6 N d V for the full softmax; the plan's own for the adaptive
    layer (head on every row, tail i on its expected share of rows)."""
    V, d = plan.vocab_size, plan.hidden
    if not name.startswith(("adaptive", "ALSWL")):
        return 6.0 * N * d * V
    from vocabopt import design

    shares = design.cluster_shares(plan.counts_by_rank, list(plan.cutoffs))
    edges = [*plan.cutoffs, V]
    total = 6.0 * N * d * (plan.cutoffs[0] + len(plan.cutoffs))
    for i, p in enumerate(plan.proj_dims):
        total += 6.0 * shares[i + 1] * N * p * (d + edges[i + 1] - edges[i])
    return total


def plan_or_fixed(counts: np.ndarray, d: int, prof: Any, n: int, **kw: Any) -> tuple[Any, str]:
    """The optimizer's plan, and how it was chosen; where it proposes none (the dry run's toy shapes, at which no
    design beats the full softmax), the fixed design [V/8, V/2], saying so."""
    from vocabopt import Plan, optimize
    from vocabopt.errors import InputError

    try:
        return optimize(counts, hidden=d, profile=prof, batch_tokens=n, **kw), "vocabopt optimize"
    except InputError as e:
        V = len(counts)
        fixed = Plan.from_cutoffs(counts, hidden=d, cutoffs=[V // 8, V // 2])
        return fixed, f"fixed [V/8, V/2]: optimize proposed none ({str(e).splitlines()[0][:100]})"


def run_layer(prof: Any, dev: Any, dtype: Any, shape: dict[str, Any], rounds: int, dry: bool) -> dict[str, Any]:
    import torch

    N, d = shape["N"], shape["d"]
    peak = matmul_peak_tflops(dev, dtype, min(N, 8192), d)
    rows = []
    for V in shape["V"]:
        counts = zipf_mandelbrot(V)
        plan, chosen_by = plan_or_fixed(counts, d, prof, N)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(N, d, generator=gen).to(dev, dtype).requires_grad_()
        t = torch.from_numpy(np.random.default_rng(0).choice(V, size=N, p=counts / counts.sum())).to(dev)
        for name, (step, note) in methods(plan, x, t, dev, dtype, dry).items():
            row = {"V": V, "method": name, "note": note, "cutoffs": list(plan.cutoffs), "proj": list(plan.proj_dims)}
            row["chosen_by"] = chosen_by
            if step is not None:
                ms = timed(step, dev, rounds)
                row |= {"ms": ms, "peak_bytes": peak_bytes(step, dev), "flops": flops(plan, N, name)}
                row["peak_fraction"] = row["flops"] / (ms * 1e-3) / (peak * 1e12)
            rows.append(row)
            x.grad = None
    return {"N": N, "d": d, "matmul_peak_tflops": peak, "rows": rows, "checks": _checks(rows)}


def _checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's floors, per vocabulary: plan vs the fastest exact peer (speed, memory) and vs ALSWL."""
    out = []
    for V in sorted({r["V"] for r in rows}):
        by = {r["method"]: r for r in rows if r["V"] == V and "ms" in r}
        plan = by.get("adaptive (plan, exact)")
        peers = [r for n, r in by.items() if not n.startswith(("adaptive", "ALSWL"))]
        if plan is None or not peers:
            continue
        best = min(peers, key=lambda r: r["ms"])
        check = {"V": V, "fastest_exact_peer": best["method"], "speedup_vs_peer": best["ms"] / plan["ms"]}
        if plan["peak_bytes"] and best["peak_bytes"]:
            check["memory_fraction_of_peer"] = plan["peak_bytes"] / best["peak_bytes"]
        if "ALSWL" in by:
            check["speedup_vs_alswl"] = by["ALSWL"]["ms"] / plan["ms"]
        if "adaptive (plan, static)" in by:
            check["static_over_exact"] = by["adaptive (plan, static)"]["ms"] / plan["ms"]
        out.append(check)
    return out


def run_fidelity(prof: Any, dev: Any, dtype: Any, shape: tuple[int, int, int], rounds: int) -> dict[str, Any]:
    """Predicted (cost.predict with this profile) vs measured fwd+bwd ms of 12 random designs."""
    import torch

    from vocabopt import cost, design
    from vocabopt.layer import build_layer
    from vocabopt.plan import Plan

    N, d, V = shape
    counts = zipf_mandelbrot(V)
    rng = np.random.default_rng(1)
    x = torch.randn(N, d, device=dev, dtype=dtype).requires_grad_()
    t = torch.from_numpy(rng.choice(V, size=N, p=counts / counts.sum())).to(dev)
    rows = []
    for _ in range(12):
        J = int(rng.integers(1, 4))
        cut = sorted({int(c) for c in np.exp(rng.uniform(np.log(V / 200), np.log(V * 0.9), size=J)) // 8 * 8})
        proj = design.proj_dims(d, len(cut))
        plan = Plan.from_cutoffs(counts, hidden=d, cutoffs=cut, proj_dims=proj, provenance={"name": "fidelity"})
        layer = build_layer(plan).to(dev, dtype)
        ms = timed(fwd_bwd(lambda layer=layer: layer(x, t)), dev, rounds)
        pred = cost.predict(prof, counts, hidden=d, cutoffs=cut, proj_dims=proj, batch_tokens=N).time_ms
        rows.append({"cutoffs": cut, "proj": proj, "measured_ms": ms, "predicted_ms": pred, "error": pred / ms - 1})
    errors = np.abs([r["error"] for r in rows])
    return {"N": N, "d": d, "V": V, "rows": rows, "median_abs_error": float(np.median(errors))}


def run_decode(prof: Any, dev: Any, dtype: Any, shape: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Greedy decode latency: the plan's layer.predict vs the full lm_head's argmax, per batch size."""
    import torch

    from vocabopt.layer import build_layer

    d, V = shape["d"], shape["V"][-1]
    counts = zipf_mandelbrot(V)
    plan, chosen_by = plan_or_fixed(counts, d, prof, 64, mode="infer", decode="greedy")
    layer = build_layer(plan).to(dev, dtype).eval()
    w = torch.randn(V, d, device=dev, dtype=dtype) * d**-0.5
    rows = []
    with torch.no_grad():
        for B in shape["batches"]:
            h = torch.randn(B, d, device=dev, dtype=dtype)
            ada = timed(lambda h=h: layer.predict(h), dev, rounds)
            full = timed(lambda h=h: (h @ w.t()).argmax(-1), dev, rounds)
            rows.append({"batch": B, "adaptive_ms": ada, "full_ms": full, "speedup": full / ada})
    return {"V": V, "d": d, "cutoffs": list(plan.cutoffs), "chosen_by": chosen_by, "rows": rows}


def markdown(res: dict[str, Any]) -> str:
    lines = [f"Device: {res['device']}; torch {res['torch']}; dtype {res['dtype']}; command `{res['command']}`.", ""]
    if "layer" in res:
        lay = res["layer"]
        lines += [f"Layer fwd+bwd, N={lay['N']}, d={lay['d']}, matmul peak {lay['matmul_peak_tflops']:.1f} TFLOP/s", ""]
        lines += ["| V | method | ms | peak MB | % of peak | note |", "|---|---|---|---|---|---|"]
        for r in lay["rows"]:
            mb = f"{r['peak_bytes'] / 2**20:.0f}" if r.get("peak_bytes") else "-"
            ms, frac = (f"{r['ms']:.2f}", f"{100 * r['peak_fraction']:.1f}") if "ms" in r else ("-", "-")
            lines.append(f"| {r['V']:,} | {r['method']} | {ms} | {mb} | {frac} | {r['note']} |")
        lines += ["", f"Targets: {TARGETS}.", "", "```", json.dumps(lay["checks"], indent=1), "```", ""]
    if "fidelity" in res:
        f = res["fidelity"]
        lines += [f"Cost model, 12 random designs (N={f['N']}, d={f['d']}, V={f['V']:,}): median |error| "]
        lines[-1] += f"{100 * f['median_abs_error']:.1f}% (target <= 10%)."
    if "decode" in res:
        lines += ["", "| batch | adaptive ms | full lm_head ms | speedup |", "|---|---|---|---|"]
        lines += [
            f"| {r['batch']} | {r['adaptive_ms']:.3f} | {r['full_ms']:.3f} | {r['speedup']:.2f}x |"
            for r in res["decode"]["rows"]
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="directory for every output")
    ap.add_argument("--dry-run", action="store_true", help="CPU, float32, tiny shapes (seconds): checks the suite")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--profile", type=Path, help="use this profile instead of measuring one (skips step 2)")
    args = ap.parse_args(argv)
    import torch

    from vocabopt.device import device_name
    from vocabopt.profile import DeviceProfile

    steps = [s for s in args.steps.split(",") if s]
    if bad := [s for s in steps if s not in STEPS]:
        ap.error(f"unknown steps {bad}; choose from {','.join(STEPS)}")
    if not args.dry_run and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU machine, or pass --dry-run to check the suite on CPU")
    dev = torch.device("cpu" if args.dry_run else "cuda")
    dtype_name = "float32" if args.dry_run else "bfloat16"
    dtype, shape, rounds = (
        getattr(torch, dtype_name),
        SHAPES["dry" if args.dry_run else "gpu"],
        3 if args.dry_run else 10,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"device": device_name(dev.type), "torch": torch.__version__, "dtype": dtype_name}
    res["command"] = "python benchmarks/gpu_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if dev.type == "cuda":
        res["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    wall: dict[str, float] = {}
    prof = DeviceProfile.load(args.profile) if args.profile else None
    for step in steps:
        t0 = time.perf_counter()
        if step == "pytest":
            res["pytest"] = run_pytest(args.out, args.dry_run)
        elif step == "profile" and prof is None:
            prof = run_profile(args.out, dev.type, dtype_name, args.dry_run)
            res["profile"] = prof.summary()
        elif step in ("layer", "fidelity", "decode"):
            if prof is None:
                ap.error(f"step {step} needs a profile: include the profile step or pass --profile")
            if step == "layer":
                res["layer"] = run_layer(prof, dev, dtype, shape, rounds, args.dry_run)
            elif step == "fidelity":
                res["fidelity"] = run_fidelity(prof, dev, dtype, shape["fid"], rounds)
            else:
                res["decode"] = run_decode(prof, dev, dtype, shape, rounds)
        wall[step] = round(time.perf_counter() - t0, 1)
        print(f"[gpu_suite] {step}: {wall[step]} s", flush=True)
    res["wall_s"] = wall
    (args.out / "suite.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (args.out / "suite.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
