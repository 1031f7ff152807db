"""The bench stage: a Plan -> measured forward+backward time and memory of its layer on this device.

Inputs: a `Plan`, a device and dtype, the tokens per step N, optionally a `DeviceProfile` for predictions.
Outputs: `BenchResult`, one row per method: the plan's layer (`build_layer(plan)`), the full softmax
(nn.Linear + F.cross_entropy), torch's chunked `F.linear_cross_entropy` (with `LinearCrossEntropyOptions()`, the
memory-saving kernel; same weights and bias as the full softmax) where torch has it, and torch's
AdaptiveLogSoftmaxWithLoss (ALSWL) holding the timed layer's own weights (`load_alswl(ours, alswl)`), when the plan's
projections follow ALSWL's `d // div_value**(i+1)` rule. Targets are drawn from the plan's own frequency
distribution (its counts). A plan made with `--mode infer` is benched as a training step all the same (a note says
so; `vocabopt bench --mode infer` times decoding).

Time: median of interleaved fwd+bwd steps after a warm-up (rounds visit every method, so a machine's drift
spreads over all of them); p20-p80 give the spread. Memory per method: bytes autograd keeps for backward; the peak
of one whole step above the memory in use before it (CUDA: max_memory_allocated; CPU: resident-set high-water mark,
see `device.rss_peak_bytes`); what the method's modules keep between steps (parameters, gradients, buffers, scratch).
A method the cost model says cannot fit in the available memory is skipped with a note, and so is one whose
allocation fails. torch is imported lazily.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts, cost, design
from .device import (
    DTYPES,
    available_bytes,
    device_name,
    interleaved_ms,
    is_out_of_memory,
    module_bytes,
    resolve_device,
    saved_bytes,
    step_peak_bytes,
)
from .errors import ArtifactError, InputError
from .plan import Plan

SCHEMA_VERSION = 1  # rows gained optional fields (resident_bytes, scratch_bytes); older files still load
ARTIFACT = "vocabopt.BenchResult"
FULL = "full softmax"
CHUNKED = "F.linear_cross_entropy (chunked)"  # torch >= 2.13's chunked kernel, given `options`
NOISY_SPREAD = 1.25  # p80 / p20 above this for any method: the machine was too busy for its figures to be quoted
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

    method: str  # "vocabopt" | "full softmax" | "F.linear_cross_entropy (chunked)" | "ALSWL"
    cutoffs: list[int]  # [] for the full softmax
    proj_dims: list[int]
    measured_ms: float  # median fwd+bwd, ms
    p20_ms: float
    p80_ms: float
    samples: int
    saved_bytes: int  # bytes autograd keeps between forward and backward
    peak_bytes: int | None = None  # peak of one whole fwd+bwd step above the memory in use before it (see module doc)
    predicted_ms: float | None = None
    predicted_bytes: int | None = None
    resident_bytes: int | None = None  # kept between steps: parameters, their gradients, buffers, scratch
    scratch_bytes: int | None = None  # the part of resident_bytes that is scratch/caches the module holds

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
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ArtifactError(f"{path}: malformed BenchResult ({type(e).__name__}: {e}); re-run bench") from None


def _ratio(full: BenchRow | None, r: BenchRow) -> float | None:
    return None if full is None else full.measured_ms / r.measured_ms


def sample_ranks(counts_by_rank: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(n,) int64 frequency ranks drawn from the plan's target distribution (uniform if it has no counts)."""
    p = counts_by_rank.astype(np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)
    return np.random.default_rng(seed).choice(p.size, size=n, p=p).astype(np.int64)


