"""vocabopt.hf: the adaptive head on a causal LM. Duck-typed models for causal_lm_loss; tiny randomly initialised
GPT-2 and Llama models from transformers (skipped without it) for loss, generate, Trainer, save/load, bf16, padding."""

import copy
import json

import numpy as np
import pytest
import torch

from vocabopt.errors import InputError, MismatchError
from vocabopt.hf import causal_lm_loss, from_pretrained, generate_exact, replace_lm_head
from vocabopt.layer import LayerInputError
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


# --- a real transformers model (tiny, randomly initialised from a config; no download) ------------------------------

V, D = 200, 32


@pytest.fixture()
def tf():
    return pytest.importorskip("transformers", reason="transformers not installed (pip install 'vocabopt[hf]')")


def _plan(vocab: int = V) -> Plan:
    counts = np.random.default_rng(1).permutation(np.round(1e4 / np.arange(1, vocab + 1)).astype(np.int64))
    return Plan.from_cutoffs(counts, hidden=D, cutoffs=[20, 80], provenance={"name": "tiny-hf"})


def _model(tf, kind: str = "gpt2", vocab: int = V):
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=vocab, n_embd=D, n_layer=2, n_head=2, n_positions=64, bos_token_id=1, eos_token_id=1
        )
        cfg.pad_token_id = 1
        cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0  # deterministic forwards to compare
        return tf.GPT2LMHeadModel(cfg)
    cfg = tf.LlamaConfig(
        vocab_size=vocab,
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=1,
    )
    return tf.LlamaForCausalLM(cfg)


def _adaptive(tf, kind: str = "gpt2", vocab: int = V, plan: Plan | None = None):
    model = _model(tf, kind, vocab)
    replace_lm_head(model, plan or _plan())
    with torch.no_grad():  # spread the head's weights so its distribution is far from uniform
        for p in model.lm_head.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_hf_loss_is_the_full_softmax_loss_on_the_heads_log_probs(tf, kind):
    """model(input_ids, labels).loss == HF's own ForCausalLMLoss (shift, -100) on the head's full (B, T, V) log-probs,
    also with num_items_in_batch (Trainer's gradient accumulation); with labels no logits tensor is built."""
    model = _adaptive(tf, kind)
    ids = torch.randint(2, V, (3, 12))
    labels = ids.clone()
    labels[0, :4] = -100  # a masked prompt
    labels[2, 9:] = -100  # padding
    out = model(input_ids=ids, labels=labels)
    assert out.logits is None and out.loss.dtype == torch.float32
    hidden = model.base_model(input_ids=ids).last_hidden_state  # (3, 12, D)
    lp = model.lm_head.log_prob(hidden)  # (3, 12, V) the head's exact distribution
    want = tf.loss.loss_utils.ForCausalLMLoss(lp, labels, vocab_size=V)
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-5)
    n = torch.tensor(40)
    got = model(input_ids=ids, labels=labels, num_items_in_batch=n).loss
    torch.testing.assert_close(got, tf.loss.loss_utils.ForCausalLMLoss(lp, labels, V, num_items_in_batch=n))
    out.loss.backward()
    assert all(p.grad is not None for p in model.lm_head.parameters())
    assert type(model).__name__ == f"Adaptive{type(_model(tf, kind)).__name__}"


