"""Hugging Face helper: put a vocabopt adaptive-softmax head on a `transformers` causal LM.

Inputs: a causal LM (e.g. `AutoModelForCausalLM`) and a Plan built for its tokenizer and hidden size.
Outputs: the model with `lm_head` replaced by the adaptive head, and `causal_lm_loss` to train it. transformers is
never imported here (duck typing on `config`, `lm_head` and `base_model`), so vocabopt does not depend on it.
"""

from __future__ import annotations

from typing import Any

from .adaptive_head import AdaptiveSoftmax
from .errors import MismatchError
from .layer import build_layer
from .plan import Plan


def replace_lm_head(model: Any, plan: Plan, **overrides: Any) -> AdaptiveSoftmax:
    """Replace `model.lm_head` by the adaptive head of `plan` (the old head's device and dtype, fresh weights).

    The model's own forward can no longer produce (N, V) logits; train with `causal_lm_loss(model, ...)` and
    generate with `head.sample` / `head.predict` / `head.topk` on the base model's hidden states.

    Example:
        >>> # model = AutoModelForCausalLM.from_pretrained(...); head = replace_lm_head(model, Plan.load("plan.json"))
        >>> # loss = causal_lm_loss(model, batch["input_ids"], attention_mask=batch["attention_mask"])
    """
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or getattr(config, "d_model", None)
    vocab = getattr(config, "vocab_size", None)
    if hidden != plan.hidden:
        raise MismatchError(
            f"model hidden size {hidden} != plan hidden {plan.hidden}; optimize the plan with --hidden {hidden}"
        )
    if vocab is not None and vocab != plan.vocab_size:
        raise MismatchError(
            f"model vocab_size {vocab} != plan vocab_size {plan.vocab_size}; build the plan from stats made with the "
            "model's tokenizer (a padded embedding table needs a plan over the padded size)"
        )
    old = getattr(model, "lm_head", None)
    head = build_layer(plan, **overrides)
    if old is not None and hasattr(old, "weight"):  # the old head's device and dtype (a bf16 model trains in bf16)
        head = head.to(device=old.weight.device, dtype=old.weight.dtype)
    if hasattr(config, "tie_word_embeddings"):
        config.tie_word_embeddings = False  # the adaptive head has no (V, d) matrix to tie to the input embedding
    model.lm_head = head
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