def noise_warnings(rows: list[BenchRow], limit: float = NOISY_SPREAD) -> list[str]:
    """One warning naming every method whose p80/p20 spread exceeds `limit` (the machine was busy), else []."""
    noisy = [r for r in rows if r.p20_ms > 0 and r.p80_ms / r.p20_ms > limit]
    if not noisy:
        return []
    figs = "; ".join(f"{r.method} {r.p20_ms:.1f}-{r.p80_ms:.1f} ms ({r.p80_ms / r.p20_ms:.2f}x)" for r in noisy)
    return [
        f"the machine was noisy: p20-p80 spread above {limit:.2f}x for {figs}; "
        "re-run on a quiet machine (or with more --reps) before quoting these figures"
    ]


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
    """Measure one training step (fwd+bwd) of the plan's layer next to the full softmax, chunked CE and ALSWL.

    Args:
        plan: the design to measure (`Plan.load("plan.json")`).
        device: "auto", "cpu", "cuda" or "mps".
        dtype: "float32", "bfloat16" or "float16" (autocast around the layer; parameters stay fp32).
        batch_tokens: tokens per step N; default the plan's own `batch_tokens` (else 2048).
        profile: a `DeviceProfile` for predicted figures; without it, predictions are omitted (the memory check
            then uses the plan's own predictions).
        reps: timed steps per method (methods slower than 1 s per step stop after 3).
        full_softmax: also measure the full softmax and the chunked `F.linear_cross_entropy` (seconds per step on
            a CPU at V=50K).
        seed: for the targets and the hidden states.
        progress: called as progress(method, round_done, rounds) after every timed step.

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
    notes: list[str] = []
    if plan.mode == "infer":
        notes.append(
            "this plan was optimized for inference (--mode infer), but the step timed here is a training step "
            "(fwd+bwd); for decode latency run `vocabopt bench PLAN --mode infer`"
        )
    preds = _predictions(plan, profile, n)
    methods = _methods(plan, n, dev, getattr(torch, dtype), full_softmax, seed, _needs(plan, preds, n, dtype), notes)
    failed: dict[str, str] = {}
    steps = {name: _guarded(name, m["fn"], failed) for name, m in methods.items()}
    for name, step in steps.items():  # the warm-up: the first step of each method, before any is timed
        step()
        if progress:
            progress(name, 0, reps)
    times = _time_interleaved({k: v for k, v in steps.items() if k not in failed}, dev, reps, progress)
    rows = [_row(name, m, times[name], preds, dev, steps[name], failed) for name, m in methods.items() if name in times]
    rows = [r for r in rows if r is not None]  # a method can also fail while its memory is measured
    notes += [f"{name} skipped: {why}" for name, why in failed.items()]
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "seed": seed,
        "profile": getattr(profile, "device", None),
        "peak_memory": {"cuda": "max_memory_allocated", "cpu": "resident-set high-water mark"}.get(dev.type),
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


def _guarded(name: str, fn: Callable[[], Any], failed: dict[str, str]) -> Callable[[], None]:
    """One fwd+bwd step of `fn` that records an allocation failure in `failed[name]` instead of raising."""

    def step() -> None:
        if name in failed:
            return
        try:
            fn().backward()
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            failed[name] = f"its allocation failed ({str(e).splitlines()[0][:160]})"

    return step


def _row(
    name: str, m: dict, times: list[float], preds: dict, dev: Any, step: Callable[[], None], failed: dict[str, str]
) -> BenchRow | None:
    """One method's row: median and spread of its timed steps, memory, and the cost model's prediction."""
    q = np.percentile(times, [20, 80])
    pred = preds.get("full" if name == FULL else "plan" if name == "vocabopt" else None)  # others: other kernels
    peak = step_peak_bytes(step, dev.type)  # one more whole step (the guarded one: a failure lands in `failed`)
    if name in failed:
        return None
    resident, scratch = module_bytes(*m["modules"])
    return BenchRow(
        method=name,
        cutoffs=m["design"][0],
        proj_dims=m["design"][1],
        measured_ms=float(statistics.median(times)),
        p20_ms=float(q[0]),
        p80_ms=float(q[1]),
        samples=len(times),
        saved_bytes=saved_bytes(m["fn"]),
        peak_bytes=peak,
        predicted_ms=None if pred is None else float(pred.time_ms),
        predicted_bytes=None if pred is None else int(pred.memory_bytes),
        resident_bytes=resident,
        scratch_bytes=scratch,
    )


def _needs(plan: Plan, preds: dict[str, Any], n: int, dtype: str = "float32") -> dict[str, float]:
    """Predicted activation bytes of one training step: "plan" (the adaptive layer) and "full" (the full softmax).

    From the profile's predictions when given (train mode), else from the plan's own when it was optimized for
    training (made by `optimize` at its batch size; every term is rows x width, so they scale linearly with N),
    else from the cost model in train mode: a `--mode infer` plan records inference memory, but bench times a
    training step.
    """
    out: dict[str, float] = {}
    recorded = (plan.predicted or {}) if plan.mode == "train" else {}
    model: dict[str, float] | None = None
    for key, rec_key in (("plan", "plan"), ("full", "full_softmax")):
        rec, at = recorded.get(rec_key) or {}, recorded.get("batch_tokens") or plan.batch_tokens
        if key in preds:
            out[key] = float(preds[key].memory_bytes)
        elif "memory_bytes" in rec and at:
            out[key] = float(rec["memory_bytes"]) * n / float(at)
        else:
            model = model or train_bytes(plan, n, dtype)
            out[key] = model[key]
    return out


def train_bytes(plan: Plan, n: int, dtype: str = "float32") -> dict[str, float]:
    """The cost model's activation bytes of one training step on `n` tokens: {"plan": ..., "full": ...}.

    `cost.predict` is the one home of the memory rule; its memory depends on the design, N and the dtype, never on
    the device's timings, so a flat synthetic profile in `dtype` stands in for a measured one.
    """
    from .profile import synthetic_profile

    prof = synthetic_profile(lambda kernel, *coords: np.ones_like(coords[0]), dtype=dtype)
    kw: dict[str, Any] = {"hidden": plan.hidden, "batch_tokens": n, "mode": "train"}
    ours = cost.predict(prof, plan.counts_by_rank, cutoffs=plan.cutoffs, proj_dims=plan.proj_dims, **kw)
    full = cost.predict(prof, plan.counts_by_rank, cutoffs=[], proj_dims=[], **kw)
    return {"plan": float(ours.memory_bytes), "full": float(full.memory_bytes)}


def _fits(name: str, need: float | None, dev: Any, notes: list[str]) -> bool:
    """False, with a note, when `need` bytes exceed what the device can allocate now."""
    avail = available_bytes(dev.type)
    if need is None or avail is None or need <= avail:
        return True
    notes.append(
        f"{name} skipped: it needs ~{need / 1e9:.1f} GB (cost model: activations, plus weights and gradients), "
        f"{avail / 1e9:.1f} GB available on {dev.type}; pass a smaller --batch-tokens or --no-full"
    )
    return False


def _methods(plan: Plan, n: int, dev: Any, tdtype: Any, full: bool, seed: int, needs: dict, notes: list[str]):
    """name -> {"fn": a closure returning the loss of one forward, "design": (cutoffs, proj_dims), "modules"}."""
    import torch

    from .layer import build_layer, load_alswl

    d, V = plan.hidden, plan.vocab_size
    ranks = torch.from_numpy(sample_ranks(plan.counts_by_rank, n, seed)).to(dev)  # (N,) frequency ranks
    ours = build_layer(plan).to(dev)
    ids = ours.order[ranks]  # (N,) the tokenizer's own ids: what the plan's layer takes
    h = torch.randn(n, d, device=dev, requires_grad=True)  # (N, d) hidden states
    run = _autocast_runner(dev, tdtype)
    weight_bytes = 4 * sum(p.numel() for p in ours.parameters())  # fp32 parameters
    out: dict[str, dict] = {}
    design_ = (list(plan.cutoffs), list(plan.proj_dims))
    if _fits("vocabopt", needs["plan"] + 2 * weight_bytes, dev, notes):
        out["vocabopt"] = {"fn": run(lambda: ours(h, ids)), "design": design_, "modules": [ours]}
    div = design.alswl_div_value(plan.hidden, plan.proj_dims)
    if div is None:
        notes.append("ALSWL not measured: its projections follow d // div_value**(i+1), the plan's do not")
    elif "vocabopt" in out:
        head_bias = ours.head.bias is not None
        alswl = torch.nn.AdaptiveLogSoftmaxWithLoss(d, V, plan.cutoffs, div_value=div, head_bias=head_bias).to(dev)
        load_alswl(ours, alswl)  # the timed layer now holds exactly ALSWL's weights (tail biases zero)
        out["ALSWL"] = {"fn": run(lambda: alswl(h, ranks).loss), "design": design_, "modules": [alswl]}  # rank space
        try:
            out["ALSWL"]["fn"]().backward()
        except (RuntimeError, MemoryError) as e:  # torch 2.13's ALSWL mixes dtypes under bf16/fp16 autocast
            why = "its allocation failed" if is_out_of_memory(e) else f"it fails under autocast({tdtype})"
            notes.append(f"ALSWL skipped: {why}: {str(e).splitlines()[0][:160]}")
            del out["ALSWL"]
    if full:
        try:
            out.update(_full_methods(n, d, V, h, ranks, dev, run, needs["full"], notes))
        except (RuntimeError, MemoryError) as e:  # the (V, d) weights themselves did not fit
            if not is_out_of_memory(e):
                raise
            notes.append(
                f"{FULL} and {CHUNKED} skipped: allocating their weights failed ({str(e).splitlines()[0][:160]})"
            )
    return out


def _full_methods(n: int, d: int, V: int, h: Any, ranks: Any, dev: Any, run: Callable, need: float, notes: list[str]):
    """The full softmax and, where torch has it, its chunked fused linear cross-entropy, on the same weights."""
    import torch
    import torch.nn.functional as F

    weight_bytes = 4 * (V * d + V)  # fp32 (V, d) weight and (V,) bias
    out: dict[str, dict] = {}
    if not _fits(FULL, need + 2 * weight_bytes, dev, notes):  # weights and their gradients
        return out
    lin = torch.nn.Linear(d, V, device=dev)
    out[FULL] = {"fn": run(lambda: F.cross_entropy(lin(h).float(), ranks)), "design": ([], []), "modules": [lin]}
    options_cls = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if options_cls is None:
        notes.append(f"{CHUNKED} not measured: torch {torch.__version__} has no LinearCrossEntropyOptions (>= 2.13)")
        return out
    # Weight, its gradient precomputed in forward, one weight-sized scratch (acc_policy "balanced"/"accurate");
    # the chunk's logits are sized like the (N, d) input by the "aspect_ratio" chunking heuristic.
    if _fits(CHUNKED, 3 * weight_bytes + 4 * 4 * n * d, dev, notes):
        opts = options_cls()  # torch's defaults; the bias (C,) is supported by the chunked path
        out[CHUNKED] = {
            "fn": run(lambda: F.linear_cross_entropy(h, lin.weight, ranks, linear_bias=lin.bias, options=opts)),
            "design": ([], []),
            "modules": [lin],
        }
    return out


def _autocast_runner(dev: Any, tdtype: Any) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Wraps a forward so it runs under autocast to `tdtype` (a no-op for float32)."""
    import torch

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.autocast(dev.type, dtype=tdtype, enabled=tdtype != torch.float32):
                return fn()

        return run

    return wrap


def _time_interleaved(
    steps: dict[str, Callable[[], None]], dev: Any, reps: int, progress: Callable[[str, int, int], None] | None
) -> dict[str, list[float]]:
    """ms per fwd+bwd step of each method (already warmed up). Methods slower than 1 s per step stop after 3."""
    names = list(steps)
    samples = interleaved_ms(
        list(steps.values()),
        dev,
        rounds=reps,
        give_up_ms=1000.0,
        on_sample=(lambda i, rnd, _s: progress(names[i], rnd + 1, reps)) if progress else None,
    )
    return dict(zip(names, samples, strict=True))


def _predictions(plan: Plan, profile: Any, n: int) -> dict[str, Any]:
    if profile is None:
        return {}
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
