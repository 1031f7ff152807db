"""Adaptive softmax output layer (Grave, Joulin, Cissé, Grangier, Jégou, "Efficient softmax approximation for
GPUs", ICML 2017), with an optional tied adaptive input embedding (Baevski & Auli, "Adaptive Input
Representations for Neural Language Modeling", ICLR 2019).

Plan: none (library copy).

This file needs only torch. vocabopt's `build_layer(plan)` imports it, and `vocabopt export` copies it verbatim into
a standalone file with the plan block below filled in, so the exported layer is exactly the tested code.

Vocabulary layout, in frequency-rank space (rank 0 = the most frequent token id):
    head   = ranks [0, cutoffs[0]) plus one logit per tail cluster, scored on every token
    tail i = ranks [cutoffs[i], cutoffs[i+1] or V), scored as  hidden -> proj_dims[i] -> cluster size
Targets and outputs use the tokenizer's ORIGINAL ids; the `rank_of` / `order` buffers remap inside.

Training forward, two exact paths with identical results:
    "exact"  : rows sorted by cluster, each tail run on exactly its rows; one host read of the J+1 row counts
               per forward (free on CPU, where there is no device to wait for).
    "static" : no host-device synchronisation and static shapes (torch.compile(fullgraph=True), CUDA graphs):
               each tail runs on a fixed number of rows, `capacity(N)`, sized from the plan's cluster shares with
               a wide margin. In training mode a token whose cluster exceeds it in one batch is dropped from the
               loss (like an ignored token), counted in the `dropped_tokens` buffer and reported by a
               `DroppedTokensWarning` (checked at calls 1, 2, 4, ..., 256, then every 256th: one host read each,
               from outside any compiled graph; skipped during CUDA-graph capture and under
               torch.cuda.set_sync_debug_mode). In eval mode every tail runs on all N rows: nothing is dropped.
               "auto" (default) picks "exact" in eager mode on every device (one sync costs less than running
               each tail on its capacity) and "static" under torch.compile; ask for "static" to capture CUDA
               graphs in eager mode.
Every parameter takes part in every forward (a tail with no rows is run on zero rows), so every parameter gets a
gradient every step: DDP works without find_unused_parameters.

Loss kernel (`_LinearNLL`): the head, and every tail whose (rows x classes) logits fit in `chunk_above`, keeps its
fp32 log-probs for backward; a larger tail runs in chunks of `tail_chunk` classes and recomputes them in backward.
On CPU those (rows, classes) buffers are reused from step to step (`reuse_buffers`; `release_scratch()` frees
them): between steps the layer holds up to two per cluster, e.g. 2 x 2048 x 1154 x 4 B = 19 MB for the head of
the KJV plan at 2048 tokens.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

QUANTIZE_MODES = (None, "int8-tails", "int8")  # int8-tails: tail projections and outputs; int8: the head too


@dataclass
class AdaptiveHeadConfig:
    vocab_size: int  # V, number of token ids
    hidden: int  # d, width of the hidden states fed to the layer
    cutoffs: list[int]  # strictly increasing frequency ranks in (0, V); cutoffs[0] = head shortlist size
    proj_dims: list[int]  # projection width of each tail cluster, in [1, d]
    shares: list[float] = field(default_factory=list)  # expected share of targets per cluster (head first)
    head_bias: bool = True
    tail_bias: bool = True
    dropout: float = 0.0  # on the tail projections (training only)
    unigram_init: bool = True  # initialise biases to log unigram frequencies (needs counts)
    tie_input: bool = False  # also build an adaptive input embedding sharing these weights (`embed`)
    path: str = "auto"  # training forward: "auto" | "exact" | "static" (see the module docstring)
    tail_chunk: int = 2048  # classes per chunk of a chunked tail loss (memory and cache locality)
    chunk_above: int = 1 << 22  # a tail whose (rows x classes) logits exceed this runs chunked (see _LinearNLL)
    reuse_buffers: bool = True  # CPU: keep the (N, head) loss scratch between steps (see _Scratch)
    capacity_factor: float = 2.0  # static path: rows per tail = factor * expected + 8 sigma + 16
    ignore_index: int = -100
    reduction: str = "mean"  # default reduction: "mean" | "sum" | "none"
    check_targets: str = "auto"  # "auto": every call on CPU, first call elsewhere; "always"; "never"
    plan: str = ""  # name of the plan this head was built from
    quantize: str | None = None  # None | "int8-tails" | "int8": weight-only int8 (inference only; see Int8Linear)

    def __post_init__(self) -> None:
        V, d, c, p = self.vocab_size, self.hidden, list(self.cutoffs), list(self.proj_dims)
        if V < 2 or d < 1:
            raise ValueError(f"vocab_size ({V}) must be >= 2 and hidden ({d}) >= 1")
        if not c or c != sorted(set(c)) or c[0] <= 0 or c[-1] >= V:
            raise ValueError(f"cutoffs {c} must be strictly increasing integers in (0, vocab_size={V})")
        if len(p) != len(c) or any(not 1 <= x <= d for x in p):
            raise ValueError(f"proj_dims {p}: need one per cutoff ({len(c)}), each in [1, hidden={d}]")
        if self.shares and len(self.shares) != len(c) + 1:
            raise ValueError(f"shares has {len(self.shares)} entries; need one per cluster ({len(c) + 1})")
        for name, value, allowed in (
            ("path", self.path, ("auto", "exact", "static")),
            ("reduction", self.reduction, ("mean", "sum", "none")),
            ("check_targets", self.check_targets, ("auto", "always", "never")),
            ("quantize", self.quantize, QUANTIZE_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        if not 0.0 <= self.dropout < 1.0 or self.capacity_factor < 1.0 or self.tail_chunk < 1:
            raise ValueError(
                f"need 0 <= dropout < 1, capacity_factor >= 1 and tail_chunk >= 1, got {self.dropout}, "
                f"{self.capacity_factor}, {self.tail_chunk}"
            )
        if self.chunk_above < 0:
            raise ValueError(f"chunk_above must be >= 0 (logit elements), got {self.chunk_above}")


_use_count = getattr(torch._C, "_storage_Use_Count", None)  # private; without it nothing is reused


class _Scratch:
    """Reusable CPU scratch for the (n, C) log-probs and softmax of the kept-logits loss (`_LinearNLL`, chunk=0).

    With glibc's malloc a fresh tensor above its mmap threshold (at most 32 MiB) comes straight from the OS and
    costs a page fault per 4 KiB: 30-45 ms for each (2048, 20000) fp32 tensor, two per step. A pooled buffer is
    handed out again only when no tensor uses its memory any more (its storage's use count is back to what it was
    when only the pool held it), so retain_graph, several forwards before one backward, and gradcheck stay exact;
    they just get fresh memory.
    """

    def __init__(self, slots: int = 4, min_bytes: int = 1 << 20):
        self.slots, self.min_bytes = slots, min_bytes
        self.bases: list[tuple[torch.Tensor, int]] = []  # (1-D buffer, its storage use count when unused)
        self.lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        n = math.prod(shape)
        if device.type != "cpu" or _use_count is None or n * dtype.itemsize < self.min_bytes:
            return torch.empty(shape, dtype=dtype, device=device)
        with self.lock:  # the check and the view that marks a buffer used must not interleave across threads
            free = [
                i
                for i, (b, unused) in enumerate(self.bases)
                if b.dtype == dtype and _use_count(b.untyped_storage()._cdata) == unused
            ]
            size = [self.bases[i][0].numel() for i in free]
            fits = [i for i, m in zip(free, size, strict=True) if n <= m <= 4 * n]  # leave far larger ones be
            if fits:
                base = min((self.bases[i][0] for i in fits), key=torch.Tensor.numel)
            else:
                small = [i for i, m in zip(free, size, strict=True) if m < n]
                if small:  # replace the smallest free buffer that is too small (a tail's rows vary by step)
                    del self.bases[min(small, key=lambda i: self.bases[i][0].numel())]
                base = torch.empty(n + (n // 8 if small else 0), dtype=dtype)  # headroom once sizes vary
                if len(self.bases) < self.slots:
                    self.bases.append((base, _use_count(base.untyped_storage()._cdata)))
            return base[:n].view(shape)

    def clear(self) -> None:
        with self.lock:
            self.bases = []

    def __reduce__(self):  # copies and pickles of the layer start with an empty pool (a lock cannot be copied)
        return (_Scratch, (self.slots, self.min_bytes))


def _log_softmax_(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last dim, written over `logits` on CPU (a fresh (n, C) buffer costs a page fault per
    4 KiB there: 30-45 ms for a 2048 x 20000 head). Elsewhere, and under torch.compile, out of place."""
    if logits.device.type == "cpu" and not _is_compiling():
        return torch.log_softmax(logits, -1, out=logits)  # CPU kernel: row max and sum first, then x - lse
    return torch.log_softmax(logits, -1)


