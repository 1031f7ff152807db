"""Cost model: predicted time (ms) and activation memory (bytes) of one output-layer step, numpy only.

Inputs: a `DeviceProfile` (median kernel timings on log-spaced grids), a design (hidden size, cutoffs,
projection sizes, share of target tokens per cluster) and the tokens per step N. Outputs: a `Prediction` per
design, and the vectorised per-cluster costs `head_ms` / `tail_ms` that the optimizer's dynamic program sums.

A kernel's time at a shape is interpolated multilinearly in log(shape) -> log(time) between measured grid
points. Below the grid it is clamped (small kernels are launch-bound: flat). Above the grid it is scaled from
the nearest grid point by a roofline fitted to the measurements, overhead + max(FLOPs / peak, bytes /
bandwidth), and the prediction is flagged `extrapolated`.

The recipes below list the kernels `vocabopt.adaptive_head.AdaptiveSoftmax` runs per cluster:
    step (train):   target remapping, bucketize, sort by cluster, one host read of row counts, final scatter
    head (train):   linear fwd + dinput + dweight (N, d, H), fused NLL fwd + bwd (N, H)
    tail i (train): fixed bookkeeping (incl. the (N, d) zero-filled gradient of its gather), gather/scatter
                    of its n_i rows, projection d -> d_i (fwd + dinput + dweight), and the fused chunked
                    output linear + NLL d_i -> k_i (fwd + bwd; its logits are never stored)
On CPU the layer runs each tail on exactly its n_i rows ("exact" path); a tail with no targets still runs on
zero rows, so only its fixed part is paid. On accelerators it runs each tail on a fixed capacity of rows
("static" path, no host sync), which the recipes follow when the profile's device is one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
MODES = ("train", "infer")
DECODES = ("full", "greedy")

# kernel name -> its axes (shape coordinates), in the order the profile tables use.
KERNEL_AXES: dict[str, tuple[str, ...]] = {
    "linear_fwd": ("rows", "in", "out"),  # y = x @ W.T (+ b)         x: (rows, in), W: (out, in)
    "linear_dinput": ("rows", "in", "out"),  # dx = dy @ W             dy: (rows, out)
    "linear_dweight": ("rows", "in", "out"),  # dW = dy.T @ x, db = dy.sum(0)
    "nll_fwd": ("rows", "width"),  # the layer's fused NLL: fp32 log_softmax + gather of the target column
    "nll_bwd": ("rows", "width"),  # its backward: exp(saved log-probs) * g, scatter-add of -g
    "linear_nll_fwd": ("rows", "in", "out"),  # a tail's fused, chunked output linear + NLL (no logits kept)
    "linear_nll_bwd": ("rows", "in", "out"),  # its backward: recompute each chunk, dx and dW from it
    # The head's (and small tails') loss: one matmul, bias and log_softmax in place, log-probs kept (CPU: in a
    # scratch reused across steps); backward: exp into softmax - onehot, dx, dW, db
    "linear_nll_keep_fwd": ("rows", "in", "out"),
    "linear_nll_keep_bwd": ("rows", "in", "out"),
    "gather_fwd": ("rows", "width"),  # hidden[idx]: a cluster's rows out of (N, width)
    "gather_bwd": ("rows", "width"),  # its gradient: rows scattered back (index_add)
    "cluster_fixed_fwd": ("tokens", "hidden"),  # one more tail's bookkeeping over N targets, forward only
    "cluster_fixed_train": ("tokens", "hidden"),  # the same, forward + backward (incl. the (N, d) zero-fill)
    "step_fixed_fwd": ("tokens", "hidden"),  # per-step bookkeeping of the whole layer, forward only
    "step_fixed_train": ("tokens", "hidden"),  # the same, forward + backward
    "elementwise": ("elements",),  # one read-modify-write pass (combining log-probs into the output)
}


def work(name: str, coords: list[np.ndarray], element_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, bytes moved) of kernel `name` at `coords`: the roofline's inputs."""
    c = [np.asarray(x, dtype=float) for x in coords]
    e = float(element_bytes)
    if name.startswith("linear_nll_keep"):
        r, i, o = c
        passes = 1.0 if name.endswith("fwd") else 2.0  # forward: x @ W.T; backward: dx and dW
        return 2.0 * passes * r * i * o + 4.0 * r * o, e * (r * i + i * o) * passes + 8.0 * r * o
    if name.startswith("linear_nll"):
        r, i, o = c
        passes = 1.0 if name.endswith("fwd") else 3.0  # backward recomputes the logits, then dx and dW
        return 2.0 * passes * r * i * o, e * (r * i + i * o) * passes + 4.0 * r * o * passes
    if name.startswith("linear_"):
        r, i, o = c
        return 2.0 * r * i * o, e * (r * i + i * o + r * o)
    if name.startswith("nll"):
        r, w = c
        return 4.0 * r * w, r * w * (e + 4.0 if name.endswith("fwd") else 4.0 + e)
    if name.startswith("gather"):
        r, w = c
        return np.zeros_like(r * w), 2.0 * e * r * w
    if name.startswith(("cluster_fixed", "step_fixed")):
        n, d = c
        passes = 1.0 if name.endswith("fwd") else 3.0  # backward zero-fills and accumulates an (N, d) gradient
        return np.zeros_like(n * d), 8.0 * n * 4 + passes * e * n * d
    if name == "elementwise":
        (n,) = c
        return n, 3.0 * e * n
    raise KeyError(name)