def _spy_rows(head) -> list[int]:
    """Record how many rows each log_prob call gets (the (B, T, V) tensor must never be built in generation)."""
    rows, real = [], head.log_prob

    def spy(hidden):
        rows.append(hidden.shape[:-1].numel())
        return real(hidden)

    head.log_prob = spy
    return rows


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_generate_greedy_sampling_and_beam_search(tf, kind):
    """generate works with the head's log-probs as logits, computed only at the last position of each step; greedy
    equals a by-hand argmax loop over the head's full log_prob; sampling with top-k stays in the exact top k."""
    model = _adaptive(tf, kind).eval()
    ids = torch.randint(2, V, (2, 7))
    rows = _spy_rows(model.lm_head)
    greedy = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert max(rows) == 2  # (B, 1) per step: no (B, T, V) prefill tensor
    by_hand = ids
    for _ in range(6):  # no cache, full log-probs: an independent reference
        lp = model.lm_head.log_prob(model.base_model(input_ids=by_hand).last_hidden_state[:, -1])  # (B, V)
        by_hand = torch.cat([by_hand, lp.argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, by_hand)
    torch.manual_seed(0)
    sampled = model.generate(ids, max_new_tokens=6, do_sample=True, temperature=0.8, top_k=5, top_p=0.9)
    full = model(input_ids=sampled[:, :-1], logits_to_keep=6).logits  # (B, 6, V): positions that chose each token
    top5 = full.topk(5, dim=-1).indices
    assert (top5 == sampled[:, 7:, None]).any(-1).all()
    rows.clear()
    beams = model.generate(ids, max_new_tokens=5, num_beams=3, do_sample=False)
    assert beams.shape == (2, 12) and max(rows) == 6  # B x beams rows per step
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(2, 6))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_generate_exact_equals_greedy_generate_and_skips_tails(tf, kind):
    """The documented fast path: greedy through head.predict (exact tail skipping) == model.generate(greedy), also on
    a left-padded batch; top-k sampling through head.sample draws inside the exact top k."""
    model = _adaptive(tf, kind).eval()
    ids = torch.randint(2, V, (3, 8))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    ids = ids.masked_fill(mask == 0, 1)
    want = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    rows = _spy_rows(model.lm_head)
    got = generate_exact(model, ids, attention_mask=mask, max_new_tokens=8)
    assert rows == []  # never a (B, V) log-prob row
    assert torch.equal(got, want)
    g = torch.Generator().manual_seed(0)
    drawn = generate_exact(model, ids[:1], max_new_tokens=5, do_sample=True, top_k=3, generator=g)
    lp = model(input_ids=drawn[:, :-1], logits_to_keep=5).logits  # (1, 5, V)
    assert (lp.topk(3, dim=-1).indices == drawn[:, 8:, None]).any(-1).all()
    stop = int(want[0, 8])
    early = generate_exact(model, ids[:1], max_new_tokens=8, eos_token_id=stop, pad_token_id=0)
    assert early.shape == (1, 9) and int(early[0, 8]) == stop


