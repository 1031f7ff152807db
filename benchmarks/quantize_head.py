"""Benchmark: a trained adaptive head with weight-only int8 clusters against its fp32 self.

Trains the proxy LM (vocabopt.training: a one-layer LSTM) with a plan's adaptive head on each corpus (the last 5%
held out, never trained on) — the shipped KJV with its 8K BPE, and ~4 MB of the Python standard library's source
(PSF License v2) with a 32K byte-level BPE trained on it in the run (a larger vocabulary, where the tails hold
more of the weights) — then quantizes copies of the trained head (`AdaptiveSoftmax.quantize_`: "int8-tails" =
every tail's projection and output weights, "int8" = the head too; per-output-channel scales).
Reported per head: weight bytes (weights + scales + biases), quality on the held-out stream against the fp32 head
(KL of the full distribution in nats/token, top-1 agreement, perplexity change; vocabopt.validate.quantize_
comparison) and per-token decode latency (vocabopt.decode.bench_decode: greedy and top-50, standard-normal hidden
states, every decode checked exact against the head's own log_prob), with the int8 matmul that ran. The issue's
floor: int8 tails >= 2x less head weight memory at <= 0.5% perplexity change (reported per corpus).

    python benchmarks/quantize_head.py --quick        # KJV slice, d=128, 60 steps (2-core CPU: ~0.5 min)
    python benchmarks/quantize_head.py --docs         # both corpora, d=256, 400 steps; rewrites its docs section
    python benchmarks/quantize_head.py --smoke        # seconds: the test suite's run (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import command, machine, stdlib_corpus, write_section  # noqa: E402

import vocabopt  # noqa: E402
from vocabopt.adaptive_head import int8_path  # noqa: E402
from vocabopt.decode import bench_decode  # noqa: E402
from vocabopt.training import TrainSettings, train_lockstep  # noqa: E402
from vocabopt.validate import batch_offsets, load_tokens, quantize_comparison  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS, TOKENIZER = ROOT / "corpora" / "kjv.txt", ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
PROFILE = ROOT / "configs" / "devices" / "cpu-xeon-2core-float32.json"
SECTION = "Int8 adaptive heads (benchmarks/quantize_head.py)"
MODES = ("int8-tails", "int8")
STDLIB_BYTES = 4_000_000


def kjv(args, tmp: Path) -> tuple[Path, Path, str]:
    corpus = CORPUS
    if args.text_bytes:
        text = CORPUS.read_text(encoding="utf-8")[: args.text_bytes]
        corpus = tmp / "kjv-slice.txt"
        corpus.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    return corpus, TOKENIZER, "KJV, 8K BPE"


def python_stdlib(args, tmp: Path) -> tuple[Path, Path, str]:
    """~4 MB of the running interpreter's standard library source and a 32K byte-level BPE trained on it."""
    corpus, path, _ = stdlib_corpus(tmp, STDLIB_BYTES, 32000)
    return corpus, path, "Python stdlib, 32K BPE"


CORPORA = {"kjv": kjv, "python-stdlib": python_stdlib}


def make_plan(corpus: Path, tokenizer: Path, args) -> vocabopt.Plan:
    stats = vocabopt.analyze([str(corpus)], tokenizer=str(tokenizer))
    if args.smoke:
        return vocabopt.Plan.from_cutoffs(stats, hidden=args.hidden, cutoffs=[200, 1000], provenance={"name": "smoke"})
    profile = vocabopt.DeviceProfile.load(PROFILE)
    plan = vocabopt.optimize(stats, hidden=args.hidden, profile=profile, batch_tokens=args.seq_len * args.batch_size)
    plan.provenance.setdefault("name", f"{corpus.stem}-d{args.hidden}")
    return plan