def _softmax_minus_onehot(logp: torch.Tensor, target: torch.Tensor, scratch: _Scratch | None = None) -> torch.Tensor:
    """(n, C) softmax - onehot(target) from saved log-probs: the gradient of the NLL for an upstream grad of 1."""
    s = logp.exp() if scratch is None else torch.exp(logp, out=scratch.empty(logp.shape, logp.dtype, logp.device))
    return s.scatter_add_(1, target[:, None], s.new_full((s.shape[0], 1), -1.0))


class _LinearNLL(torch.autograd.Function):
    """Per-row NLL of `x @ weight.T + bias`: the head's and each tail's loss, with its own backward.

    chunk = 0 (the head, and tails up to `chunk_above` logits): one matmul, bias and log_softmax in place, the
    (n, C) log-probs kept for backward. Backward turns them into softmax - onehot with one exp and applies the
    upstream grad g on the narrow side: dx = (S @ W) * g, dW = S.T @ (x * g), db = S.T @ g, so no pass over the
    (n, C) tensor scales it.
    chunk > 0 (larger tails): the logits are never stored. Forward runs over column chunks with a running
    logsumexp; backward recomputes each chunk and turns it into softmax - onehot in place, so everything a chunk
    touches stays in cache: one extra matmul (cheap for a narrow projection) and no (n, C) activations. On a 2-core
    CPU with the reused scratch, keeping the log-probs is faster up to ~10M logits (0.7-0.9x the time at 3-6M)
    and chunking wins beyond (0.77x the time at 254 x 212,144 with an 8-wide projection); chunk_above = 4M logits
    (16 MB fp32) also bounds the activation memory a tail keeps.
    Matmuls run in the autocast dtype when autocast is on; log-softmax, logsumexp and gradients accumulate in
    >= fp32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, target, chunk, scratch=None):
        dt = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        acc = torch.promote_types(dt, torch.float32)
        ctx.chunk, ctx.dt, ctx.scratch = chunk, dt, scratch
        with torch.autocast(x.device.type, enabled=False):
            xc, wc = x.to(dt), weight.to(dt)
            if chunk == 0:
                shape = (x.shape[0], weight.shape[0])
                lg = (
                    torch.empty(shape, dtype=acc, device=x.device)
                    if scratch is None
                    else scratch.empty(shape, acc, x.device)
                )  # (n, C) logits, then log-probs, in place
                if dt == acc:
                    torch.mm(xc, wc.t(), out=lg)
                else:
                    lg.copy_(xc @ wc.t())
                if bias is not None:
                    lg += bias  # in place: addmm would first copy the broadcast bias over the whole output
                logp = _log_softmax_(lg)
                ctx.save_for_backward(x, weight, bias, target, logp)
                return -logp.gather(1, target[:, None]).squeeze(1)
            n, C = x.shape[0], weight.shape[0]
            lse = x.new_full((n,), -math.inf, dtype=acc)
            picked = x.new_zeros(n, dtype=acc)
            for c0 in range(0, C, chunk):
                c1 = min(C, c0 + chunk)
                lg = (xc @ wc[c0:c1].t()).to(lse.dtype)
                if bias is not None:
                    lg += bias[c0:c1]
                lse = torch.logaddexp(lse, lg.logsumexp(1))
                inside = (target >= c0) & (target < c1)
                picked += torch.where(
                    inside, lg.gather(1, (target - c0).clamp(0, c1 - c0 - 1)[:, None]).squeeze(1), 0.0
                )
        ctx.save_for_backward(x, weight, bias, target, lse)
        return lse - picked

    @staticmethod
    def backward(ctx, g):
        if ctx.chunk == 0:
            return _LinearNLL._backward_kept(ctx, g)
        x, weight, bias, target, lse = ctx.saved_tensors
        chunk, dt = ctx.chunk, ctx.dt
        xc, wc = x.to(dt), weight.to(dt)
        C = weight.shape[0]
        g = g.to(lse.dtype)
        gx = torch.zeros(x.shape, dtype=lse.dtype, device=x.device)
        gw = torch.empty(weight.shape, dtype=lse.dtype, device=x.device)
        gb = None if bias is None else torch.empty(C, dtype=lse.dtype, device=x.device)
        for c0 in range(0, C, chunk):
            c1 = min(C, c0 + chunk)
            lg = (xc @ wc[c0:c1].t()).to(lse.dtype)
            if bias is not None:
                lg += bias[c0:c1]
            s = lg.sub_(lse[:, None]).exp_().mul_(g[:, None])  # softmax * g, (n, c)
            inside = (target >= c0) & (target < c1)
            s.scatter_add_(1, (target - c0).clamp(0, c1 - c0 - 1)[:, None], torch.where(inside, -g, 0.0)[:, None])
            sd = s.to(dt)
            gw[c0:c1] = (sd.t() @ xc).to(lse.dtype)
            gx += (sd @ wc[c0:c1]).to(lse.dtype)
            if gb is not None:
                gb[c0:c1] = s.sum(0)
        return gx.to(x.dtype), gw.to(weight.dtype), None if gb is None else gb.to(bias.dtype), None, None, None

    @staticmethod
    def _backward_kept(ctx, g):
        x, weight, bias, target, logp = ctx.saved_tensors
        dt = ctx.dt
        with torch.autocast(x.device.type, enabled=False):
            g = g.to(logp.dtype)
            s = _softmax_minus_onehot(logp, target, ctx.scratch)  # (n, C), without g
            sd = s.to(dt)
            gx = (sd @ weight.to(dt)).to(logp.dtype).mul_(g[:, None])  # (n, d)
            gw = sd.t() @ (x.to(logp.dtype) * g[:, None]).to(dt)  # (C, d)
            gb = None if bias is None else s.t() @ g  # (C,)
        return gx.to(x.dtype), gw.to(weight.dtype), None if gb is None else gb.to(bias.dtype), None, None, None


def linear_nll(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    chunk: int = 0,
    scratch: _Scratch | None = None,
) -> torch.Tensor:
    """(n,) per-row NLL of `x @ weight.T + bias` (fp32 or wider): the loss kernel the head and every tail run.

    chunk = 0 keeps the (n, C) log-probs for backward (the head, and tails up to `chunk_above` logits); chunk > 0
    runs `chunk` classes at a time and recomputes them in backward (see `_LinearNLL`). `scratch` (a `LossScratch`)
    reuses CPU buffers from call to call, as the layer does with `reuse_buffers`. vocabopt's device profile times
    the layer's loss through this function.
    """
    return _LinearNLL.apply(x, weight, bias, target, chunk, scratch)


LossScratch = _Scratch  # the CPU buffer pool `linear_nll` reuses (public name)


# --- weight-only int8 (inference) ---------------------------------------------------------------------------------

_int8pack_mm = getattr(torch, "_weight_int8pack_mm", None)  # torch's CPU weight-only int8 matmul (private op)


def quantize_int8(weight: torch.Tensor, scale_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 of a (out, in) weight: (q (out, in) int8, scale (out,)).

    scale_j = max_k |W_jk| / 127 (1 for an all-zero row), rounded to `scale_dtype` (default the weight's) first,
    then q_jk = round(W_jk / scale_j) in [-127, 127]; the dequantised weight q_jk * scale_j is within scale_j / 2
    of W_jk.
    """
    w = weight.detach().float()  # (out, in)
    amax = w.abs().amax(1)  # (out,)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    scale = scale.to(scale_dtype or weight.dtype)  # the stored scale, so q is rounded against what dequantises
    q = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def int8_path(device: torch.device, dtype: torch.dtype, in_features: int) -> str:
    """Which matmul an Int8Linear runs for inputs of `dtype` on `device`.

    "torch._weight_int8pack_mm": torch's own weight-only int8 kernel, taken for bf16 inputs on CPU when the row
    width is a multiple of 16 (its AVX-512 loop reads 16 values at a time from 32-byte aligned rows; other widths
    crash in torch 2.13). Its fp32 CPU path is a scalar loop, 7-30x slower than an fp32 matmul here (2.13, 2-core
    Xeon), so fp32 (and fp16, GPU) inputs take "dequantize per call": q.to(dtype) @ x, times the scales.
    """
    if _int8pack_mm is not None and device.type == "cpu" and dtype == torch.bfloat16 and in_features % 16 == 0:
        return "torch._weight_int8pack_mm"
    return "dequantize per call"