def roofline_ms(roof: dict[str, float], name: str, coords: list[np.ndarray], element_bytes: int) -> np.ndarray:
    """overhead + max(FLOPs / peak, bytes / bandwidth), in ms."""
    flops, nbytes = work(name, coords, element_bytes)
    compute = flops / (roof["peak_gflops"] * 1e6) if roof["peak_gflops"] > 0 else 0.0
    memory = nbytes / (roof["bandwidth_gbs"] * 1e6) if roof["bandwidth_gbs"] > 0 else 0.0
    return roof["overhead_ms"] + np.maximum(compute, memory)


def fit_roofline(name: str, axes: list[np.ndarray], median: np.ndarray, measured: np.ndarray, eb: int) -> dict:
    """Fit overhead, peak and bandwidth to the measured points (the bounds the fastest points reach)."""
    grids = np.meshgrid(*axes, indexing="ij")
    flops, nbytes = work(name, [g[measured] for g in grids], eb)
    t = median[measured]
    overhead = float(t.min())
    busy = np.maximum(t - 0.5 * overhead, 1e-9)  # time above launch cost, ms
    return {
        "overhead_ms": overhead,
        "peak_gflops": float((flops / busy).max() / 1e6),
        "bandwidth_gbs": float((nbytes / busy).max() / 1e6),
    }


def fill_unmeasured(
    name: str, axes: list[np.ndarray], median: np.ndarray, measured: np.ndarray, roof: dict, eb: int
) -> np.ndarray:
    """Grid points too large to measure: between two bounds from a measured point q below them.

    q has (within 4x) the most work of the kind that bounds p (FLOPs where the roofline says p is compute-bound,
    bytes where memory-bound) and, among those, the shape closest to p's. A larger kernel runs at least as
    efficiently as q (time <= q's time scaled along the roofline) and at most at the best rate measured (time >=
    the roofline). p gets the geometric mean of the two bounds: the value whose relative error is smallest whatever
    p's true efficiency between them. (q's rate alone over-predicted the real layer by ~20% on this CPU, the
    roofline alone under-predicted it by ~15%: docs/benchmarks.md, cost-model fidelity.)
    """
    out = median.copy()
    if measured.all():
        return out
    grids = [g.ravel() for g in np.meshgrid(*axes, indexing="ij")]
    logs = np.stack([np.log(g) for g in grids], axis=1)  # (P, D)
    flat = out.ravel()
    m_idx = np.flatnonzero(measured.ravel())
    roof_all = roofline_ms(roof, name, grids, eb)
    flops, nbytes = work(name, grids, eb)
    compute = flops / (roof["peak_gflops"] * 1e6) if roof["peak_gflops"] > 0 else np.zeros_like(flops)
    memory = nbytes / (roof["bandwidth_gbs"] * 1e6) if roof["bandwidth_gbs"] > 0 else np.zeros_like(nbytes)
    for p in np.flatnonzero(~measured.ravel()):
        below = np.all(logs[m_idx] <= logs[p] + 1e-9, axis=1)
        if below.any():
            pool = m_idx[below]
            bound = compute if compute[p] >= memory[p] else memory
            big = pool[bound[pool] >= bound[pool].max() / 4]  # near the top of the work measured below p
            q = big[np.argmin(((logs[big] - logs[p]) ** 2).sum(axis=1))]  # of those, the closest in shape
        else:  # a grid that starts above the budget: the nearest point in log space
            q = m_idx[np.argmin(((logs[m_idx] - logs[p]) ** 2).sum(axis=1))]
        flat[p] = math.sqrt(flat[q] * roof_all[p] / roof_all[q] * roof_all[p])
    return flat.reshape(median.shape)


