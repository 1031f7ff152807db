"""The validate stage: a Plan + a corpus -> does the plan's layer train as well as the full softmax, and faster?

Inputs: a `Plan`, corpus sources, the tokenizer the plan was made for. Outputs: `ValidationResult`, one
`ValidationRun` per output layer — (a) the plan's, (b) the full softmax, optionally (c) a folklore design — each
training the same small language model (LSTM or causal transformer) with the same seed, initial body weights,
batches in the same order, steps and optimizer, trained in lockstep so that every run sees the machine
alike. Reported: held-out perplexity, median step time, tokens/s,
memory, and the learning curves (optionally drawn to a PNG, written atomically).

Data: the corpus is tokenized into one id stream; its last `heldout` fraction is the held-out split and no
training window ever reaches into it. torch is imported lazily.
"""

from __future__ import annotations

import io
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from .errors import InputError, MismatchError, TokenizerError
from .plan import Plan

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.ValidationResult"
MODELS = ("lstm", "transformer")


@dataclass
class ValidationRun:
    """One output layer trained for `steps` steps: held-out quality, speed and memory, learning curves."""

    name: str  # "vocabopt" | "full softmax" | "folklore"
    cutoffs: list[int]  # [] for the full softmax
    proj_dims: list[int]
    layer_params: int
    heldout_loss: float  # mean NLL per held-out token, nats
    heldout_ppl: float
    step_ms: float  # median wall time of one optimizer step (fwd + bwd + update), after 2 warm-up steps
    tokens_per_s: float
    saved_bytes: int  # activation bytes autograd keeps for backward in one training step (whole model)
    peak_bytes: int | None  # CUDA: weights + grads + AdamW state + one step's peak above them; None elsewhere
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)


@dataclass
class ValidationResult:
    """Every run of one `validate` call and the settings they shared. `runs[0]` is the plan's layer."""

    runs: list[ValidationRun]
    settings: dict[str, Any]  # model, sizes, steps, lr, seed, device, dtype, split sizes
    schema_version: int = SCHEMA_VERSION

    def run(self, name: str) -> ValidationRun | None:
        return next((r for r in self.runs if r.name == name), None)

    def summary(self) -> dict[str, Any]:
        """Ratios against the full softmax: perplexity gap and step-time speed-up of each other run."""
        full = self.run("full softmax")
        out = {}
        for r in self.runs:
            if full is not None and r is not full:
                out[r.name] = {"ppl_gap": r.heldout_ppl / full.heldout_ppl - 1.0, "speedup": full.step_ms / r.step_ms}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": ARTIFACT,
            "schema_version": self.schema_version,
            "settings": self.settings,
            "summary": self.summary(),
            "runs": [asdict(r) for r in self.runs],
        }

    def save(self, path: str | Path) -> None:
        artifacts.write_json(path, self.to_json())


@dataclass
class _Data:
    ids: np.ndarray  # (T,) int64 token stream
    split: int  # ids[:split] train, ids[split:] held out


