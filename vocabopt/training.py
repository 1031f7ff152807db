"""The proxy language model that `validate` (and tuning) trains: one small LM per output layer, in lockstep.

Inputs: a token stream split into training and held-out parts, the output layers to compare (a Plan each, or None for
the full softmax) and the `TrainSettings` they share. Outputs: `Trainer`s holding each run's learning curves and
step times, and `heldout_loss`, the mean NLL on data never trained on. torch is imported lazily.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .device import cuda_peak_bytes
from .device import sync as sync_device
from .plan import Plan

MODELS = ("lstm", "transformer")


# learning-curve points score every CURVE_STRIDE-th window of the final evaluation's held-out windows (half the
# cost of scoring them all: the curves were about a fifth of `tune`'s time); `curve_point` ends each curve on the
# same windows, so a curve and a comparison along it (equal-time penalties, fits) compare like with like
CURVE_STRIDE = 2


# Every held-out evaluation scores an exponential moving average of the weights, not the last iterate: at a constant
# learning rate the iterate's held-out loss jumps from one evaluation to the next, and a penalty (two such losses
# compared) jumped with it by several % (benchmarks/proxy_noise.py, docs/benchmarks.md "Proxy-LM noise", Python
# source, 3 seeds: the seed-to-seed swing of a design's end-of-run penalty 4.33% -> 2.12%, the jitter between
# consecutive evaluations 1.50% -> 0.50%, last iterate against this average, in one run). At step k the average moves
# towards the weights by 1 - min(EMA, (1 + k) / (10 + k)) (the usual warm-up of the decay, so early evaluations do
# not score the initial weights); 0 turns it off. The average lags the weights by about k / 9 steps early on and
# 19 steps once warmed up; a curve's points keep their step k as x (every layer lags alike).
EMA = 0.95


@dataclass(frozen=True)
class TrainSettings:
    """How every run trains: the same model, window, steps, optimizer, evaluation and seed."""

    model: str = "lstm"
    seq_len: int = 64
    batch_size: int = 32
    steps: int = 300
    lr: float = 3e-3
    eval_tokens: int = 32768
    eval_every: int = 0
    seed: int = 0
    ema: float = EMA


@dataclass
class TokenStream:
    ids: np.ndarray  # (T,) int64 token stream
    split: int  # ids[:split] train, ids[split:] held out


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

        def log_prob(self, hidden):
            return torch.log_softmax(super().forward(hidden).float(), dim=-1)  # (..., V) fp32, by token id

    head = FullSoftmax(plan.hidden, plan.vocab_size)
    p = np.empty(plan.vocab_size, dtype=np.float64)
    p[plan.order] = plan.counts_by_rank + 1.0  # by token id
    with torch.no_grad():
        head.bias.copy_(torch.from_numpy(np.log(p / p.sum())))
    return head


def _head(layer_plan: Plan | None, plan: Plan) -> Any:
    from .layer import build_layer

    return _full_softmax(plan) if layer_plan is None else build_layer(layer_plan)


@dataclass
class Trainer:
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
    average: list[Any] | None = None  # the weights' moving average (TrainSettings.ema), one tensor per parameter

    def update_average(self, step: int, decay: float) -> None:
        """Move the average towards the weights after optimizer step `step` (1-based)."""
        import torch

        if self.average is None:
            return
        weight = 1.0 - min(decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for a, p in zip(self.average, self.params, strict=True):
                a.lerp_(p.detach(), weight)

    def swap_average(self) -> None:
        """Exchange the weights and their average (twice: back as they were)."""
        import torch

        if self.average is None:
            return
        with torch.no_grad():
            for p, a in zip(self.params, self.average, strict=True):
                tmp = p.detach().clone()
                p.copy_(a)
                a.copy_(tmp)


def new_trainer(name: str, layer_plan: Plan | None, plan: Plan, train: TrainSettings, dev: Any) -> Trainer:
    """One run's model (the body seeded with train.seed: the same initial weights in every run), its AdamW and,
    with train.ema, the weights' moving average starting at the initial weights."""
    import torch

    torch.manual_seed(train.seed)
    body = _body(train.model, plan.vocab_size, plan.hidden, train.seq_len).to(dev)
    head = _head(layer_plan, plan).to(dev)
    params = [*body.parameters(), *head.parameters()]
    tr = Trainer(name, layer_plan, body, head, params, torch.optim.AdamW(params, lr=train.lr))
    tr.average = [p.detach().clone() for p in params] if train.ema else None
    return tr


def train_lockstep(
    layers: dict[str, Plan | None],
    plan: Plan,
    data: TokenStream,
    offsets: np.ndarray,
    train: TrainSettings,
    *,
    dev: Any,
    tdtype: Any,
    progress: Callable[[str, int, int, float], None] | None,
) -> tuple[list[Trainer], Batches]:
    """Train every run in lockstep (step k of each run, then step k + 1): a shared machine's drift in speed then
    spreads over all runs alike instead of favouring whichever ran while it was quiet. Runs share nothing but the
    data, so the results are those of running them one after another. Evaluations score the weights' moving average
    (`TrainSettings.ema`), and the trainers returned hold it as their weights."""

    trainers = [new_trainer(name, layer_plan, plan, train, dev) for name, layer_plan in layers.items()]
    batches = Batches(data, train, dev, tdtype)
    steps = len(offsets)
    for k, starts in enumerate(offsets, 1):
        for tr in trainers:
            sync_device(dev)
            t0 = time.perf_counter()
            loss = batches.step(tr, starts)
            sync_device(dev)
            tr.step_ms.append((time.perf_counter() - t0) * 1e3)
            tr.update_average(k, train.ema)  # outside the timed step
            tr.train_curve.append((k, loss))
            if train.eval_every and k % train.eval_every == 0 and k < steps:
                tr.swap_average()
                tr.eval_curve.append((k, batches.heldout_loss(tr)))
                tr.swap_average()
            if progress:
                progress(tr.name, k, steps, loss)
    for tr in trainers:  # the trained model is the average: every later evaluation scores it
        tr.swap_average()
        tr.average = None
    return trainers, batches