class Int8Linear(nn.Module):
    """y = x @ (q * scale[:, None]).T + bias with int8 `qweight` (out, in) and per-output-channel `scale` (out,).

    Inference only: every tensor is a buffer (nothing to train). `load_state_dict` also accepts a floating-point
    `weight` (a checkpoint of the unquantised layer) and quantises it on load.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        dtype = dtype or torch.float32
        self.register_buffer("qweight", torch.zeros((out_features, in_features), dtype=torch.int8))  # (out, in)
        self.register_buffer("scale", torch.ones(out_features, dtype=dtype))  # (out,)
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)  # (out,)

    @classmethod
    def from_linear(cls, linear: nn.Module) -> Int8Linear:
        w = linear.weight
        m = cls(w.shape[1], w.shape[0], bias=linear.bias is not None, dtype=w.dtype).to(w.device)
        q, scale = quantize_int8(w)
        m.qweight.copy_(q)
        m.scale.copy_(scale)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach())
        return m

    def dequantize(self) -> torch.Tensor:
        """(out, in) weight in the scale's dtype: q * scale."""
        return self.qweight.to(self.scale.dtype) * self.scale[:, None]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in) -> (n, out) x @ W.T without the bias, by `int8_path`."""
        if int8_path(x.device, x.dtype, self.in_features) == "torch._weight_int8pack_mm" and x.dim() == 2:
            x = x.contiguous()
            if x.data_ptr() % 32:  # the kernel's aligned loads need 32-byte aligned rows
                x = x.clone()
            return _int8pack_mm(x, self.qweight, self.scale.to(x.dtype))
        return torch.nn.functional.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x.reshape(-1, self.in_features)).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        w = state_dict.pop(prefix + "weight", None)
        if w is not None and prefix + "qweight" not in state_dict:  # an unquantised checkpoint: quantise it
            state_dict[prefix + "qweight"], state_dict[prefix + "scale"] = quantize_int8(w, self.scale.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _weight_and_bias(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (out, in) weight a Linear or an Int8Linear computes with (dequantised), and its bias."""
    return (m.dequantize(), m.bias) if isinstance(m, Int8Linear) else (m.weight, m.bias)


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (int8 weights, scales, biases, ...)."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class AdaptiveSoftmax(nn.Module):
    """Adaptive softmax head: `loss = head(hidden, targets)`, plus `log_prob`, `topk`, `predict`, `sample`.

    Args:
        config: the layer's design (usually filled in from a vocabopt Plan).
        order: (V,) int64, frequency rank -> original token id.
        counts: (V,) int64 token counts by rank, used for `unigram_init`; optional.
    """

    # What bad inputs raise: ValueError here; vocabopt.build_layer sets vocabopt's InputError (a ValueError too) on
    # the layers it builds, so that vocabopt's CLI reports them in one line.
    invalid_input: type[ValueError] = ValueError

    def __init__(self, config: AdaptiveHeadConfig, order: torch.Tensor, counts: torch.Tensor | None = None):
        super().__init__()
        self.config = cfg = config
        V, d = cfg.vocab_size, cfg.hidden
        order = torch.as_tensor(order, dtype=torch.long).reshape(-1)
        if order.numel() != V or not torch.equal(torch.sort(order).values, torch.arange(V)):
            raise self.invalid_input(
                f"order must be a permutation of 0..{V - 1} (rank -> token id), got {order.numel()} ids"
            )
        self.edges = [0, *cfg.cutoffs, V]  # cluster c holds ranks [edges[c], edges[c+1])
        self.shortlist = cfg.cutoffs[0]
        self.n_tails = len(cfg.cutoffs)
        self.register_buffer("order", order.clone())  # (V,) rank -> id
        self.register_buffer("rank_of", torch.empty_like(order).scatter_(0, order, torch.arange(V)))  # id -> rank
        self.register_buffer("boundaries", torch.tensor(cfg.cutoffs, dtype=torch.long), persistent=False)
        self.register_buffer("dropped_tokens", torch.zeros((), dtype=torch.long))  # static-path overflow count
        self.head = nn.Linear(d, self.shortlist + self.n_tails, bias=cfg.head_bias)  # (d) -> shortlist + J
        self.proj = nn.ModuleList(nn.Linear(d, p, bias=False) for p in cfg.proj_dims)  # (d) -> (p_i)
        self.out = nn.ModuleList(  # (p_i) -> cluster size
            nn.Linear(p, hi - lo, bias=cfg.tail_bias)
            for p, lo, hi in zip(cfg.proj_dims, self.edges[1:-1], self.edges[2:], strict=True)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self._scratch = _Scratch(slots=2 * (self.n_tails + 2))  # log-probs + softmax per cluster + spares (CPU)
        self._targets_checked = False
        self._warn_key = id(self)  # this layer's entry in the dropped-token warning's rate limit
        self.last_tail_evals = {"evaluated": 0, "skipped": 0}  # of the last topk / predict / sample call
        if cfg.unigram_init and counts is not None:
            self.init_biases_from_counts(torch.as_tensor(counts))
        if cfg.quantize:
            self._swap_int8(cfg.quantize)
            self.eval()  # inference only: built ready to load int8 (or fp32) weights and generate

    # --- weight-only int8 (inference) ------------------------------------------------------------------------------

    @torch.no_grad()
    def quantize_(self, mode: str = "int8-tails") -> AdaptiveSoftmax:
        """Convert this (trained) layer in place to weight-only int8 with per-output-channel scales; returns it.

        "int8-tails": each tail's projection and output weights; "int8": the head too. Biases stay in their
        dtype. The layer then serves log_prob / topk / predict / sample / nucleus and evaluation losses (in eval
        mode); training it raises. Matmul path: `int8_path` (torch's int8 kernel or dequantise per call).
        """
        if mode not in QUANTIZE_MODES[1:]:
            raise self.invalid_input(f"quantize={mode!r} is not one of {QUANTIZE_MODES[1:]}")
        if self.config.quantize == "int8" and mode == "int8-tails":
            raise self.invalid_input("this layer's head is already int8; quantize_('int8-tails') cannot undo that")
        self._swap_int8(mode)
        self.config = replace(self.config, quantize=mode)
        self.refresh_bounds()
        return self.eval()

    def _swap_int8(self, mode: str) -> None:
        for mods in (self.proj, self.out):
            for i, m in enumerate(mods):
                if not isinstance(m, Int8Linear):
                    mods[i] = Int8Linear.from_linear(m)
        if mode == "int8" and not isinstance(self.head, Int8Linear):
            self.head = Int8Linear.from_linear(self.head)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the weights, scales and biases: {"head": ..., "tails": ... (projections + outputs)}."""
        return {"head": tensor_bytes(self.head), "tails": tensor_bytes(self.proj) + tensor_bytes(self.out)}

    # --- initialisation ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_biases_from_counts(self, counts: torch.Tensor) -> None:
        """Biases := log unigram frequencies (add-one smoothed), so the untrained layer predicts the unigram."""
        p = counts.double().reshape(-1) + 1.0  # (V,) by rank
        p = p / p.sum()
        if self.head.bias is not None:
            cluster_mass = [p[lo:hi].sum() for lo, hi in zip(self.edges[1:-1], self.edges[2:], strict=True)]
            self.head.bias.copy_(torch.cat([p[: self.shortlist], torch.stack(cluster_mass)]).log())
        for out, lo, hi in zip(self.out, self.edges[1:-1], self.edges[2:], strict=True):
            if out.bias is not None:
                out.bias.copy_((p[lo:hi] / p[lo:hi].sum()).log())  # log p(token | cluster)

    # --- training --------------------------------------------------------------------------------------------------

    def forward(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        reduction: str | None = None,
        ignore_index: int | None = None,
    ) -> torch.Tensor:
        """Negative log-likelihood of `targets` (original ids) with F.cross_entropy's semantics.

        Args:
            hidden: (..., d) hidden states.
            targets: (...) token ids in the tokenizer's order; `ignore_index` entries contribute nothing.
            reduction: "mean" (over non-ignored tokens), "sum", or "none" (returns (...), 0 where ignored).
        """
        reduction = reduction or self.config.reduction
        ignore_index = self.config.ignore_index if ignore_index is None else ignore_index
        if self.config.quantize and self.training:
            raise self.invalid_input(
                f"this layer is quantized ({self.config.quantize}, inference only) and cannot be trained; call "
                ".eval() to score targets, or train the unquantized layer and quantize_() it afterwards"
            )
        x, t = self._flatten(hidden, targets)  # (N, d), (N,)
        nll, valid = self._token_nll(x, t, ignore_index)  # (N,) fp32, (N,) bool
        if reduction == "none":
            return nll.reshape(targets.shape)
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.sum() / valid.sum()  # nan when every target is ignored, as F.cross_entropy
        raise self.invalid_input(f"reduction={reduction!r} is not one of ('mean', 'sum', 'none')")

    def target_log_prob(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(...) log-probability of each target (0 where ignored)."""
        return -self.forward(hidden, targets, reduction="none")

    def _flatten(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.config.hidden
        if hidden.shape[-1] != d:
            raise self.invalid_input(
                f"hidden has width {hidden.shape[-1]} (shape {tuple(hidden.shape)}) but the layer expects {d}; "
                "build the layer from a plan with the model's hidden size"
            )
        if hidden.shape[:-1] != targets.shape:
            raise self.invalid_input(
                f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree: "
                "targets must have hidden's shape without the last dimension"
            )
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise self.invalid_input(f"targets must be integer token ids, got {targets.dtype}")
        return hidden.reshape(-1, d), targets.reshape(-1).long()

    def _check_targets(self, t: torch.Tensor, valid: torch.Tensor) -> None:
        """Raise on ids outside [0, V). Costs one host read on accelerators, so by default only the first call."""
        mode = self.config.check_targets
        if mode == "never" or _is_compiling():
            return
        if mode == "auto" and t.device.type != "cpu" and self._targets_checked:
            return
        self._targets_checked = True
        bad = valid & ((t < 0) | (t >= self.config.vocab_size))
        if bool(bad.any()):
            lo, hi = int(t[valid].min()), int(t[valid].max())
            raise self.invalid_input(
                f"targets hold ids in [{lo}, {hi}] but the plan's vocabulary has {self.config.vocab_size} ids "
                f"(0..{self.config.vocab_size - 1}); build the plan from stats made with the model's tokenizer, "
                f"or mark padding with ignore_index={self.config.ignore_index}"
            )

    def _token_nll(self, x: torch.Tensor, t: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        valid = t != ignore_index  # (N,)
        self._check_targets(t, valid)
        rank = self.rank_of[torch.where(valid, t, 0).clamp(0, self.config.vocab_size - 1)]  # (N,)
        cluster = torch.bucketize(rank, self.boundaries, right=True)  # (N,) 0 = head, i = tail i
        head_target = torch.where(cluster == 0, rank, self.shortlist - 1 + cluster)  # (N,)
        w, b = _weight_and_bias(self.head)  # (shortlist + J, d), dequantised when int8
        nll = linear_nll(x, w, b, head_target, 0, self._scratch_or_none())  # (N,)
        cluster = torch.where(valid, cluster, 0)  # ignored tokens never reach a tail
        if self._use_static(x):
            tail, kept = self._tails_static(x, rank, cluster)
            valid = valid & kept
            if self.training:
                _note_dropped(self.dropped_tokens, self._warn_key)
        else:
            tail = self._tails_exact(x, rank, cluster)
        nll = torch.where(valid, nll + tail, 0.0)
        return nll, valid

    def _use_static(self, x: torch.Tensor) -> bool:
        path = self.config.path
        if path == "auto":  # eager: exact on every device (one host read); compiled: static shapes
            return _is_compiling()
        return path == "static"

    def _tail_nll(self, i: int, x: torch.Tensor, rel_target: torch.Tensor) -> torch.Tensor:
        z = self.drop(self.proj[i](x))  # (n, p_i)
        w, b = _weight_and_bias(self.out[i])  # (size_i, p_i), dequantised when int8 (evaluation only)
        # Logits that fit in cache are kept (faster); larger ones are chunked and recomputed in backward.
        big = x.shape[0] * w.shape[0] > self.config.chunk_above
        chunk = self.config.tail_chunk if big else 0
        return linear_nll(z, w, b, rel_target, chunk, self._scratch_or_none())  # (n,)

    def _scratch_or_none(self) -> _Scratch | None:
        return self._scratch if self.config.reuse_buffers and not _is_compiling() else None

    def release_scratch(self) -> None:
        """Free the CPU loss scratch kept between steps (it is rebuilt on the next training forward)."""
        self._scratch.clear()

    def _tail_logits(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """(n, p_i) -> (n, size_i). The bias is added in place: on CPU, addmm would first copy the broadcast
        bias into the whole (n, size_i) output, a full extra pass over the largest tensor of the layer."""
        out = self.out[i]
        logits = out.matmul(z) if isinstance(out, Int8Linear) else z @ out.weight.t()  # (n, size_i)
        return logits if out.bias is None else logits.add_(out.bias)

    def _tails_exact(self, x: torch.Tensor, rank: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
        """Each tail on exactly its rows: one stable sort by cluster, one host read of the J+1 row counts.

        The rows of all tails are gathered at once and split: backward then scatters one (N, d) gradient for
        every tail together instead of one zero-filled (N, d) per tail."""
        perm = torch.argsort(cluster, stable=True)  # (N,) rows grouped by cluster, head rows first
        sizes = torch.bincount(cluster, minlength=self.n_tails + 1).tolist()  # the one host read
        rows = perm[sizes[0] :]  # (n_tail,) rows of every tail, tail by tail
        xs = x.index_select(0, rows).split(sizes[1:])  # (n_i, d) per tail
        ranks = rank.index_select(0, rows).split(sizes[1:])  # (n_i,) per tail
        parts = [x.new_zeros(sizes[0], dtype=torch.promote_types(x.dtype, torch.float32))]  # head rows: no tail
        for i in range(self.n_tails):
            parts.append(self._tail_nll(i, xs[i], ranks[i] - self.edges[i + 1]))
        sorted_nll = torch.cat(parts)  # (N,) in sorted order
        return torch.empty_like(sorted_nll).scatter_(0, perm, sorted_nll)  # (N,) back in token order

    def capacity(self, n_tokens: int) -> list[int]:
        """Rows each tail runs on in the static path, for a batch of `n_tokens` (a multiple of 16, <= n_tokens)."""
        shares = self.config.shares or [
            (hi - lo) / self.config.vocab_size for lo, hi in zip(self.edges, self.edges[1:], strict=False)
        ]
        caps = []
        for p in shares[1:]:
            mean = n_tokens * p
            cap = self.config.capacity_factor * mean + 8.0 * math.sqrt(mean) + 16
            caps.append(min(n_tokens, 16 * math.ceil(cap / 16)))
        return caps

    def _tails_static(
        self, x: torch.Tensor, rank: torch.Tensor, cluster: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each tail on a fixed number of rows: no host sync, static shapes. Returns (tail nll, kept mask)."""
        N = x.shape[0]
        perm = torch.argsort(cluster, stable=True)  # (N,) rows grouped by cluster
        # (J+1,) rows per cluster, on the device. Not bincount: it reads the input's range to the host.
        counts = torch.zeros(self.n_tails + 1, dtype=torch.long, device=x.device)
        counts = counts.scatter_add_(0, cluster, torch.ones_like(cluster))
        starts = torch.cumsum(counts, 0) - counts  # (J+1,) first sorted position of each cluster
        tail = x.new_zeros(N, dtype=torch.promote_types(x.dtype, torch.float32))
        kept = torch.ones(N, dtype=torch.bool, device=x.device)
        caps = self.capacity(N) if self.training else [N] * self.n_tails  # evaluation never drops a token
        for i, cap in enumerate(caps):
            slot = torch.arange(cap, device=x.device)  # (cap,)
            live = slot < counts[i + 1]  # (cap,) slots holding a token of this cluster
            rows = perm[(starts[i + 1] + slot).clamp(max=N - 1)]  # (cap,) token rows (junk where not live)
            rel = torch.where(live, rank[rows] - self.edges[i + 1], 0).clamp(
                0, self.edges[i + 2] - self.edges[i + 1] - 1
            )
            nll = torch.where(live, self._tail_nll(i, x.index_select(0, rows), rel), 0.0)  # (cap,)
            tail = tail.index_add(0, rows, nll)
            over = (counts[i + 1] - cap).clamp(min=0)  # tokens of this cluster beyond capacity
            in_over = (torch.arange(N, device=x.device) >= starts[i + 1] + cap) & (
                torch.arange(N, device=x.device) < starts[i + 1] + counts[i + 1]
            )  # (N,) sorted positions that overflowed
            kept = kept & ~torch.zeros_like(kept).scatter_(0, perm, in_over)
            self.dropped_tokens.add_(over)
        return tail, kept

    # --- adaptive input embedding (tie_input) -------------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) token ids -> (..., d) embeddings sharing the output weights (adaptive input, Baevski & Auli).

        Head tokens use their row of the head weight; a tail token uses its output row (p_i) mapped back to d
        through its cluster's projection. Static shapes: each cluster's small (N, p_i) x (p_i, d) runs on all N.
        """
        if not self.config.tie_input:
            raise self.invalid_input("embed() needs tie_input=True in the layer's config")
        flat = ids.reshape(-1).long()
        rank = self.rank_of[flat.clamp(0, self.config.vocab_size - 1)]  # (N,)
        cluster = torch.bucketize(rank, self.boundaries, right=True)  # (N,)
        w = _weight_and_bias(self.head)[0]  # (shortlist + J, d)
        out = w[rank.clamp(max=self.shortlist - 1)] * (cluster == 0).unsqueeze(1).to(w.dtype)  # (N, d)
        for i in range(self.n_tails):
            lo, hi = self.edges[i + 1], self.edges[i + 2]
            rows = _weight_and_bias(self.out[i])[0][(rank - lo).clamp(0, hi - lo - 1)]  # (N, p_i)
            vec = rows @ _weight_and_bias(self.proj[i])[0]  # (N, d)
            out = out + vec * (cluster == i + 1).unsqueeze(1).to(vec.dtype)
        return out.reshape(*ids.shape, self.config.hidden)

    # --- inference ---------------------------------------------------------------------------------------------

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., V) fp32 log-probabilities in ORIGINAL id order (evaluates every cluster)."""
        x = self._flat_hidden(hidden)
        logits, zs = self._head_out(x)
        head_lp = torch.log_softmax(logits.float(), dim=-1)  # (N, shortlist + J)
        parts = [head_lp[:, : self.shortlist]]
        for i in range(self.n_tails):
            tail_lp = self._tail_log_prob(i, x) if zs is None else self._tail_lp_z(i, zs[i])  # (N, size_i)
            parts.append(tail_lp + head_lp[:, self.shortlist + i, None])
        by_rank = torch.cat(parts, dim=1)  # (N, V) in rank order
        return by_rank.index_select(1, self.rank_of).reshape(*hidden.shape[:-1], self.config.vocab_size)

    def _flat_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[-1] != self.config.hidden:
            raise self.invalid_input(
                f"hidden has width {hidden.shape[-1]} but the layer expects {self.config.hidden}; "
                "build the layer from a plan with the model's hidden size"
            )
        return hidden.reshape(-1, self.config.hidden)

    def _tail_log_prob(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self._tail_logits(i, self.proj[i](x)).float(), dim=-1)  # (n, size_i), no dropout

    def _tail_lp_z(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """(n, p_i) projected rows -> (n, size_i) fp32 log p(token | cluster i)."""
        return torch.log_softmax(self._tail_logits(i, z).float(), dim=-1)

    def _bound_stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-weights constants of the tail bounds, cached until a tail parameter changes (in place or replaced).

        Returns the projections stacked, (sum p_i, d), so one matmul projects a row for every tail; and per tail
        (J,) R_i = max_j ||W_j - mean_j W_j||, G_i = max_j b_j - mean_j b_j - log size_i, and A_i = the largest
        |logit| scale (max_j ||W_j|| and max |b_j|) for the rounding slack. Weights changed through `.data`
        bypass the version counter: `train()`/`eval()` drop the cache, and so does `refresh_bounds()`.
        """
        params = [  # the tails' own tensors, read directly (a generation call at batch 1 is ~20 ops: keep it cheap)
            t for m in (*self.proj, *self.out) for t in (*m._parameters.values(), *m._buffers.values()) if t is not None
        ]
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        cached = getattr(self, "_bounds_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        pins = [p.detach() for p in params]  # keep these storages alive, so no new weight reuses their address
        if isinstance(self.proj[0], Int8Linear):  # int8 projections stay int8: one Int8Linear of them all
            stacked = Int8Linear(self.config.hidden, sum(self.config.proj_dims), bias=False).to(pins[0].device)
            stacked.qweight = torch.cat([p.qweight for p in self.proj], 0)  # (sum p_i, d)
            stacked.scale = torch.cat([p.scale for p in self.proj], 0)  # (sum p_i,)
        elif (fused := self._fused_weight()) is not None:  # the projections' block of the fused buffer, no copy
            stacked = fused[:, self.head.weight.shape[0] :].t().detach()  # (sum p_i, d)
        else:
            stacked = torch.cat([p.weight for p in self.proj], 0).detach()  # (sum p_i, d)
        R, G, A = [], [], []
        for out, lo, hi in zip(self.out, self.edges[1:-1], self.edges[2:], strict=True):
            w = _weight_and_bias(out)[0].detach().float()  # (size_i, p_i), as the layer computes with it
            R.append((w - w.mean(0)).norm(dim=1).max())
            b = out.bias.detach().float() if out.bias is not None else w.new_zeros(1)
            G.append(b.max() - b.mean() - math.log(hi - lo))
            A.append(torch.maximum(w.norm(dim=1).max(), b.abs().max()))
        stats = (stacked, torch.stack(R), torch.stack(G), torch.stack(A))
        self._bounds_cache = (key, stats, pins)
        return stats

    def refresh_bounds(self) -> None:
        """Drop the cached tail-bound constants (only needed after editing tail weights through `.data`)."""
        self._bounds_cache = None

    def train(self, mode: bool = True) -> AdaptiveSoftmax:
        self.refresh_bounds()  # weights may have been edited in any way since the last generation call
        if mode and self.decode_layout:
            self.decode_layout_(False)  # training runs on nn.Linear's own (out, in) layout
        return super().train(mode)

    @property
    def decode_layout(self) -> bool:
        """True when the float weights are stored column-major (see `decode_layout_`)."""
        floats = [m.weight for m in [self.head, *self.proj, *self.out] if not isinstance(m, Int8Linear)]
        return any(w.stride(0) == 1 and w.shape[1] > 1 for w in floats)

    @torch.no_grad()
    def decode_layout_(self, column_major: bool = True) -> AdaptiveSoftmax:
        """Store every float weight (head, projections, tail outputs) column-major, i.e. its (in, out) transpose
        contiguous, for generation at small batches; returns the layer, in eval mode. Values, shapes and state_dict
        are unchanged, outputs equal up to float rounding (another summation order). On CPU a one-row product then
        streams long contiguous rows: benchmarks/decode_latency.py times both layouts. `decode_layout_(False)` or
        `train()` restores the row-major (out, in) layout nn.Linear uses. int8 weights keep their own layout.
        The weights get new storage: call it before anything holds their memory (FSDP, CUDA graphs, a compiled
        module).
        """
        fuse = [self.head, *self.proj]
        if column_major and not any(isinstance(m, Int8Linear) for m in fuse):
            # the head's and the projections' weights as column blocks of one (d, S + J + sum p) buffer: a decode
            # step's first product is then one matmul (`_fused_weight`)
            blocks = [m.weight.data.t() for m in fuse]  # (d, out) each
            buf = torch.cat(blocks, 1).contiguous()
            at = 0
            for m, b in zip(fuse, blocks, strict=True):
                m.weight.data = buf[:, at : at + b.shape[1]].t()
                at += b.shape[1]
        for m in [self.head, *self.proj, *self.out]:
            if isinstance(m, Int8Linear) or (column_major and m.weight.stride(0) == 1):
                continue
            w = m.weight.data
            m.weight.data = w.t().contiguous().t() if column_major else w.contiguous()
        self.refresh_bounds()
        return super().train(False) if column_major else self

    def _fused_weight(self) -> torch.Tensor | None:
        """The (d, S + J + sum p) buffer holding the head's and every projection's weights side by side (as
        `decode_layout_` lays them), or None when they are not so laid (any other layout, int8, moved apart) or
        when autograd records (a view past the head's own weight would not carry the projections' gradients)."""
        if isinstance(self.head, Int8Linear) or any(isinstance(p, Int8Linear) for p in self.proj):
            return None
        if torch.is_grad_enabled() and self.head.weight.requires_grad:
            return None
        w = self.head.weight
        total = w.shape[0] + sum(self.config.proj_dims)
        if w.stride() != (1, total):
            return None
        at = w.data_ptr() + w.shape[0] * w.element_size()
        for p in self.proj:
            pw = p.weight
            if pw.stride() != (1, total) or pw.data_ptr() != at or pw.dtype != w.dtype or pw.device != w.device:
                return None
            at += pw.shape[0] * pw.element_size()
        return w.t().as_strided((w.shape[1], total), (total, 1))

    def _head_out(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(N, S + J) head logits, and [(N, p_i)] every tail's projection when the weights are fused (one
        product for both, `_fused_weight`; else None). log_prob and the generation methods share it, so their
        head logits are the same numbers."""
        fused = self._fused_weight()
        if fused is None:
            return self.head(x), None
        out = x @ fused  # (N, S + J + sum p)
        logits = out[:, : self.head.weight.shape[0]]
        if self.head.bias is not None:
            logits = logits + self.head.bias
        return logits, list(out[:, self.head.weight.shape[0] :].split(self.config.proj_dims, dim=1))

    def _head_and_bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The shared work of one generation call, computed once: head log-probs (N, shortlist + J), every tail's
        projection [(N, p_i)], and (N, J) upper bounds on the log-prob of any token of each tail.

        Bound (Jensen on the tail's normaliser, lse(s) >= log C + mean(s), then Cauchy-Schwarz): with tail logits
        s_j = z.W_j + b_j, log p(j | tail) = s_j - lse(s) <= ||z|| R + G (see `_bound_stats`); it is capped at 0,
        added to the cluster's head log-prob, and widened by a rounding slack so it also bounds computed values.
        """
        logits, fused_zs = self._head_out(x)
        head_lp = torch.log_softmax(logits.float(), dim=-1)  # (N, shortlist + J)
        stacked, R, G, A = self._bound_stats()
        if fused_zs is not None:
            zs, dt = fused_zs, self.head.weight.dtype
        elif isinstance(stacked, Int8Linear):
            zs, dt = stacked(x).split(self.config.proj_dims, dim=1), stacked.scale.dtype  # [(N, p_i)]
        else:
            zs, dt = torch.nn.functional.linear(x, stacked).split(self.config.proj_dims, dim=1), stacked.dtype
        norms = torch.stack([z.float().norm(dim=1) for z in zs], 1)  # (N, J)
        eps = max(  # the coarser of the weights' and the inputs' precision (an int8 layer fed bf16 rows)
            torch.finfo(dt).eps if dt.is_floating_point else 1e-7,
            torch.finfo(x.dtype).eps if x.dtype.is_floating_point else 1e-7,
        )
        scale = 64 * eps * A  # (J,): slack = 1e-4 + scale * (norms + 1), in log units
        bound = torch.addcmul(G, norms, R).clamp_(max=0.0)  # (N, J) bound on log p(token | tail)
        bound += head_lp[:, self.shortlist :]
        bound += torch.addcmul(scale + 1e-4, norms, scale)  # the rounding slack
        return head_lp, list(zs), bound

    @torch.no_grad()
    def topk(self, hidden: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k (log-probs, original ids), each (..., k), evaluating a tail only where it can matter.

        Every token of tail cluster i has log-prob <= a bound computed without the tail's (size_i, p_i) matmul
        (`_head_and_bounds`), so a row skips cluster i when that bound is below its current k-th best. Tails are
        visited in order of their largest bound. Counts land in `last_tail_evals`. Rows needing a tail are
        gathered with a data-dependent shape (inference only).
        """
        if not 1 <= k <= self.config.vocab_size:
            raise self.invalid_input(f"k={k} must be in [1, vocab_size={self.config.vocab_size}]")
        x = self._flat_hidden(hidden)
        N, S = x.shape[0], self.shortlist
        head_lp, zs, bound = self._head_and_bounds(x)
        kk = min(k, S)
        vals, idx = head_lp[:, :S].topk(kk, dim=1)  # (N, kk), idx are ranks
        if kk < k:  # pad so every row has k slots; -inf slots lose to any real token
            vals = torch.cat([vals, vals.new_full((N, k - kk), -math.inf)], dim=1)
            idx = torch.cat([idx, idx.new_zeros(N, k - kk)], dim=1)
        evaluated = 0
        visit = bound.amax(0).argsort(descending=True).tolist() if N else []  # one host read
        for i in visit:
            need = (bound[:, i] > vals[:, -1]).nonzero().squeeze(1)  # (n,) rows this cluster can change
            if need.numel() == 0:
                continue
            evaluated += need.numel()
            every = need.numel() == N  # every row needs this tail (always so at batch 1): no gathers, no scatters
            z, cluster_lp = (zs[i], head_lp[:, S + i, None]) if every else (zs[i][need], head_lp[need, S + i, None])
            tv, ti = (self._tail_lp_z(i, z) + cluster_lp).topk(min(k, self.edges[i + 2] - self.edges[i + 1]), dim=1)
            old_vals, old_idx = (vals, idx) if every else (vals[need], idx[need])
            mv, mi = torch.cat([old_vals, tv], 1).topk(k, dim=1)
            mid = torch.cat([old_idx, ti + self.edges[i + 1]], 1).gather(1, mi)
            if every:
                vals, idx = mv, mid
            else:
                vals[need], idx[need] = mv, mid
        self.last_tail_evals = {"evaluated": evaluated, "skipped": N * self.n_tails - evaluated}
        shape = (*hidden.shape[:-1], k)
        return vals.reshape(shape), self.order[idx].reshape(shape)

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (...) the most likely original id (exact argmax of `log_prob`)."""
        return self.topk(hidden, 1)[1].squeeze(-1)

    @torch.no_grad()
    def nucleus(
        self, hidden: torch.Tensor, top_p: float, temperature: float = 1.0, top_k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact nucleus (top-p) of softmax(log_prob / temperature): (..., M) log-probs renormalised over the
        nucleus, in descending order, and their (..., M) original ids; entries past a row's nucleus are -inf.

        The nucleus is the shortest prefix of the tokens sorted by probability whose mass reaches `top_p` (at
        least one token); with `top_k` it is taken within the exact top k (HF's order: temperature, top-k, top-p).
        Without top_k a tail is evaluated only while it could hold a nucleus token or move the cut: its tokens'
        bound must sit below the cut token and the bounds on its tempered mass must leave the cut where it is
        (at temperature 1 the head gives every cluster's mass exactly).
        """
        if not 0.0 < top_p <= 1.0:
            raise self.invalid_input(f"top_p must be in (0, 1], got {top_p}")
        if temperature <= 0:
            raise self.invalid_input(f"temperature must be > 0, got {temperature}")
        x = self._flat_hidden(hidden)
        if top_k is not None:
            vals, ids = self.topk(x, top_k)  # (N, k), sorted descending
            sv = vals / temperature
            n = _cut(sv.double().exp().cumsum(1), top_p).clamp(max=sv.shape[1])  # (N,)
        else:
            sv, ranks, n = self._nucleus_ranks(x, top_p, 1.0 / temperature)
            ids = self.order[ranks]
        m = int(n.max()) if n.numel() else 1
        sv, ids = sv[:, :m], ids[:, :m]
        inside = torch.arange(m, device=x.device) < n[:, None]  # (N, M)
        sv = sv.masked_fill(~inside, -math.inf)
        lp = sv - sv.logsumexp(1, keepdim=True)
        shape = (*hidden.shape[:-1], m)
        return lp.reshape(shape), ids.reshape(shape)

    def _nucleus_ranks(self, x: torch.Tensor, top_p: float, a: float):
        """(N, M) tempered log-values a * log p sorted descending, their (N, M) ranks, (N,) nucleus sizes."""
        S, J, N = self.shortlist, self.n_tails, x.shape[0]
        head_lp, zs, bound = self._head_and_bounds(x)
        log_mass = head_lp[:, S:].double()  # (N, J) log P_i, exact
        ub = bound.double().minimum(log_mass)  # (N, J) bound on the largest log p in each tail
        log_c = torch.tensor([math.log(hi - lo) for lo, hi in zip(self.edges[1:-1], self.edges[2:])], device=x.device)
        log_c = log_c.double()
        # Bounds on a tail's tempered mass sum_j p_j^a (power means and p_j <= e^ub), exact at a = 1.
        low = (1 - a) * log_c + a * log_mass if a >= 1 else log_mass + (a - 1) * ub
        high = log_mass + (a - 1) * ub if a >= 1 else (1 - a) * log_c + a * log_mass
        m_lo, m_hi, top = low.exp(), high.exp(), bound * a  # (N, J) each
        vals, cols = head_lp[:, :S] * a, [torch.arange(S, device=x.device)]  # (N, M) values, (M,) their ranks
        shut = torch.zeros(N, J, dtype=torch.bool, device=x.device)  # tails evaluated per row
        n_eval = torch.full((N,), S, dtype=torch.long, device=x.device)
        evaluated = 0
        while True:
            mass = vals.double().exp().sum(1)  # (N,) tempered mass of the evaluated tokens
            z_lo, z_hi = mass + (m_lo * ~shut).sum(1), mass + (m_hi * ~shut).sum(1)
            sv, si, n_lo, n_hi = _sorted_prefix(vals, top_p, z_lo, z_hi)
            open_bound = top.masked_fill(shut, -math.inf)  # (N, J) bounds of the tails not yet evaluated
            open_top = open_bound.amax(1)  # (N,)
            v_cut = sv.gather(1, (n_hi.clamp(max=n_eval) - 1)[:, None]).squeeze(1)
            ok = ((n_lo == n_hi) & (n_hi <= n_eval) & (open_top < v_cut)) | shut.all(1)
            if bool(ok.all()):
                break
            todo = (~ok).nonzero().squeeze(1)
            pick = open_bound.argmax(1)[todo]  # each unsettled row evaluates its most promising open tail
            for i in pick.unique().tolist():
                rows = todo[pick == i]
                lo, hi = self.edges[i + 1], self.edges[i + 2]
                block = vals.new_full((N, hi - lo), -math.inf)
                block[rows] = (self._tail_lp_z(i, zs[i][rows]) + head_lp[rows, S + i, None]) * a
                vals, cols = torch.cat([vals, block], 1), [*cols, torch.arange(lo, hi, device=x.device)]
                shut[rows, i] = True
                n_eval[rows] += hi - lo
                evaluated += rows.numel()
        self.last_tail_evals = {"evaluated": evaluated, "skipped": N * J - evaluated}
        return sv, torch.cat(cols)[si], n_hi.clamp(max=n_eval)

    @torch.no_grad()
    def sample(
        self,
        hidden: torch.Tensor,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """(..., d) -> (...) original ids drawn exactly from softmax(log_prob / temperature), restricted to the
        top_k and then to the top_p nucleus when given (HF's order).

        temperature == 1 without top_k/top_p: two-stage draw (head, then only the chosen tail cluster: at most one
        tail per row). With top_k: exact `topk` (skipping tails), then a draw among those k. With top_p: the
        exact `nucleus` (skipping tails that cannot enter it). temperature != 1 with neither needs every cluster's
        normaliser, so it evaluates the full distribution (nothing skipped).
        """
        if temperature <= 0:
            raise self.invalid_input(f"temperature must be > 0, got {temperature}; use predict() for greedy decoding")
        x = self._flat_hidden(hidden)
        N = x.shape[0]
        if top_p is not None:
            lp, ids = self.nucleus(x, top_p, temperature=temperature, top_k=top_k)  # (N, M)
            return ids.gather(1, _multinomial(lp.exp(), generator)).reshape(hidden.shape[:-1])
        if top_k is not None:
            vals, ids = self.topk(x, top_k)  # (N, k)
            pick = _multinomial(torch.softmax(vals / temperature, dim=1), generator)
            return ids.gather(1, pick).reshape(hidden.shape[:-1])
        if temperature != 1.0:
            probs = torch.softmax(self.log_prob(x) / temperature, dim=1)  # (N, V) by original id
            self.last_tail_evals = {"evaluated": N * self.n_tails, "skipped": 0}
            return _multinomial(probs, generator).reshape(hidden.shape[:-1])
        head_p = torch.softmax(self._head_out(x)[0].float(), dim=-1)  # (N, shortlist + J)
        choice = _multinomial(head_p, generator).squeeze(1)  # (N,) shortlist rank or slot
        rank = choice.clone()  # (N,) final ranks: tail draws overwrite the cluster slots below
        evaluated = 0
        for i in range(self.n_tails):
            rows = (choice == self.shortlist + i).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            evaluated += rows.numel()
            p = self._tail_log_prob(i, x[rows]).exp()  # (n, size_i)
            rank[rows] = _multinomial(p, generator).squeeze(1) + self.edges[i + 1]
        self.last_tail_evals = {"evaluated": evaluated, "skipped": N * self.n_tails - evaluated}
        return self.order[rank].reshape(hidden.shape[:-1])

    def extra_repr(self) -> str:
        c = self.config
        return f"vocab_size={c.vocab_size}, hidden={c.hidden}, cutoffs={c.cutoffs}, proj_dims={c.proj_dims}"


def _is_compiling() -> bool:
    fn = getattr(torch.compiler, "is_compiling", None)
    return bool(fn()) if fn is not None else False


def _cut(csum: torch.Tensor, top_p: float, total: torch.Tensor | None = None) -> torch.Tensor:
    """(N, M) cumulative masses of values sorted descending -> (N,) nucleus sizes: 1 + the number of positions
    whose cumulative mass is below top_p of the (N,) total (default: csum's last column)."""
    total = csum[:, -1] if total is None else total
    return (csum < top_p * total[:, None]).sum(1) + 1


def _sorted_prefix(vals: torch.Tensor, top_p: float, z_lo: torch.Tensor, z_hi: torch.Tensor):
    """The largest values of each row of (N, M) `vals`, sorted, far enough to hold the nucleus cut for a total
    tempered mass of z_lo and of z_hi (N,): (sv, si) (N, w), cut sizes n_lo, n_hi (N,), n <= w unless w = M.
    Tries a partial sort (top 1024) before sorting whole rows of up to V values."""
    M = vals.shape[1]
    if M > 4096:  # a short partial sort settles most peaked rows; torch's topk is slower than sort for wide k
        sv, si = vals.topk(1024, dim=1)  # sorted descending
        csum = sv.double().exp().cumsum(1)  # (N, 1024)
        n_lo, n_hi = _cut(csum, top_p, z_lo), _cut(csum, top_p, z_hi)
        if bool((n_hi <= 1024).all()):
            return sv, si, n_lo, n_hi
    sv, si = vals.sort(1, descending=True)
    csum = sv.double().exp().cumsum(1)  # (N, M)
    return sv, si, _cut(csum, top_p, z_lo), _cut(csum, top_p, z_hi)


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n, C) probabilities -> (n, 1) draws. The draw runs where `generator` lives (torch.multinomial rejects a
    CPU generator for CUDA probabilities), so a seeded CPU generator gives the same ids on every device."""
    if generator is None or generator.device == probs.device:
        return torch.multinomial(probs, 1, generator=generator)
    return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)


class DroppedTokensWarning(UserWarning):
    """The static path dropped target tokens from the loss: a tail cluster had more rows than its capacity."""


_drop_checks: dict[int, tuple[int, int]] = {}  # layer key -> (static training calls, dropped tokens last read)


def _check_dropped(counter: torch.Tensor, key: int) -> None:
    """Warn when `counter` (a layer's `dropped_tokens`) grew since the last check. Rate-limited: reads it (one
    host sync) at calls 1, 2, 4, ..., 256 and then every 256th; never during CUDA-graph capture or when the user
    asked torch to flag syncs (torch.cuda.set_sync_debug_mode)."""
    calls, seen = _drop_checks.get(key, (0, 0))
    calls += 1
    _drop_checks[key] = (calls, seen)
    if (calls & (calls - 1)) and calls % 256:  # not a power of two, nor a multiple of 256
        return
    if counter.device.type == "cuda" and (
        torch.cuda.is_current_stream_capturing() or torch.cuda.get_sync_debug_mode() != 0
    ):
        return
    total = int(counter)
    if total > seen:
        warnings.warn(
            f"adaptive head (static path): {total - seen} target tokens dropped from the loss since the last check "
            f"({total} in all; the layer's dropped_tokens buffer): a tail cluster got more rows than its capacity. "
            "Raise capacity_factor, give the plan's cluster shares, or train eagerly with path='exact'",
            DroppedTokensWarning,
            stacklevel=2,
        )
    _drop_checks[key] = (calls, total)


# Under torch.compile the check runs as an opaque custom op, so its Python (and the warning) runs outside the
# compiled graph, without a graph break. One registration per process, shared by every copy of this file.
_custom_op = getattr(torch.library, "custom_op", None)  # torch >= 2.4
if _custom_op is not None and not hasattr(torch.ops.vocabopt_head, "check_dropped"):

    @_custom_op("vocabopt_head::check_dropped", mutates_args=("counter",))  # declared so the op is never pruned
    def _check_dropped_op(counter: torch.Tensor, key: int) -> None:
        _check_dropped(counter, key)

    @_check_dropped_op.register_fake
    def _(counter: torch.Tensor, key: int) -> None:
        return None


def _note_dropped(counter: torch.Tensor, key: int) -> None:
    if not _is_compiling():
        _check_dropped(counter, key)
    elif _custom_op is not None:
        torch.ops.vocabopt_head.check_dropped(counter, key)


# --- plan (filled in by `vocabopt export`; None in the library copy) ----------------------------------------------
PLAN_CONFIG: dict | None = None
SIDECAR: str | None = None
# --- end plan -----------------------------------------------------------------------------------------------------


def build_head(**overrides) -> AdaptiveSoftmax:
    """The configured, freshly initialised layer of the exported plan (overrides: any AdaptiveHeadConfig field).

    The frequency order (and the counts for the bias init) load from the sidecar next to this file with
    torch.load(weights_only=True): plain tensors, no code.
    """
    if PLAN_CONFIG is None or SIDECAR is None:
        raise ValueError("no plan in this copy; use vocabopt.build_layer(plan) or a file from `vocabopt export`")
    arrays = torch.load(Path(__file__).with_name(SIDECAR), weights_only=True)
    config = AdaptiveHeadConfig(**{**PLAN_CONFIG, **overrides})
    return AdaptiveSoftmax(config, order=arrays["order"], counts=arrays["counts"])


def config_dict(config: AdaptiveHeadConfig) -> dict:
    """The config as plain JSON-ready data."""
    return asdict(config)
