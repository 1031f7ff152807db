"""Benchmark: convert a trained full-softmax lm_head into adaptive heads at several projection sizes.

For each corpus: train a small LM (vocabopt.training's body + a full softmax head) on 95% of it, take hidden states
of the trained body on training windows (for the cluster-logit fit and the distillation) and on the held-out 5%
(with their next tokens, for the report), choose cutoffs with `vocabopt.optimize(mode="infer", decode="greedy")`
and the shipped CPU profile, then `vocabopt.convert_head` at projection sizes d/div^(i+1) for several div (div=1:
every tail at full rank d, so the tails are exact and only the cluster logits are fitted). Reported on the held-out
states: KL(original || adaptive) nats/token, top-1 agreement, perplexity change, before and after distillation;
and greedy / top-50 decode speed-up of the converted head over the original lm_head (median of interleaved calls
on held-out states, batch 1 and 64).

Corpora (nothing downloaded): the shipped King James Bible with its 8K byte-level BPE, and the first ~2 MB of the
Python standard library source that ships with this interpreter (PSF License v2) with a 32K byte-level BPE trained on
it in the run on the whole 2 MB, held-out 5% included (a larger vocabulary, where a converted head has more to skip;
the trainer may stop short of 32K; `--stdlib-vocab 0`: the KJV tokenizer).

    python benchmarks/convert_head.py                 # both corpora, d=256, 400 training steps (CPU: ~10 min)
    python benchmarks/convert_head.py --quick         # KJV slice, d=64, 40 steps (~1-2 min)
    python benchmarks/convert_head.py --docs          # also rewrite this benchmark's docs/benchmarks.md section
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import command, machine, stdlib_corpus, stdlib_text, write_section  # noqa: E402

import vocabopt  # noqa: E402
from vocabopt import design  # noqa: E402
from vocabopt.device import interleaved_ms  # noqa: E402
from vocabopt.training import TokenStream, _body, _full_softmax, heldout_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Converting a trained lm_head (benchmarks/convert_head.py)"
TOKENIZER = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
CPU_PROFILE = ROOT / "configs" / "devices" / "cpu-xeon-2core-float32.json"


def stream(tok, text: str) -> TokenStream:
    cut = int(len(text) * 0.95)
    parts = []
    for piece in (text[:cut], text[cut:]):
        enc = tok.encode_batch(piece.splitlines(keepends=True), add_special_tokens=False)
        parts.append(np.fromiter((i for e in enc for i in e.ids), dtype=np.int64))
    return TokenStream(np.concatenate(parts), len(parts[0]))


def train_lm(data: TokenStream, V: int, args) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """A small LM with a full softmax head, trained on data's training part; returns (body, head)."""
    counts = np.bincount(data.ids[: data.split], minlength=V)
    torch.manual_seed(args.seed)
    body = _body(args.model, V, args.hidden, args.seq_len)
    head = _full_softmax(vocabopt.Plan.from_cutoffs(counts, hidden=args.hidden, cutoffs=[1]))
    params = [*body.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr)
    ids, rng, win = torch.from_numpy(data.ids), np.random.default_rng(args.seed), torch.arange(args.seq_len + 1)
    for k in range(args.steps):
        starts = torch.from_numpy(rng.integers(0, data.split - args.seq_len - 1, size=args.batch_size))
        xy = ids[starts[:, None] + win]  # (B, T + 1)
        loss = head(body(xy[:, :-1]), xy[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (k + 1) % max(1, args.steps // 4) == 0:
            print(f"  train step {k + 1}/{args.steps}: loss {loss.item():.3f}", file=sys.stderr)
    return body.eval(), head.eval()


def states(body, data: TokenStream, lo: int, hi: int, n_windows: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_windows * T, d) hidden states of windows evenly spread over ids[lo:hi], and (n_windows * T,) next ids."""
    starts = torch.from_numpy(np.linspace(lo, hi - T - 2, n_windows).astype(np.int64))
    xy = torch.from_numpy(data.ids)[starts[:, None] + torch.arange(T + 1)]
    with torch.no_grad():
        h = torch.cat([body(xy[i : i + 64, :-1]) for i in range(0, n_windows, 64)])  # (W, T, d)
    return h.reshape(-1, h.shape[-1]), xy[:, 1:].reshape(-1)


def speedups(layer, lin, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Full lm_head time / converted head time, greedy and top-50, at batch 1 and 64 (rows of held-out states)."""
    out = {}
    with torch.no_grad():
        for b in (1, 64):
            xb = x[:b]
            steps = [
                lambda xb=xb: layer.predict(xb),
                lambda xb=xb: lin(xb).argmax(-1),
                lambda xb=xb: layer.topk(xb, 50),
                lambda xb=xb: lin(xb).topk(50, dim=1),
            ]
            lp = layer.log_prob(xb)  # (b, V): greedy is exact against the head's own full distribution
            assert torch.equal(lp.gather(1, layer.predict(xb)[:, None]).squeeze(1), lp.amax(1))
            ms = [
                statistics.median(s) for s in interleaved_ms(steps, torch.device("cpu"), rounds=reps, warmup_rounds=1)
            ]
            out[f"greedy B={b}"], out[f"top-50 B={b}"] = ms[1] / ms[0], ms[3] / ms[2]
    return out


def run_corpus(name: str, text: str, tok, profile, args) -> list[dict]:
    V = tok.get_vocab_size()
    data = stream(tok, text)
    print(f"{name}: {data.split:,} training tokens, V={V}, training the LM", file=sys.stderr)
    body, head = train_lm(data, V, args)
    fit_h, _ = states(body, data, 0, data.split, args.fit_windows, args.seq_len)
    ev_h, ev_t = states(body, data, data.split, len(data.ids), args.eval_windows, args.seq_len)
    ce = heldout_loss(
        body,
        head,
        data,
        seq_len=args.seq_len,
        eval_tokens=4096,
        dev=torch.device("cpu"),
        autocast=torch.autocast("cpu", enabled=False),
    )
    counts = np.bincount(data.ids[: data.split], minlength=V)
    base = vocabopt.optimize(
        counts, hidden=args.hidden, profile=profile, batch_tokens=64, mode="infer", decode="greedy"
    )
    lin = torch.nn.Linear(args.hidden, V)  # the original lm_head as users run it (FullSoftmax's forward is the loss)
    with torch.no_grad():
        lin.weight.copy_(head.weight), lin.bias.copy_(head.bias)
    rows = []
    for div in args.divs:
        plan = dataclasses.replace(base, proj_dims=design.proj_dims(args.hidden, len(base.cutoffs), div_value=div))
        t0 = time.perf_counter()
        conv = vocabopt.convert_head(
            head.weight, head.bias, plan, hidden_states=fit_h, heldout=(ev_h, ev_t), distil_steps=args.distil
        )
        r = conv.report
        after = r.after or r.before
        rows.append(
            {
                "corpus": name,
                "cutoffs": plan.cutoffs,
                "proj_dims": plan.proj_dims,
                "ppl": float(np.exp(ce)),
                "before": r.before,
                "after": after,
                "kept": r.distil.get("kept", "-"),
                "convert_s": time.perf_counter() - t0,
                "speedup": speedups(conv.layer, lin, ev_h, args.reps),
            }
        )
        print(f"  div {div}: proj {plan.proj_dims} done in {rows[-1]['convert_s']:.1f} s", file=sys.stderr)
    return rows


def table(rows: list[dict], args, wall_s: float) -> str:
    lines = [
        f"Machine: {machine()}. Command: `{command()}` ({wall_s / 60:.1f} min). Body: {args.model}, d={args.hidden}, "
        f"{args.steps} training steps ({args.batch_size}x{args.seq_len} tokens), {args.distil} distillation steps on "
        f"{args.fit_windows * args.seq_len} training-text states; measured on {args.eval_windows * args.seq_len} "
        "held-out states. Speed-up = full lm_head time / converted head time (median of interleaved calls).",
        "",
        "| corpus | cutoffs | proj | KL before -> after (nats) | top-1 agree before -> after | ppl change before "
        "-> after | distillation | greedy B=1 | greedy B=64 | top-50 B=1 | top-50 B=64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, a, s = r["before"], r["after"], r["speedup"]
        lines.append(
            f"| {r['corpus']} | {r['cutoffs']} | {r['proj_dims']} | {b.kl:.4f} -> {a.kl:.4f} | "
            f"{b.top1_agreement:.1%} -> {a.top1_agreement:.1%} | {b.ppl_change:+.2%} -> {a.ppl_change:+.2%} | "
            f"{ {'distilled': 'kept', '-': 'none'}.get(r['kept'], 'discarded (raised the KL)') } | "
            f"{s['greedy B=1']:.2f}x | {s['greedy B=64']:.2f}x | {s['top-50 B=1']:.2f}x | {s['top-50 B=64']:.2f}x |"
        )
    lines.append("")
    ppl = ", ".join(f"{r['corpus']} {r['ppl']:.1f}" for r in rows[:: len(args.divs)])
    lines.append(f"Held-out perplexity of the original LMs: {ppl}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=["kjv", "stdlib", "both"], default="both")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--model", choices=["lstm", "transformer"], default="lstm")
    ap.add_argument("--steps", type=int, default=400, help="LM training steps")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--divs", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0], help="projection d / div^(i+1)")
    ap.add_argument("--distil", type=int, default=300, help="distillation steps")
    ap.add_argument("--fit-windows", type=int, default=128)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--text-bytes", type=int, default=2_000_000, help="per corpus")
    ap.add_argument("--stdlib-vocab", type=int, default=32000, help="BPE size for the Python source (0: KJV's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: KJV slice, d=64, 40 steps, 2 projection sizes")
    ap.add_argument("--docs", action="store_true", help="rewrite this benchmark's section of docs/benchmarks.md")
    args = ap.parse_args()
    if args.quick:
        args.corpus, args.hidden, args.steps, args.distil, args.divs = "kjv", 64, 40, 20, [1.0, 4.0]
        args.text_bytes, args.fit_windows, args.eval_windows, args.reps, args.batch_size = 300_000, 16, 8, 3, 16
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    tok = Tokenizer.from_file(str(TOKENIZER))
    profile = vocabopt.DeviceProfile.load(CPU_PROFILE)
    corpora = []
    if args.corpus in ("kjv", "both"):
        corpora.append(("KJV", (ROOT / "corpora" / "kjv.txt").read_text(encoding="utf-8")[: args.text_bytes], tok))
    with tempfile.TemporaryDirectory(prefix="vocabopt-convert-") as tmp:
        if args.corpus in ("stdlib", "both") and not args.stdlib_vocab:
            corpora.append(("Python stdlib, KJV BPE", stdlib_text(args.text_bytes), tok))
        elif args.corpus in ("stdlib", "both"):
            corpus, path, _ = stdlib_corpus(Path(tmp), args.text_bytes, args.stdlib_vocab)
            own = Tokenizer.from_file(str(path))
            name = f"Python stdlib, own BPE (V={own.get_vocab_size():,})"
            corpora.append((name, corpus.read_text(encoding="utf-8"), own))
        rows = [r for name, text, t in corpora for r in run_corpus(name, text, t, profile, args)]
    text = table(rows, args, time.perf_counter() - t0)
    print(text)
    if args.docs:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
