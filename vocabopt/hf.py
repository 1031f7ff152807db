"""Hugging Face integration: a vocabopt adaptive-softmax head as the `lm_head` of a `transformers` causal LM.

Inputs: a causal LM (e.g. `AutoModelForCausalLM.from_config(...)`) and a Plan built for its tokenizer and hidden size.
Outputs: the same model object, its `lm_head` replaced by the adaptive head and its class by a subclass whose forward
returns HF's `loss` (shifted labels, ignore index -100, `num_items_in_batch`) computed by the head without (B, T, V)
logits, and log-probs as `logits` only at the positions generation asks for (`logits_to_keep`); `generate`, `Trainer`,
`save_pretrained` then work (it writes the live head's design, so a head changed by `lm_head.quantize_` saves with
its int8 design), and `from_pretrained` here loads the model back with its head, refusing a checkpoint whose lm_head
keys do not match the design (transformers would initialise them at random). `generate_exact` decodes
greedy / top-k / top-p through the head's exact tail skipping. transformers is imported lazily (optional extra
`vocabopt[hf]`); `causal_lm_loss` needs only duck typing (`base_model`, `lm_head`).
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

from .adaptive_head import AdaptiveHeadConfig, AdaptiveSoftmax, config_dict
from .errors import InputError, MismatchError
from .layer import LayerInputError, build_layer
from .plan import Plan

SPEC_KEY = "vocabopt"  # config.json key holding the head's design (the frequency order lives in the weights)
SPEC_VERSION = 1
_UNSUPPORTED_LOGIT_OPS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def replace_lm_head(model: Any, plan: Plan, **overrides: Any) -> AdaptiveSoftmax:
    """Replace `model.lm_head` by the adaptive head of `plan` (the old head's device and dtype, fresh weights).

    On a `transformers` PreTrainedModel the model's class also becomes `Adaptive<Class>` and the design is written
    to `model.config.vocabopt`, so `model(input_ids, labels=labels).loss`, `model.generate(...)`, `Trainer` and
    `save_pretrained` work (load with `vocabopt.hf.from_pretrained`). A model whose vocabulary is padded beyond the
    plan's (8064 rows for an 8000-id tokenizer) is accepted: padded ids get log-prob -inf and are never targets.
    Other modules: train with `causal_lm_loss(model, ...)`, generate with `head.predict/topk/sample`.

    Example:
        >>> # model = AutoModelForCausalLM.from_config(config); head = replace_lm_head(model, Plan.load("plan.json"))
        >>> # loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    """
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or getattr(config, "d_model", None)
    vocab = getattr(config, "vocab_size", None)
    if hidden != plan.hidden:
        raise MismatchError(
            f"model hidden size {hidden} != plan hidden {plan.hidden}; optimize the plan with --hidden {hidden}"
        )
    if vocab is not None and vocab < plan.vocab_size:
        raise MismatchError(
            f"model vocab_size {vocab} < plan vocab_size {plan.vocab_size}: the plan names ids the model cannot embed; "
            "build the plan from stats made with the model's tokenizer"
        )
    hf = _is_hf_model(model)
    if hf:
        _check_logit_ops(config)
    # every check (and everything that can fail) runs before the first mutation: a refused model is left as it was
    old = getattr(model, "lm_head", None)
    head = build_layer(plan, **overrides)
    if old is not None and hasattr(old, "weight"):  # the old head's device and dtype (a bf16 model trains in bf16)
        head = head.to(device=old.weight.device, dtype=old.weight.dtype)
    if hf:
        cls = adaptive_class(type(model))
        spec = {"schema_version": SPEC_VERSION, "head": config_dict(head.config), "plan": _plan_json(plan)}
    if hasattr(config, "tie_word_embeddings"):
        config.tie_word_embeddings = False  # the adaptive head has no (V, d) matrix to tie to the input embedding
    model.lm_head = head
    if hf:
        setattr(config, SPEC_KEY, spec)
        model.__class__ = cls
    return head


def causal_lm_loss(model: Any, input_ids: Any, attention_mask: Any = None, labels: Any = None, **kwargs: Any):
    """Next-token loss of `model` through its adaptive head: base model -> hidden states -> head(hidden, targets).

    `labels` default to `input_ids` (masked with -100 where attention_mask is 0), shifted by one as in HF.
    """
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state  # (B, T, d)
    labels = input_ids if labels is None else labels
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, -100)
    return model.lm_head(hidden[:, :-1], labels[:, 1:])