class KernelTable:
    """Interpolates one kernel's timing table; built once per profile and cached on it."""

    def __init__(self, name: str, table: dict[str, Any], element_bytes: int) -> None:
        self.name, self.eb = name, element_bytes
        self.axes = [np.asarray(table["axes"][a], dtype=float) for a in KERNEL_AXES[name]]
        self.log_axes = [np.log(a) for a in self.axes]
        self.log_t = np.log(np.maximum(np.asarray(table["median_ms"], dtype=float), 1e-9))
        self.measured = np.asarray(table["measured"], dtype=bool)
        self.roof = table["roofline"]

    def __call__(self, *coords: Any) -> tuple[np.ndarray, np.ndarray]:
        """Time in ms at `coords` (broadcast arrays) and whether each value was extrapolated."""
        coords = np.broadcast_arrays(*[np.maximum(np.asarray(c, dtype=float), 1.0) for c in coords])
        above = np.zeros(coords[0].shape, dtype=bool)
        idx, frac, clamped = [], [], []
        for ax, lax, c in zip(self.axes, self.log_axes, coords, strict=True):
            above |= c > ax[-1] * (1 + 1e-9)
            x = np.clip(np.log(c), lax[0], lax[-1])
            i = np.clip(np.searchsorted(lax, x, side="right") - 1, 0, len(lax) - 2)
            idx.append(i)
            frac.append((x - lax[i]) / (lax[i + 1] - lax[i]))
            clamped.append(np.exp(x))
        log_t = np.zeros(coords[0].shape)
        unmeasured = np.zeros(coords[0].shape, dtype=bool)
        for corner in itertools.product((0, 1), repeat=len(coords)):
            w = np.ones(coords[0].shape)
            for b, f in zip(corner, frac, strict=True):
                w = w * (f if b else 1.0 - f)
            ii = tuple(i + b for i, b in zip(idx, corner, strict=True))
            log_t += w * self.log_t[ii]
            unmeasured |= (w > 1e-12) & ~self.measured[ii]
        t = np.exp(log_t)
        if above.any():
            scale = roofline_ms(self.roof, self.name, list(coords), self.eb) / roofline_ms(
                self.roof, self.name, clamped, self.eb
            )
            t = np.where(above, t * scale, t)
        return t, above | unmeasured


def tables(profile: Any) -> dict[str, KernelTable]:
    cached = getattr(profile, "_tables", None)
    if cached is None:
        eb = ELEMENT_BYTES[profile.dtype]
        cached = {name: KernelTable(name, profile.kernels[name], eb) for name in KERNEL_AXES}
        profile._tables = cached
    return cached


# --- recipes: the kernels one cluster runs ------------------------------------------------------------------


class _Acc:
    """Sums kernel times and ORs their extrapolation flags."""

    def __init__(self, profile: Any) -> None:
        self.t, self.ms, self.extrap = tables(profile), 0.0, False

    def add(self, name: str, *coords: Any, weight: Any = 1.0) -> None:
        ms, ex = self.t[name](*coords)
        self.ms = self.ms + weight * ms
        self.extrap = self.extrap | (ex & (np.asarray(weight) > 0))


