"""The export stage: a Plan -> a standalone layer file a user drops into their training code.

Inputs: a `vocabopt.Plan`. Outputs, by format:
    module : `<out>.py`, the torch-only `vocabopt/adaptive_head.py` copied verbatim with its plan block filled in,
             plus `<out>.order.<hash>.pt` (frequency order and counts; plain tensors, read with weights_only=True;
             named by its sha256, so re-exporting never breaks the module it replaces).
    config : `<out>.json`, the layer config (AdaptiveHeadConfig fields) for `AdaptiveHeadConfig(**d)`.
    torch  : `<out>.py` building torch.nn.AdaptiveLogSoftmaxWithLoss plus the id -> rank remap, and the sidecar.
             ALSWL only supports projections hidden // div_value**(i+1): other plans are refused.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import artifacts, design
from .errors import InputError
from .layer import head_config
from .plan import Plan
from .version import __version__

FORMATS = ("module", "config", "torch")
_TEMPLATE = Path(__file__).with_name("adaptive_head.py")
_BLOCK = re.compile(r"(# --- plan \(filled in by `vocabopt export`.*?\n)(.*?)(# --- end plan)", re.S)


def export_layer(plan: Plan, out: str | Path, format: str = "module", **overrides: Any) -> list[Path]:
    """Write the layer for `plan` to `out`; return the paths written.

    Args:
        plan: the design to export.
        out: the output file (`adaptive_head.py`, or `.json` for the config format).
        format: "module" | "config" | "torch".
        **overrides: AdaptiveHeadConfig fields baked into the exported config (dropout, tie_input, ...);
            `quantize="int8-tails"` / `"int8"` makes `build_head()` return the weight-only int8 layer (inference
            only; it loads an int8 state dict from `layer.quantize_()`, or an fp32 one and quantizes it on load).

    Example:
        >>> import numpy as np, tempfile, os
        >>> plan = Plan.from_cutoffs(np.arange(100)[::-1], hidden=16, cutoffs=[10, 40])
        >>> paths = export_layer(plan, os.path.join(tempfile.mkdtemp(), "head.py"))
        >>> [p.name.split(".")[1] for p in paths]
        ['order', 'py']
    """
    if format not in FORMATS:
        raise InputError(f"format {format!r} is not one of {FORMATS}")
    if format == "torch" and overrides.get("quantize"):
        raise InputError(
            f"--quantize {overrides['quantize']}: AdaptiveLogSoftmaxWithLoss has no int8 weights; use --format module"
        )
    out = Path(out)
    config = head_config(plan, **overrides)
    if format == "config":
        obj = {
            "artifact": "vocabopt.LayerConfig",
            "schema_version": 1,
            "config": asdict(config),
            "plan": plan.summary(),
            "vocabopt_version": __version__,
        }
        artifacts.write_json(out, obj)
        return [out]
    data = _sidecar_bytes(plan)
    sidecar = artifacts.sidecar_path(out, "order", data, suffix=".pt")
    source = (
        module_source(plan, sidecar.name, asdict(config)) if format == "module" else alswl_source(plan, sidecar.name)
    )
    artifacts.write_with_sidecars(out, {sidecar: data}, lambda: source.encode("utf-8"))
    return [sidecar, out]


def module_source(plan: Plan, sidecar: str, config: dict[str, Any]) -> str:
    """The template's source with the plan block (and the docstring's plan line) filled in as literals."""
    text = _TEMPLATE.read_text(encoding="utf-8")
    block = f"PLAN_CONFIG: dict | None = {_literal(config)}\nSIDECAR: str | None = {sidecar!r}\n"
    text, n = _BLOCK.subn(lambda m: m.group(1) + block + m.group(3), text)
    assert n == 1, "adaptive_head.py lost its plan block"
    return text.replace("Plan: none (library copy).", f"Plan: {_describe(plan)}.", 1)


def alswl_source(plan: Plan, sidecar: str) -> str:
    """A builder for torch.nn.AdaptiveLogSoftmaxWithLoss with this plan's design and the id -> rank remap."""
    div = _div_value(plan)
    return f'''"""torch.nn.AdaptiveLogSoftmaxWithLoss for plan {_describe(plan)}, written by vocabopt {__version__}.

ALSWL expects frequency-RANK targets: map the tokenizer's ids first, `alswl(hidden, rank_of[targets])`, and map
its outputs back with `order[rank]`. ALSWL supports only projection sizes hidden // div_value**(i+1) (this plan
follows div_value={div}); for the faster layer with ignore_index, reductions, tail biases and sampling, export with
`--format module`.
"""

from pathlib import Path

import torch

VOCAB_SIZE = {plan.vocab_size}
HIDDEN = {plan.hidden}
CUTOFFS = {list(plan.cutoffs)!r}
DIV_VALUE = {div!r}
SIDECAR = {sidecar!r}


def build_alswl() -> tuple[torch.nn.AdaptiveLogSoftmaxWithLoss, torch.Tensor, torch.Tensor]:
    """(layer, rank_of, order): rank_of maps token id -> rank (V,), order maps rank -> token id (V,)."""
    order = torch.load(Path(__file__).with_name(SIDECAR), weights_only=True)["order"]  # (V,) rank -> id
    rank_of = torch.empty_like(order).scatter_(0, order, torch.arange(VOCAB_SIZE))  # (V,) id -> rank
    return torch.nn.AdaptiveLogSoftmaxWithLoss(HIDDEN, VOCAB_SIZE, CUTOFFS, div_value=DIV_VALUE), rank_of, order
'''


def _div_value(plan: Plan) -> float:
    div = design.alswl_div_value(plan.hidden, plan.proj_dims)
    if div is None:
        raise InputError(
            f"--format torch: AdaptiveLogSoftmaxWithLoss only supports projections hidden // div_value**(i+1), but "
            f"this plan has proj_dims {plan.proj_dims} for hidden {plan.hidden}; use --format module (any projection "
            "sizes)"
        )
    return div


def _sidecar_bytes(plan: Plan) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(
        {"order": torch.from_numpy(plan.order.copy()), "counts": torch.from_numpy(plan.counts_by_rank.copy())}, buf
    )
    return buf.getvalue()


def _describe(plan: Plan) -> str:
    name = re.sub(r"[^A-Za-z0-9._/-]", "_", str(plan.provenance.get("name") or "unnamed"))[:80]
    return f"{name} (V={plan.vocab_size}, d={plan.hidden}, cutoffs={plan.cutoffs}, proj_dims={plan.proj_dims})"


def _literal(obj: Any) -> str:
    """A Python literal of plain JSON-like data (ints, floats, strs, bools, lists, dicts), one key per line."""
    if isinstance(obj, dict):
        return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in obj.items()) + "}"
    return repr(obj)
