"""Benchmark: a living vocabulary. Train on one corpus, add 500 tokens for a second domain, continue on it.

Corpora (nothing downloaded): the shipped King James Bible (corpora/kjv.txt, public domain) with its 8K byte-level
BPE, then source code: the first ~4 MB (files sorted by path) of the Python standard library that ships with the
interpreter running this script (PSF License Version 2). The added tokens are the 500 most frequent identifiers of
the code's training part that the KJV tokenizer splits into two or more pieces, added in the run as
`AddedToken(word, single_word=True)` (the usual `tokenizer.add_tokens` route).

Runs (same body, steps, batches and seed; body input embeddings mean-resized alike):
1. train an LM on KJV with the optimizer's adaptive head and with a full softmax;
2. expand: `vocabopt.expand_head` (mean init, placed by the code's counts) vs the full softmax with transformers'
   mean resizing (new rows ~ N(mean, 1e-9 cov), new biases = mean bias); KJV held-out loss before and after;
3. continue on the code for the same steps: the expanded head with its plan kept, the same head migrated by
   `vocabopt.drift` + `vocabopt.replan_head` to the plan the code's frequencies call for, and the full softmax;
   held-out loss on both domains, loss right after migration, and the median step time.

    python benchmarks/expand_replan.py                 # CPU defaults (d=256, 300 + 300 steps), ~20-30 min
    python benchmarks/expand_replan.py --quick --no-write   # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import command, machine, stdlib_text, write_section  # noqa: E402

import vocabopt  # noqa: E402
from vocabopt.expand import HF_COV_SCALE  # noqa: E402
from vocabopt.training import TokenStream, _body, _full_softmax, heldout_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Living vocabularies: expand and replan (benchmarks/expand_replan.py)"
KJV_TOKENIZER = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"


def encode(tok, text: str) -> np.ndarray:
    lines = text.splitlines(keepends=True)
    ids = [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
    return np.fromiter((i for row in ids for i in row), dtype=np.int64)


def grown_tokenizer(old, code_train: str, n_added: int):
    """The KJV tokenizer plus the code's most frequent identifiers that it splits into >= 2 pieces."""
    from tokenizers import AddedToken, Tokenizer

    words = Counter(re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", code_train))
    pick = [w for w, _ in words.most_common() if len(old.encode(w, add_special_tokens=False).ids) >= 2][:n_added]
    new = Tokenizer.from_str(old.to_str())
    new.add_tokens([AddedToken(w, single_word=True) for w in pick])
    return new, pick


def vocab(tok) -> list[str]:
    v = tok.get_vocab(with_added_tokens=True)
    out = [""] * (max(v.values()) + 1)
    for s, i in v.items():
        out[i] = s
    return out


def hf_mean_rows(W: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """transformers' mean_resizing: k rows ~ N(mean, 1e-9 cov) of W's rows."""
    W = W.double()
    cov = torch.cov(W.T) * HF_COV_SCALE + torch.eye(W.shape[1], dtype=W.dtype) * 1e-30
    z = torch.randn(W.shape[1], k, generator=gen, dtype=W.dtype)
    return W.mean(0) + (torch.linalg.cholesky(cov) @ z).T


def grow_body(body, V_new: int, seed: int) -> None:
    old = body.emb.weight.data
    new = torch.nn.Embedding(V_new, old.shape[1])
    with torch.no_grad():
        new.weight[: old.shape[0]] = old
        new.weight[old.shape[0] :] = hf_mean_rows(old, V_new - old.shape[0], torch.Generator().manual_seed(seed))
    body.emb = new


def grow_full(head, plan_new, seed: int):
    new = _full_softmax(plan_new)
    V = head.weight.shape[0]
    with torch.no_grad():
        new.weight[:V], new.bias[:V] = head.weight, head.bias
        new.weight[V:] = hf_mean_rows(head.weight, plan_new.vocab_size - V, torch.Generator().manual_seed(seed))
        new.bias[V:] = head.bias.mean()
    return new


class Run:
    """One model: body + head + AdamW, stepping on windows of a token stream."""

    def __init__(self, name: str, body, head, lr: float):
        self.name, self.body, self.head, self.lr = name, body, head, lr
        self.reset_opt()
        self.step_ms: list[float] = []

    def reset_opt(self) -> None:
        self.params = [*self.body.parameters(), *self.head.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=self.lr)

    def step(self, ids: torch.Tensor, starts: np.ndarray, T: int) -> float:
        t0 = time.perf_counter()
        xy = ids[torch.from_numpy(starts)[:, None] + torch.arange(T + 1)]  # (B, T + 1)
        loss = self.head(self.body(xy[:, :-1]), xy[:, 1:])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.step_ms.append((time.perf_counter() - t0) * 1e3)
        return float(loss.detach())

    def heldout(self, data: TokenStream, args) -> float:
        return heldout_loss(
            self.body,
            self.head,
            data,
            seq_len=args.seq_len,
            eval_tokens=args.eval_tokens,
            dev=torch.device("cpu"),
            autocast=contextlib.nullcontext(),
        )


def train(runs: list[Run], data: TokenStream, steps: int, args, seed: int) -> None:
    """Every run on the same windows, in lockstep (a shared machine's drift in speed spreads over all alike)."""
    ids = torch.from_numpy(data.ids)
    rng = np.random.default_rng(seed)
    for k in range(steps):
        starts = rng.integers(0, data.split - args.seq_len - 1, size=args.batch_size)
        for r in runs:
            loss = r.step(ids, starts, args.seq_len)
        if (k + 1) % max(1, steps // 5) == 0:
            print(f"  step {k + 1}/{steps}: {runs[-1].name} loss {loss:.3f}", file=sys.stderr)
    for r in runs:
        r.step_ms = r.step_ms[-steps:]


def hidden_sample(run: Run, data: TokenStream, args, n_windows: int = 64) -> torch.Tensor:
    starts = np.linspace(0, data.split - args.seq_len - 1, n_windows).astype(np.int64)
    x = torch.from_numpy(data.ids)[torch.from_numpy(starts)[:, None] + torch.arange(args.seq_len)]
    with torch.no_grad():
        return run.body.eval()(x).reshape(-1, args.hidden).double()


def streams(args, old_tok, new_tok, kjv: str, code: str) -> dict[str, TokenStream]:
    cut_k, cut_c = int(len(kjv) * 0.95), int(len(code) * 0.95)
    out = {}
    for name, tok, text, cut in (
        ("kjv_old", old_tok, kjv, cut_k),
        ("kjv_new", new_tok, kjv, cut_k),
        ("code", new_tok, code, cut_c),
    ):
        a, b = encode(tok, text[:cut]), encode(tok, text[cut:])
        out[name] = TokenStream(np.concatenate([a, b]), len(a))
    return out


def phase1(args, profile, data, old_tokens):
    counts = np.bincount(data["kjv_old"].ids[: data["kjv_old"].split], minlength=len(old_tokens))
    stats = vocabopt.CorpusStats.from_counts(counts, old_tokens, name="kjv-bpe-8k")
    plan = vocabopt.optimize(stats, hidden=args.hidden, profile=profile, batch_tokens=args.batch_size * args.seq_len)
    runs = []
    for name, head in (("adaptive", vocabopt.build_layer(plan)), ("full", _full_softmax(plan))):
        torch.manual_seed(args.seed)
        body = _body(args.model, plan.vocab_size, args.hidden, args.seq_len)
        runs.append(Run(name, body, head, args.lr))
    print(f"phase 1: KJV, plan {plan.cutoffs} {plan.proj_dims}", file=sys.stderr)
    train(runs, data["kjv_old"], args.steps, args, args.seed)
    return plan, runs


def expand(args, plan, runs, data, old_tokens, new_tokens, code_counts):
    adaptive, full = runs
    res = {"kjv_before": {r.name: r.heldout(data["kjv_old"], args) for r in runs}}
    ex = vocabopt.expand_head(
        adaptive.head.state_dict(), plan, new_tokens, old_tokens=old_tokens, stats=code_counts, mass=args.mass
    )
    head = vocabopt.build_layer(ex.plan)
    head.load_state_dict(ex.state)
    adaptive.head = head
    full.head = grow_full(full.head, ex.plan, args.seed)
    for r in runs:
        grow_body(r.body, ex.plan.vocab_size, args.seed)
        r.reset_opt()
    res["kjv_after"] = {r.name: r.heldout(data["kjv_old"], args) for r in runs}  # same old-tokenizer ids
    res["expansion"] = ex.summary()
    return ex, res


def replan(args, profile, ex, kept: Run, data, code_counts, new_tokens):
    new_stats = vocabopt.CorpusStats.from_counts(code_counts, new_tokens, name="kjv-bpe-8k+code")
    rep = vocabopt.drift(
        ex.plan.counts_by_id, new_stats, ex.plan, profile=profile, batch_tokens=args.batch_size * args.seq_len
    )
    h = hidden_sample(kept, data["code"], args)
    kept.body.train()
    r = vocabopt.replan_head(kept.head.state_dict(), ex.plan, rep.new_plan, hidden=h)
    run = Run("replanned", copy.deepcopy(kept.body), vocabopt.build_layer(rep.new_plan), args.lr)
    run.head.load_state_dict(r.state)
    return run, rep, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=str(ROOT / "configs" / "devices" / "cpu-xeon-2core-float32.json"))
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--model", default="transformer", choices=["lstm", "transformer"])
    ap.add_argument("--steps", type=int, default=300, help="steps per phase")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--added", type=int, default=500)
    ap.add_argument("--mass", type=float, default=1e-3)
    ap.add_argument("--code-bytes", type=int, default=4_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: small model, 20 steps, 1 MB slices")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if args.quick:
        args.hidden, args.steps, args.seq_len, args.batch_size, args.eval_tokens = 64, 20, 32, 8, 4096
        args.code_bytes = 1_000_000
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    profile = vocabopt.DeviceProfile.load(args.profile)
    kjv = (ROOT / "corpora" / "kjv.txt").read_text(encoding="utf-8")
    code = stdlib_text(args.code_bytes)
    if args.quick:
        kjv = kjv[:1_000_000]
    old_tok = Tokenizer.from_file(str(KJV_TOKENIZER))
    new_tok, added = grown_tokenizer(old_tok, code[: int(len(code) * 0.95)], args.added)
    old_tokens, new_tokens = vocab(old_tok), vocab(new_tok)
    data = streams(args, old_tok, new_tok, kjv, code)
    code_counts = np.bincount(data["code"].ids[: data["code"].split], minlength=len(new_tokens))
    plan, runs = phase1(args, profile, data, old_tokens)
    ex, res = expand(args, plan, runs, data, old_tokens, new_tokens, code_counts)
    replanned, rep, migration = replan(args, profile, ex, runs[0], data, code_counts, new_tokens)
    res["right_after"] = {
        "kept": runs[0].heldout(data["code"], args),
        "replanned": replanned.heldout(data["code"], args),
    }
    print(f"phase 2: code, kept {ex.plan.cutoffs} vs replanned {rep.new_cutoffs}", file=sys.stderr)
    runs[0].name = "kept"
    phase2 = [runs[0], replanned, runs[1]]
    for r in phase2:
        r.step_ms = []
    train(phase2, data["code"], args.steps, args, args.seed + 1)
    res["final"] = {r.name: {d: r.heldout(data[d], args) for d in ("code", "kjv_new")} for r in phase2}
    res["step_ms"] = {r.name: float(np.median(r.step_ms)) for r in phase2}
    text = report(args, res, plan, ex, rep, migration, len(added), time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


def report(args, res, plan, ex, rep, migration, n_added, wall_s) -> str:
    b, a = res["kjv_before"], res["kjv_after"]
    f, ms = res["final"], res["step_ms"]
    change = {k: a[k] / b[k] - 1 for k in b}
    lines = [
        f"Machine: {machine()}. Command: `{command()}` ({wall_s / 60:.1f} min). Body: {args.model}, d={args.hidden}, "
        f"{args.batch_size}x{args.seq_len} tokens/step, {args.steps} steps per phase, seed {args.seed}.",
        "",
        f"KJV plan {plan.cutoffs} (proj {plan.proj_dims}); {n_added} tokens added "
        f"(per cluster {res['expansion']['added_per_cluster']}, mass bound {args.mass:g}) -> {ex.plan.cutoffs}.",
        "",
        "| expansion | KJV held-out loss before | after | change (floor: within 0.1%) |",
        "|---|---|---|---|",
        *(f"| {k} | {b[k]:.4f} | {a[k]:.4f} | {change[k]:+.3%} |" for k in b),
        "",
        f"Drift of the code from the expanded plan: head share {rep.shares_then[0]:.3f} -> {rep.shares_now[0]:.3f}, "
        f"{rep.crossed} tokens crossed a cutoff ({rep.crossed_up} towards the head); predicted "
        f"{rep.old_plan_ms:.2f} -> {rep.new_plan_ms:.2f} ms/step; recommendation: {rep.recommendation}. "
        f"Replanned to {rep.new_cutoffs} (proj {rep.new_proj_dims}); cluster-logit fit RMSE "
        f"{migration.cluster_logit_rmse:.3f} nats. Code held-out loss right after migration: "
        f"{res['right_after']['replanned']:.4f} (unchanged head {res['right_after']['kept']:.4f}).",
        "",
        f"| after {args.steps} steps on code | code held-out loss | KJV held-out loss | median step (ms) |",
        "|---|---|---|---|",
        *(f"| {k} | {f[k]['code']:.4f} | {f[k]['kjv_new']:.4f} | {ms[k]:.1f} |" for k in f),
        "",
        "kept: the expanded adaptive head on its plan; replanned: the same head after drift + replan_head; full: "
        "full softmax expanded with transformers' mean resizing. Step times are medians of one run in lockstep.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