CHUNK_ABOVE = 1 << 22  # = AdaptiveHeadConfig.chunk_above (tests check): larger tails' logits are recomputed


def _recipe_mode(mode: str, decode: str) -> str:
    if mode not in MODES:
        raise InputError(f"mode {mode!r} is not one of {MODES}; use 'train' or 'infer'")
    if decode not in DECODES:
        raise InputError(f"decode {decode!r} is not one of {DECODES}")
    return "train" if mode == "train" else f"infer_{decode}"


def static_rows(n: int, share: np.ndarray) -> np.ndarray:
    """Rows a tail runs on in the static path: 2x the expected count + 8 sigma + 16, a multiple of 16."""
    mean = n * share
    return np.minimum(float(n), 16.0 * np.ceil((2.0 * mean + 8.0 * np.sqrt(mean) + 16.0) / 16.0))


def head_ms(
    profile: Any,
    n: int,
    d: int,
    width: Any,
    mode: str = "train",
    decode: str = "full",
    vocab: int | None = None,
):
    """Head (shortlist + one logit per tail) over all N rows, plus the per-step bookkeeping.

    `vocab` adds, for full-distribution inference, assembling the (N, V) log-probs in the tokenizer's order.
    Returns (ms, extrapolated), broadcast over `width`.
    """
    rm = _recipe_mode(mode, decode)
    acc = _Acc(profile)
    acc.add("step_fixed_train" if rm == "train" else "step_fixed_fwd", n, d)
    if rm == "train":  # the layer's kept-logits loss kernel
        acc.add("linear_nll_keep_fwd", n, d, width)
        acc.add("linear_nll_keep_bwd", n, d, width)
        return acc.ms, acc.extrap
    acc.add("linear_fwd", n, d, width)
    acc.add("nll_fwd", n, width)
    if rm == "infer_full" and vocab is not None:
        acc.add("elementwise", float(n) * vocab, weight=2.0)  # concatenate, then permute columns to id order
    return acc.ms, acc.extrap


def tail_ms(profile: Any, n: int, d: int, proj: Any, size: Any, share: Any, mode: str = "train", decode: str = "full"):
    """One tail cluster of `size` tokens holding `share` of targets, projected to `proj` dims.

    Broadcast over proj/size/share arrays. Returns (ms, extrapolated).
    """
    rm = _recipe_mode(mode, decode)
    share = np.clip(np.asarray(share, dtype=float), 0.0, 1.0)
    if rm == "infer_full":  # every row needs every cluster: no gather
        rows, p_busy = np.full(share.shape, float(n)), np.ones(share.shape)
    elif getattr(profile, "device_type", "cpu") in ("cuda", "mps"):  # static path: fixed capacity, always run
        rows, p_busy = static_rows(n, share), np.ones(share.shape)
    else:  # exact path: the rows whose target (train) or argmax (greedy, ~ target share) falls here
        p_busy = -np.expm1(n * np.log1p(-np.minimum(share, 1 - 1e-12)))  # P(at least one row) = 1 - (1-p)^N
        rows = np.maximum(share * n / np.maximum(p_busy, 1e-300), 1.0)  # rows given at least one
    acc = _Acc(profile)
    if rm == "train":
        acc.add("cluster_fixed_train", n, d)
    elif rm == "infer_greedy":
        acc.add("cluster_fixed_fwd", n, d)
    w = p_busy
    if rm != "infer_full":
        acc.add("gather_fwd", rows, d, weight=w)
    acc.add("linear_fwd", rows, d, proj, weight=w)
    if rm == "train":  # the output linear + NLL, then the projection's and the gather's gradients
        # As the layer chooses (AdaptiveHeadConfig.chunk_above): logits kept like the head's up to CHUNK_ABOVE
        # (rows x size) elements, else the fused chunked kernel that recomputes them in backward.
        big = (rows * np.asarray(size, dtype=float) > CHUNK_ABOVE).astype(float)
        acc.add("linear_nll_keep_fwd", rows, proj, size, weight=w * (1 - big))
        acc.add("linear_nll_keep_bwd", rows, proj, size, weight=w * (1 - big))
        acc.add("linear_nll_fwd", rows, proj, size, weight=w * big)
        acc.add("linear_nll_bwd", rows, proj, size, weight=w * big)
        acc.add("linear_dinput", rows, d, proj, weight=w)
        acc.add("linear_dweight", rows, d, proj, weight=w)
        acc.add("gather_bwd", rows, d, weight=w)
        return _shaped(acc, share, size, proj)
    acc.add("linear_fwd", rows, proj, size, weight=w)  # inference: logits, then log-softmax
    acc.add("nll_fwd", rows, size, weight=w)
    if rm == "infer_full":
        acc.add("elementwise", rows * np.asarray(size, dtype=float), weight=w)  # + the cluster's head log-prob
    return _shaped(acc, share, size, proj)


