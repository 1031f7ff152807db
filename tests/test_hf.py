"""vocabopt.hf: the adaptive head on a causal LM, its loss against the head's own on shifted, masked labels."""

import copy

import numpy as np
import pytest
import torch

from vocabopt.errors import MismatchError
from vocabopt.hf import causal_lm_loss, replace_lm_head
from vocabopt.plan import Plan


@pytest.fixture()
def plan() -> Plan:
    counts = np.random.default_rng(0).permutation(np.round(1e4 / np.arange(1, 201)).astype(np.int64))
    return Plan.from_cutoffs(counts, hidden=16, cutoffs=[10, 50], provenance={"name": "toy-plan"})


class _FakeCausalLM(torch.nn.Module):
    """The shape of a transformers causal LM: config, base_model returning last_hidden_state, lm_head."""

    class _Out:
        def __init__(self, h):
            self.last_hidden_state = h

    def __init__(self, vocab=200, hidden=16):
        super().__init__()
        self.config = type("Cfg", (), {"hidden_size": hidden, "vocab_size": vocab, "tie_word_embeddings": True})()
        self.emb = torch.nn.Embedding(vocab, hidden)
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)

    def base_model(self, input_ids, attention_mask=None):
        return self._Out(self.emb(input_ids))


def test_hf_helper_replaces_lm_head(plan):
    model = _FakeCausalLM()
    head = replace_lm_head(model, plan)
    assert model.lm_head is head and model.config.tie_word_embeddings is False
    ids = torch.randint(0, 200, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    loss = causal_lm_loss(model, ids, attention_mask=mask)
    labels = ids.masked_fill(mask == 0, -100)[:, 1:]
    torch.testing.assert_close(loss, head(model.emb(ids)[:, :-1], labels))
    with pytest.raises(MismatchError, match="hidden size 32"):
        replace_lm_head(_FakeCausalLM(hidden=32), plan)


def test_head_follows_a_bf16_model_without_autocast(plan):
    """A bf16 model (no autocast): the head takes the model's dtype, so training and generation run, and the loss
    matches the same head's fp32 loss on the same bf16 inputs (fp32 accumulation inside)."""
    model = _FakeCausalLM().to(torch.bfloat16)
    head = replace_lm_head(model, plan)
    assert all(p.dtype == torch.bfloat16 for p in head.parameters())
    ids = torch.randint(0, 200, (2, 9))
    loss = causal_lm_loss(model, ids)
    loss.backward()
    assert loss.dtype == torch.float32 and head.out[1].weight.grad.dtype == torch.bfloat16
    hidden = model.emb(ids)  # (2, 9, 16) bf16
    want = copy.deepcopy(head).float()(hidden[:, :-1].float(), ids[:, 1:])
    torch.testing.assert_close(loss, want, atol=0.02, rtol=0.02)
    lp = head.log_prob(hidden)
    assert lp.dtype == torch.float32 and lp.exp().sum(-1).sub(1).abs().max() < 1e-3
    vals, top = head.topk(hidden, 3)
    torch.testing.assert_close(vals, lp.topk(3, dim=-1).values, atol=1e-3, rtol=1e-3)
    assert head.sample(hidden, generator=torch.Generator().manual_seed(0)).shape == (2, 9)
    assert head.sample(hidden, temperature=0.7, top_k=5).shape == (2, 9)
