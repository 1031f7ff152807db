"""Cost model: predicted time (ms) and activation memory (bytes) of one output-layer step, numpy only.

Inputs: a `DeviceProfile` (median kernel timings on log-spaced grids), a design (hidden size, cutoffs,
projection sizes, share of target tokens per cluster) and the tokens per step N. Outputs: a `Prediction` per
design, and the vectorised per-cluster costs `head_ms` / `tail_ms` that the optimizer's dynamic program sums.

Each kernel's time comes from the profile's table through `kernels.KernelTable` (multilinear in log(shape) ->
log(time), clamped below the grid, scaled along the fitted roofline above it, where the prediction is flagged
`extrapolated`).

The recipes below list the kernels `vocabopt.adaptive_head.AdaptiveSoftmax` runs per cluster:
    step (train):   target remapping, bucketize, sort by cluster, one host read of row counts, final scatter
    head (train):   the kept-logits loss kernel over (N, d, H), fwd + bwd (`linear_nll_keep_*`)
    tail i (train): fixed bookkeeping (incl. the (N, d) zero-filled gradient of its gather), gather/scatter
                    of its n_i rows, projection d -> d_i (fwd + dinput + dweight), and the output linear + NLL
                    d_i -> k_i, fwd + bwd: kept logits up to CHUNK_ABOVE elements, else the fused chunked kernel
                    that recomputes them in backward (`linear_nll_*`)
In eager mode the layer runs each tail on exactly its n_i rows ("exact" path) on every device; a tail with no
targets still runs on zero rows, so only its fixed part is paid. (The "static" path, for torch.compile and CUDA
graphs, runs each tail on `design.static_rows`; the recipes model the eager default.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import design
from .errors import InputError
from .kernels import ELEMENT_BYTES, tables

MODES = ("train", "infer")
DECODES = ("full", "greedy")


# --- recipes: the kernels one cluster runs ------------------------------------------------------------------


class _KernelTimeSum:
    """The summed ms of the kernels added so far (weighted, broadcast), and whether any was extrapolated."""

    def __init__(self, profile: Any) -> None:
        self.tables, self.ms, self.extrap = tables(profile), 0.0, False

    def add(self, name: str, *coords: Any, weight: Any = 1.0) -> None:
        ms, extrapolated = self.tables[name](*coords)
        self.ms = self.ms + weight * ms
        self.extrap = self.extrap | (extrapolated & (np.asarray(weight) > 0))


CHUNK_ABOVE = 1 << 22  # = AdaptiveHeadConfig.chunk_above (tests check): larger tails' logits are recomputed


def _recipe_mode(mode: str, decode: str) -> str:
    if mode not in MODES:
        raise InputError(f"mode {mode!r} is not one of {MODES}; use 'train' or 'infer'")
    if decode not in DECODES:
        raise InputError(f"decode {decode!r} is not one of {DECODES}")
    return "train" if mode == "train" else f"infer_{decode}"


def head_ms(
    profile: Any,
    n: int,
    d: int,
    width: Any,
    *,
    mode: str = "train",
    decode: str = "full",
    vocab: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Head (shortlist + one logit per tail) over all N rows, plus the per-step bookkeeping.

    `vocab` adds, for full-distribution inference, assembling the (N, V) log-probs in the tokenizer's order.
    Returns (ms, extrapolated), broadcast over `width`.
    """
    recipe = _recipe_mode(mode, decode)
    acc = _KernelTimeSum(profile)
    acc.add("step_fixed_train" if recipe == "train" else "step_fixed_fwd", n, d)
    if recipe == "train":  # the layer's kept-logits loss kernel
        acc.add("linear_nll_keep_fwd", n, d, width)
        acc.add("linear_nll_keep_bwd", n, d, width)
        return acc.ms, acc.extrap
    acc.add("linear_fwd", n, d, width)
    acc.add("nll_fwd", n, width)
    if recipe == "infer_full" and vocab is not None:
        acc.add("elementwise", float(n) * vocab, weight=2.0)  # concatenate, then permute columns to id order
    return acc.ms, acc.extrap