def _shaped(acc: _Acc, share: Any, size: Any, proj: Any) -> tuple[np.ndarray, np.ndarray]:
    shape = np.broadcast(share, np.asarray(size), np.asarray(proj)).shape
    return np.broadcast_to(acc.ms, shape), np.broadcast_to(acc.extrap, shape)


def full_softmax_ms(profile: Any, n: int, d: int, vocab: int, mode: str = "train", decode: str = "full"):
    """A plain linear over the whole vocabulary with the same fused NLL (the baseline the layer replaces)."""
    rm = _recipe_mode(mode, decode)
    acc = _Acc(profile)
    acc.add("linear_fwd", n, d, vocab)
    acc.add("nll_fwd", n, vocab)
    if rm == "train":
        acc.add("linear_dinput", n, d, vocab)
        acc.add("linear_dweight", n, d, vocab)
        acc.add("nll_bwd", n, vocab)
    return float(acc.ms), bool(np.any(acc.extrap))


# --- memory -------------------------------------------------------------------------------------------------


TAIL_CHUNK = 2048  # classes per chunk of the layer's fused tail loss (AdaptiveHeadConfig.tail_chunk)


def cluster_bytes(rows: Any, d: int, proj: Any, width: Any, mode: str, eb: int, tail: bool):
    """(saved, transient) activation bytes of one cluster run on `rows` rows of `width` outputs.

    Head (and full softmax): the fused NLL keeps fp32 log-probs (rows, width) for backward; the backward
    builds an fp32 gradient of the same shape (inference: the logits beside the log-probs). Train tails keep
    only the gathered rows (rows, d), the projection (rows, d_i) and one logsumexp per row: their fused loss
    recomputes logits chunk by chunk (rows, TAIL_CHUNK) in backward. Inference tails materialise (rows, width)
    log-probs.
    """
    rows, proj, width = (np.asarray(x, dtype=float) for x in (rows, proj, width))
    if mode != "train":
        return eb * rows * width + 4.0 * rows * width, np.zeros_like(rows * width)
    if tail:
        return eb * rows * (d + proj) + 4.0 * rows, 2 * 4.0 * rows * np.minimum(width, TAIL_CHUNK)
    return 4.0 * rows * width, rows * width * (4.0 + (eb if eb != 4 else 0.0))


# --- whole designs ------------------------------------------------------------------------------------------


def _rows(profile: Any, n: int, share: float, mode: str, decode: str) -> float:
    """Expected rows a tail runs on (for memory)."""
    if mode == "infer" and decode == "full":
        return float(n)
    if getattr(profile, "device_type", "cpu") in ("cuda", "mps"):
        return float(static_rows(n, np.asarray(share)))
    return share * n


@dataclass
class Prediction:
    """Predicted cost of one design (or of the full softmax when `cutoffs` is empty)."""

    time_ms: float
    memory_bytes: float
    extrapolated: bool
    clusters: list[dict[str, Any]] = field(default_factory=list)  # per cluster: size, share, proj, ms, bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "time_ms": round(self.time_ms, 6),
            "memory_bytes": int(self.memory_bytes),
            "extrapolated": self.extrapolated,
            "clusters": self.clusters,
        }