# --- the transformers subclass --------------------------------------------------------------------------------------

_CLASSES: dict[type, type] = {}  # HF class -> its Adaptive subclass (one per class, so isinstance checks hold)


def adaptive_class(base: type) -> type:
    """`Adaptive<base>`: `base` (a transformers *ForCausalLM class) with the adaptive head as `lm_head`.

    Its `__init__` builds the head from `config.vocabopt` (weights and frequency order come from the checkpoint), so
    `from_pretrained` on it loads the head; its forward keeps `base.forward`'s signature (generate and Trainer inspect
    it) and calls `base_model` then the head, as every standard decoder-only *ForCausalLM does.
    """
    if base in _CLASSES.values():
        return base
    if base not in _CLASSES:

        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
            base.__init__(self, config, *args, **kwargs)
            self.lm_head = head_from_config(config)

        namespace = {
            "__init__": __init__,
            "forward": _forward_with_signature(base),
            "save_pretrained": _save_pretrained_with_spec(base),
            "_tied_weights_keys": None,  # nothing to tie: the head has no (V, d) matrix
            "__module__": __name__,
            "__doc__": f"{base.__name__} with a vocabopt adaptive-softmax lm_head (see vocabopt.hf).",
        }
        _CLASSES[base] = type(f"Adaptive{base.__name__}", (base,), namespace)
    return _CLASSES[base]


def head_from_config(config: Any, where: str = "the model config") -> AdaptiveSoftmax:
    """An adaptive head shaped by `config.vocabopt` (identity order, fresh weights: a checkpoint fills both).

    `where` names the config in error messages (from_pretrained passes the folder's config.json).
    """
    spec = getattr(config, SPEC_KEY, None)
    if not isinstance(spec, dict) or "head" not in spec:
        raise InputError(
            f"{where} has no '{SPEC_KEY}' entry; it was not saved from a model with a vocabopt head "
            "(load it with transformers' AutoModelForCausalLM, or call replace_lm_head first)"
        )
    if spec.get("schema_version") != SPEC_VERSION:
        raise InputError(
            f"{where}: '{SPEC_KEY}' schema_version {spec.get('schema_version')} != {SPEC_VERSION}; "
            "load it with the vocabopt version that saved it"
        )
    import torch

    try:
        head_cfg = AdaptiveHeadConfig(**{**spec["head"], "unigram_init": False})
    except (TypeError, ValueError) as e:  # a field this version lacks, or a value it does not accept
        raise InputError(
            f"{where}: '{SPEC_KEY}.head' is not a head design this vocabopt can build ({e}); "
            "load it with the vocabopt version that saved it"
        ) from None
    with torch.device("cpu"):  # from_pretrained builds models on the meta device; the order check needs data
        head = AdaptiveSoftmax(head_cfg, order=torch.arange(head_cfg.vocab_size))
    head.invalid_input = LayerInputError
    return head


def _forward_with_signature(base: type):
    sig = inspect.signature(base.forward)

    def forward(self, *args: Any, **kwargs: Any):
        bound = sig.bind(self, *args, **kwargs)
        named = dict(bound.arguments)
        named.pop("self", None)
        for p in sig.parameters.values():  # flatten **kwargs
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                named.update(named.pop(p.name, {}))
        return _adaptive_forward(self, named)

    forward.__signature__ = sig
    forward.__doc__ = f"{base.__name__}.forward through the adaptive head (loss from the head, log-probs as logits)."
    return forward


def _save_pretrained_with_spec(base: type):
    def save_pretrained(self, *args: Any, **kwargs: Any):
        """`base.save_pretrained`, with `config.vocabopt["head"]` refreshed from the live head first, so a head
        changed after replace_lm_head (`lm_head.quantize_(...)`) is saved with the design its weights need."""
        refresh_spec(self)
        return base.save_pretrained(self, *args, **kwargs)

    return save_pretrained


