"""The kernel catalogue: which kernels the output layer runs, their work, and how a timing table is read.

Shared by the `profile` stage (which measures these kernels and fits their roofline) and the cost model (which
interpolates the measured tables), so both import it downward; numpy only.

Inputs: kernel names and shapes (rows, in, out, width, tokens, hidden, elements), a profile's timing tables.
Outputs: FLOPs and bytes moved per kernel (`work`), the roofline fitted to measured points (`fit_roofline`,
`roofline_ms`), unmeasured grid points filled along it (`fill_unmeasured`), and `KernelTable`, which interpolates a
table multilinearly in log(shape) -> log(ms).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # bytes per element of each profiled dtype

# kernel name -> its axes (shape coordinates), in the order the profile tables use.
KERNEL_AXES: dict[str, tuple[str, ...]] = {
    "linear_fwd": ("rows", "in", "out"),  # y = x @ W.T (+ b)         x: (rows, in), W: (out, in)
    "linear_dinput": ("rows", "in", "out"),  # dx = dy @ W             dy: (rows, out)
    "linear_dweight": ("rows", "in", "out"),  # dW = dy.T @ x, db = dy.sum(0)
    # The full softmax's loss (F.cross_entropy on fp32 logits: log_softmax + gather of the target column); its
    # forward is also the log-softmax the layer runs at inference
    "nll_fwd": ("rows", "width"),
    "nll_bwd": ("rows", "width"),  # its backward through autograd: the (rows, width) gradient of the logits
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


def fit_roofline(
    name: str, axes: list[np.ndarray], median: np.ndarray, measured: np.ndarray, element_bytes: int
) -> dict[str, float]:
    """Fit overhead, peak and bandwidth to the measured points (the bounds the fastest points reach)."""
    grids = np.meshgrid(*axes, indexing="ij")
    flops, nbytes = work(name, [g[measured] for g in grids], element_bytes)
    t = median[measured]
    overhead = float(t.min())
    busy = np.maximum(t - 0.5 * overhead, 1e-9)  # time above launch cost, ms
    return {
        "overhead_ms": overhead,
        "peak_gflops": float((flops / busy).max() / 1e6),
        "bandwidth_gbs": float((nbytes / busy).max() / 1e6),
    }


def fill_unmeasured(
    name: str, axes: list[np.ndarray], median: np.ndarray, measured: np.ndarray, roof: dict, element_bytes: int
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
    roof_all = roofline_ms(roof, name, grids, element_bytes)
    flops, nbytes = work(name, grids, element_bytes)
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
    """Interpolates one kernel's timing table; built once per profile and cached on it.

    A kernel's time at a shape is interpolated multilinearly in log(shape) -> log(time) between grid points. Below
    the grid it is clamped (small kernels are launch-bound: flat). Above the grid it is scaled from the nearest grid
    point along the profile's fitted roofline and flagged as extrapolated.
    """

    def __init__(self, name: str, table: dict[str, Any], element_bytes: int) -> None:
        self.name, self.element_bytes = name, element_bytes
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
            scale = roofline_ms(self.roof, self.name, list(coords), self.element_bytes) / roofline_ms(
                self.roof, self.name, clamped, self.element_bytes
            )
            t = np.where(above, t * scale, t)
        return t, above | unmeasured


def tables(profile: Any) -> dict[str, KernelTable]:
    """kernel name -> its KernelTable for `profile` (a DeviceProfile), built once and cached on the profile."""
    cached = getattr(profile, "_tables", None)
    if cached is None:
        element_bytes = ELEMENT_BYTES[profile.dtype]
        cached = {name: KernelTable(name, profile.kernels[name], element_bytes) for name in KERNEL_AXES}
        profile._tables = cached
    return cached