def validate(
    plan: Plan,
    sources: str | list[str],
    tokenizer: str,
    steps: int = 300,
    model: str = "lstm",
    seq_len: int = 64,
    batch_size: int = 32,
    lr: float = 3e-3,
    heldout: float = 0.05,
    eval_tokens: int = 32768,
    eval_every: int = 0,
    folklore: list[int] | None = None,
    full_softmax: bool = True,
    max_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    plot: str | Path | None = None,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> ValidationResult:
    """Train one small LM per output layer (plan, full softmax, folklore) identically; compare held-out quality.

    Args:
        plan: the design; its `hidden` is the model width and its vocabulary must be the tokenizer's.
        sources: corpus files (any source `vocabopt analyze` reads).
        tokenizer: the tokenizer.json the plan's stats were counted with (or "bytes").
        steps: optimizer steps per run (AdamW, constant `lr`, gradient norm clipped to 1).
        model: "lstm" (one layer) or "transformer" (2 pre-norm causal layers, 4 heads).
        seq_len, batch_size: each step trains on batch_size windows of seq_len next-token predictions.
        heldout: fraction of the token stream (its end) held out; never trained on.
        eval_tokens: held-out tokens scored at the end (and every `eval_every` steps if > 0).
        folklore: cutoffs of a hand-typed design to train too (d/4^i projections); those >= V are dropped.
        full_softmax: train the full-softmax baseline (b).
        max_tokens: use only the first max_tokens tokens of the corpus.
        device, dtype: where and in what precision (autocast) to train; "cuda" with "bfloat16" for a real GPU.
        seed: one seed for the body's initial weights, the batch order and dropout; every run reuses it.
        plot: write the learning curves here (PNG, atomically).
        progress: called as progress(run_name, step, steps, training_loss).

    Example:
        >>> result = vocabopt.validate(vocabopt.Plan.load("plan.json"), ["corpora/kjv.txt"],
        ...                            "corpora/kjv-bpe-8k/tokenizer.json", steps=300)
        >>> result.summary()["vocabopt"]   # {'ppl_gap': ..., 'speedup': ...}
    """
    import torch

    from .profile import DTYPES, device_name, resolve_device

    _check_args(plan, steps, model, seq_len, batch_size, heldout, dtype, DTYPES)
    dev = torch.device(resolve_device(device))
    data = load_tokens(plan, sources, tokenizer, heldout, seq_len, max_tokens)
    layers = _designs(plan, folklore, full_softmax)
    offsets = _batch_offsets(data.split, seq_len, batch_size, steps, seed)  # shared by every run
    settings = {
        "model": model,
        "hidden": plan.hidden,
        "vocab_size": plan.vocab_size,
        "steps": steps,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "tokens_per_step": seq_len * batch_size,
        "lr": lr,
        "optimizer": "AdamW",
        "seed": seed,
        "device": device_name(torch, dev.type),
        "dtype": dtype,
        "torch": torch.__version__,
        "train_tokens": int(data.split),
        "heldout_tokens": int(data.ids.size - data.split),
        "eval_tokens": int(min(eval_tokens, data.ids.size - data.split)),
        "tokenizer": str(tokenizer),
        "sources": [str(s) for s in ([sources] if isinstance(sources, str) else sources)],
    }
    runs = _train_all(
        layers,
        plan,
        data,
        offsets,
        model,
        seq_len,
        lr,
        eval_tokens,
        eval_every,
        dev,
        getattr(torch, dtype),
        seed,
        progress,
    )
    result = ValidationResult(runs=runs, settings=settings)
    if plot is not None:
        plot_curves(result, plot)
    return result


def _check_args(plan, steps, model, seq_len, batch_size, heldout, dtype, dtypes) -> None:
    if not isinstance(plan, Plan):
        raise InputError(f"expected a vocabopt.Plan, got {type(plan).__name__}; load one with Plan.load(path)")
    if model not in MODELS:
        raise InputError(f"model {model!r} is not one of {MODELS}")
    if steps < 1 or seq_len < 2 or batch_size < 1:
        raise InputError(
            f"steps={steps}, seq_len={seq_len}, batch_size={batch_size}: need steps >= 1, seq_len >= 2, batch_size >= 1"
        )
    if not 0 < heldout < 0.5:
        raise InputError(f"heldout={heldout}: pass a fraction in (0, 0.5), e.g. 0.05")
    if dtype not in dtypes:
        raise InputError(f"dtype {dtype!r} is not one of {dtypes}")


# --- data ---------------------------------------------------------------------------------------------------


def load_tokens(
    plan: Plan,
    sources: str | list[str],
    tokenizer: str,
    heldout: float = 0.05,
    seq_len: int = 64,
    max_tokens: int | None = None,
) -> _Data:
    """Tokenize `sources` into one id stream and split off its end as the held-out part.

    Raises MismatchError when the tokenizer is not the plan's (hash or vocabulary size), InputError when the
    corpus is too small for one training window and one held-out window.
    """
    from . import sources as src
    from .counting import hf_vocab_size, load_spec

    spec = load_spec(tokenizer)
    if spec.kind == "word":
        raise TokenizerError(
            "validate needs a fixed tokenizer: pass the tokenizer.json written by "
            "`vocabopt analyze -t word --save-tokenizer`, not 'word'"
        )
    want = (plan.provenance.get("tokenizer") or {}).get("sha256")
    if want and want != spec.sha256:
        name = (plan.provenance.get("tokenizer") or {}).get("name", "?")
        raise MismatchError(
            f"tokenizer {tokenizer} (sha256 {spec.sha256[:12]}) is not the plan's ({name}, "
            f"sha256 {want[:12]}); pass the tokenizer the plan's stats were counted with"
        )
    if spec.kind == "hf":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(spec.json)
        size = hf_vocab_size(tok)
        encode = lambda lines: [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]  # noqa: E731
    else:  # bytes
        size = 256
        encode = lambda lines: [list(s.encode("utf-8")) for s in lines]  # noqa: E731
    if size != plan.vocab_size:
        raise MismatchError(
            f"tokenizer {tokenizer} has {size} ids but the plan's vocabulary has {plan.vocab_size}; "
            "optimize the plan from stats counted with this tokenizer"
        )
    reader = src.Reader(src.resolve([sources] if isinstance(sources, str) else list(sources)), src.SourceOptions())
    pieces, total = [], 0
    for item in reader:
        lines = [ln for ln in item.text.split("\n") if ln.strip()]
        ids = [i for seq in encode(lines) for i in seq]
        pieces.append(np.asarray(ids, dtype=np.int64))
        total += len(ids)
        if max_tokens is not None and total >= max_tokens:
            break
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    ids = ids[:max_tokens] if max_tokens is not None else ids
    split = int(ids.size * (1.0 - heldout))
    if split < seq_len + 1 or ids.size - split < seq_len + 1:
        raise InputError(
            f"corpus has {ids.size} tokens: too few for a {seq_len}-token window in both the "
            f"training and held-out ({heldout:.0%}) parts; pass more text or a smaller --seq-len"
        )
    return _Data(ids=ids, split=split)


def _batch_offsets(split: int, seq_len: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) window starts; every window [o, o + seq_len + 1) lies inside the training part."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, split - seq_len, size=(steps, batch_size))  # o + seq_len <= split - 1


def _designs(plan: Plan, folklore: list[int] | None, full: bool) -> dict[str, Plan | None]:
    """run name -> the Plan of its output layer (None: full softmax)."""
    out: dict[str, Plan | None] = {"vocabopt": plan}
    if full:
        out["full softmax"] = None
    if folklore:
        if any(b <= a for a, b in zip(folklore, folklore[1:])):
            raise InputError(f"folklore cutoffs {folklore} must be strictly increasing, e.g. 2000,10000")
        cuts = [c for c in folklore if 0 < c < plan.vocab_size]
        if not cuts:
            raise InputError(f"folklore cutoffs {folklore} all lie outside (0, {plan.vocab_size}); pass smaller ones")
        counts = np.empty_like(plan.counts)
        counts[plan.order] = plan.counts  # back to counts by token id
        out["folklore"] = Plan.from_cutoffs(
            counts, hidden=plan.hidden, cutoffs=cuts, provenance={"name": f"folklore {cuts}"}
        )
    return out


# --- model and training ---------------------------------------------------------------------------------------


def _body(model: str, vocab: int, d: int, seq_len: int) -> Any:
    """The LM without its output layer: ids (B, T) -> hidden states (B, T, d)."""
    import torch
    from torch import nn

    class LSTMBody(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.rnn = nn.LSTM(d, d, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(self.emb(x))[0]  # (B, T, d)

    class TransformerBody(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.zeros(seq_len, d))
            layer = nn.TransformerEncoderLayer(
                d, nhead=4 if d % 4 == 0 else 1, dim_feedforward=2 * d, dropout=0.0, batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            T = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)
            return self.norm(self.blocks(self.emb(x) + self.pos[:T], mask=mask, is_causal=True))  # (B, T, d)

    return LSTMBody() if model == "lstm" else TransformerBody()


def _full_softmax(plan: Plan) -> Any:
    """nn.Linear + F.cross_entropy with the adaptive layer's call signature: head(hidden, targets) -> loss.

    Its bias starts at the log unigram frequencies (add-one smoothed), as the adaptive layer's do
    (`unigram_init`), so that the comparison measures the layers' structure, not their initialisation.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FullSoftmax(nn.Linear):
        def forward(self, hidden, targets, reduction: str = "mean"):  # type: ignore[override]
            logits = super().forward(hidden).float()  # (..., V) fp32 for the loss
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)

    head = FullSoftmax(plan.hidden, plan.vocab_size)
    p = np.empty(plan.vocab_size, dtype=np.float64)
    p[plan.order] = plan.counts + 1.0  # by token id
    with torch.no_grad():
        head.bias.copy_(torch.from_numpy(np.log(p / p.sum())))
    return head


def _head(design: Plan | None, plan: Plan) -> Any:
    from .layer import build_layer

    return _full_softmax(plan) if design is None else build_layer(design)


@dataclass
class _Trainer:
    """One run's model, optimizer and measurements while the runs train in lockstep."""

    name: str
    design: Plan | None
    body: Any
    head: Any
    params: list[Any]
    opt: Any
    step_ms: list[float] = field(default_factory=list)
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)


def _train_all(
    layers, plan, data, offsets, model, seq_len, lr, eval_tokens, eval_every, dev, tdtype, seed, progress
) -> list[ValidationRun]:
    """Train every run in lockstep (step k of each run, then step k + 1): a shared machine's drift in speed then
    spreads over all runs alike instead of favouring whichever ran while it was quiet. Runs share nothing but the
    data, so the results are those of running them one after another."""
    import torch

    trainers = []
    for name, design in layers.items():
        torch.manual_seed(seed)  # the body starts from the same weights in every run
        body = _body(model, plan.vocab_size, plan.hidden, seq_len).to(dev)
        head = _head(design, plan).to(dev)
        params = [*body.parameters(), *head.parameters()]
        trainers.append(_Trainer(name, design, body, head, params, torch.optim.AdamW(params, lr=lr)))
    ids = torch.from_numpy(data.ids).to(dev)
    win = torch.arange(seq_len + 1, device=dev)
    ac = torch.autocast(dev.type, dtype=tdtype, enabled=tdtype != torch.float32)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def loss_of(tr: _Trainer, batch_starts: np.ndarray) -> Any:
        xy = ids[torch.as_tensor(batch_starts, device=dev)[:, None] + win]  # (B, T + 1)
        with ac:
            return tr.head(tr.body(xy[:, :-1]), xy[:, 1:])

    def step(tr: _Trainer, starts: np.ndarray) -> float:
        loss = loss_of(tr, starts)
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.params, 1.0)
        tr.opt.step()
        return float(loss.detach())

    steps = len(offsets)
    for k, starts in enumerate(offsets, 1):
        for tr in trainers:
            sync()
            t0 = time.perf_counter()
            loss = step(tr, starts)
            sync()
            tr.step_ms.append((time.perf_counter() - t0) * 1e3)
            tr.train_curve.append((k, loss))
            if eval_every and k % eval_every == 0 and k < steps:
                tr.eval_curve.append((k, heldout_loss(tr.body, tr.head, data, seq_len, eval_tokens, dev, ac)))
            if progress:
                progress(tr.name, k, steps, loss)
    runs = []
    for tr in trainers:
        final = heldout_loss(tr.body, tr.head, data, seq_len, eval_tokens, dev, ac)
        tr.eval_curve.append((steps, final))
        peak = _cuda_step_peak(tr, lambda tr=tr: step(tr, offsets[-1])) if dev.type == "cuda" else None
        timed = tr.step_ms[2:] if len(tr.step_ms) > 4 else tr.step_ms  # the first steps warm up allocator, caches
        med = statistics.median(timed)
        runs.append(
            ValidationRun(
                name=tr.name,
                cutoffs=[] if tr.design is None else list(tr.design.cutoffs),
                proj_dims=[] if tr.design is None else list(tr.design.proj_dims),
                layer_params=sum(p.numel() for p in tr.head.parameters()),
                heldout_loss=final,
                heldout_ppl=math.exp(min(final, 700.0)),
                step_ms=med,
                tokens_per_s=offsets.shape[1] * seq_len / med * 1e3,
                saved_bytes=_saved_bytes(lambda tr=tr: loss_of(tr, offsets[0])),
                peak_bytes=peak,
                train_curve=tr.train_curve,
                eval_curve=tr.eval_curve,
            )
        )
    return runs


def _cuda_step_peak(tr: _Trainer, one_step: Callable[[], float]) -> int:
    """CUDA bytes of one run: its weights, gradients and AdamW moments, plus the peak of one more step above them
    (the other runs' tensors, resident at the same time, are left out). After training, so it changes nothing
    that is reported."""
    import torch

    state = sum(p.numel() * p.element_size() for p in tr.params) * 4  # weight, grad, exp_avg, exp_avg_sq
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    one_step()
    torch.cuda.synchronize()
    return int(state + torch.cuda.max_memory_allocated() - base)


def heldout_loss(body, head, data: _Data, seq_len: int, eval_tokens: int, dev, ac) -> float:
    """Mean NLL (nats) per predicted token over consecutive windows from the start of the held-out part."""
    import torch

    held = torch.from_numpy(data.ids[data.split :]).to(dev)
    n_win = max(1, min(eval_tokens // seq_len, (held.numel() - 1) // seq_len))
    x = held[: n_win * seq_len + 1]
    inp, tgt = x[:-1].view(n_win, seq_len), x[1:].view(n_win, seq_len)  # (W, T)
    total, count = 0.0, 0
    was = body.training, head.training
    body.eval(), head.eval()
    with torch.no_grad(), ac:
        for i in range(0, n_win, 64):
            total += float(head(body(inp[i : i + 64]), tgt[i : i + 64], reduction="sum"))
            count += tgt[i : i + 64].numel()
    body.train(was[0]), head.train(was[1])
    return total / count


def _saved_bytes(step: Callable[[], Any]) -> int:
    from .bench import saved_bytes

    return saved_bytes(step)


# --- plot ---------------------------------------------------------------------------------------------------


def plot_curves(result: ValidationResult, path: str | Path) -> None:
    """Training (smoothed) and held-out loss per step for every run, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in result.runs:
        steps, losses = zip(*r.train_curve, strict=True)
        k = max(1, len(losses) // 30)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        (line,) = ax.plot(steps[k - 1 :], smooth, label=f"{r.name} (train)", alpha=0.8)
        es, el = zip(*r.eval_curve, strict=True)
        ax.plot(es, el, "o--", color=line.get_color(), label=f"{r.name} held-out ppl {r.heldout_ppl:.1f}")
    s = result.settings
    ax.set(
        xlabel="step",
        ylabel="loss (nats/token)",
        title=f"{s['model']}, d={s['hidden']}, V={s['vocab_size']}, {s['tokens_per_step']} tokens/step",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    artifacts.atomic_write_bytes(path, buf.getvalue())
