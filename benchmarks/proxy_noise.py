"""Benchmark: how noisy is the proxy LM's penalty, scoring the last iterate or the weights' moving average?

`validate` and `tune` compare a design's held-out loss with the full softmax's after a short run at a constant
learning rate. This script trains one design and the full softmax in lockstep (`vocabopt.training`'s own Trainer,
Batches and moving average, tune's settings: transformer d=256, 300 steps of 32 x 64 tokens) for several seeds and
scores *both* the last iterate and the moving average (`training.EMA`) at every evaluation (every 37 steps and at
the end) on the same held-out windows: the same trajectory, two ways of reading it. It reports per seed the
end-of-run penalty each way, the seed-to-seed swing of that penalty, the jitter of the penalty along the run (the
median change between consecutive evaluations) and the full softmax's held-out perplexity. Rewrites its section of
docs/benchmarks.md. It drives the steps itself (train_lockstep scores the average only), with the runs built by
`training.new_trainer` (as train_lockstep builds them) and the Batches and moving-average methods train_lockstep uses;
tests/test_training.py checks that the average never changes the trajectory and that train_lockstep's average is the
recurrence these methods implement.

    python benchmarks/proxy_noise.py                        # Python source, [4784], 3 seeds: ~14 min on 2 cores
    python benchmarks/proxy_noise.py --corpus kjv --steps 16 --seeds 2 --no-write   # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import command, machine, write_section  # noqa: E402
from tune_corpora import CORPORA  # noqa: E402

import vocabopt  # noqa: E402
from vocabopt.plan import Plan  # noqa: E402
from vocabopt.profile import DeviceProfile  # noqa: E402
from vocabopt.training import EMA, Batches, Trainer, TrainSettings, heldout_loss, new_trainer  # noqa: E402
from vocabopt.validate import batch_offsets, load_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Proxy-LM noise: last iterate vs moving average (benchmarks/proxy_noise.py)"
DESIGNS = {"kjv": ([1488, 3096], [64, 16]), "python-stdlib": ([4784], [64])}  # near tune's choices of 2026-11-29


def run(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    import torch

    corpus, tokenizer, about = CORPORA[name](tmp, args)
    stats = vocabopt.analyze([str(corpus)], tokenizer=str(tokenizer))
    prof = DeviceProfile.load(args.profile)
    base = vocabopt.optimize(stats, hidden=args.hidden, profile=prof, batch_tokens=2048, min_capacity=0.0)
    cutoffs, dims = DESIGNS[name]
    design = Plan.from_cutoffs(stats, hidden=args.hidden, cutoffs=cutoffs, proj_dims=dims)
    train = TrainSettings(model="transformer", seq_len=64, batch_size=32, steps=args.steps, ema=EMA)
    data = load_tokens(base, [str(corpus)], str(tokenizer), heldout=0.05, seq_len=64, max_tokens=None)
    dev = torch.device("cpu")
    every = max(1, args.steps // 8)
    seeds = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        seeded = replace(train, seed=seed)
        trainers = [new_trainer(layer, plan, base, seeded, dev) for layer, plan in (("full", None), ("design", design))]
        batches = Batches(data, train, dev, torch.float32)

        def score(tr: Trainer, batches: Batches = batches) -> float:  # every window: eval_tokens=32768 held out
            auto = batches.autocast
            return heldout_loss(tr.body, tr.head, data, seq_len=64, eval_tokens=32768, dev=dev, autocast=auto)

        loss = {(tr.name, how): [] for tr in trainers for how in ("iterate", "average")}
        offsets = batch_offsets(data.split, train.seq_len, train.batch_size, train.steps, seed)
        for k, starts in enumerate(offsets, 1):
            for tr in trainers:
                batches.step(tr, starts)
                tr.update_average(k, train.ema)
                if k % every == 0 or k == train.steps:
                    loss[(tr.name, "iterate")].append(score(tr))
                    tr.swap_average()
                    loss[(tr.name, "average")].append(score(tr))
                    tr.swap_average()
        row = {"seed": seed, "minutes": (time.perf_counter() - t0) / 60}
        for how in ("iterate", "average"):
            pen = np.expm1(np.array(loss[("design", how)]) - np.array(loss[("full", how)]))
            row[how] = {
                "penalty": float(pen[-1]),
                "jitter": float(np.median(np.abs(np.diff(pen)))),
                "full_ppl": float(np.exp(loss[("full", how)][-1])),
                "curve": pen.tolist(),
            }
        print(f"  {name} seed {seed}: " + ", ".join(f"{h} {row[h]['penalty']:+.2%}" for h in ("iterate", "average")))
        seeds.append(row)
    return {"name": name, "about": about, "vocab": base.vocab_size, "cutoffs": cutoffs, "dims": dims, "seeds": seeds}


def render(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {machine()}. Command: `{command()}`. Proxy LM: transformer, d={args.hidden}, {args.steps} AdamW "
        f"steps (lr 3e-3, constant) of 32 x 64 tokens, the design and the full softmax in lockstep per seed; both "
        f"readings of the same run scored on the same 32,768 held-out tokens every {max(1, args.steps // 8)} steps "
        f"and at the end. Moving average: `training.EMA` = {EMA} (decay warmed up as min(EMA, (1 + k) / (10 + k)) "
        "at step k).",
        "",
        "| corpus | design | seed | penalty, last iterate | penalty, average | jitter, last iterate | jitter, average "
        "| full-softmax ppl, last iterate | full-softmax ppl, average |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in results:
        for s in r["seeds"]:
            it, av = s["iterate"], s["average"]
            lines.append(
                f"| {r['name']} | {r['cutoffs']} / {r['dims']} | {s['seed']} | {it['penalty']:+.2%} | "
                f"{av['penalty']:+.2%} | {it['jitter']:.2%} | {av['jitter']:.2%} | {it['full_ppl']:.3f} | "
                f"{av['full_ppl']:.3f} |"
            )
        swing = {h: np.ptp([s[h]["penalty"] for s in r["seeds"]]) for h in ("iterate", "average")}
        mean = {h: statistics.mean(s[h]["penalty"] for s in r["seeds"]) for h in ("iterate", "average")}
        jitter = {h: statistics.median(s[h]["jitter"] for s in r["seeds"]) for h in ("iterate", "average")}
        notes.append(
            f"- **{r['name']}** ({r['about']}; V={r['vocab']:,}), {len(r['seeds'])} seeds: seed-to-seed swing of the "
            f"end-of-run penalty {swing['iterate']:.2%} (last iterate) vs {swing['average']:.2%} (average); mean "
            f"penalty {mean['iterate']:+.2%} vs {mean['average']:+.2%}; median jitter between consecutive "
            f"evaluations {jitter['iterate']:.2%} vs {jitter['average']:.2%}."
        )
    lines += ["", *notes, "", "Penalty = held-out perplexity / the full softmax's − 1 (same seed, batches, steps)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=str(ROOT / "configs" / "devices" / "cpu-xeon-2core-float32.json"))
    ap.add_argument("--corpus", nargs="+", default=["python-stdlib"], choices=list(DESIGNS))
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--stdlib-vocab", type=int, default=8000)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(name, args, Path(tmp)) for name in args.corpus]
    body = render(results, args)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