def tail_ms(
    profile: Any,
    n: int,
    d: int,
    *,
    proj: Any,
    size: Any,
    share: Any,
    mode: str = "train",
    decode: str = "full",
) -> tuple[np.ndarray, np.ndarray]:
    """One tail cluster of `size` tokens holding `share` of targets, projected to `proj` dims.

    Broadcast over proj/size/share arrays. Returns (ms, extrapolated).
    """
    recipe = _recipe_mode(mode, decode)
    share = np.clip(np.asarray(share, dtype=float), 0.0, 1.0)
    if recipe == "infer_full":  # every row needs every cluster: no gather
        rows, p_busy = np.full(share.shape, float(n)), np.ones(share.shape)
    else:  # exact path: the rows whose target (train) or argmax (greedy, ~ target share) falls here
        p_busy = -np.expm1(n * np.log1p(-np.minimum(share, 1 - 1e-12)))  # P(at least one row) = 1 - (1-p)^N
        rows = np.maximum(share * n / np.maximum(p_busy, 1e-300), 1.0)  # rows given at least one
    acc = _KernelTimeSum(profile)
    if recipe == "train":
        acc.add("cluster_fixed_train", n, d)
    elif recipe == "infer_greedy":
        acc.add("cluster_fixed_fwd", n, d)
    w = p_busy
    if recipe != "infer_full":
        acc.add("gather_fwd", rows, d, weight=w)
    acc.add("linear_fwd", rows, d, proj, weight=w)
    if recipe == "train":  # the output linear + NLL, then the projection's and the gather's gradients
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
    if recipe == "infer_full":
        acc.add("elementwise", rows * np.asarray(size, dtype=float), weight=w)  # + the cluster's head log-prob
    return _shaped(acc, share, size, proj)


def _shaped(acc: _KernelTimeSum, share: Any, size: Any, proj: Any) -> tuple[np.ndarray, np.ndarray]:
    shape = np.broadcast(share, np.asarray(size), np.asarray(proj)).shape
    return np.broadcast_to(acc.ms, shape), np.broadcast_to(acc.extrap, shape)


def full_softmax_ms(
    profile: Any, n: int, d: int, vocab: int, *, mode: str = "train", decode: str = "full"
) -> tuple[float, bool]:
    """A plain linear over the whole vocabulary with the same fused NLL (the baseline the layer replaces)."""
    recipe = _recipe_mode(mode, decode)
    acc = _KernelTimeSum(profile)
    acc.add("linear_fwd", n, d, vocab)
    acc.add("nll_fwd", n, vocab)
    if recipe == "train":
        acc.add("linear_dinput", n, d, vocab)
        acc.add("linear_dweight", n, d, vocab)
        acc.add("nll_bwd", n, vocab)
    return float(acc.ms), bool(np.any(acc.extrap))


# --- memory -------------------------------------------------------------------------------------------------


TAIL_CHUNK = 2048  # classes per chunk of the layer's fused tail loss (AdaptiveHeadConfig.tail_chunk)


