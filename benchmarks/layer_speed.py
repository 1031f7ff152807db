"""Benchmark: forward+backward time and memory of the output layer — vocabopt's adaptive softmax vs torch's
AdaptiveLogSoftmaxWithLoss (identical design and weights) vs the full softmax (nn.Linear + F.cross_entropy), its
torch.compile'd form, and torch's chunked F.linear_cross_entropy (options=LinearCrossEntropyOptions(), torch >= 2.13).

Targets are Zipf-distributed (p(rank r) ~ 1/(r+1)): uniform targets would put almost every token in the rarest
cluster and misrepresent every adaptive method. Prints a table and rewrites this benchmark's section of
docs/benchmarks.md. Medians of repeated fwd+bwd steps, all measured in one run; ratios are against vocabopt.

    python benchmarks/layer_speed.py --quick            # CPU, minutes (the chunked CE is slow there)
    python benchmarks/layer_speed.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vocabopt.device import (  # noqa: E402  (as `vocabopt bench`)
    device_name,
    module_bytes,
    saved_bytes,
    step_peak_bytes,
    time_ms,
)
from vocabopt.layer import build_layer, load_alswl  # noqa: E402
from vocabopt.plan import Plan  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import write_section  # noqa: E402

CHUNKED = "F.linear_cross_entropy (chunked)"  # its best LinearCrossEntropyOptions here, same weights and bias
COMPILED = "full softmax (torch.compile)"
SLOW = ("full softmax", CHUNKED, COMPILED)  # seconds per step on CPU: fewer repetitions
SECTION = "## Layer speed (benchmarks/layer_speed.py)"
# (N tokens, d, V, cutoffs); projections d/4^i (ALSWL's div_value=4) so that ALSWL can run the identical design
CONFIGS_QUICK = [
    (2048, 512, 50_000, [2000, 10_000]),  # the headline design
    (2048, 512, 50_000, [20_000, 40_000]),  # a large head: the head matmuls dominate every method
    (2048, 512, 8000, [1152, 2328]),  # `vocabopt optimize` on the shipped KJV corpus (BPE 8K): proj [128, 32]
    (2048, 512, 262_144, [2000, 10_000, 50_000]),  # word-level vocabulary (WT103-sized), paper-style cutoffs
]
CONFIGS_SMOKE = [(256, 64, 4000, [500, 1500])]  # seconds: checks the script runs, every peer included; no figures
CONFIGS_FULL = CONFIGS_QUICK + [(4096, 1024, 128_000, [4000, 20_000, 60_000]), (8192, 256, 32_000, [2000, 8000])]


def zipf_plan(V: int, d: int, cutoffs: list[int]) -> Plan:
    counts = np.round(1e9 / np.arange(1, V + 1)).astype(np.int64)  # exact Zipf, s = 1; ids already in rank order
    return Plan.from_cutoffs(counts, hidden=d, cutoffs=cutoffs, provenance={"name": f"zipf-V{V}"})


def zipf_targets(N: int, V: int, seed: int = 0) -> torch.Tensor:
    p = 1.0 / np.arange(1, V + 1)
    return torch.from_numpy(np.random.default_rng(seed).choice(V, size=N, p=p / p.sum()))


def layer_at_revision(rev: str, like):
    """The layer as `vocabopt/adaptive_head.py` was at git revision `rev`, with `like`'s config and weights."""
    import dataclasses
    import importlib.util
    import subprocess
    import tempfile

    src = subprocess.run(
        ["git", "show", f"{rev}:vocabopt/adaptive_head.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"adaptive_head_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    fields = mod.AdaptiveHeadConfig.__dataclass_fields__
    cfg = mod.AdaptiveHeadConfig(**{k: v for k, v in dataclasses.asdict(like.config).items() if k in fields})
    layer = mod.AdaptiveSoftmax(cfg, order=like.order.cpu())
    layer.load_state_dict(like.state_dict())
    return layer


def methods(N, d, V, cutoffs, device, dtype, full: bool, baseline_rev: str | None = None, compile_: bool = True):
    plan = zipf_plan(V, d, cutoffs)
    ranks = zipf_targets(N, V).to(device)
    h = torch.randn(N, d, device=device, requires_grad=True)
    ours = build_layer(plan, path="exact").to(device)
    static = build_layer(plan, path="static").to(device)
    head_bias = ours.head.bias is not None
    alswl = torch.nn.AdaptiveLogSoftmaxWithLoss(d, V, cutoffs, div_value=4.0, head_bias=head_bias).to(device)
    load_alswl(ours, alswl)  # ALSWL's weights into ours: the two compute the same loss (tests/test_bench.py)
    static.load_state_dict(ours.state_dict())
    ids = ours.order[ranks]  # original ids (identity order here: the Zipf counts are already sorted)
    ac = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def fwd(fn):
        def run():
            with ac:
                return fn()

        return run

    out = {
        "vocabopt": fwd(lambda: ours(h, ids)),
        "vocabopt static": fwd(lambda: static(h, ids)),
        "ALSWL": fwd(lambda: alswl(h, ranks).loss),
    }
    modules = {"vocabopt": [ours], "vocabopt static": [static], "ALSWL": [alswl]}
    if baseline_rev:
        old = layer_at_revision(baseline_rev, ours).to(device)
        out[f"vocabopt @ {baseline_rev}"] = fwd(lambda: old(h, ids))
    if full:
        lin = torch.nn.Linear(d, V, device=device)
        out["full softmax"] = fwd(lambda: F.cross_entropy(lin(h).float(), ranks))
        if hasattr(torch.nn, "LinearCrossEntropyOptions"):  # without `options` it is the full softmax again
            out[CHUNKED] = _best_chunked(h, lin, ranks, fwd, device)
        else:
            print(f"  {CHUNKED}: skipped, torch {torch.__version__} has no LinearCrossEntropyOptions", file=sys.stderr)
        compiled = _compiled(lambda: F.cross_entropy(lin(h).float(), ranks), fwd) if compile_ else None
        if compiled is not None:
            out[COMPILED] = compiled
        for name in ("full softmax", CHUNKED, COMPILED):
            modules[name] = [lin]
    return out, modules


CHUNK_CHOICES: list[str] = []  # per design: the chunked peer's configuration that was fastest, and the others' ms


def _best_chunked(h, lin, ranks, fwd, device):
    """The chunked F.linear_cross_entropy in its best configuration here: torch's defaults (chunk size from its
    per-device table) and fixed chunk sizes, each timed on one step after a warm-up; the fastest is benchmarked."""
    opts = torch.nn.LinearCrossEntropyOptions
    n = h.shape[0]
    configs = {"defaults": opts()}
    for rows in (256, 1024):
        if rows < n:
            configs[f"batch_chunk_size={rows}"] = opts(chunking_method=None, batch_chunk_size=rows)
    timed = {}
    for label, o in configs.items():
        step = fwd(lambda o=o: F.linear_cross_entropy(h, lin.weight, ranks, linear_bias=lin.bias, options=o))
        step().backward()  # warm-up
        timed[label] = (time_ms(lambda step=step: step().backward(), device), step)
    best = min(timed, key=lambda k: timed[k][0])
    CHUNK_CHOICES.append(f"{best} (one step each: " + ", ".join(f"{k} {v[0]:.0f} ms" for k, v in timed.items()) + ")")
    print(f"  {CHUNKED}: {CHUNK_CHOICES[-1]}", file=sys.stderr)
    return timed[best][1]


def _compiled(loss_fn, fwd):
    """torch.compile'd `loss_fn`, compiled (and warmed up) here, outside any timing; None, with the reason printed,
    where compiling fails (no C++ compiler, an unsupported torch)."""
    try:
        step = fwd(torch.compile(loss_fn))
        step().backward()  # compiles forward and backward
        step().backward()
        return step
    except Exception as e:  # noqa: BLE001  (any compiler failure means: no compiled peer on this machine)
        print(
            f"  {COMPILED}: skipped, compiling failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
            file=sys.stderr,
        )
        return None


def matmul_floor(N: int, d: int, V: int, cutoffs: list[int], reps: int = 5) -> dict:
    """The design's matmuls alone (forward, dx, dW), outputs preallocated: what no implementation can go below.

    Head at N rows; each tail's projection and output layer at its expected Zipf share of rows.
    """

    def ms(a, b, out):
        torch.mm(a, b, out=out)  # warm-up, and the output's pages are touched
        return statistics.median(time_ms(lambda: torch.mm(a, b, out=out), "cpu") for _ in range(reps))

    p = 1.0 / np.arange(1, V + 1)
    p /= p.sum()
    edges, H = [0, *cutoffs, V], cutoffs[0] + len(cutoffs)
    x, w, s = torch.randn(N, d), torch.randn(H, d), torch.randn(N, H)
    head = ms(x, w.t(), torch.empty(N, H)) + ms(s, w, torch.empty(N, d)) + ms(s.t(), x, torch.empty(H, d))
    flops, tails = 6.0 * N * d * H, 0.0
    for i in range(len(cutoffs)):
        n, k, C = round(N * p[edges[i + 1] : edges[i + 2]].sum()), d // 4 ** (i + 1), edges[i + 2] - edges[i + 1]
        for a, b in (((n, d), (d, k)), ((n, k), (k, C))):  # projection, then output layer: fwd, dx, dW
            u, v, g = torch.randn(*a), torch.randn(*b), torch.randn(a[0], b[1])
            tails += ms(u, v, torch.empty(a[0], b[1])) + ms(g, v.t(), torch.empty(*a)) + ms(u.t(), g, torch.empty(*b))
            flops += 6.0 * a[0] * a[1] * b[1]
    return dict(gflop=flops / 1e9, head_ms=head, tails_ms=tails, head_gflops=6.0 * N * d * H / head / 1e6)


def run(args) -> list[dict]:
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    rows = []
    configs = list(enumerate(CONFIGS_SMOKE if args.smoke else CONFIGS_QUICK if args.quick else CONFIGS_FULL))
    for ci, (N, d, V, cutoffs) in [configs[i] for i in args.design] if args.design else configs:
        full = ci == 0 or not args.quick  # full softmax is slow on CPU: only for the headline config in --quick
        fns, modules = methods(N, d, V, cutoffs, device, dtype, full, args.baseline_rev, not args.no_compile)
        # Interleave the methods round by round so a shared machine's load drifts over all of them alike.
        times: dict[str, dict[int, float]] = {name: {} for name in fns}  # method -> round -> ms
        for rep in range(args.reps + 1):
            for name, fwd in fns.items():
                if rep > max(2, args.reps // 3) and name in SLOW:
                    continue
                ms = time_ms(lambda fwd=fwd: fwd().backward(), device)
                if rep:  # round 0 is the warm-up
                    times[name][rep] = ms
        ours = times["vocabopt"]
        for name, fwd in fns.items():
            med = statistics.median(times[name].values())
            # Ratio to vocabopt in the same round, then the median: robust to load that comes and goes.
            ratio = statistics.median(ms / ours[rep] for rep, ms in times[name].items())
            peak = step_peak_bytes(lambda fwd=fwd: fwd().backward(), device.type)  # CPU: RSS high-water delta
            rows.append(
                dict(
                    N=N,
                    d=d,
                    V=V,
                    cutoffs=cutoffs,
                    method=name,
                    ms=med,
                    ratio=ratio,
                    n=len(times[name]),
                    saved=saved_bytes(fwd),
                    peak=peak,
                    resident=module_bytes(*modules.get(name, []))[0],
                )
            )
            print(f"  {N:>5} {d:>5} {V:>7} {str(cutoffs):<22} {name:<34} {med:9.1f} ms {ratio:6.2f}x", file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    mb = lambda b: "-" if b is None else f"{b / 1e6:.0f}"  # noqa: E731
    lines = [
        "| N | d | V | cutoffs | method | fwd+bwd median (ms) | vs vocabopt | saved for backward (MB) "
        "| step peak (MB) | resident (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['N']} | {r['d']} | {r['V']} | {r['cutoffs']} | {r['method']} | {r['ms']:.1f} | {r['ratio']:.2f}x | "
            f"{mb(r['saved'])} | {mb(r['peak'])} | {mb(r['resident'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="four designs, full softmax only on the first (~3 min CPU)")
    ap.add_argument(
        "--design",
        type=int,
        action="append",
        help="run only design #i of the list (repeatable); "
        "a fresh process sees the allocator as a short training script does",
    )
    ap.add_argument("--smoke", action="store_true", help="one tiny design, every peer: checks the script (no write)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd full softmax")
    ap.add_argument("--floor", action="store_true", help="time each design's matmuls alone (CPU) and exit")
    ap.add_argument("--baseline-rev", help="also time the layer as it was at this git revision (never written)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if args.floor:
        for N, d, V, cutoffs in CONFIGS_QUICK if args.quick else CONFIGS_FULL:
            f = matmul_floor(N, d, V, cutoffs)
            print(
                f"N={N} d={d} V={V} {cutoffs}: {f['gflop']:.1f} GFLOP of matmuls; head's alone {f['head_ms']:.1f} ms "
                f"({f['head_gflops']:.0f} GFLOP/s), tails' {f['tails_ms']:.1f} ms"
            )
        return
    rows = run(args)
    tab = table(rows)
    print(tab)
    dev = device_name("cuda" if args.device.startswith("cuda") else args.device)
    cmd = "python benchmarks/layer_speed.py " + " ".join(sys.argv[1:])
    body = (
        f"Forward+backward of the output layer alone, Zipf targets (p(rank r) ~ 1/(r+1)), {args.dtype}; median of "
        f"{args.reps} steps (full softmax: fewer) after a warm-up, all in one run, the methods interleaved round by "
        "round; 'vs vocabopt' = median over rounds of (method's time / vocabopt's time in the same round), which a "
        "shared machine's passing load distorts less than a ratio of medians. `vocabopt` = `build_layer(plan)` "
        "(exact path, the CPU default); `vocabopt static` = the sync-free static-shape path (the accelerator / "
        "torch.compile default); ALSWL = torch.nn.AdaptiveLogSoftmaxWithLoss with the identical design and weights. "
        f"`{CHUNKED}` = `F.linear_cross_entropy(h, W, y, linear_bias=b, options=LinearCrossEntropyOptions(...))` "
        "in its best configuration here (torch's defaults and fixed chunk sizes, one step each, the fastest kept: "
        + "; ".join(CHUNK_CHOICES)
        + "); the chunked kernel keeps no (N, V) logits; without `options` it would be the full "
        f"softmax again; on the full softmax's weights and bias; `{COMPILED}` = the full softmax under torch.compile "
        "(compile time excluded, warm-up included). 'saved for backward' = bytes autograd keeps between forward and "
        "backward (including gradients a custom function precomputes in forward); 'step peak' = peak memory of one "
        "whole fwd+bwd step above what was in use before it (CUDA: max_memory_allocated; CPU: resident-set "
        "high-water mark after handing free heap back to the OS, so memory a method keeps between steps is not in "
        "it); 'resident' = what the method keeps between steps (parameters, gradients, buffers, scratch). "
        "Projections are d/4^i (ALSWL's "
        "div_value=4) so ALSWL runs the identical design; V=8000 [1152, 2328] is what `vocabopt optimize` recommends "
        "for the shipped KJV corpus (BPE 8K) at d=512 and 2048 tokens (projections [128, 32]), timed here with Zipf "
        "targets like the other designs.\n\n"
        f"- machine: {dev}, {platform.machine()} ({platform.system()})\n"
        f"- torch {torch.__version__}, python {platform.python_version()}, {datetime.date.today().isoformat()}\n"
        f"- command: `{cmd}`\n\n{tab}\n"
    )
    if (
        not args.no_write and not args.design and not args.baseline_rev and not args.smoke
    ):  # only complete, current runs are written
        write_section(SECTION.removeprefix("## "), body, Path(args.out))


if __name__ == "__main__":
    main()