def test_trainer_trains_the_adaptive_head(tf, tmp_path):
    """transformers.Trainer trains the model as is (loss from forward, num_items_in_batch, AdamW over the head):
    the held-out loss on the same task falls."""
    model = _adaptive(tf)
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(2, V - 20, (64, 1), generator=gen)
    data = starts + torch.arange(16)  # (64, 16) counting sequences: next = previous + 1
    train = [{"input_ids": x, "labels": x} for x in data[:48]]
    held = data[48:]
    with torch.no_grad():
        before = model(input_ids=held, labels=held).loss.item()
    args = tf.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=5,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = tf.Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    with torch.no_grad():
        after = model(input_ids=held, labels=held).loss.item()
    logged = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert after < 0.8 * before, (before, after)
    assert len(logged) == 4 and logged[-1] < logged[0]
    assert list(tmp_path.iterdir()) == [] or all(p.is_dir() for p in tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_save_pretrained_round_trip(tf, tmp_path, kind):
    """save_pretrained writes safetensors + config.json (the design under 'vocabopt'); vocabopt.hf.from_pretrained
    returns the same class, head and frequency order, with identical loss, log-probs and generations."""
    model = _adaptive(tf, kind).eval()
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vocabopt"]["head"]["cutoffs"] == [20, 80] and saved["vocabopt"]["plan"]["provenance"]["name"]
    loaded = from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert torch.equal(loaded.lm_head.order, model.lm_head.order)
    assert torch.equal(loaded.lm_head.rank_of, model.lm_head.rank_of)
    ids = torch.randint(2, V, (2, 9))
    a, b = model(input_ids=ids, labels=ids), loaded(input_ids=ids, labels=ids)
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert torch.equal(generate_exact(model, ids, max_new_tokens=4), generate_exact(loaded, ids, max_new_tokens=4))
    bf = from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf.lm_head.head.weight.dtype == torch.bfloat16 and bf.lm_head.order.dtype == torch.int64


def test_plain_transformers_load_warns_that_the_head_is_missing(tf, tmp_path):
    """Without vocabopt, AutoModelForCausalLM loads the folder with a WARNING, not silently: transformers' load
    report lists lm_head.weight as MISSING (newly initialised) and the adaptive keys as UNEXPECTED. vocabopt's loader
    refuses a folder that has no vocabopt head, in one line."""
    import io
    import logging

    model = _adaptive(tf)
    model.save_pretrained(tmp_path / "adaptive")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    tf.logging.add_handler(handler)
    try:
        plain = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "adaptive")
    finally:
        tf.logging.remove_handler(handler)
    report = stream.getvalue()
    assert type(plain) is tf.GPT2LMHeadModel
    assert "lm_head.weight" in report and "MISSING" in report and "lm_head.order" in report and "UNEXPECTED" in report
    _model(tf).save_pretrained(tmp_path / "plain")
    with pytest.raises(InputError, match="no 'vocabopt' entry"):
        from_pretrained(tmp_path / "plain")


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_bf16_model_without_autocast(tf, kind):
    """A bf16 model: the head follows its dtype, the loss is finite fp32 and close to the fp32 model's, backward and
    generate run."""
    model = _adaptive(tf, kind)
    bf = copy.deepcopy(model).to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf.lm_head.parameters())
    ids = torch.randint(2, V, (2, 10))
    want = model(input_ids=ids, labels=ids).loss
    got = bf(input_ids=ids, labels=ids).loss
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=0.03, atol=0.03)
    got.backward()
    assert bf.lm_head.head.weight.grad.dtype == torch.bfloat16
    out = bf.eval().generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 13)
    assert generate_exact(bf, ids, max_new_tokens=3).shape == (2, 13)
    fresh = _model(tf, kind).to(torch.bfloat16)
    replace_lm_head(fresh, _plan())
    assert fresh.lm_head.head.weight.dtype == torch.bfloat16


def test_padded_embedding_table(tf):
    """A model whose table is padded past the plan's vocabulary (208 rows, 200 ids): padded ids get log-prob -inf,
    generate never picks them, a padded id as target is refused in one line; a smaller table is refused."""
    model = _adaptive(tf, vocab=208).eval()
    ids = torch.randint(2, V, (2, 6))
    lp = model(input_ids=ids).logits  # (2, 6, 208)
    assert lp.shape == (2, 6, 208) and torch.isneginf(lp[..., V:]).all()
    torch.testing.assert_close(lp[..., :V].exp().sum(-1), torch.ones(2, 6))
    assert int(model.generate(ids, max_new_tokens=5, do_sample=True, top_k=50).max()) < V
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    bad = ids.clone()
    bad[0, 3] = 205
    with pytest.raises(LayerInputError, match="vocabulary has 200 ids"):
        model(input_ids=ids, labels=bad)
    with pytest.raises(MismatchError, match="vocab_size 190 < plan vocab_size 200"):
        replace_lm_head(_model(tf, vocab=190), _plan())


@pytest.mark.parametrize(("name", "value"), [("final_logit_softcapping", 30.0), ("logit_scale", 0.0625)])
def test_models_that_transform_logits_are_refused(tf, name, value):
    model = _model(tf, "llama")
    setattr(model.config, name, value)  # Gemma-2 caps its logits, Cohere scales them: the head reproduces neither
    with pytest.raises(MismatchError, match=name):
        replace_lm_head(model, _plan())