def cluster_bytes(
    rows: Any, d: int, proj: Any, width: Any, *, mode: str, element_bytes: int, tail: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(saved, transient) activation bytes of one cluster run on `rows` rows of `width` outputs.

    Head (and full softmax): the fused NLL keeps fp32 log-probs (rows, width) for backward; the backward
    builds an fp32 gradient of the same shape (inference: the logits beside the log-probs). Train tails keep
    only the gathered rows (rows, d), the projection (rows, d_i) and one logsumexp per row, as the fused chunked
    loss does, which recomputes logits chunk by chunk (rows, TAIL_CHUNK) in backward; a small tail that keeps its
    log-probs instead (up to CHUNK_ABOVE elements, 16 MB in fp32) is counted the same way. Inference tails
    materialise (rows, width) log-probs.
    """
    rows, proj, width = (np.asarray(x, dtype=float) for x in (rows, proj, width))
    if mode != "train":
        return element_bytes * rows * width + 4.0 * rows * width, np.zeros_like(rows * width)
    if tail:
        return element_bytes * rows * (d + proj) + 4.0 * rows, 2 * 4.0 * rows * np.minimum(width, TAIL_CHUNK)
    low_precision_copy = element_bytes if element_bytes != 4 else 0.0  # the gradient cast back to the input dtype
    return 4.0 * rows * width, rows * width * (4.0 + low_precision_copy)


# --- whole designs ------------------------------------------------------------------------------------------


def _rows(profile: Any, n: int, share: float, mode: str, decode: str) -> float:
    """Expected rows a tail runs on (for memory)."""
    if mode == "infer" and decode == "full":
        return float(n)
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


def predict(
    profile: Any,
    counts_by_rank: np.ndarray,
    *,
    hidden: int,
    cutoffs: list[int],
    proj_dims: list[int],
    batch_tokens: int,
    mode: str = "train",
    decode: str = "full",
) -> Prediction:
    """Predicted time and activation memory of one step of an adaptive softmax (full softmax if no cutoffs).

    Example:
        >>> counts_by_rank = stats.counts[stats.frequency_order()]
        >>> p = predict(profile, counts_by_rank, hidden=512, cutoffs=[2000, 10000], proj_dims=[128, 32],
        ...             batch_tokens=2048)
        >>> p.time_ms, p.memory_bytes
    """
    vocab = len(counts_by_rank)
    if cutoffs:  # none: the full softmax
        design.check_cutoffs(cutoffs, vocab)
    if len(proj_dims) != len(cutoffs):
        raise InputError(f"{len(proj_dims)} proj_dims for {len(cutoffs)} tail clusters; pass one per cutoff")
    element_bytes = ELEMENT_BYTES[profile.dtype]
    n, d = int(batch_tokens), int(hidden)
    if not cutoffs:
        return _full_softmax_prediction(profile, n, d, vocab, mode=mode, decode=decode, element_bytes=element_bytes)
    shares = design.cluster_shares(counts_by_rank, cutoffs)
    edges = [*cutoffs, vocab]
    width = cutoffs[0] + len(cutoffs)
    ms, ex = head_ms(profile, n, d, width, mode=mode, decode=decode, vocab=vocab)
    saved, transient = cluster_bytes(n, d, 0, width, mode=mode, element_bytes=element_bytes, tail=False)
    mem, peak_transient = float(saved), float(transient)
    clusters = [_cluster("head", width, shares[0], d, float(ms), int(mem))]
    total_ms, total_mem, extrap = float(ms), mem, bool(ex)
    for i, (proj, share) in enumerate(zip(proj_dims, shares[1:], strict=True)):
        size = edges[i + 1] - edges[i]
        t, e = tail_ms(profile, n, d, proj=proj, size=size, share=share, mode=mode, decode=decode)
        rows = _rows(profile, n, share, mode, decode)
        saved, transient = cluster_bytes(rows, d, proj, size, mode=mode, element_bytes=element_bytes, tail=True)
        b, peak_transient = float(saved), max(peak_transient, float(transient))
        clusters.append(_cluster(f"tail{i}", size, share, int(proj), float(t), int(b)))
        total_ms, total_mem, extrap = total_ms + float(t), total_mem + b, extrap or bool(e)
    total_mem += peak_transient
    if mode == "infer" and decode == "full":
        total_mem += 2 * 4 * n * vocab  # the assembled (N, V) fp32 log-probs, by rank then by id
    return Prediction(total_ms, total_mem, extrap, clusters)


def _full_softmax_prediction(
    profile: Any, n: int, d: int, vocab: int, *, mode: str, decode: str, element_bytes: int
) -> Prediction:
    ms, ex = full_softmax_ms(profile, n, d, vocab, mode=mode, decode=decode)
    saved, transient = cluster_bytes(n, d, 0, vocab, mode=mode, element_bytes=element_bytes, tail=False)
    mem = float(saved + transient)
    return Prediction(ms, mem, ex, [_cluster("full", vocab, 1.0, d, ms, int(mem))])


def _cluster(name: str, size: int, share: float, proj_dim: int, time_ms: float, memory_bytes: int) -> dict[str, Any]:
    """One cluster's row of `Prediction.clusters`."""
    return {
        "name": name,
        "size": size,
        "share": share,
        "proj_dim": proj_dim,
        "time_ms": time_ms,
        "memory_bytes": memory_bytes,
    }
