"""DeviceProfile: the artifact of the `profile` stage — measured timings of the kernels the output layer runs.

Inputs: a torch device and dtype. Outputs: `device.json`, one table per kernel (see `cost.KERNEL_AXES`) of
median, p20 and p80 milliseconds over a log-spaced grid of shapes, the roofline fitted to it, and how it was
measured (device name, torch version, dtype, threads, matmul precision, samples, grid). `vocabopt.cost`
interpolates it.

Method: every point is warmed up and given enough repetitions per sample to stand above the timer's
resolution; then samples are taken in rounds that visit all points in a shuffled order (interleaved, so slow
drift of the machine spreads over all points instead of biasing a few), synchronising around each timed region
and flushing the L2 cache between GPU samples. Points whose work exceeds the grid's budget are not measured;
they are filled from the nearest measured point along the fitted roofline and marked `measured: false`.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts, cost
from .errors import ArtifactError, InputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.DeviceProfile"
DTYPES = ("float32", "bfloat16", "float16")

# Grids: rows, in, out for linear kernels; rows x width for row-wise kernels; log-spaced.
GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "rows": [8, 32, 128, 512, 2048, 8192],
        "in": [4, 16, 64, 256, 1024, 4096],
        "out": [16, 64, 256, 1024, 4096, 16384, 65536, 262144],
        "width": [16, 64, 256, 1024, 4096, 16384, 65536, 262144],
        "tokens": [256, 2048, 16384],
        "hidden": [64, 512, 4096],
        "elements": [2**10, 2**14, 2**18, 2**22, 2**26],
        "max_flops": 1.2e10,  # per call; ~0.1 s on this 2-core CPU
        "max_elements": 2**26,  # per operand (256 MB in float32)
        "samples": 20,
        "min_sample_ms": 1.0,
    },
    "quick": {  # log-spaced by 8; a bigger budget so large kernels are measured, not extrapolated
        "rows": [16, 128, 1024, 8192],
        "in": [8, 64, 512, 4096],
        "out": [64, 512, 4096, 32768, 262144],
        "width": [64, 512, 4096, 32768, 262144],
        "tokens": [256, 4096],
        "hidden": [64, 1024],
        "elements": [2**10, 2**16, 2**22],
        "max_flops": 4e9,
        "max_elements": 2**25,
        "samples": 20,
        "min_sample_ms": 0.2,
    },
}


@dataclass
class DeviceProfile:
    """Measured kernel timings on one device and dtype; `vocabopt.cost` turns them into predictions.

    Example:
        >>> prof = DeviceProfile.load("configs/devices/cpu-2core-xeon-float32.json")
        >>> prof.device, prof.dtype
    """

    device: str  # human-readable, e.g. "cpu: Intel(R) Xeon(R) Processor (2 threads)"
    device_type: str  # "cpu" | "cuda" | "mps" | "synthetic"
    dtype: str  # "float32" | "bfloat16" | "float16"
    kernels: dict[str, dict[str, Any]]  # name -> {axes, median_ms, p20_ms, p80_ms, measured, roofline}
    environment: dict[str, Any] = field(default_factory=dict)  # torch version, threads, matmul precision, ...
    settings: dict[str, Any] = field(default_factory=dict)  # grid, samples, budget, seed
    alignment: int = 8  # cutoffs are rounded to multiples of this (64 where unaligned widths measured slower)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        missing = [k for k in cost.KERNEL_AXES if k not in self.kernels]
        if missing:
            raise ArtifactError(f"profile lacks kernel tables {missing}; re-run `vocabopt profile`")
        for name, axes in cost.KERNEL_AXES.items():
            _check_table(name, axes, self.kernels[name])

    def save(self, path: str | Path) -> None:
        artifacts.write_json(path, self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": ARTIFACT,
            "schema_version": self.schema_version,
            "device": self.device,
            "device_type": self.device_type,
            "dtype": self.dtype,
            "alignment": self.alignment,
            "created": self.created,
            "environment": self.environment,
            "settings": self.settings,
            "kernels": self.kernels,
        }

    @classmethod
    def load(cls, path: str | Path) -> DeviceProfile:
        """Read a profile written by `save`; ArtifactError naming the problem if it is corrupt."""
        obj = artifacts.read_json(path, ARTIFACT, SCHEMA_VERSION)
        try:
            return cls(
                device=str(obj["device"]),
                device_type=str(obj["device_type"]),
                dtype=str(obj["dtype"]),
                kernels=dict(obj["kernels"]),
                environment=dict(obj.get("environment") or {}),
                settings=dict(obj.get("settings") or {}),
                alignment=int(obj.get("alignment", 8)),
                created=str(obj.get("created", "")),
                schema_version=obj["schema_version"],
            )
        except ArtifactError as e:
            fix = "" if "re-run" in str(e) else "; re-run `vocabopt profile`"
            raise ArtifactError(f"{path}: {e}{fix}") from None
        except (KeyError, TypeError, ValueError, InputError) as e:
            raise ArtifactError(
                f"{path}: malformed DeviceProfile ({type(e).__name__}: {e}); re-run `vocabopt profile`"
            ) from None

    def describe(self) -> str:
        return f"{self.device}, {self.dtype}, torch {self.environment.get('torch', '?')}"


def _check_table(name: str, axes: tuple[str, ...], table: Any) -> None:
    try:
        grid = [np.asarray(table["axes"][a], dtype=float) for a in axes]
        shape = tuple(len(g) for g in grid)
        arrays = {k: np.asarray(table[k], dtype=float) for k in ("median_ms", "p20_ms", "p80_ms", "measured")}
        roof = table["roofline"]
        ok_roof = all(
            math.isfinite(float(roof[k])) and float(roof[k]) >= 0
            for k in ("overhead_ms", "peak_gflops", "bandwidth_gbs")
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"kernel table {name!r} is malformed ({type(e).__name__}: {e})") from None
    if any(len(g) < 2 or not np.all(np.diff(g) > 0) or g[0] < 1 for g in grid):
        raise ArtifactError(f"kernel table {name!r}: each axis needs >= 2 increasing sizes >= 1")
    for k, a in arrays.items():
        if a.shape != shape:
            raise ArtifactError(f"kernel table {name!r}: {k} has shape {a.shape}, axes say {shape}")
    med = arrays["median_ms"]
    if not np.all(np.isfinite(med)) or np.any(med <= 0):
        raise ArtifactError(f"kernel table {name!r}: median_ms must be positive finite numbers")
    if not ok_roof:
        raise ArtifactError(f"kernel table {name!r}: roofline values must be finite and >= 0")


def mismatch_warnings(profile: DeviceProfile, device_type: str | None = None, dtype: str | None = None) -> list[str]:
    """Warnings (not errors: planning for another GPU is a feature) for a profile of another device/dtype."""
    out = []
    if dtype is not None and dtype != profile.dtype:
        out.append(
            f"profile was measured in {profile.dtype}, you asked for {dtype}; predictions are for "
            f"{profile.dtype}. Profile one for {dtype} with `vocabopt profile --dtype {dtype}`."
        )
    if device_type is not None and device_type != profile.device_type:
        out.append(
            f"profile is of {profile.device!r} ({profile.device_type}), this run asked for {device_type}; "
            "predictions are for the profiled device."
        )
    return out


# --- synthetic profiles (tests, what-if analysis) ------------------------------------------------------


def synthetic_profile(
    time_fn: Callable[..., np.ndarray],
    grid: dict[str, list[int]] | None = None,
    dtype: str = "float32",
    name: str = "synthetic",
) -> DeviceProfile:
    """A profile whose tables are `time_fn(kernel_name, *coordinate_grids) -> ms` evaluated on the grid.

    Example:
        >>> prof = synthetic_profile(lambda k, *c: 0.01 + 1e-9 * np.prod(c, axis=0))
    """
    g = {**GRIDS["full"], **(grid or {})}
    eb = cost.ELEMENT_BYTES[dtype]
    kernels = {}
    for kname, axes in cost.KERNEL_AXES.items():
        ax = [np.asarray(g[a], dtype=float) for a in axes]
        mesh = np.meshgrid(*ax, indexing="ij")
        med = np.broadcast_to(np.asarray(time_fn(kname, *mesh), dtype=float), mesh[0].shape).copy()
        measured = np.ones(med.shape, dtype=bool)
        kernels[kname] = _table(kname, axes, ax, med, med, med, measured, eb)
    return DeviceProfile(
        device=name,
        device_type="synthetic",
        dtype=dtype,
        kernels=kernels,
        settings={"synthetic": True},
        created=_now(),
    )


def _table(name, axes, ax, med, p20, p80, measured, eb) -> dict[str, Any]:
    roof = cost.fit_roofline(name, ax, med, measured, eb)
    med = cost.fill_unmeasured(name, ax, med, measured, roof, eb)
    p20 = np.where(measured, p20, med)
    p80 = np.where(measured, p80, med)
    rnd = lambda a: np.vectorize(lambda v: float(f"{v:.6g}"))(a).tolist()  # noqa: E731
    return {
        "axes": {a: [int(v) for v in x] for a, x in zip(axes, ax, strict=True)},
        "median_ms": rnd(med),
        "p20_ms": rnd(p20),
        "p80_ms": rnd(p80),
        "measured": measured.tolist(),
        "roofline": {k: float(f"{v:.6g}") for k, v in roof.items()},
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# --- measurement --------------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not one of auto, cpu, cuda, mps")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' asked for but it is not available; use --device cpu or auto")
    return device


def profile_device(
    device: str = "auto",
    dtype: str = "float32",
    quick: bool = False,
    grid: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DeviceProfile:
    """Measure the output layer's kernels on `device` in `dtype` and return their timing tables.

    Args:
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda" or "mps".
        dtype: "float32", "bfloat16" or "float16".
        quick: a coarser grid with a smaller work budget (under a minute on a 2-core CPU).
        grid: overrides of the grid settings (axes lists, max_flops, max_elements, samples, min_sample_ms).
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
    settings = {**GRIDS["quick" if quick else "full"], **(grid or {})}
    if settings["samples"] < 1:
        raise InputError("samples must be >= 1")
    tdtype = getattr(torch, dtype)
    bench = _Bench(torch, dev, tdtype, settings, seed)
    kernels = {}
    points = bench.points()
    total = len(points) * settings["samples"]
    results = bench.run(points, progress=(lambda k: progress(k, total)) if progress else None)
    _split_fixed(results)
    eb = cost.ELEMENT_BYTES[dtype]
    for kname, axes in cost.KERNEL_AXES.items():
        ax = [np.asarray(settings[a], dtype=float) for a in axes]
        shape = tuple(len(a) for a in ax)
        med, p20, p80 = np.ones(shape), np.ones(shape), np.ones(shape)
        measured = np.zeros(shape, dtype=bool)
        for idx, (m, lo, hi) in results.get(kname, {}).items():
            med[idx], p20[idx], p80[idx], measured[idx] = m, lo, hi, True
        if not measured.any():
            raise InputError(f"no point of {kname} fits the grid budget; raise max_flops/max_elements")
        kernels[kname] = _table(kname, axes, ax, med, p20, p80, measured, eb)
    alignment = bench.alignment()
    settings["tail_chunk"] = bench.chunk
    return DeviceProfile(
        device=device_name(torch, dev),
        device_type=dev,
        dtype=dtype,
        kernels=kernels,
        environment=_environment(torch, dev),
        settings={
            **settings,
            "quick": quick,
            "seed": seed,
            "wall_s": round(bench.wall_s, 1),
            "seconds_per_kernel": {k: round(v, 2) for k, v in bench.seconds.items()},
        },
        alignment=alignment,
        created=_now(),
    )


