"""Benchmark: `vocabopt.validate` on the shipped corpus — does the recommended layer train as well as the full
softmax at equal steps, and how much faster is a whole training step?

For each hidden size: analyze corpora/kjv.txt with its 8K BPE, optimize a plan with the given profile for the
step's tokens, then train the same small LM with (a) the plan's layer, (b) the full softmax, (c) the paper's
folklore head ([2000, 10000] cut to V=8,000: [2000]); same seed, batches, steps and AdamW. Held-out = the last 5%
of the token stream, never trained on. Prints a table; rewrites its section of docs/benchmarks.md and the
learning-curve PNG(s) beside it.

    python benchmarks/validate_kjv.py --profile configs/devices/cpu-xeon-2core-float32.json    # CPU, ~8 min
    python benchmarks/validate_kjv.py --device cuda --dtype bfloat16 --hidden 1024 --steps 2000 --batch-size 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import DOCS, command, machine, write_section  # noqa: E402

import vocabopt  # noqa: E402
from vocabopt.optimize import FOLKLORE  # noqa: E402
from vocabopt.plots import curves_png  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS, TOKENIZER = ROOT / "corpora" / "kjv.txt", ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
BODIES = {"lstm": "a one-layer LSTM", "transformer": "a 2-layer pre-norm causal transformer (4 heads)"}
SECTION = "Validate on the shipped corpus (benchmarks/validate_kjv.py)"


def run_one(stats, profile, d: int, args) -> vocabopt.ValidationResult:
    png = Path(tempfile.gettempdir() if args.no_write else DOCS.parent) / f"validate_kjv_d{d}.png"
    n = args.seq_len * args.batch_size
    plan = vocabopt.optimize(stats, hidden=d, profile=profile, batch_tokens=n)
    plan.provenance.setdefault("name", f"kjv-d{d}")
    print(f"d={d}: plan cutoffs {plan.cutoffs}, proj {plan.proj_dims}", file=sys.stderr)

    def progress(name: str, step: int, total: int, loss: float) -> None:
        if step % 50 == 0 or step == total:
            print(f"  d={d} {name:<13} {step:>5}/{total} loss {loss:.3f}", file=sys.stderr)

    result = vocabopt.validate(
        plan,
        [str(CORPUS)],
        str(TOKENIZER),
        steps=args.steps,
        model=args.model,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        folklore=FOLKLORE["paper/Lua"],
        eval_every=max(1, args.steps // 5),
        device=args.device,
        dtype=args.dtype,
        progress=progress,
    )
    png.write_bytes(curves_png(result))
    return result


def table(results: dict[int, vocabopt.ValidationResult]) -> str:
    lines = [
        "| d | layer | cutoffs | proj dims | layer params | held-out ppl | vs full | step ms | tokens/s | "
        "step speed-up | saved for backward (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d, res in results.items():
        summ = res.summary()
        for r in res.runs:
            gap = f"{summ[r.name]['ppl_gap']:+.1%}" if r.name in summ else "—"
            sp = f"{summ[r.name]['speedup']:.2f}x" if r.name in summ else "1.00x"
            lines.append(
                f"| {d} | {r.name} | {r.cutoffs or '—'} | {r.proj_dims or '—'} | {r.layer_params:,} | "
                f"{r.heldout_ppl:.2f} | {gap} | {r.step_ms:.1f} | {r.tokens_per_s:,.0f} | {sp} | "
                f"{r.saved_bytes / 1e6:.0f} |"
            )
    return "\n".join(lines)


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=str(ROOT / "configs" / "devices" / "cpu-xeon-2core-float32.json"))
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--model", default="lstm", choices=["lstm", "transformer"])
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    stats = vocabopt.analyze([str(CORPUS)], tokenizer=str(TOKENIZER))
    profile = vocabopt.DeviceProfile.load(args.profile)
    results = {d: run_one(stats, profile, d, args) for d in args.hidden}
    tab = table(results)
    print(tab)
    s = next(iter(results.values())).settings
    lines = []
    for d, res in results.items():
        v = res.summary()["vocabopt"]
        lines.append(
            f"- d = {d}: the plan's layer reaches held-out perplexity {v['ppl_gap']:+.1%} vs the full "
            f"softmax at equal steps, {v['speedup']:.2f}x faster per training step (target: within 3%, "
            f">= 3x); curves: `docs/validate_kjv_d{d}.png`"
        )
    body = (
        f"Machine: {machine()}; device {s['device']}, {s['dtype']}. Command: `{command()}`.\n"
        f"Profile: `{_rel(args.profile)}`. Model: {BODIES[s['model']]} of width d (embedding d), "
        f"{s['steps']} AdamW steps (lr {s['lr']}, grad-norm clip 1) of {s['batch_size']} x {s['seq_len']} = "
        f"{s['tokens_per_step']} tokens; KJV with its 8K BPE: {s['train_tokens']:,} training tokens, the last "
        f"{s['heldout_tokens']:,} held out (never trained on), scored on {s['eval_tokens']:,}. Same seed, initial "
        "body weights and batch order for every layer. Step time = median wall time of a whole optimizer step "
        "(body + output layer + update), so the speed-up is bounded by the body's share. The plan comes from "
        "`vocabopt.optimize(stats, hidden=d, profile, batch_tokens)` with default options.\n\n"
        + "\n".join(lines)
        + f"\n\n{tab}\n"
    )
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
