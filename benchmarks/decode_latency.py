"""Benchmark: per-token decode latency of an adaptive head vs the full lm_head (`vocabopt bench --mode infer`).

Plans are Zipf vocabularies (p(rank r) ~ 1/r), each timed with two designs: a fixed rule (cutoffs [V/32, V/8],
projections d/4, d/16) and the one `vocabopt optimize --mode infer --decode greedy` recommends for batch-1 decoding
with a device profile (`--profile`; on CPU the shipped one by default; none: the rule only). The heads are
untrained (unigram-initialised biases), hidden states standard normal. Every adaptive decode is checked against
the head's own full log_prob in the run (vocabopt.decode). Prints a table with the issue's floors (>= 10x at
V >= 128K, batch 1, greedy and top-50; >= 5x at batch 64); `--docs` also rewrites this benchmark's section of
docs/benchmarks.md (run it on a quiet machine: timings taken while other jobs run are not figures).

    python benchmarks/decode_latency.py --quick                  # CPU: V=32K and 128K, d=1024, batch 1, 8, 64
    python benchmarks/decode_latency.py --device cuda --docs      # the full grid (the GPU suite's run)
    python benchmarks/decode_latency.py --shapes 8192:256 --batch 1 --reps 1   # seconds: the test suite's smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vocabopt.decode import bench_decode  # noqa: E402
from vocabopt.errors import InputError  # noqa: E402
from vocabopt.optimize import optimize  # noqa: E402
from vocabopt.plan import Plan  # noqa: E402
from vocabopt.profile import DeviceProfile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import command, machine, write_section  # noqa: E402

SECTION = "Decode latency (benchmarks/decode_latency.py)"
SHAPES_FULL = [(v, d) for v in (32_768, 131_072, 262_144) for d in (1024, 2048)]
SHAPES_QUICK = [(32_768, 1024), (131_072, 1024)]
CPU_PROFILE = Path(__file__).resolve().parents[1] / "configs" / "devices" / "cpu-xeon-2core-float32.json"


def zipf_counts(V: int) -> np.ndarray:
    """(V,) int64 counts with p(rank r) ~ 1/r, by rank = by id."""
    return np.maximum(1, np.round(1e9 / np.arange(1, V + 1))).astype(np.int64)


def zipf_plan(V: int, d: int) -> Plan:
    cutoffs = [V // 32, V // 8]
    return Plan.from_cutoffs(
        zipf_counts(V), hidden=d, cutoffs=cutoffs, proj_dims=[d // 4, d // 16], provenance={"name": f"zipf-V{V}-d{d}"}
    )


def plans(V: int, d: int, profile: Any) -> list[tuple[str, Plan]]:
    """(label, plan): the fixed rule's design, and the optimizer's for batch-1 greedy decoding when a profile is given
    (left out when no adaptive design is predicted faster than the full softmax: nothing adaptive to time)."""
    out = [("rule [V/32, V/8]", zipf_plan(V, d))]
    if profile is not None:
        try:
            best = optimize(zipf_counts(V), hidden=d, profile=profile, batch_tokens=1, mode="infer", decode="greedy")
        except InputError as e:  # no adaptive design predicted faster here
            print(f"V={V} d={d}: no optimizer design ({e})", file=sys.stderr)
            return out
        out.append((f"optimize --mode infer {list(best.cutoffs)} {list(best.proj_dims)}", best))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU-sized grid: V 32K and 128K at d=1024")
    ap.add_argument("--shapes", default=None, help="V:d pairs, comma-separated (overrides the grid)")
    ap.add_argument("--batch", default=None, help="batch sizes, comma-separated (default 1,8,64)")
    ap.add_argument("--decode", default="greedy,topk,sample,topp")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", default=None, help="device profile for the optimizer's plan (CPU: shipped; none)")
    ap.add_argument("--docs", action="store_true", help="rewrite this section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.shapes:
        shapes = [tuple(int(p) for p in s.split(":")) for s in args.shapes.split(",")]
    else:
        shapes = SHAPES_QUICK if args.quick else SHAPES_FULL
    batches = [int(b) for b in (args.batch or "1,8,64").split(",")]
    profile_path = args.profile or (str(CPU_PROFILE) if args.device == "cpu" else "none")
    profile = None if profile_path == "none" else DeviceProfile.load(profile_path)
    lines = [
        "| V | d | design | decode | batch | adaptive ms/token (layout) | full ms/token (layout) | speed-up | "
        "speed-up, both row-major | tails run / skipped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    floors = []
    for V, d in shapes:
        for label, plan in plans(V, d, profile):
            res = bench_decode(
                plan, device=args.device, batches=batches, decodes=args.decode.split(","), reps=args.reps
            )
            keys = list(dict.fromkeys((r.decode, r.batch) for r in res.rows))
            for decode, batch in keys:
                r, full = res.row(decode, batch), res.row(decode, batch, "full lm_head")
                up = res.speedup(decode, batch)
                row_major = res.speedup_in("row-major", decode, batch)
                lines.append(
                    f"| {V} | {d} | {label} | {decode} | {batch} | {r.ms_per_token:.3f} ({r.layout}) | "
                    f"{full.ms_per_token:.3f} ({full.layout}) | {up:.1f}x | "
                    f"{'—' if row_major is None else f'{row_major:.1f}x'} | {r.tails_evaluated} / {r.tails_skipped} |"
                )
                if V >= 131_072 and decode in ("greedy", "top-50") and batch in (1, 64):
                    want = 10.0 if batch == 1 else 5.0
                    floors.append(f"V={V} d={d} {label} {decode} batch {batch}: {up:.1f}x (floor {want:.0f}x)")
            print("\n".join(lines[-len(keys) :]), flush=True)
    body = "\n".join(
        [
            f"Machine: {machine()}. Command: `{command()}`. Untrained heads (unigram biases) on Zipf vocabularies, two "
            "designs each: the rule (cutoffs [V/32, V/8], projections d/4, d/16) and `optimize(mode='infer', "
            f"decode='greedy', batch_tokens=1)` with the profile {Path(profile_path).name}; every adaptive decode "
            "checked exact in the run. Both heads are "
            "timed with row-major weights (nn.Linear's) and column-major ones (`decode_layout_()`, the lm_head's "
            "weight likewise), interleaved; each is quoted in its fastest layout, and the speed-up is fastest over "
            "fastest (the row-major-only ratio next to it).",
            "",
            *lines,
            "",
            *[f"- {f}" for f in floors],
        ]
    )
    print("\n".join(["", *lines, "", *floors]))
    if args.docs:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