def device_name(torch: Any, dev: str) -> str:
    """A person-readable name of the device, e.g. "cpu: Intel(R) Xeon(R) Processor (2 threads)"."""
    if dev == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    if dev == "mps":
        return f"mps: {platform.machine()}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu: {model} ({torch.get_num_threads()} threads)"


def _environment(torch: Any, dev: str) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if dev == "cuda":
        env["cuda"] = torch.version.cuda
        env["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        env["allow_bf16_reduced_precision"] = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    return env


class _Ctx:
    """Stands in for autograd's ctx when the layer's NLL function is timed directly."""

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors


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


class _Bench:
    """Builds one callable per grid point and times them in interleaved rounds."""

    def __init__(self, torch: Any, dev: str, dtype: Any, settings: dict[str, Any], seed: int) -> None:
        self.torch, self.dev, self.dtype, self.s = torch, dev, dtype, settings
        self.rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        n = int(settings["max_elements"])
        # Two operand pools; every input is a view into them, so no point pays for creating its inputs.
        self.pool = ((torch.rand(2 * n, generator=gen) - 0.5) * 0.2).to(device=dev, dtype=dtype)
        self.flush = torch.empty(64 * 2**20, dtype=torch.int32, device=dev) if dev == "cuda" else None
        self.wall_s = 0.0
        from . import adaptive_head

        self.layer = adaptive_head
        self.chunk = adaptive_head.AdaptiveHeadConfig.__dataclass_fields__["tail_chunk"].default

    def sync(self) -> None:
        if self.dev == "cuda":
            self.torch.cuda.synchronize()
        elif self.dev == "mps":
            self.torch.mps.synchronize()

    def view(self, shape: tuple[int, ...], second: bool = False) -> Any:
        n = math.prod(shape)
        start = int(self.s["max_elements"]) if second else 0
        return self.pool[start : start + n].view(shape)

    def points(self) -> list[tuple[str, tuple[int, ...], Callable[[], Any]]]:
        s, out = self.s, []
        for kname, axes in cost.KERNEL_AXES.items():
            grids = [s[a] for a in axes]
            for idx in np.ndindex(*[len(g) for g in grids]):
                coords = tuple(int(g[i]) for g, i in zip(grids, idx, strict=True))
                fn = self.make(kname, coords)
                if fn is not None:
                    out.append((kname, idx, fn))
        return out

    def fits(self, flops: float, *operands: int) -> bool:
        return flops <= self.s["max_flops"] and max(operands) <= self.s["max_elements"]

    def make(self, kname: str, c: tuple[int, ...]) -> Callable[[], Any] | None:  # noqa: C901
        torch, F = self.torch, self.torch.nn.functional
        dev = self.dev
        if kname.startswith("linear_nll_keep"):
            r, i, o = c
            if not self.fits(4.0 * r * i * o, r * i, i * o, r * o):
                return None
            x, w, b = self.view((r, i)), self.view((o, i), second=True), self.view((o,))
            t = torch.randint(0, o, (r,), device=dev)
            LNLL, scratch = self.layer._LinearNLL, self.layer._Scratch()  # as the layer runs its head on CPU
            if kname == "linear_nll_keep_fwd":
                return lambda: LNLL.forward(_Ctx(), x, w, b, t, 0, scratch)
            ctx = _Ctx()
            LNLL.forward(ctx, x, w, b, t, 0, scratch)
            g = torch.ones(r, device=dev, dtype=torch.float32)
            return lambda: LNLL.backward(ctx, g)
        if kname.startswith("linear_nll"):
            r, i, o = c
            if not self.fits(6.0 * r * i * o, r * i, i * o, r * min(o, self.chunk)):
                return None
            x, w, b = self.view((r, i)), self.view((o, i), second=True), self.view((o,))
            t = torch.randint(0, o, (r,), device=dev)
            LNLL = self.layer._LinearNLL  # the layer's own tail kernel
            if kname == "linear_nll_fwd":
                return lambda: LNLL.forward(_Ctx(), x, w, b, t, self.chunk)
            ctx = _Ctx()
            LNLL.forward(ctx, x, w, b, t, self.chunk)
            g = torch.ones(r, device=dev, dtype=torch.float32)
            return lambda: LNLL.backward(ctx, g)
        if kname.startswith("linear_"):
            r, i, o = c
            if not self.fits(2.0 * r * i * o, r * i, i * o, r * o):
                return None
            x, w, b = self.view((r, i)), self.view((o, i), second=True), self.view((o,))
            dy = self.view((r, o), second=True)
            if kname == "linear_fwd":
                return lambda: F.linear(x, w, b)
            if kname == "linear_dinput":
                w2 = self.view((o, i))
                return lambda: dy.mm(w2)
            return lambda: (dy.t().mm(x), dy.sum(0))
        if kname.startswith("nll"):
            r, wd = c
            if not self.fits(0, r * wd):
                return None
            z = self.view((r, wd))
            t = torch.randint(0, wd, (r,), device=dev)
            NLL = self.layer._NLL  # the layer's own fused NLL, forward and backward as its autograd runs them
            if kname == "nll_fwd":
                return lambda: NLL.forward(_Ctx(), z, t)
            ctx = _Ctx()
            NLL.forward(ctx, z, t)
            g = torch.ones(r, device=dev, dtype=torch.float32)
            return lambda: NLL.backward(ctx, g)
        if kname.startswith("gather"):
            r, wd = c
            src_rows = 2 * r
            if not self.fits(0, src_rows * wd):
                return None
            src = self.view((src_rows, wd))
            idx = torch.from_numpy(np.sort(self.rng.choice(src_rows, r, replace=False))).to(dev)
            if kname == "gather_fwd":
                return lambda: src.index_select(0, idx)
            g = self.view((r, wd), second=True)
            acc = torch.zeros(src_rows, wd, device=dev, dtype=self.dtype)
            return lambda: acc.index_add_(0, idx, g)
        if kname.startswith(("cluster_fixed", "step_fixed")):
            n, d = c
            if not self.fits(0, n * d):
                return None
            return self.fixed(kname, n, d)
        if kname == "elementwise":
            (n,) = c
            if not self.fits(0, n):
                return None
            a, b2 = self.view((n,)), self.view((n,), second=True)
            return lambda: a + b2
        raise KeyError(kname)

    def fixed(self, kname: str, n: int, d: int) -> Callable[[], Any]:
        """The real layer at its smallest (shortlist 1, tails of 1-2 tokens, projection 1, one row per tail).

        step_fixed: one tail; cluster_fixed: two tails. Their difference is one tail's bookkeeping, taken
        after measuring (`_split_fixed`); what remains of the one-tail layer is the per-step bookkeeping.
        """
        torch = self.torch
        tails = 2 if kname.startswith("cluster") else 1
        cfg = self.layer.AdaptiveHeadConfig(
            vocab_size=tails + 2,
            hidden=d,
            cutoffs=list(range(1, tails + 1)),
            proj_dims=[1] * tails,
            unigram_init=False,
            check_targets="never",
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

    def time_once(self, fn: Callable[[], Any], reps: int) -> float:
        if self.flush is not None:
            self.flush.zero_()  # evict L2 so every sample starts cold, as inside a model step
        self.sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        self.sync()
        return (time.perf_counter() - t0) * 1e3 / reps

    def run(self, points: list, progress: Callable[[int], None] | None) -> dict[str, dict]:
        start = time.perf_counter()
        reps = []
        for _, _, fn in points:  # warm-up, then choose repetitions so a sample lasts >= min_sample_ms
            fn()
            t = self.time_once(fn, 1)
            reps.append(int(min(max(1, math.ceil(self.s["min_sample_ms"] / max(t, 1e-6))), 1000)))
        samples = np.zeros((len(points), self.s["samples"]))
        self.seconds: dict[str, float] = {}  # wall time spent per kernel (warm-up excluded), for the record
        done = 0
        for r in range(self.s["samples"]):
            for p in self.rng.permutation(len(points)):  # interleaved: a fresh order every round
                t0 = time.perf_counter()
                samples[p, r] = self.time_once(points[p][2], reps[p])
                self.seconds[points[p][0]] = self.seconds.get(points[p][0], 0.0) + time.perf_counter() - t0
                done += 1
            if progress:
                progress(done)
        self.wall_s = time.perf_counter() - start
        out: dict[str, dict] = {}
        for (kname, idx, _), s in zip(points, samples, strict=True):
            out.setdefault(kname, {})[idx] = tuple(float(v) for v in np.percentile(s, [50, 20, 80]))
        return out

    def alignment(self) -> int:
        """64 if a width just off a multiple of 64 runs measurably slower than the aligned one, else 8."""
        r, i = (512, 256) if self.dev == "cpu" else (4096, 1024)
        x, fns = self.view((r, i)), []
        for o in (4096, 4096 + 8, 4096 + 1):
            w = self.view((o, i), second=True)
            fns.append(lambda w=w: self.torch.nn.functional.linear(x, w))
        for fn in fns:
            fn()
        times = [[self.time_once(fn, 3) for fn in fns] for _ in range(7)]
        med = np.median(np.asarray(times), axis=0) / np.array([4096, 4104, 4097])  # ms per output column
        return 64 if med[1] > 1.05 * med[0] else 8
