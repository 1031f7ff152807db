"""A trained lm_head, from what a user holds: a (V, d) tensor or array, a `torch.nn.Linear`, a transformers model, a
state dict, or a weights file (.safetensors or torch.save). Output: (weight, bias or None, where it came from, tied).
torch is imported lazily; safetensors only for a .safetensors file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ArtifactError, InputError

# Where a state dict keeps the output layer, and (tied models, whose files often omit lm_head) the input embedding.
LM_HEAD_KEYS = ("lm_head.weight", "output.weight", "weight")
EMBEDDING_KEYS = ("model.embed_tokens.weight", "transformer.wte.weight", "embed_tokens.weight", "tok_embeddings.weight")


def lm_head_from(obj: Any, bias: Any = None, *, key: str | None = None) -> tuple[Any, Any, str, bool]:
    """(weight (V, d), bias (V,) or None, source, tied) from a tensor/array, an nn.Linear, an HF model or a state dict.

    A state dict is searched for `key`, else `LM_HEAD_KEYS`, else (tied models) `EMBEDDING_KEYS`.
    """
    import torch

    if hasattr(obj, "get_output_embeddings"):  # a transformers model
        lin, emb = obj.get_output_embeddings(), obj.get_input_embeddings()
        tied = emb is not None and lin.weight.data_ptr() == emb.weight.data_ptr()
        return lin.weight.detach(), None if lin.bias is None else lin.bias.detach(), "model lm_head", tied
    if isinstance(obj, torch.nn.Linear):
        if bias is not None:
            raise InputError("pass bias=None with an nn.Linear: its own bias is used")
        return obj.weight.detach(), None if obj.bias is None else obj.bias.detach(), "nn.Linear", False
    if isinstance(obj, dict):
        return _from_state(obj, key)
    try:
        w = torch.as_tensor(obj).detach()
        b = None if bias is None else torch.as_tensor(bias).detach()
    except (TypeError, ValueError, RuntimeError):
        raise InputError(
            f"weight must be a (V, d) tensor, an nn.Linear or a state dict, got {type(obj).__name__}"
        ) from None
    return w, b, "tensor", False


def _from_state(state: dict[str, Any], key: str | None) -> tuple[Any, Any, str, bool]:
    import torch

    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if key is not None and key not in tensors:
        mats = sorted(k for k, v in tensors.items() if v.ndim == 2)
        raise InputError(f"no tensor {key!r} in the weights; 2-D tensors there: {mats[:8]}; pass --key one of them")
    found = key or next((k for k in LM_HEAD_KEYS if k in tensors), None)
    tied = False
    if found is None:
        found = next((k for k in EMBEDDING_KEYS if k in tensors), None)
        tied = found is not None
    if found is None:
        mats = sorted(k for k, v in tensors.items() if v.ndim == 2)
        raise InputError(f"no lm_head or embedding weight among {len(tensors)} tensors {mats[:8]}; pass --key NAME")
    emb = next((tensors[k] for k in EMBEDDING_KEYS if k in tensors and k != found), None)
    tied = tied or (emb is not None and emb.shape == tensors[found].shape and torch.equal(emb, tensors[found]))
    bias_key = found[: -len("weight")] + "bias" if found.endswith("weight") and found not in EMBEDDING_KEYS else None
    return tensors[found], tensors.get(bias_key) if bias_key else None, found, tied


def read_weights(path: str) -> dict[str, Any]:
    """The tensors of a .safetensors file or a torch.save file (loaded with weights_only=True: no code runs);
    a file holding one bare tensor comes back as {"weight": tensor}."""
    import torch

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file; save the model's weights with torch.save(model.state_dict(), path)")
    try:
        if path.endswith(".safetensors"):
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise InputError(f"{path}: reading .safetensors needs `pip install safetensors`") from None
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except InputError:
        raise
    except Exception as e:  # torch/safetensors raise several types for a file that is not a tensor archive
        raise ArtifactError(f"{path}: not a weights file that loads safely ({type(e).__name__}); re-save it") from None
    if isinstance(state, torch.Tensor):
        return {"weight": state}
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: expected a state dict or a tensor, got {type(state).__name__}")
    return state