def refresh_spec(model: Any) -> None:
    """Write the live head's design into `model.config.vocabopt["head"]` (the checkpoint's keys follow from it)."""
    spec = getattr(model.config, SPEC_KEY, None)
    if not isinstance(spec, dict) or not isinstance(model.lm_head, AdaptiveSoftmax):
        raise InputError(
            "this model's lm_head is no longer the adaptive head replace_lm_head installed (or config.vocabopt was "
            "removed); call replace_lm_head again before saving"
        )
    setattr(model.config, SPEC_KEY, {**spec, "head": config_dict(model.lm_head.config)})


def _adaptive_forward(model: Any, named: dict[str, Any]):
    """The body of every Adaptive* forward: base model, then the head's loss and/or log-probs."""
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from transformers.modeling_utils import slice_logits_to_keep

    labels = named.pop("labels", None)
    shift_labels = named.pop("shift_labels", None)
    num_items = named.pop("num_items_in_batch", None)
    ignore_index = named.pop("ignore_index", -100)
    keep = named.pop("logits_to_keep", 0)
    out = model.base_model(**named)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (B, T, d)
    loss = logits = None
    if labels is not None or shift_labels is not None:
        loss = hf_loss(model.lm_head, hidden, labels, shift_labels, num_items, ignore_index)
    if loss is None or not (isinstance(keep, int) and keep == 0):  # training asks for no (B, T, V) tensor
        logits = padded_log_prob(model.lm_head, slice_logits_to_keep(hidden, keep), model.config.vocab_size)
    return CausalLMOutputWithPast(
        loss=loss,
        logits=logits,
        past_key_values=getattr(out, "past_key_values", None),
        hidden_states=getattr(out, "hidden_states", None),
        attentions=getattr(out, "attentions", None),
    )


def hf_loss(head: AdaptiveSoftmax, hidden: Any, labels: Any, shift_labels: Any, num_items: Any, ignore_index: int):
    """HF's ForCausalLMLoss through the head: position t predicts labels[t+1] (or shift_labels[t]), ignore_index
    skipped, the mean over kept targets, or their sum / num_items_in_batch (gradient accumulation). fp32 scalar."""
    if shift_labels is None:
        hidden, shift_labels = hidden[:, :-1], labels[:, 1:]  # (B, T-1, d), (B, T-1)
    targets = shift_labels.to(hidden.device)
    if num_items is None:
        return head(hidden, targets, reduction="mean", ignore_index=ignore_index)
    total = head(hidden, targets, reduction="sum", ignore_index=ignore_index)
    return total / (num_items.to(total.device) if hasattr(num_items, "to") else num_items)


def padded_log_prob(head: AdaptiveSoftmax, hidden: Any, vocab_size: int):
    """(..., d) -> (..., vocab_size) fp32 log-probs; ids past the plan's vocabulary (a padded table) get -inf."""
    import torch

    lp = head.log_prob(hidden)  # (..., V_plan)
    extra = vocab_size - lp.shape[-1]
    return torch.nn.functional.pad(lp, (0, extra), value=-math.inf) if extra > 0 else lp


# --- saving and loading ---------------------------------------------------------------------------------------------