def train(plan: vocabopt.Plan, corpus: Path, tokenizer: Path, args):
    """The proxy LM with the plan's head, trained as `vocabopt validate` trains it; returns (trainer, batches)."""
    data = load_tokens(plan, [str(corpus)], str(tokenizer), seq_len=args.seq_len)
    offsets = batch_offsets(data.split, args.seq_len, args.batch_size, args.steps, args.seed)
    settings = TrainSettings("lstm", args.seq_len, args.batch_size, args.steps, args.lr, args.eval_tokens, 0, args.seed)

    def progress(name: str, step: int, total: int, loss: float) -> None:
        if step % max(1, total // 4) == 0:
            print(f"  train {step}/{total}: loss {loss:.3f}", file=sys.stderr)

    trainers, batches = train_lockstep(
        {"vocabopt": plan}, plan, data, offsets, settings, dev=torch.device("cpu"), tdtype=torch.float32,
        progress=progress,
    )  # fmt: skip
    return trainers[0], batches


def latency(plan, layer, args) -> dict[str, float]:
    """ms per token of the head (and of the full lm_head with its weights, for the fp32 head): greedy, top-50."""
    full = layer.config.quantize is None
    res = bench_decode(plan, layer=layer, batches=args.batch, decodes=["greedy", "topk"], reps=args.reps, full=full)
    out = {f"{r.decode} B={r.batch}": r.ms_per_token for r in res.rows if r.method == "vocabopt"}
    out |= {f"full {r.decode} B={r.batch}": r.ms_per_token for r in res.rows if r.method == "full lm_head"}
    return out


def run(args, name: str, tmp: Path) -> tuple[str, list[str], list[str]]:
    """(the corpus's facts line, its table rows, its floor lines)."""
    t0 = time.perf_counter()
    corpus, tokenizer, about = CORPORA[name](args, tmp)
    plan = make_plan(corpus, tokenizer, args)
    print(f"{name}: V={plan.vocab_size} d={plan.hidden} cutoffs {plan.cutoffs} proj {plan.proj_dims}", file=sys.stderr)
    tr, batches = train(plan, corpus, tokenizer, args)
    fp = tr.head.eval()
    heads = {"fp32": (fp, None)}
    for mode in MODES:
        heads[mode] = (copy.deepcopy(fp).quantize_(mode), quantize_comparison(tr, batches, mode))
    keys = [f"{d} B={b}" for d in ("greedy", "top-50") for b in args.batch]
    rows, floors, full = [], [], {}
    fp_bytes = sum(fp.weight_bytes().values())
    for head, (layer, q) in heads.items():
        ms = latency(plan, layer, args)
        full = full or {k: ms[f"full {k}"] for k in keys}
        b = layer.weight_bytes()
        path = "fp32 matmul" if q is None else int8_path(torch.device("cpu"), torch.float32, plan.proj_dims[0])
        quality = "— | — | —" if q is None else f"{q.kl:.2e} | {q.top1_agreement:.2%} | {q.ppl_change:+.3%}"
        rows.append(
            f"| {about} | {head} | {path} | {b['tails']:,} | {b['head']:,} | {fp_bytes / sum(b.values()):.2f}x | "
            f"{quality} | " + " | ".join(f"{ms[k]:.3f}" for k in keys) + " |"
        )
        if head == "int8-tails":
            ratio = fp_bytes / sum(b.values())
            ok = ratio >= 2 and abs(q.ppl_change) <= 0.005
            floors.append(
                f"{about}: int8 tails: head weight memory {ratio:.2f}x smaller at {q.ppl_change:+.3%} perplexity "
                f"(floor: >= 2x at <= 0.5%): {'met' if ok else 'NOT met'}"
            )
    rows.append(f"| {about} | full lm_head (fp32, same weights) | fp32 matmul | — | — | — | — | — | — | ")
    rows[-1] += " | ".join(f"{full[k]:.3f}" for k in keys) + " |"
    s = batches.train
    facts = (
        f"- {about} ({corpus.name}, V={plan.vocab_size:,}): d={plan.hidden}, {s.steps} steps of "
        f"{s.batch_size}x{s.seq_len} tokens; plan cutoffs {plan.cutoffs}, projections {plan.proj_dims}; quality on "
        f"{heads['int8'][1].tokens:,} held-out tokens; {(time.perf_counter() - t0) / 60:.1f} min."
    )
    return facts, rows, floors


def report(args, results: list[tuple[str, list[str], list[str]]]) -> tuple[str, list[str]]:
    keys = [f"{d} B={b}" for d in ("greedy", "top-50") for b in args.batch]
    head = (
        f"Machine: {machine()}. Command: `{command()}`. One-layer LSTM trained with the plan's adaptive head; "
        "quality against that trained fp32 head on held-out text; latency: bench_decode (standard-normal hidden "
        f"states, median of {args.reps} interleaved calls, each head in its faster weight layout, exactness "
        "checked). Bytes: weights + scales + biases; memory ratio = the fp32 head's bytes / this head's."
    )
    lines = [
        "| corpus | head | matmul (fp32 inputs) | tail bytes | head bytes | memory ratio | KL (nats/token) | "
        "top-1 agree | ppl change | " + " | ".join(f"{k} ms/token" for k in keys) + " |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(keys),
    ]
    for _, rows, _ in results:
        lines += rows
    text = "\n".join([head, "", *[facts for facts, _, _ in results], "", *lines, ""])
    return text, [f for _, _, floors in results for f in floors]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--batch", type=lambda s: [int(b) for b in s.split(",")], default=[1, 64], help="decode batches")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--text-bytes", type=int, default=0, help="use only the first N bytes of the corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    ap.add_argument("--quick", action="store_true", help="KJV slice (500 KB), d=128, 60 steps of 16 windows")
    ap.add_argument("--smoke", action="store_true", help="seconds: 60 KB, d=32, 10 steps, fixed cutoffs")
    ap.add_argument("--docs", action="store_true", help="rewrite this benchmark's section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps, args.text_bytes, args.reps, args.batch_size = 128, 60, 500_000, 5, 16
        args.corpus = ["kjv"]
    if args.smoke:
        args.hidden, args.steps, args.text_bytes, args.reps, args.batch = 32, 10, 60_000, 1, [1]
        args.seq_len, args.batch_size, args.eval_tokens, args.corpus = 16, 8, 2048, ["kjv"]
    with tempfile.TemporaryDirectory() as tmp:
        text, floors = report(args, [run(args, name, Path(tmp)) for name in args.corpus])
    print(text)
    print("\n".join(floors))
    if args.docs:
        write_section(SECTION, text + "\n" + "\n".join(f"- {f}" for f in floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
