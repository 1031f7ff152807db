"""Optimizer speed: wall time of `vocabopt.optimize` for V up to 262,144 and up to 4 tail clusters.

Target: at most 1 s for V = 262,144 with up to 4 tail clusters on a 2-core CPU. Each configuration is run
`--reps` times; the median is reported. Writes its section of docs/benchmarks.md.

    flock /tmp/vocabopt-bench.lock python benchmarks/optimizer_speed.py --profile configs/devices/<cpu>.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _sections import command, machine, write_section

from vocabopt import DeviceProfile, optimize

HEADING = "Optimizer speed (benchmarks/optimizer_speed.py)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="V = 262,144 only, 3 reps")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    profile = DeviceProfile.load(args.profile)
    vocabs = [262144] if args.quick else [32768, 65536, 131072, 262144]
    reps = 3 if args.quick else args.reps
    rows = []
    print(f"{'V':>7} {'clusters':>8} {'candidates':>10} {'median s':>9} {'max s':>7}  plan")
    for V in vocabs:
        counts = np.maximum((1e9 / np.arange(1, V + 1) ** 1.1).astype(np.int64), 1)
        for max_j in (1, 4):
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                plan = optimize(counts, hidden=1024, profile=profile, batch_tokens=8192, max_clusters=max_j)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            cand = plan.predicted["search"]["candidates"]
            rows.append((V, max_j, cand, med, max(times), plan.cutoffs))
            print(f"{V:>7} {max_j:>8} {cand:>10} {med:>9.3f} {max(times):>7.3f}  {plan.cutoffs}")
    if args.no_write:
        return
    table = [
        "| V | max clusters | candidates | median s | max s | recommended cutoffs |",
        "|---|---|---|---|---|---|",
    ]
    table += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]:.3f} | {r[5]} |" for r in rows]
    worst = max(r[3] for r in rows if r[0] == 262144)
    write_section(
        HEADING,
        f"""
Machine: {machine()}. Command: `{command()}`. d = 1024, N = 8192, Zipf(1.1) counts, default options
(256-point candidate grid, d/4^i projections, frontier and folklore included); median of {reps} runs.

**V = 262,144 with up to 4 tail clusters: {worst:.3f} s** (target <= 1 s). Shared 2-core machine; the lead
re-runs it on a quiet one.

{chr(10).join(table)}
""",
    )


if __name__ == "__main__":
    main()
