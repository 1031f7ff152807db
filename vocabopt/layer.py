"""The layer stage: a Plan -> a ready-to-train adaptive-softmax `torch.nn.Module`.

Inputs: a `vocabopt.Plan`. Outputs: `vocabopt.adaptive_head.AdaptiveSoftmax`, the same torch-only code that
`vocabopt export` writes to a standalone file, optionally with weight-only int8 clusters for inference
(`quantize=`). Also maps weights from torch's AdaptiveLogSoftmaxWithLoss.
"""

from __future__ import annotations

from typing import Any

from .adaptive_head import AdaptiveHeadConfig, AdaptiveSoftmax
from .errors import InputError
from .plan import Plan


class LayerInputError(InputError, ValueError):
    """Bad input to a layer built by vocabopt (wrong hidden width, target ids outside the vocabulary, ...)."""


def head_config(plan: Plan, **overrides: Any) -> AdaptiveHeadConfig:
    """The layer config for `plan`; `overrides` set any other AdaptiveHeadConfig field (dropout, tie_input, ...)."""
    if not isinstance(plan, Plan):
        raise InputError(f"expected a vocabopt.Plan, got {type(plan).__name__}; load one with Plan.load(path)")
    fields = set(AdaptiveHeadConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise InputError(f"unknown layer option(s) {unknown}; valid: {sorted(fields)}")
    fields_from_plan = {
        "vocab_size": plan.vocab_size,
        "hidden": plan.hidden,
        "cutoffs": list(plan.cutoffs),
        "proj_dims": list(plan.proj_dims),
        "shares": [round(s, 6) for s in plan.cluster_shares],
        "plan": str(plan.provenance.get("name", "")),
    }
    try:
        return AdaptiveHeadConfig(**{**fields_from_plan, **overrides})
    except ValueError as e:  # the layer file raises plain ValueError (it cannot import vocabopt's errors)
        raise InputError(f"layer option(s) {sorted(overrides)}: {e}") from None


def build_layer(plan: Plan, quantize: str | None = None, **overrides: Any) -> AdaptiveSoftmax:
    """A freshly initialised adaptive-softmax layer built from `plan`.

    Args:
        plan: the design (frequency order, cutoffs, projection sizes).
        quantize: None (fp32, trainable), "int8-tails" (weight-only int8 with per-output-channel scales for every
            tail's projection and output weights) or "int8" (the head too). A quantized layer is built in eval
            mode for inference: load a quantized state dict (or an fp32 one, quantized on load) into it; training
            it raises. To quantize a trained layer in place: `layer.quantize_("int8-tails")`.
        **overrides: AdaptiveHeadConfig fields, e.g. `dropout=0.1`, `tie_input=True`, `unigram_init=False`.

    Example:
        >>> import numpy as np
        >>> plan = Plan.from_cutoffs(np.arange(100)[::-1], hidden=16, cutoffs=[10, 40])
        >>> layer = build_layer(plan)
        >>> import torch; loss = layer(torch.randn(3, 16), torch.tensor([0, 50, 99]))
        >>> loss.shape
        torch.Size([])
    """
    import torch

    if quantize is not None:
        overrides["quantize"] = quantize
    config = head_config(plan, **overrides)
    layer = AdaptiveSoftmax(config, order=torch.from_numpy(plan.order), counts=torch.from_numpy(plan.counts_by_rank))
    layer.invalid_input = LayerInputError
    return layer


def load_alswl(layer: AdaptiveSoftmax, alswl: Any) -> AdaptiveSoftmax:
    """Copy the weights of a torch.nn.AdaptiveLogSoftmaxWithLoss with the same design into `layer`.

    ALSWL works in rank space (class c = frequency rank c); `layer` takes original ids, so ALSWL's class c is
    `layer.order[c]`. ALSWL has no tail biases: they are zeroed, as is the head bias when ALSWL has none.
    """
    import torch

    cfg = layer.config
    if cfg.quantize:
        raise InputError(
            f"the layer is quantized ({cfg.quantize}); load ALSWL weights into an fp32 layer, then quantize_"
        )
    if (alswl.in_features, alswl.n_classes, list(alswl.cutoffs[:-1])) != (
        cfg.hidden,
        cfg.vocab_size,
        cfg.cutoffs,
    ):
        raise InputError(
            f"ALSWL design (in_features={alswl.in_features}, n_classes={alswl.n_classes}, "
            f"cutoffs={alswl.cutoffs[:-1]}) differs from the layer's ({cfg.hidden}, {cfg.vocab_size}, {cfg.cutoffs})"
        )
    with torch.no_grad():
        layer.head.weight.copy_(alswl.head.weight)
        if layer.head.bias is not None:
            layer.head.bias.copy_(alswl.head.bias if alswl.head.bias is not None else 0.0)
        for i, (i2h, h2o) in enumerate(alswl.tail):
            if i2h.weight.shape != layer.proj[i].weight.shape:
                raise InputError(
                    f"tail {i}: ALSWL projects to {i2h.weight.shape[0]}, the layer to {layer.proj[i].weight.shape[0]}; "
                    "build the plan with proj_dims following div_value"
                )
            layer.proj[i].weight.copy_(i2h.weight)
            layer.out[i].weight.copy_(h2o.weight)
            if layer.out[i].bias is not None:
                layer.out[i].bias.zero_()
    return layer