class Batches:
    """The shared token stream on the device: training windows, one optimizer step, held-out loss."""

    def __init__(self, data: TokenStream, train: TrainSettings, dev: Any, tdtype: Any) -> None:
        import torch

        self.data, self.train, self.dev = data, train, dev
        self.ids = torch.from_numpy(data.ids).to(dev)
        self.window = torch.arange(train.seq_len + 1, device=dev)
        self.autocast = torch.autocast(dev.type, dtype=tdtype, enabled=tdtype != torch.float32)

    def loss(self, tr: Trainer, batch_starts: np.ndarray) -> Any:
        import torch

        xy = self.ids[torch.as_tensor(batch_starts, device=self.dev)[:, None] + self.window]  # (B, T + 1)
        with self.autocast:
            return tr.head(tr.body(xy[:, :-1]), xy[:, 1:])

    def step(self, tr: Trainer, batch_starts: np.ndarray) -> float:
        import torch

        loss = self.loss(tr, batch_starts)
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.params, 1.0)
        tr.opt.step()
        return float(loss.detach())

    def heldout_loss(self, tr: Trainer) -> float:
        t = self.train
        return heldout_loss(
            tr.body,
            tr.head,
            self.data,
            seq_len=t.seq_len,
            eval_tokens=t.eval_tokens,
            dev=self.dev,
            autocast=self.autocast,
            stride=CURVE_STRIDE,
        )


def curve_point(window_losses: list[float]) -> float:
    """A learning curve's point from a full evaluation's per-window losses: the mean over the curve's windows
    (every CURVE_STRIDE-th), so a curve's last point is scored on the same windows as its earlier ones."""
    return float(np.mean(window_losses[::CURVE_STRIDE]))


def cuda_step_peak(tr: Trainer, one_step: Callable[[], float]) -> int:
    """CUDA bytes of one run: its weights, gradients and AdamW moments, plus the peak of one more step above them
    (the other runs' tensors, resident at the same time, are left out). The step changes the run's weights: call it
    after everything that scores them."""
    state = sum(p.numel() * p.element_size() for p in tr.params) * 4  # weight, grad, exp_avg, exp_avg_sq
    return int(state + cuda_peak_bytes(one_step))


def heldout_windows(data: TokenStream, seq_len: int, eval_tokens: int, dev: Any, stride: int = 1) -> tuple[Any, Any]:
    """The held-out windows every evaluation scores, spread evenly over the whole held-out part (not consecutive
    from its start: on a corpus of files, source code or documents, the first 32K held-out tokens are one or two
    files, and a penalty measured there moves with whatever those files are about). Windows never overlap.

    Args:
        data: the token stream; ids[split:] is the held-out part (at least seq_len + 1 ids).
        seq_len, eval_tokens: window length; tokens wanted (W = max(1, eval_tokens // seq_len) windows, at most as
            many as the held-out part holds).
        stride: keep every stride-th of those W windows (the learning curves' subset, `CURVE_STRIDE`).
    Returns:
        (inputs, targets), each (W, seq_len) on `dev`; targets are the inputs shifted by one.
    """
    import torch

    held = data.ids[data.split :]
    if held.size < seq_len + 1:
        raise ValueError(f"held-out part of {held.size} ids is shorter than one window of {seq_len} + 1")
    n_win = max(1, min(eval_tokens // seq_len, (held.size - 1) // seq_len))
    step = (held.size - 1 - seq_len) // (n_win - 1) if n_win > 1 else 0  # >= seq_len: no overlap
    index = (np.arange(0, n_win, stride) * step)[:, None] + np.arange(seq_len + 1)  # (W / stride, T + 1)
    x = torch.from_numpy(np.ascontiguousarray(held[index])).to(dev)  # only the windows go to the device
    return x[:, :-1], x[:, 1:]


def heldout_loss(
    body: Any,
    head: Any,
    data: TokenStream,
    *,
    seq_len: int,
    eval_tokens: int,
    dev: Any,
    autocast: Any,
    stride: int = 1,
) -> float:
    """Mean NLL (nats) per predicted token over the held-out windows (`heldout_windows`, every stride-th)."""
    import torch

    inp, tgt = heldout_windows(data, seq_len, eval_tokens, dev, stride)  # (W, T)
    total, count = 0.0, 0
    was = body.training, head.training
    body.eval(), head.eval()
    with torch.no_grad(), autocast:
        for i in range(0, len(inp), 64):
            total += float(head(body(inp[i : i + 64]), tgt[i : i + 64], reduction="sum"))
            count += tgt[i : i + 64].numel()
    body.train(was[0]), head.train(was[1])
    return total / count
