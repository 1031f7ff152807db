"""DeviceProfile: the artifact of the `profile` stage — measured timings of the kernels the output layer runs.

Inputs: what `vocabopt.profiler.profile_device` measured on a torch device in one dtype (or a timing function, for
a synthetic profile). Outputs: `device.json`, one table per kernel (see `kernels.KERNEL_AXES`) of median, p20 and
p80 milliseconds over a log-spaced grid of shapes, which points were measured, the roofline fitted to them, and how
they were measured (device name, torch version, dtype, threads, matmul precision, samples, grid). Grid points too
large for the measuring budget hold values filled along the roofline (`kernels.fill_unmeasured`) and are marked
`measured: false`. `vocabopt.cost` interpolates the tables.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from .device import DTYPES
from .errors import ArtifactError, InputError
from .kernels import ELEMENT_BYTES, KERNEL_AXES, fill_unmeasured, fit_roofline

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.DeviceProfile"

# Grids: rows, in, out for linear kernels; rows x width for row-wise kernels; log-spaced. With the measuring
# budget and the samples per point, they are the profile's `settings`. Budget: max FLOPs and elements per call
# (memory) on every device; on CUDA also time: a point whose warm-up call takes over `max_call_ms` is left to the
# roofline, and sampling stops after as many rounds as fit `budget_s` (at least `min_samples`).
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
    # CUDA (profile_device picks these on a GPU): LLM shapes, N to 16K, d to 8K, widths to 262,144. The largest
    # linear, 16384 x 8192 x 262144, is 7e13 FLOPs: ~90 ms at an H200's ~790 TFLOP/s bf16.
    "cuda": {
        "rows": [16, 128, 1024, 4096, 8192, 16384],
        "in": [16, 64, 256, 1024, 4096, 8192],
        "out": [64, 512, 4096, 32768, 131072, 262144],
        "width": [64, 512, 4096, 32768, 131072, 262144],
        "tokens": [1024, 8192, 16384],
        "hidden": [256, 2048, 8192],
        "elements": [2**14, 2**20, 2**26, 2**30],
        "max_flops": 1e14,
        "max_elements": 2**31,  # per operand (4 GB in bf16); the operand pools take 2x that
        "max_call_ms": 150.0,
        "budget_s": 300.0,
        "min_samples": 5,
        "samples": 20,
        "min_sample_ms": 1.0,
    },
    "cuda-quick": {  # log-spaced by 8 below the LLM shapes; what benchmarks/gpu_suite.py runs (a few minutes)
        "rows": [16, 128, 1024, 8192, 16384],
        "in": [16, 128, 1024, 4096, 8192],
        "out": [64, 512, 4096, 32768, 262144],
        "width": [64, 512, 4096, 32768, 262144],
        "tokens": [1024, 8192],
        "hidden": [256, 4096],
        "elements": [2**14, 2**22, 2**30],
        "max_flops": 1e14,
        "max_elements": 2**31,
        "max_call_ms": 100.0,
        "budget_s": 150.0,
        "min_samples": 5,
        "samples": 20,
        "min_sample_ms": 0.5,
    },
}


def grid_name(device_type: str, quick: bool) -> str:
    """The GRIDS entry a profile of `device_type` starts from: the CUDA grids on a GPU, the CPU grids elsewhere."""
    base = "cuda" if device_type == "cuda" else "full"
    return ("cuda-quick" if base == "cuda" else "quick") if quick else base


@dataclass
class DeviceProfile:
    """Measured kernel timings on one device and dtype; `vocabopt.cost` turns them into predictions.

    Example:
        >>> prof = DeviceProfile.load("configs/devices/cpu-xeon-2core-float32.json")
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
        missing = [k for k in KERNEL_AXES if k not in self.kernels]
        if missing:
            raise ArtifactError(f"profile lacks kernel tables {missing}; re-run `vocabopt profile`")
        for name, axes in KERNEL_AXES.items():
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
        except (KeyError, TypeError, ValueError, OverflowError, InputError) as e:
            raise ArtifactError(
                f"{path}: malformed DeviceProfile ({type(e).__name__}: {e}); re-run `vocabopt profile`"
            ) from None

    def describe(self) -> str:
        return f"{self.device}, {self.dtype}, torch {self.environment.get('torch', '?')}"

    def summary(self) -> dict[str, Any]:
        """The headline figures as plain data: device, dtype, torch, threads, measuring wall time (s), the best
        matmul rate (GFLOP/s) and NLL bandwidth (GB/s) measured, the cutoff alignment, and the cheapest per-cluster
        fixed cost (ms, fwd+bwd)."""
        matmul = self.kernels["linear_fwd"]["roofline"]
        nll = self.kernels["nll_fwd"]["roofline"]
        cluster_fixed = self.kernels["cluster_fixed_train"]["median_ms"]  # (tokens, hidden)
        return {
            "device": self.device,
            "dtype": self.dtype,
            "torch": self.environment.get("torch"),
            "threads": self.environment.get("threads"),
            "wall_s": self.settings.get("wall_s"),
            "matmul_peak_gflops": matmul["peak_gflops"],
            "nll_bandwidth_gbs": nll["bandwidth_gbs"],
            "alignment": self.alignment,
            "cluster_fixed_train_ms_min": min(min(row) for row in cluster_fixed),
        }


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
    except (KeyError, TypeError, ValueError, OverflowError) as e:
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
    settings = {**GRIDS["full"], **(grid or {})}
    kernels = {}
    for kname, axes in KERNEL_AXES.items():
        axis_values = [np.asarray(settings[a], dtype=float) for a in axes]
        mesh = np.meshgrid(*axis_values, indexing="ij")
        med = np.broadcast_to(np.asarray(time_fn(kname, *mesh), dtype=float), mesh[0].shape).copy()
        kernels[kname] = kernel_table(
            kname,
            axis_values,
            median=med,
            p20=med,
            p80=med,
            measured=np.ones(med.shape, dtype=bool),
            element_bytes=ELEMENT_BYTES[dtype],
        )
    return DeviceProfile(
        device=name,
        device_type="synthetic",
        dtype=dtype,
        kernels=kernels,
        settings={"synthetic": True},
        created=timestamp(),
    )


def kernel_table(
    name: str,
    axis_values: list[np.ndarray],
    *,
    median: np.ndarray,
    p20: np.ndarray,
    p80: np.ndarray,
    measured: np.ndarray,
    element_bytes: int,
) -> dict[str, Any]:
    """One kernel's table as the artifact stores it: the roofline fitted to the measured points, unmeasured points
    filled along it (their p20/p80 equal to the filled median), times rounded to 6 significant digits."""
    roof = fit_roofline(name, axis_values, median, measured, element_bytes)
    median = fill_unmeasured(name, axis_values, median, measured, roof, element_bytes)
    p20 = np.where(measured, p20, median)
    p80 = np.where(measured, p80, median)
    rnd = lambda a: np.vectorize(lambda v: float(f"{v:.6g}"))(a).tolist()  # noqa: E731
    return {
        "axes": {a: [int(v) for v in x] for a, x in zip(KERNEL_AXES[name], axis_values, strict=True)},
        "median_ms": rnd(median),
        "p20_ms": rnd(p20),
        "p80_ms": rnd(p80),
        "measured": measured.tolist(),
        "roofline": {k: float(f"{v:.6g}") for k, v in roof.items()},
    }


def timestamp() -> str:
    """Now, UTC, to the second, ISO 8601: a profile's `created`."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