def shares_of(counts_by_rank: np.ndarray, cutoffs: list[int]) -> list[float]:
    total = max(float(np.sum(counts_by_rank)), 1.0)
    edges = [0, *cutoffs, len(counts_by_rank)]
    return [float(np.sum(counts_by_rank[a:b])) / total for a, b in zip(edges[:-1], edges[1:], strict=True)]


def predict(
    profile: Any,
    counts_by_rank: np.ndarray,
    hidden: int,
    cutoffs: list[int],
    proj_dims: list[int],
    batch_tokens: int,
    mode: str = "train",
    decode: str = "full",
) -> Prediction:
    """Predicted time and activation memory of one step of an adaptive softmax (full softmax if no cutoffs).

    Example:
        >>> p = predict(profile, stats.counts[stats.frequency_order()], 512, [2000, 10000], [128, 32], 2048)
        >>> p.time_ms, p.memory_bytes
    """
    vocab = len(counts_by_rank)
    if any(c <= 0 or c >= vocab for c in cutoffs) or sorted(set(cutoffs)) != list(cutoffs):
        raise InputError(
            f"cutoffs {cutoffs} do not fit a vocabulary of {vocab} ids: they must be strictly increasing "
            f"and in (0, {vocab}); drop the ones >= {vocab}, or use stats counted with the model's tokenizer"
        )
    if len(proj_dims) != len(cutoffs):
        raise InputError(f"{len(proj_dims)} proj_dims for {len(cutoffs)} tail clusters; pass one per cutoff")
    eb = ELEMENT_BYTES[profile.dtype]
    n, d = int(batch_tokens), int(hidden)
    if not cutoffs:
        ms, ex = full_softmax_ms(profile, n, d, vocab, mode, decode)
        saved, transient = cluster_bytes(n, d, 0, vocab, mode, eb, tail=False)
        mem = float(saved + transient)
        return Prediction(
            ms,
            mem,
            ex,
            [
                {
                    "name": "full",
                    "size": vocab,
                    "share": 1.0,
                    "proj_dim": d,
                    "time_ms": ms,
                    "memory_bytes": int(mem),
                }
            ],
        )
    shares = shares_of(counts_by_rank, cutoffs)
    edges = [*cutoffs, vocab]
    width = cutoffs[0] + len(cutoffs)
    ms, ex = head_ms(profile, n, d, width, mode, decode, vocab)
    saved, transient = cluster_bytes(n, d, 0, width, mode, eb, tail=False)
    mem, peak_transient = float(saved), float(transient)
    clusters = [
        {
            "name": "head",
            "size": width,
            "share": shares[0],
            "proj_dim": d,
            "time_ms": float(ms),
            "memory_bytes": int(mem),
        }
    ]
    total_ms, total_mem, extrap = float(ms), mem, bool(ex)
    for i, (proj, share) in enumerate(zip(proj_dims, shares[1:], strict=True)):
        size = edges[i + 1] - edges[i]
        t, e = tail_ms(profile, n, d, proj, size, share, mode, decode)
        rows = _rows(profile, n, share, mode, decode)
        saved, transient = cluster_bytes(rows, d, proj, size, mode, eb, tail=True)
        b, peak_transient = float(saved), max(peak_transient, float(transient))
        clusters.append(
            {
                "name": f"tail{i}",
                "size": size,
                "share": share,
                "proj_dim": int(proj),
                "time_ms": float(t),
                "memory_bytes": int(b),
            }
        )
        total_ms, total_mem, extrap = total_ms + float(t), total_mem + b, extrap or bool(e)
    total_mem += peak_transient
    if mode == "infer" and decode == "full":
        total_mem += 2 * 4 * n * vocab  # the assembled (N, V) fp32 log-probs, by rank then by id
    return Prediction(total_ms, total_mem, extrap, clusters)