def from_pretrained(path: str | Path, **kwargs: Any) -> Any:
    """Load a model saved with `save_pretrained` after `replace_lm_head`: its class, head design, trained head
    weights and frequency order (all from safetensors; no pickle). `kwargs` go to transformers' `from_pretrained`
    (e.g. `dtype=torch.bfloat16`).

    Example:
        >>> # model.save_pretrained("out"); model = vocabopt.hf.from_pretrained("out")
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    where = f"{path}/config.json"
    config = AutoConfig.from_pretrained(path)
    head_from_config(config, where)  # fails early, in one line, on a folder without a vocabopt head
    try:
        base = AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        raise InputError(
            f"{where}: model_type {getattr(config, 'model_type', '?')!r} has no causal-LM class in this transformers "
            f"({type(config).__name__}); vocabopt.hf loads *ForCausalLM models only (upgrade transformers if it is one)"
        ) from None
    want_info = kwargs.pop("output_loading_info", False)
    model, info = adaptive_class(base).from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    _check_head_keys(info, Path(path))
    _rebuild_buffers(model.lm_head, Path(path))
    return (model, info) if want_info else model


def _check_head_keys(info: dict[str, Any], path: Path) -> None:
    """A missing, unexpected or mis-shaped lm_head.* key means transformers initialised part of the head at random:
    refuse the folder instead of returning a silently wrong model."""
    bad = {
        kind: sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(kind, ()) if _is_head_key(k))
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(bad.values()):
        found = "; ".join(f"{kind.split('_')[0]}: {', '.join(keys[:4])}" for kind, keys in bad.items() if keys)
        raise InputError(
            f"{path}: the checkpoint's head weights do not match the design in config.json ({found}); "
            "re-save it with vocabopt.hf (model.save_pretrained) from the model that holds the trained head"
        )


def _is_head_key(key: Any) -> bool:
    name = str(key[0] if isinstance(key, tuple) else key)
    return name == "lm_head" or name.startswith("lm_head.") or ".lm_head." in name


def _rebuild_buffers(head: AdaptiveSoftmax, path: Path) -> None:
    """Non-persistent buffers come from the config (the loader may leave them on the meta device); the order must
    be a permutation and rank_of its inverse, else the checkpoint is not a vocabopt head."""
    import torch

    order = head.order
    device = order.device
    head.boundaries = torch.tensor(head.config.cutoffs, dtype=torch.long, device=device)
    V = head.config.vocab_size
    if order.is_meta or not torch.equal(order.sort().values.cpu(), torch.arange(V)):
        raise InputError(f"{path}: lm_head.order is not a permutation of 0..{V - 1}; the checkpoint lost the head")
    head.rank_of = torch.empty_like(order).scatter_(0, order, torch.arange(V, device=device))
    head.refresh_bounds()


def _plan_json(plan: Plan) -> dict[str, Any]:
    """The plan without its arrays, as plain JSON (the order travels as the head's `order` buffer)."""
    from .artifacts import dumps_json

    return json.loads(dumps_json(plan.to_json()))


def _is_hf_model(model: Any) -> bool:
    import sys

    modeling = sys.modules.get("transformers.modeling_utils")  # imported whenever a transformers model exists
    return modeling is not None and isinstance(model, modeling.PreTrainedModel)


def _check_logit_ops(config: Any) -> None:
    for name in _UNSUPPORTED_LOGIT_OPS:
        if getattr(config, name, None) not in (None, 1.0):
            raise MismatchError(
                f"the model's config sets {name}={getattr(config, name)}: its forward transforms the logits, which "
                "the adaptive head does not reproduce; use a model without it"
            )


# --- exact generation through the head ------------------------------------------------------------------------------


def generate_exact(
    model: Any,
    input_ids: Any,
    *,
    max_new_tokens: int,
    attention_mask: Any = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    generator: Any = None,
) -> Any:
    """Decode with the head's exact tail skipping: greedy = `head.predict` (equals `model.generate(do_sample=False)`),
    sampling = `head.sample(temperature, top_k, top_p)`; tails that cannot matter are never evaluated, and no
    (B, V) log-prob row is built. Left padding is supported through `attention_mask`, as in `generate`.

    Returns (B, T + new) token ids: the prompt, then the new tokens (`pad_token_id` after a row's `eos_token_id`).
    """
    import torch

    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens={max_new_tokens} must be >= 0")
    head, base = model.lm_head, model.base_model
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    pad = eos_token_id if pad_token_id is None else pad_token_id
    ids, step_ids, past = input_ids, input_ids, None
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (B,)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]  # (B, t) as HF
            out = base(
                input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
            )
            past, h = out.past_key_values, out.last_hidden_state[:, -1]  # (B, d)
            if do_sample:
                nxt = head.sample(h, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            else:
                nxt = head.predict(h)  # (B,)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                done |= nxt == eos_token_id
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            step_ids = nxt[:, None]
            if eos_token_id is not None and bool(done.all()):
                break
    return ids
