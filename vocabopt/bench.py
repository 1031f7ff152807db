"""The bench stage: a Plan -> measured forward+backward time and memory of its layer on this device.

Inputs: a `Plan`, a device and dtype, the tokens per step N, optionally a `DeviceProfile` for predictions.
Outputs: `BenchResult`, one row per method: the plan's layer (`build_layer(plan)`), the full softmax
(nn.Linear + F.cross_entropy), `F.linear_cross_entropy` where torch has it, and torch's
AdaptiveLogSoftmaxWithLoss (ALSWL) at the same design (its own weights, not the timed layer's: issue 18) when
the plan's projections follow ALSWL's `d // div_value**(i+1)` rule. Targets are drawn from the plan's own frequency
distribution (its counts).

Time: median of interleaved fwd+bwd steps after a warm-up (rounds visit every method, so a machine's drift
spreads over all of them). Memory: bytes autograd saves for backward on every device; on CUDA also the peak
allocated during one step above what was allocated before it. torch is imported lazily.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts, design
from .device import DTYPES, cuda_peak_bytes, device_name, interleaved_ms, resolve_device, saved_bytes
from .errors import ArtifactError, InputError
from .plan import Plan

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.BenchResult"
TORCH_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


@dataclass
class BenchRow:
    """One method's measured (and, with a profile, predicted) cost of a training step of the output layer."""

    method: str  # "vocabopt" | "full softmax" | "F.linear_cross_entropy" | "ALSWL"
    cutoffs: list[int]  # [] for the full softmax
    proj_dims: list[int]
    measured_ms: float  # median fwd+bwd, ms
    p20_ms: float
    p80_ms: float
    samples: int
    saved_bytes: int  # bytes autograd keeps between forward and backward
    peak_bytes: int | None = None  # CUDA: peak allocated during one step, above the baseline; None on CPU
    predicted_ms: float | None = None
    predicted_bytes: int | None = None

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured, or None without a prediction."""
        return None if self.predicted_ms is None else (self.predicted_ms - self.measured_ms) / self.measured_ms


@dataclass
class BenchResult:
    """Measured rows for one plan on one device; `rows[0]` is always the plan's own layer."""

    plan: str
    vocab_size: int
    hidden: int
    batch_tokens: int
    device: str
    dtype: str
    rows: list[BenchRow]
    environment: dict[str, Any] = field(default_factory=dict)  # torch, python, threads, profile used, date
    notes: list[str] = field(default_factory=list)  # methods left out, and why
    schema_version: int = SCHEMA_VERSION

    def row(self, method: str) -> BenchRow | None:
        return next((r for r in self.rows if r.method == method), None)

    def to_json(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = {k: getattr(r, k) for k in BenchRow.__dataclass_fields__}
            d["error"] = r.error
            d["speedup_vs_full"] = _ratio(self.row("full softmax"), r)
            rows.append(d)
        return {
            "artifact": ARTIFACT,
            "schema_version": self.schema_version,
            "plan": self.plan,
            "vocab_size": self.vocab_size,
            "hidden": self.hidden,
            "batch_tokens": self.batch_tokens,
            "device": self.device,
            "dtype": self.dtype,
            "environment": self.environment,
            "notes": self.notes,
            "rows": rows,
        }

    def save(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        artifacts.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> BenchResult:
        """Read a BenchResult written by `save` (derived columns are recomputed); ArtifactError if it is not one."""
        obj = artifacts.read_json(Path(path), ARTIFACT, SCHEMA_VERSION)
        try:
            fields = set(BenchRow.__dataclass_fields__)
            rows = [BenchRow(**{k: v for k, v in r.items() if k in fields}) for r in obj["rows"]]
            scalars = ("plan", "vocab_size", "hidden", "batch_tokens", "device", "dtype", "schema_version")
            return cls(
                **{k: obj[k] for k in scalars},
                rows=rows,
                environment=dict(obj["environment"]),
                notes=list(obj["notes"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{path}: malformed BenchResult ({type(e).__name__}: {e}); re-run bench") from None


def _ratio(full: BenchRow | None, r: BenchRow) -> float | None:
    return None if full is None else full.measured_ms / r.measured_ms


def sample_ranks(counts_by_rank: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(n,) int64 frequency ranks drawn from the plan's target distribution (uniform if it has no counts)."""
    p = counts_by_rank.astype(np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)
    return np.random.default_rng(seed).choice(p.size, size=n, p=p).astype(np.int64)


# --- the stage ----------------------------------------------------------------------------------------------


def bench(
    plan: Plan,
    *,
    device: str = "auto",
    dtype: str = "float32",
    batch_tokens: int | None = None,
    profile: Any = None,
    reps: int = 7,
    full_softmax: bool = True,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchResult:
    """Measure one training step (fwd+bwd) of the plan's layer next to the full softmax and ALSWL.

    Args:
        plan: the design to measure (`Plan.load("plan.json")`).
        device: "auto", "cpu", "cuda" or "mps".
        dtype: "float32", "bfloat16" or "float16" (autocast around the layer; parameters stay fp32).
        batch_tokens: tokens per step N; default the plan's own `batch_tokens` (else 2048).
        profile: a `DeviceProfile` for predicted figures; without it, predictions are omitted.
        reps: timed steps per method (the full softmax rows get fewer when they are slow).
        full_softmax: also measure the full softmax and `F.linear_cross_entropy` (seconds per step on a CPU
            at V=50K).
        seed: for the targets and the hidden states.
        progress: called as progress(method, round_done, rounds).

    Example:
        >>> result = vocabopt.bench(vocabopt.Plan.load("plan.json"), device="cpu")
        >>> result.row("full softmax").measured_ms / result.rows[0].measured_ms   # speed-up
    """
    import torch

    if not isinstance(plan, Plan):
        raise InputError(f"expected a vocabopt.Plan, got {type(plan).__name__}; load one with Plan.load(path)")
    dtype = TORCH_DTYPES.get(str(dtype), str(dtype))
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {DTYPES}; pass e.g. --dtype bfloat16")
    dev = torch.device(resolve_device(device))
    n = int(batch_tokens or plan.batch_tokens or 2048)
    if n < 1:
        raise InputError(f"batch_tokens must be a positive number of tokens, got {batch_tokens}")
    if reps < 1:
        raise InputError(f"reps must be >= 1, got {reps}")
    torch.manual_seed(seed)
    fns, designs, notes = _methods(plan, n, dev, getattr(torch, dtype), full_softmax, seed)
    times = _time_interleaved(fns, dev, reps, progress)
    preds = _predictions(plan, profile, n)
    rows = [_row(name, fn, designs[name], times[name], preds, dev) for name, fn in fns.items()]
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "seed": seed,
        "profile": getattr(profile, "device", None),
        "date": datetime.date.today().isoformat(),
    }
    return BenchResult(
        plan=str(plan.provenance.get("name", "")) or "plan",
        vocab_size=plan.vocab_size,
        hidden=plan.hidden,
        batch_tokens=n,
        device=device_name(dev.type),
        dtype=dtype,
        rows=rows,
        environment=env,
        notes=notes,
    )


def _row(name: str, fn: Callable[[], Any], design: tuple, times: list[float], preds: dict, dev: Any) -> BenchRow:
    """One method's row: median and spread of its timed steps, memory, and the cost model's prediction."""
    q = np.percentile(times, [20, 80])
    pred = preds.get("full" if name in ("full softmax", "F.linear_cross_entropy") else "plan")
    if name == "ALSWL":
        pred = None  # a different kernel set from the one the cost model describes
    return BenchRow(
        method=name,
        cutoffs=design[0],
        proj_dims=design[1],
        measured_ms=float(statistics.median(times)),
        p20_ms=float(q[0]),
        p80_ms=float(q[1]),
        samples=len(times),
        saved_bytes=saved_bytes(fn),
        peak_bytes=cuda_peak_bytes(lambda: fn().backward()) if dev.type == "cuda" else None,
        predicted_ms=None if pred is None else float(pred.time_ms),
        predicted_bytes=None if pred is None else int(pred.memory_bytes),
    )


def _methods(plan: Plan, n: int, dev: Any, tdtype: Any, full: bool, seed: int):
    """name -> a closure returning the loss of one forward; name -> (cutoffs, proj_dims)."""
    import torch
    import torch.nn.functional as F

    from .layer import build_layer, load_alswl

    d, V = plan.hidden, plan.vocab_size
    ranks = torch.from_numpy(sample_ranks(plan.counts_by_rank, n, seed)).to(dev)  # (N,) frequency ranks
    ours = build_layer(plan).to(dev)
    ids = ours.order[ranks]  # (N,) the tokenizer's own ids: what the plan's layer takes
    h = torch.randn(n, d, device=dev, requires_grad=True)  # (N, d) hidden states
    ac = torch.autocast(dev.type, dtype=tdtype, enabled=tdtype != torch.float32)

    def under_autocast(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with ac:
                return fn()

        return run

    notes: list[str] = []
    fns = {"vocabopt": under_autocast(lambda: ours(h, ids))}
    designs = {"vocabopt": (list(plan.cutoffs), list(plan.proj_dims))}
    div = design.alswl_div_value(plan.hidden, plan.proj_dims)
    if div is None:
        notes.append("ALSWL not measured: its projections follow d // div_value**(i+1), the plan's do not")
    else:
        alswl = torch.nn.AdaptiveLogSoftmaxWithLoss(d, V, plan.cutoffs, div_value=div).to(dev)
        load_alswl(build_layer(plan), alswl)  # checks the design matches, projection by projection
        fns["ALSWL"] = under_autocast(lambda: alswl(h, ranks).loss)  # ALSWL works in rank space
        designs["ALSWL"] = designs["vocabopt"]
        try:
            fns["ALSWL"]().backward()
        except RuntimeError as e:  # torch 2.13's ALSWL mixes dtypes under bf16/fp16 autocast (index_copy_)
            notes.append(f"ALSWL skipped: it fails under autocast({tdtype}): {str(e).splitlines()[0]}")
            del fns["ALSWL"], designs["ALSWL"]
    if full:
        lin = torch.nn.Linear(d, V, device=dev)
        fns["full softmax"] = under_autocast(lambda: F.cross_entropy(lin(h).float(), ranks))
        designs["full softmax"] = ([], [])
        if hasattr(F, "linear_cross_entropy"):
            fns["F.linear_cross_entropy"] = under_autocast(
                lambda: F.linear_cross_entropy(h, lin.weight, ranks, linear_bias=lin.bias)
            )
            designs["F.linear_cross_entropy"] = ([], [])
    return fns, designs, notes


def _time_interleaved(
    fns: dict[str, Callable[[], Any]], dev: Any, reps: int, progress: Callable[[str, int, int], None] | None
) -> dict[str, list[float]]:
    """ms per fwd+bwd for each method; round 0 warms up. Methods slower than 1 s per step stop after 3 samples."""
    names = list(fns)
    samples = interleaved_ms(
        [lambda fn=fn: fn().backward() for fn in fns.values()],
        dev,
        rounds=reps,
        warmup_rounds=1,
        give_up_ms=1000.0,
        on_sample=(lambda i, rnd, _s: progress(names[i], rnd, reps + 1)) if progress else None,
    )
    return dict(zip(names, samples, strict=True))


def _predictions(plan: Plan, profile: Any, n: int) -> dict[str, Any]:
    if profile is None:
        return {}
    from . import cost

    return {
        "plan": cost.predict(
            profile,
            plan.counts_by_rank,
            hidden=plan.hidden,
            cutoffs=plan.cutoffs,
            proj_dims=plan.proj_dims,
            batch_tokens=n,
        ),
        "full": cost.predict(
            profile, plan.counts_by_rank, hidden=plan.hidden, cutoffs=[], proj_dims=[], batch_tokens=n
        ),
    }
