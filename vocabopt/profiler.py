"""The `profile` stage's measuring harness: a torch device and dtype -> a `DeviceProfile` of the layer's kernels.

Inputs: a device ("auto", "cpu", "cuda", "mps"), a dtype, a grid of shapes (`profile.GRIDS`: CPU grids, or LLM
shapes on CUDA) and a budget (FLOPs and elements per call; on CUDA also ms per call and seconds in all).
Output: a `DeviceProfile` with one timing table per kernel of `kernels.KERNEL_AXES`.

What is timed is the code the layer runs: its loss kernel through its public entry point
(`adaptive_head.linear_nll`, forward alone and backward through autograd), the whole layer at its smallest for the
per-step and per-cluster bookkeeping, and the plain torch ops it calls for linears, gathers and elementwise passes.
The `nll_*` kernels are the full softmax's loss (F.cross_entropy on fp32 logits), the baseline the cost model
compares with; its forward is the log-softmax the layer runs at inference.

Method: every point is warmed up and given enough repetitions per sample to stand above the timer's resolution;
then samples are taken in rounds that visit all points in a shuffled order (interleaved, so slow drift of the
machine spreads over all points instead of biasing a few), synchronising around each timed region and flushing the
L2 cache before every timed GPU call (`device.interleaved_ms`). Points whose work exceeds the grid's budget (or,
with `max_call_ms`, whose warm-up call takes longer) are not measured; they are filled along the roofline fitted
to the measured ones (`kernels.fill_unmeasured`) and marked `measured: false`. With `budget_s`, sampling stops
after as many rounds as fit it (never fewer than `min_samples`); `settings["samples"]` records the rounds taken.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .device import DTYPES, device_name, environment, interleaved_ms, resolve_device, time_ms
from .errors import InputError
from .kernels import ELEMENT_BYTES, KERNEL_AXES
from .profile import GRIDS, DeviceProfile, grid_name, kernel_table, timestamp

Step = Callable[[], Any]  # one call of a kernel at one grid point


def profile_device(
    device: str = "auto",
    dtype: str = "float32",
    *,
    quick: bool = False,
    grid: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DeviceProfile:
    """Measure the output layer's kernels on `device` in `dtype` and return their timing tables.

    Args:
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda" or "mps".
        dtype: "float32", "bfloat16" or "float16".
        quick: a coarser grid with a smaller work budget (~1.5 minutes on a 2-core CPU).
        grid: overrides of the grid settings (axes lists, max_flops, max_elements, max_call_ms, budget_s,
            min_samples, samples, min_sample_ms). On CUDA the defaults are `GRIDS["cuda"]` / `["cuda-quick"]`.
        seed: for the visiting order and the random inputs.
        progress: called as progress(samples_done, samples_total).

    Example:
        >>> prof = vocabopt.profile_device("cpu", quick=True)
        >>> prof.save("cpu.json")
    """
    import torch

    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {DTYPES}")
    dev = resolve_device(device)
    settings = {**GRIDS[grid_name(dev, quick)], **(grid or {})}
    if settings["samples"] < 1:
        raise InputError("samples must be >= 1")
    harness = _Harness(dev, getattr(torch, dtype), settings, seed)
    points = harness.points()
    total = len(points) * settings["samples"]
    results = harness.run(points, progress=(lambda k: progress(k, total)) if progress else None)
    settings["samples"] = harness.rounds
    _split_fixed(results)
    kernels = _tables(results, settings, ELEMENT_BYTES[dtype])
    alignment = harness.alignment()
    settings["tail_chunk"] = harness.chunk
    return DeviceProfile(
        device=device_name(dev),
        device_type=dev,
        dtype=dtype,
        kernels=kernels,
        environment=environment(dev),
        settings={
            **settings,
            "quick": quick,
            "seed": seed,
            "wall_s": round(harness.wall_s, 1),
            "seconds_per_kernel": {k: round(v, 2) for k, v in harness.seconds.items()},
        },
        alignment=alignment,
        created=timestamp(),
    )


def _tables(results: dict[str, dict], settings: dict[str, Any], element_bytes: int) -> dict[str, dict[str, Any]]:
    """kernel name -> its artifact table from the (median, p20, p80) ms measured at each grid index."""
    kernels = {}
    for kname, axes in KERNEL_AXES.items():
        axis_values = [np.asarray(settings[a], dtype=float) for a in axes]
        shape = tuple(len(a) for a in axis_values)
        med, p20, p80 = np.ones(shape), np.ones(shape), np.ones(shape)
        measured = np.zeros(shape, dtype=bool)
        for idx, (m, lo, hi) in results.get(kname, {}).items():
            med[idx], p20[idx], p80[idx], measured[idx] = m, lo, hi, True
        if not measured.any():
            raise InputError(f"no point of {kname} fits the grid budget; raise max_flops/max_elements")
        kernels[kname] = kernel_table(
            kname, axis_values, median=med, p20=p20, p80=p80, measured=measured, element_bytes=element_bytes
        )
    return kernels


def _split_fixed(results: dict[str, dict]) -> None:
    """cluster_fixed := (two-tail layer) - (one-tail layer); step_fixed := one-tail layer - cluster_fixed.

    Medians are differenced (with a floor of 1% of the one-tail time to keep them positive); p20/p80 keep the
    relative spread of the measurement they came from.
    """
    for kind in ("fwd", "train"):
        one, two = results.get(f"step_fixed_{kind}", {}), results.get(f"cluster_fixed_{kind}", {})
        for idx in set(one) & set(two):
            (a, a20, a80), (b, b20, b80) = one[idx], two[idx]
            per_cluster = max(b - a, 0.01 * a)
            step = max(a - per_cluster, 0.01 * a)
            two[idx] = (per_cluster, per_cluster * b20 / b, per_cluster * b80 / b)
            one[idx] = (step, step * a20 / a, step * a80 / a)


class _Harness:
    """Builds one step per grid point that fits the budget, and times them in interleaved rounds."""

    def __init__(self, dev: str, dtype: Any, settings: dict[str, Any], seed: int) -> None:
        import torch

        from . import adaptive_head  # imports torch; the harness is the only part of the stage that needs it

        self.torch, self.dev, self.dtype, self.settings = torch, dev, dtype, settings
        self.rng = np.random.default_rng(seed)
        n = int(settings["max_elements"])
        # Two operand pools; every input is a view into them, so no point pays for creating its inputs. Drawn on
        # the device itself on CUDA (billions of elements there; the CPU stream stays as it was for CPU profiles).
        gen = torch.Generator(device=dev if dev == "cuda" else "cpu").manual_seed(seed)
        pool = torch.rand(2 * n, generator=gen, device=gen.device, dtype=dtype if dev == "cuda" else torch.float32)
        self.pool = pool.sub_(0.5).mul_(0.2).to(device=dev, dtype=dtype)
        # 256 MB zeroed before each GPU sample: evicts L2 so every sample starts cold, as inside a model step
        self.flush = torch.empty(64 * 2**20, dtype=torch.int32, device=dev) if dev == "cuda" else None
        self.wall_s = 0.0
        self.rounds = int(settings["samples"])  # sampling rounds taken (fewer than `samples` if budget_s binds)
        self.sample_ms: list[float] = []  # expected ms of one sample of each kept point
        self.seconds: dict[str, float] = {}  # wall time spent per kernel (warm-up excluded), for the record
        self.layer = adaptive_head
        self.chunk = adaptive_head.AdaptiveHeadConfig.tail_chunk  # classes per chunk of a large tail's loss

    def view(self, shape: tuple[int, ...], second: bool = False) -> Any:
        """A tensor of `shape` viewing the first (or second) operand pool."""
        n = math.prod(shape)
        start = int(self.settings["max_elements"]) if second else 0
        return self.pool[start : start + n].view(shape)

    def fits(self, flops: float, *operands: int) -> bool:
        return flops <= self.settings["max_flops"] and max(operands) <= self.settings["max_elements"]

    def points(self) -> list[tuple[str, tuple[int, ...], Step]]:
        """(kernel name, grid index, step) for every grid point within the budget."""
        out = []
        for kname, axes in KERNEL_AXES.items():
            grids = [self.settings[a] for a in axes]
            for idx in np.ndindex(*[len(g) for g in grids]):
                coords = tuple(int(g[i]) for g, i in zip(grids, idx, strict=True))
                step = self.make(kname, coords)
                if step is not None:
                    out.append((kname, idx, step))
        return out

    def make(self, kname: str, coords: tuple[int, ...]) -> Step | None:
        """The step that runs kernel `kname` at `coords`, or None when it exceeds the budget."""
        builders: list[tuple[str | tuple[str, ...], Callable[[str, tuple[int, ...]], Step | None]]] = [
            ("linear_nll", self._linear_nll),  # before "linear_": the layer's loss kernel
            ("linear_", self._linear),
            ("nll", self._nll),
            ("gather", self._gather),
            (("cluster_fixed", "step_fixed"), self._fixed),
            ("elementwise", self._elementwise),
        ]
        for prefix, build in builders:
            if kname.startswith(prefix):
                return build(kname, coords)
        raise KeyError(kname)

    def _backward(self, loss: Any, inputs: list[Any]) -> Step:
        """A step running the backward of `loss` (already computed, graph kept) through autograd, each call anew."""
        grad_out = self.torch.ones_like(loss)
        return lambda: self.torch.autograd.grad(loss, inputs, grad_out, retain_graph=True)

    def _linear_nll(self, kname: str, coords: tuple[int, ...]) -> Step | None:
        """The layer's loss `linear_nll`: kept log-probs (the head, small tails; with the CPU scratch the layer
        reuses) or chunked (large tails), forward alone or its backward."""
        r, i, o = coords
        keep = kname.startswith("linear_nll_keep")
        chunk = 0 if keep else self.chunk
        if keep and not self.fits(4.0 * r * i * o, r * i, i * o, r * o):
            return None
        if not keep and not self.fits(6.0 * r * i * o, r * i, i * o, r * min(o, chunk)):
            return None
        torch, linear_nll = self.torch, self.layer.linear_nll
        x, w, b = self.view((r, i)), self.view((o, i), second=True), self.view((o,))
        t = torch.randint(0, o, (r,), device=self.dev)
        scratch = self.layer.LossScratch() if keep else None
        if kname.endswith("fwd"):

            def forward() -> Any:
                with torch.no_grad():
                    return linear_nll(x, w, b, t, chunk, scratch)

            return forward
        inputs = [a.detach().requires_grad_() for a in (x, w, b)]
        return self._backward(linear_nll(*inputs, t, chunk, scratch), inputs)

    def _linear(self, kname: str, coords: tuple[int, ...]) -> Step | None:
        """nn.Linear's forward, and its two backward matmuls (dinput; dweight with the bias gradient)."""
        r, i, o = coords
        if not self.fits(2.0 * r * i * o, r * i, i * o, r * o):
            return None
        x, w, b = self.view((r, i)), self.view((o, i), second=True), self.view((o,))
        dy = self.view((r, o), second=True)
        if kname == "linear_fwd":
            return lambda: self.torch.nn.functional.linear(x, w, b)
        if kname == "linear_dinput":
            w2 = self.view((o, i))
            return lambda: dy.mm(w2)
        return lambda: (dy.t().mm(x), dy.sum(0))

    def _nll(self, kname: str, coords: tuple[int, ...]) -> Step | None:
        """The full softmax's loss, F.cross_entropy on fp32 logits (as `vocabopt bench` runs it): forward, or its
        backward through autograd."""
        r, width = coords
        if not self.fits(0, r * width):
            return None
        torch, F = self.torch, self.torch.nn.functional
        z = self.view((r, width))  # (r, width) logits
        t = torch.randint(0, width, (r,), device=self.dev)
        if kname == "nll_fwd":

            def forward() -> Any:
                with torch.no_grad():
                    return F.cross_entropy(z.float(), t, reduction="sum")

            return forward
        logits = z.detach().requires_grad_()
        return self._backward(F.cross_entropy(logits.float(), t, reduction="sum"), [logits])

    def _gather(self, kname: str, coords: tuple[int, ...]) -> Step | None:
        """A cluster's rows out of twice as many (index_select), and their gradient scattered back (index_add_)."""
        r, width = coords
        src_rows = 2 * r
        if not self.fits(0, src_rows * width):
            return None
        src = self.view((src_rows, width))
        idx = self.torch.from_numpy(np.sort(self.rng.choice(src_rows, r, replace=False))).to(self.dev)
        if kname == "gather_fwd":
            return lambda: src.index_select(0, idx)
        g = self.view((r, width), second=True)
        acc = self.torch.zeros(src_rows, width, device=self.dev, dtype=self.dtype)
        return lambda: acc.index_add_(0, idx, g)

    def _elementwise(self, kname: str, coords: tuple[int, ...]) -> Step | None:
        (n,) = coords
        if not self.fits(0, n):
            return None
        a, b = self.view((n,)), self.view((n,), second=True)
        return lambda: a + b

    def _fixed(self, kname: str, coords: tuple[int, ...]) -> Step | None:
        """The real layer at its smallest (shortlist 1, tails of 1-2 tokens, projection 1, one row per tail).

        step_fixed: one tail; cluster_fixed: two tails. Their difference is one tail's bookkeeping, taken
        after measuring (`_split_fixed`); what remains of the one-tail layer is the per-step bookkeeping.
        """
        n, d = coords
        if not self.fits(0, n * d):
            return None
        torch = self.torch
        tails = 2 if kname.startswith("cluster") else 1
        cfg = self.layer.AdaptiveHeadConfig(
            vocab_size=tails + 2,
            hidden=d,
            cutoffs=list(range(1, tails + 1)),
            proj_dims=[1] * tails,
            unigram_init=False,
            check_targets="never",
            path="exact",  # the path `cost` models on every device: one row per tail, so no N-row gather here
        )
        layer = self.layer.AdaptiveSoftmax(cfg, order=torch.arange(tails + 2)).to(self.dev, self.dtype)
        target = torch.zeros(n, dtype=torch.long, device=self.dev)
        target[1 : tails + 1] = torch.arange(1, tails + 1)  # one row in each tail
        train = kname.endswith("train")
        hidden = self.view((n, d)).detach().clone().requires_grad_(train)

        def run() -> Any:
            if not train:
                with torch.no_grad():
                    return layer(hidden, target)
            loss = layer(hidden, target)
            loss.backward()
            hidden.grad = None
            layer.zero_grad(set_to_none=True)
            return loss

        return run

    def run(self, points: list[tuple[str, tuple[int, ...], Step]], progress: Callable[[int], None] | None):
        """kernel name -> grid index -> (median, p20, p80) ms per call."""
        start = time.perf_counter()
        reps = [self._reps(step) for _, _, step in points]
        points = [p for p, r in zip(points, reps, strict=True) if r is not None]  # within max_call_ms
        reps = [r for r in reps if r is not None]
        steps = [step for _, _, step in points]
        self.rounds = self._rounds(reps)
        done = 0

        def on_sample(i: int, _round: int, seconds: float) -> None:
            nonlocal done
            self.seconds[points[i][0]] = self.seconds.get(points[i][0], 0.0) + seconds
            done += 1
            if progress and done % len(points) == 0:  # after every round
                progress(done)

        samples = interleaved_ms(
            steps,
            self.dev,
            rounds=self.rounds,
            reps=reps,
            shuffle=self.rng,  # a fresh order every round
            flush=self.flush,
            on_sample=on_sample,
        )
        self.wall_s = time.perf_counter() - start
        out: dict[str, dict] = {}
        for (kname, idx, _), s in zip(points, samples, strict=True):
            out.setdefault(kname, {})[idx] = tuple(float(v) for v in np.percentile(s, [50, 20, 80]))
        return out

    def _reps(self, step: Step) -> int | None:
        """Warm `step` up, then choose repetitions per sample so a sample lasts >= min_sample_ms (at most 1000);
        None when one call takes longer than the grid's `max_call_ms` (the point is left to the roofline)."""
        step()
        ms = time_ms(step, self.dev, flush=self.flush)
        if ms > self.settings.get("max_call_ms", math.inf):
            return None
        reps = int(min(max(1, math.ceil(self.settings["min_sample_ms"] / max(ms, 1e-6))), 1000))
        self.sample_ms.append(reps * ms)
        return reps

    def _rounds(self, reps: list[int]) -> int:
        """Sampling rounds: `samples`, or as many as fit `budget_s` given the warm-up timings (>= min_samples)."""
        samples = int(self.settings["samples"])
        budget = self.settings.get("budget_s")
        if budget is None:
            return samples
        per_round_s = sum(self.sample_ms) / 1e3  # one sample of every kept point
        fit = int(budget // max(per_round_s, 1e-9))
        return max(min(samples, fit), min(samples, int(self.settings.get("min_samples", 1))))

    def alignment(self) -> int:
        """64 if a width just off a multiple of 64 runs measurably slower than the aligned one, else 8."""
        r, i = (512, 256) if self.dev == "cpu" else (4096, 1024)
        x, steps = self.view((r, i)), []
        for o in (4096, 4096 + 8, 4096 + 1):
            w = self.view((o, i), second=True)
            steps.append(lambda w=w: self.torch.nn.functional.linear(x, w))
        for step in steps:
            step()
        times = [[time_ms(step, self.dev, reps=3, flush=self.flush) for step in steps] for _ in range(7)]
        med = np.median(np.asarray(times), axis=0) / np.array([4096, 4104, 4097])  # ms per output column
        return 64 if med[1] > 1.05 * med[0] else 8
