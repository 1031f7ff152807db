"""Benchmark: `vocabopt tune` on two real corpora of different kinds — the fastest design within a measured
perplexity tolerance of the full softmax, confirmed by an independent `vocabopt validate` run with another seed.

Corpora:
- kjv: the shipped King James Bible (corpora/kjv.txt, public domain) with its 8K byte-level BPE;
- python-stdlib: source code, the first ~4 MB (files sorted by path) of the Python standard library that ships
  with the interpreter running this script (PSF License Version 2), with an 8K byte-level BPE trained on it in
  the run (tokenizers' BpeTrainer; nothing downloaded).

For each: analyze, tune (transformer body by default, CPU defaults otherwise), then validate the tuned plan with a
different seed next to the full softmax and the folklore design [2000, 10000] (cut to the vocabulary), and time the
chosen and the folklore layers' training step on this machine (`vocabopt.bench`): the speed floors measured. Prints a
table and rewrites its section of docs/benchmarks.md.

    python benchmarks/tune_corpora.py --profile configs/devices/cpu-xeon-2core-float32.json     # CPU, ~30 min
    python benchmarks/tune_corpora.py --corpus kjv --steps 40 --seeds 1 --no-write              # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import command, machine, stdlib_corpus, write_section  # noqa: E402

import vocabopt  # noqa: E402
from vocabopt.optimize import FOLKLORE  # noqa: E402
from vocabopt.training import TrainSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Tune on two corpora (benchmarks/tune_corpora.py)"
STDLIB_BYTES = 4_000_000


def kjv(_tmp: Path, _args) -> tuple[Path, Path, str]:
    return ROOT / "corpora" / "kjv.txt", ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json", "KJV Bible (public domain)"


def python_stdlib(tmp: Path, args) -> tuple[Path, Path, str]:
    """~4 MB of the running interpreter's standard library source, and a byte-level BPE trained on it
    (--stdlib-vocab ids, 8K in the reported run)."""
    corpus, path, size = stdlib_corpus(tmp, STDLIB_BYTES, args.stdlib_vocab)
    version = sys.version.split()[0]
    return corpus, path, f"Python {version} standard library source, {size / 1e6:.1f} MB (PSF License v2)"


CORPORA = {"kjv": kjv, "python-stdlib": python_stdlib}


def run_corpus(name: str, args: argparse.Namespace, profile, tmp: Path) -> dict:
    corpus, tokenizer, about = CORPORA[name](tmp, args)
    stats = vocabopt.analyze([str(corpus)], tokenizer=str(tokenizer))
    train = TrainSettings(model=args.model, seq_len=args.seq_len, batch_size=args.batch_size, steps=args.steps)

    def progress(what: str, done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            print(f"  {name}: {what}, {done}/{total}", file=sys.stderr)

    t0 = time.perf_counter()
    plan = vocabopt.tune(
        stats,
        sources=[str(corpus)],
        tokenizer=str(tokenizer),
        hidden=args.hidden,
        batch_tokens=args.batch_tokens,
        profile=profile,
        tolerance=args.tolerance,
        seeds=args.seeds,
        candidates=args.candidates,
        refine=args.refine,
        budget_minutes=args.budget_minutes,
        folklore=True,
        train=train,
        progress=progress,
    )
    tune_s = time.perf_counter() - t0
    check = vocabopt.validate(
        plan,
        [str(corpus)],
        str(tokenizer),
        steps=args.steps,
        model=args.model,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        folklore=FOLKLORE["paper/Lua"],
        eval_every=max(1, args.steps // 8),
        seed=1000,  # another seed than tune's runs
    )
    folk = vocabopt.optimize(
        stats,
        hidden=args.hidden,
        profile=profile,
        batch_tokens=args.batch_tokens,
        cutoffs=check.run("folklore").cutoffs,
    )
    layer_ms = measured_layers({"chosen": plan, "folklore": folk}, args.batch_tokens)
    out = {"name": name, "about": about, "plan": plan, "check": check, "tune_s": tune_s, "stats": stats}
    return {**out, "layer_ms": layer_ms, "folklore_cutoffs": folk.cutoffs, "folklore_dims": folk.proj_dims}


def measured_layers(plans: dict, batch_tokens: int, rounds: int = 3) -> dict[str, float]:
    """Median measured training step (fwd+bwd) of each plan's layer and of the full softmax (timed beside the chosen
    layer in every round) on this machine (`vocabopt.bench`, CPU), the plans' rounds alternating: the floors' speed
    ratios measured, not predicted."""
    times: dict[str, list[float]] = {name: [] for name in [*plans, "full softmax"]}
    for _ in range(rounds):
        for name, p in plans.items():
            result = vocabopt.bench(p, device="cpu", batch_tokens=batch_tokens, full_softmax=name == "chosen")
            times[name].append(result.row("vocabopt").measured_ms)
            if name == "chosen":
                times["full softmax"].append(result.row("full softmax").measured_ms)
    return {name: statistics.median(v) for name, v in times.items()}


def rows(result: dict) -> list[str]:
    plan, check = result["plan"], result["check"]
    t = plan.provenance["tune"]
    full_ms = plan.predicted["full_softmax"]["time_ms"]
    out = []
    for m in t["measured"]:
        mark = " **chosen**" if (m["cutoffs"], m["proj_dims"]) == (plan.cutoffs, plan.proj_dims) else ""
        kind = "probe" if m.get("refined") == "probe" else "refinement"
        mark += f" ({kind} {m['round']})" if m.get("round") else ""
        mark += f" (+1 seed, round {m['tie_break']})" if m.get("tie_break") else ""
        within = "yes" if m["high"] <= t["tolerance"] else "no"
        seeds = m.get("seeds", t["proxy"]["seeds"])
        raced = f" ({seeds} seed: out of the race)" if seeds < t["proxy"]["seeds"] else ""
        if m.get("tie_break"):
            raced += f" (seeds: {', '.join(f'{p:+.2%}' for p in m['seed_penalties'])})"
        eq = f"{m['equal_time_penalty']:+.1%}" if m["equal_time_penalty"] is not None else "—"
        out.append(
            f"| {result['name']} | {m['name']}{mark} | {m['cutoffs']} / {m['proj_dims']} | {m['capacity']:.3f} | "
            f"{m['penalty']:+.2%} [{m['low']:+.2%}, {m['high']:+.2%}]{raced} | {within} | "
            f"{full_ms / m['predicted_ms']:.2f}x | {m['proxy_speedup']:.2f}x | {eq} |"
        )
    summ = check.summary()
    v = summ["vocabopt"]
    folk = summ.get("folklore")
    out.append(
        f"| {result['name']} | independent validate, seed 1000 | {plan.cutoffs} / {plan.proj_dims} | "
        f"{plan.capacity:.3f} | "
        f"{v['ppl_gap']:+.2%} (end of run) | — | {plan.predicted['speedup']:.2f}x | {v['speedup']:.2f}x | "
        + (f"{v['equal_time_ppl_gap']:+.1%} |" if v.get("equal_time_ppl_gap") is not None else "— |")
    )
    if folk:
        cut = check.run("folklore").cutoffs
        out.append(
            f"| {result['name']} | folklore {cut}, same run | {cut} / {check.run('folklore').proj_dims} | "
            f"— | {folk['ppl_gap']:+.2%} (end of run) | — | — | {folk['speedup']:.2f}x | "
            + (f"{folk['equal_time_ppl_gap']:+.1%} |" if folk.get("equal_time_ppl_gap") is not None else "— |")
        )
    return out


def _swing(t: dict) -> str:
    """The largest seed-to-seed penalty swing of the designs trained on every seed (the proxy's noise; a tie-broken
    design's third seed counts too)."""
    swings = [(m["seed_swing"], m["name"]) for m in t["measured"] if m.get("seed_swing") is not None]
    if not swings:
        return "no design trained on two seeds"
    swing, name = max(swings)
    return f"largest seed-to-seed penalty swing {swing:.2%} ({name})"


def _layers(r: dict) -> str:
    ms = r["layer_ms"]
    return (
        f"measured layer step on this machine (`vocabopt.bench`, medians of 3 alternating rounds): chosen "
        f"{ms['chosen']:.1f} ms, folklore {r['folklore_cutoffs']} {ms['folklore']:.1f} ms, full softmax "
        f"{ms['full softmax']:.1f} ms: chosen {ms['full softmax'] / ms['chosen']:.2f}x faster than the "
        f"full softmax, {ms['folklore'] / ms['chosen']:.2f}x than the folklore"
    )


def _budget(t: dict) -> str:
    stop = (t.get("budget") or {}).get("stopped")
    if not stop:
        return ""
    return (
        f"; refinement round {stop['round']} not run: estimated {stop['estimate_minutes']:.1f} min, "
        f"{max(0.0, stop['left_minutes']):.1f} min of the budget left"
    )


def _verdict(t: dict) -> str:
    if t["met"]:
        return "tolerance met"
    if t.get("met_at_end_of_run"):
        return "within the tolerance at the end of the run only (provisional: short runs favour small heads)"
    return "tolerance NOT met by any measured design"


def report(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {machine()}. Command: `{command()}`. Proxy LM: {args.model}, d={args.hidden}, "
        f"{args.steps} steps of {args.seq_len}x{args.batch_size} tokens, {args.seeds} seed(s) per design, "
        f"{args.candidates} frontier candidates, {args.refine} refinement round(s) at most within a "
        f"{args.budget_minutes:g}-minute budget; the cost "
        f"model's batch is {args.batch_tokens} tokens; tolerance {args.tolerance:.0%} on the upper end of the 95% "
        "interval.",
        "",
    ]
    for r in results:
        t = r["plan"].provenance["tune"]
        how = "trained" if t["chosen"].get("measured") else "interpolated"
        lines.append(
            f"- **{r['name']}** ({r['about']}; V={r['stats'].vocab_size:,}, {r['stats'].total:,} tokens): "
            f"tune took {r['tune_s'] / 60:.1f} min; penalties compared at: {t['basis']}; "
            f"{_verdict(t)}; chosen {r['plan'].cutoffs} ({how}) "
            f"(predicted {r['plan'].predicted['speedup']:.2f}x faster than the full softmax per layer step); "
            f"{_swing(t)}{_budget(t)}; {_layers(r)}."
        )
    lines += [
        "",
        "| corpus | design | cutoffs / projections | capacity | penalty [95% interval] | within tolerance | "
        "predicted layer speed-up | measured proxy-step speed-up | penalty at equal wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines += rows(r)
    lines += [
        "",
        "Penalty = held-out perplexity / the full softmax's − 1, same seed, batches and steps. The proxy-step speed-up "
        "is the whole small LM's training step (its body included), so it understates the layer's own speed-up.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=str(ROOT / "configs" / "devices" / "cpu-xeon-2core-float32.json"))
    ap.add_argument("--corpus", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--model", default="transformer", choices=["lstm", "transformer"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2, help="tune's default")
    ap.add_argument("--refine", type=int, default=4, help="tune's default")
    ap.add_argument("--candidates", type=int, default=2, help="tune's default")
    ap.add_argument("--budget-minutes", type=float, default=15.0, help="tune's default")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument(
        "--stdlib-vocab", type=int, default=8000, help="BPE size for the Python source (experiments; 8000 reported)"
    )
    ap.add_argument("--plans", default=str(ROOT / "out" / "tune_corpora"), help="where each tuned plan is saved")
    args = ap.parse_args()
    profile = vocabopt.DeviceProfile.load(args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_corpus(name, args, profile, Path(tmp)) for name in args.corpus]
    for r in results if not args.no_write else []:  # the evidence (per-seed curves), kept for later analysis
        Path(args.plans).mkdir(parents=True, exist_ok=True)
        r["plan"].save(Path(args.plans) / f"{r['name']}.plan.json")
    text = report(results, args)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