@pytest.mark.parametrize("mode", ["int8-tails", "int8"])
def test_quantized_head_saves_and_loads_with_its_design(tf, tmp_path, mode):
    """quantize_ after replace_lm_head: save_pretrained writes the live design (quantize=mode) with the int8 keys, so
    from_pretrained builds the same int8 head and every log-prob is identical (not a randomly initialised head)."""
    model = _adaptive(tf).eval()
    model.lm_head.quantize_(mode)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vocabopt"]["head"]["quantize"] == mode
    loaded, info = from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.lm_head.config.quantize == mode and loaded.lm_head.proj[0].qweight.dtype == torch.int8
    ids = torch.randint(2, V, (2, 9))
    assert torch.equal(model(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits)
    assert torch.equal(generate_exact(model, ids, max_new_tokens=3), generate_exact(loaded, ids, max_new_tokens=3))


def test_checkpoint_whose_head_keys_do_not_match_is_refused(tf, tmp_path):
    """A head key missing from the weights, an extra one, or a config.json whose design names other keys (a float
    design over int8 weights): transformers would initialise those parameters at random; from_pretrained refuses."""
    from safetensors.torch import load_file, save_file

    model = _adaptive(tf).eval()
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    for tampered, what in (
        ({k: v for k, v in state.items() if k != "lm_head.out.1.weight"}, "missing: lm_head.out.1.weight"),
        ({**state, "lm_head.extra.weight": torch.ones(2)}, "unexpected: lm_head.extra.weight"),
    ):
        save_file(tampered, weights, metadata={"format": "pt"})
        with pytest.raises(InputError, match=what):
            from_pretrained(tmp_path)
    save_file(state, weights, metadata={"format": "pt"})
    assert torch.equal(from_pretrained(tmp_path).lm_head.order, model.lm_head.order)  # the untampered folder loads
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vocabopt"]["head"]["quantize"] = "int8-tails"  # a stale design: float weights, int8 config
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="do not match the design"):
        from_pretrained(tmp_path)


def test_refused_model_is_left_unchanged(tf):
    """replace_lm_head runs every check before it touches the model: a refused model keeps its lm_head, its class,
    its tie_word_embeddings and no 'vocabopt' config entry, and still computes the same logits."""
    model = _model(tf, "llama")
    model.config.final_logit_softcapping = 30.0
    model.config.tie_word_embeddings = True
    old_head, old_class = model.lm_head, type(model)
    ids = torch.randint(2, V, (1, 5))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    with pytest.raises(MismatchError, match="final_logit_softcapping"):
        replace_lm_head(model, _plan())
    assert model.lm_head is old_head and type(model) is old_class
    assert model.config.tie_word_embeddings is True and not hasattr(model.config, "vocabopt")
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, want)


def test_unsupported_config_and_foreign_design_are_one_line(tf, tmp_path):
    """A config type with no causal-LM class, and a head design from another vocabopt version (a field this one
    lacks, a value it does not accept): one-line InputError naming config.json and the fix, no KeyError/TypeError."""
    model = _adaptive(tf)
    model.save_pretrained(tmp_path)
    good = json.loads((tmp_path / "config.json").read_text())
    cases = [
        ({**good, "model_type": "t5"}, "model_type 't5' has no causal-LM class"),
        ({**good, "vocabopt": {**good["vocabopt"], "head": {**good["vocabopt"]["head"], "new_field": 1}}}, "new_field"),
        ({**good, "vocabopt": {**good["vocabopt"], "head": {**good["vocabopt"]["head"], "path": "warp"}}}, "warp"),
    ]
    for cfg, what in cases:
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(InputError, match=what) as err:
            from_pretrained(tmp_path)
        msg = str(err.value)
        assert "config.json" in msg and "\n" not in msg
        assert "upgrade transformers" in msg or "vocabopt version that saved it" in msg
