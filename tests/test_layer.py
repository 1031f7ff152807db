"""The adaptive-softmax layer against references: torch's ALSWL, F.cross_entropy, gradcheck, full log_prob."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as sps

from vocabopt import adaptive_head
from vocabopt.adaptive_head import DroppedTokensWarning
from vocabopt.errors import InputError
from vocabopt.layer import build_layer, load_alswl
from vocabopt.plan import Plan

V, D, CUTOFFS = 300, 32, [20, 100]


@pytest.fixture(scope="module")
def plan() -> Plan:
    counts = np.random.default_rng(0).permutation(np.round(1e5 / np.arange(1, V + 1)).astype(np.int64))
    return Plan.from_cutoffs(counts, hidden=D, cutoffs=CUTOFFS, provenance={"name": "toy"})


def zipf_ids(layer, n, seed=0):
    p = 1 / np.arange(1, V + 1)
    ranks = torch.from_numpy(np.random.default_rng(seed).choice(V, size=n, p=p / p.sum()))
    return ranks, layer.order[ranks]


def paired(plan, path="exact", **kw):
    torch.manual_seed(0)
    alswl = torch.nn.AdaptiveLogSoftmaxWithLoss(D, V, CUTOFFS, div_value=4.0)
    return load_alswl(build_layer(plan, path=path, **kw), alswl), alswl


@pytest.mark.parametrize("chunk_above", [1 << 22, 0])  # tails keep their log-probs / run chunked
@pytest.mark.parametrize("path", ["exact", "static"])
def test_parity_with_alswl(plan, path, chunk_above):
    layer, alswl = paired(plan, path, chunk_above=chunk_above, tail_chunk=16)
    x = torch.randn(257, D)
    ranks, ids = zipf_ids(layer, 257)
    ref = alswl(x, ranks)
    torch.testing.assert_close(layer(x, ids, reduction="none"), -ref.output, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer(x, ids), ref.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.log_prob(x)[:, layer.order], alswl.log_prob(x), atol=1e-5, rtol=0)
    assert torch.equal(layer.predict(x), layer.order[alswl.predict(x)])
    # gradients too
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    layer(xa, ids).backward()
    alswl(xb, ranks).loss.backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(layer.out[1].weight.grad, alswl.tail[1][1].weight.grad, atol=1e-6, rtol=1e-4)


def test_log_prob_normalized_and_matches_loss(plan):
    layer = build_layer(plan, dropout=0.0)
    x = torch.randn(4, 7, D)
    lp = layer.log_prob(x)
    assert lp.shape == (4, 7, V) and lp.dtype == torch.float32
    assert lp.logsumexp(-1).abs().max() < 1e-5
    ids = torch.randint(0, V, (4, 7))
    torch.testing.assert_close(layer.target_log_prob(x, ids), lp.gather(-1, ids[..., None]).squeeze(-1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("path", ["exact", "static"])
def test_ignore_index_and_reductions_follow_cross_entropy(plan, reduction, path):
    layer = build_layer(plan, path=path)
    x = torch.randn(3, 50, D)
    _, ids = zipf_ids(layer, 150, seed=1)
    ids = ids.reshape(3, 50).clone()
    ids[:, ::4] = -100
    ref = F.cross_entropy(layer.log_prob(x).reshape(-1, V), ids.reshape(-1), reduction=reduction)
    got = layer(x, ids, reduction=reduction)
    torch.testing.assert_close(got.reshape(-1) if reduction == "none" else got, ref, atol=1e-5, rtol=1e-6)
    ids[:] = 7
    ids[0, 0] = 3
    torch.testing.assert_close(layer(x, ids, ignore_index=7), -layer.log_prob(x)[0, 0, 3])
    all_ignored = layer(x, torch.full((3, 50), -100), reduction="mean")
    assert torch.isnan(all_ignored)  # 0 / 0, as F.cross_entropy


def test_gradcheck_float64(plan):
    small = Plan.from_cutoffs(np.array([9, 7, 5, 4, 3, 2, 2, 1, 1, 1]), hidden=4, cutoffs=[3, 6], proj_dims=[3, 2])
    for path, chunk_above in (("exact", 0), ("static", 0), ("exact", 1 << 22), ("static", 1 << 22)):
        layer = build_layer(small, path=path, tail_chunk=2, chunk_above=chunk_above).double()
        x = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
        ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -100, 9])
        params = [
            layer.head.weight,
            layer.head.bias,
            layer.proj[1].weight,
            layer.out[1].weight,
            layer.out[1].bias,
        ]

        def loss(x, *ps, layer=layer, ids=ids):  # bound now: the loop rebinds layer and ids
            return layer(x, ids, reduction="none")

        assert torch.autograd.gradcheck(loss, (x, *params))


def test_scratch_reused_across_steps_and_safe_when_graphs_overlap(plan):
    """The CPU loss scratch is handed out again only when no graph still holds it."""
    layer = build_layer(plan, path="exact")
    layer._scratch.min_bytes = 0  # the toy layer's buffers are small: pool them anyway
    ref = build_layer(plan, path="exact", reuse_buffers=False)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(3, 64, D)
    _, ids = zipf_ids(layer, 192)
    ids = ids.reshape(3, 64)

    def grads(mod, steps):
        mod.zero_grad(set_to_none=True)
        losses = [mod(x[i], ids[i]) for i in steps]  # every forward before any backward: graphs overlap
        sum(losses).backward()
        return [p.grad.clone() for p in mod.parameters()]

    for steps in ([0], [0, 1, 2], [2]):
        for a, b in zip(grads(layer, steps), grads(ref, steps), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    ptrs = set()
    for _ in range(3):
        layer(x[0], ids[0]).backward()
        ptrs |= {b.data_ptr() for b, _ in layer._scratch.bases}
    assert len(ptrs) <= layer._scratch.slots  # later steps reuse the pooled buffers
    layer.zero_grad(set_to_none=True)
    loss = layer(x[1], ids[1])
    loss.backward(retain_graph=True)
    first = layer.head.weight.grad.clone()
    layer(x[2], ids[2]).backward()  # may not take the retained graph's buffers
    layer.head.weight.grad = None
    loss.backward()
    torch.testing.assert_close(layer.head.weight.grad, first)
    copy.deepcopy(layer)(x[0], ids[0])  # copies start with an empty pool
    layer.release_scratch()
    assert not layer._scratch.bases


def test_every_parameter_gets_a_gradient_even_with_empty_clusters(plan):
    for path in ("exact", "static"):
        layer = build_layer(plan, path=path, tie_input=True)
        x = torch.randn(8, D)
        layer(x, layer.order[torch.arange(8)]).backward()  # all targets in the head: tails see no rows
        missing = [n for n, p in layer.named_parameters() if p.grad is None]
        assert not missing, missing


def test_topk_and_predict_exact_with_skipping(plan):
    layer = build_layer(plan)
    torch.nn.init.normal_(layer.head.weight, std=0.5)
    x = torch.randn(200, D)
    lp = layer.log_prob(x)
    for k in (1, 5, 25, 40):
        vals, ids = layer.topk(x, k)
        ref_vals, _ = lp.topk(k, dim=-1)
        torch.testing.assert_close(vals, ref_vals, atol=1e-5, rtol=0)
        torch.testing.assert_close(lp.gather(1, ids), vals, atol=1e-5, rtol=0)
    assert torch.equal(layer.predict(x), lp.argmax(-1))
    assert layer.last_tail_evals["skipped"] > 0  # the unigram-initialised head makes most tails irrelevant


def chi2_pvalue(draws: torch.Tensor, probs: torch.Tensor) -> float:
    observed = torch.bincount(draws, minlength=probs.numel()).double()
    expected = probs.double() * draws.numel()
    keep = expected >= 5  # pool rare classes so the chi-square approximation holds
    obs, exp = observed[keep], expected[keep]
    if expected[~keep].sum() > 0:
        obs = torch.cat([obs, observed[~keep].sum()[None]])
        exp = torch.cat([exp, expected[~keep].sum()[None]])
    return float(sps.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, None), (1.3, 10)])
def test_sample_matches_distribution(plan, temperature, top_k):
    layer = build_layer(plan)
    torch.manual_seed(1)
    x = torch.randn(1, D).expand(20_000, D)
    gen = torch.Generator().manual_seed(123)
    draws = layer.sample(x, temperature=temperature, top_k=top_k, generator=gen)
    with torch.no_grad():
        lp = layer.log_prob(x[:1])[0] / temperature
    if top_k is not None:
        cut = lp.topk(top_k).values[-1]
        lp = torch.where(lp >= cut, lp, -torch.inf)
    probs = torch.softmax(lp, 0)
    assert probs[draws].min() > 0  # never draws outside the support (top_k)
    assert chi2_pvalue(draws, probs) > 1e-3
    if temperature == 1.0:
        assert layer.last_tail_evals["evaluated"] <= 20_000  # at most one tail per row


def test_original_id_remap(plan):
    layer = build_layer(plan, unigram_init=False)
    x = torch.randn(1, D)
    lp = layer.log_prob(x)[0]
    head_lp = torch.log_softmax(layer.head(x)[0], 0)
    most_frequent_id = int(plan.order[0])
    assert most_frequent_id != 0  # the fixture's ids are shuffled
    torch.testing.assert_close(lp[most_frequent_id], head_lp[0])


def test_unigram_init_predicts_the_unigram(plan):
    layer = build_layer(plan)
    with torch.no_grad():
        for p in (layer.head.weight, *[o.weight for o in layer.out]):
            p.zero_()
    lp = layer.log_prob(torch.randn(1, D))[0]
    unigram = (torch.from_numpy(plan.counts_by_rank).double() + 1) / (plan.counts_by_rank.sum() + V)
    torch.testing.assert_close(lp[layer.order].double(), unigram.log(), atol=1e-5, rtol=0)


def test_tied_adaptive_input(plan):
    layer = build_layer(plan, tie_input=True)
    ids = layer.order[torch.tensor([0, 25, 150])]  # one token per cluster
    emb = layer.embed(ids)
    assert emb.shape == (3, D)
    torch.testing.assert_close(emb[0], layer.head.weight[0])
    torch.testing.assert_close(emb[1], layer.out[0].weight[5] @ layer.proj[0].weight)
    torch.testing.assert_close(emb[2], layer.out[1].weight[50] @ layer.proj[1].weight)


def test_autocast_bf16_accumulates_in_fp32(plan):
    layer = build_layer(plan)
    x = torch.randn(64, D)
    _, ids = zipf_ids(layer, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = layer(x, ids, reduction="none")
        lp = layer.log_prob(x)
    assert loss.dtype == torch.float32 and lp.dtype == torch.float32
    torch.testing.assert_close(loss, layer(x, ids, reduction="none"), atol=0.1, rtol=0.05)
    assert lp.logsumexp(-1).abs().max() < 1e-5


def test_static_path_counts_dropped_tokens(plan):
    layer = build_layer(plan, path="static", capacity_factor=1.0)
    x = torch.randn(1024, D)
    ids = layer.order[torch.full((1024,), 250)]  # every token in the rarest cluster: far above its capacity
    cap = layer.capacity(1024)[1]
    assert cap < 1024
    with pytest.warns(DroppedTokensWarning, match=f"{1024 - cap} target tokens dropped"):
        loss = layer(x, ids, reduction="none")
    assert int(layer.dropped_tokens) == 1024 - cap
    assert int((loss != 0).sum()) == cap
    exact = build_layer(plan, path="exact")
    exact.load_state_dict(layer.state_dict())
    kept = loss != 0
    want = exact(x, ids, reduction="none")
    torch.testing.assert_close(loss[kept], want[kept])
    layer.eval()  # evaluation never drops: every tail runs on all N rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(layer(x, ids, reduction="none"), want)
    assert int(layer.dropped_tokens) == 1024 - cap


def test_dropped_token_warning_is_rate_limited(plan, monkeypatch):
    """The drop counter is read (one host sync on a GPU) at calls 1, 2, 4, ..., 256, then every 256th."""
    layer = build_layer(plan, path="static", capacity_factor=1.0)
    reads = []
    monkeypatch.setattr(adaptive_head, "int", lambda t: reads.append(1) or int(t), raising=False)  # counts reads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(1100):  # the check each static training forward makes, driven directly
            adaptive_head._note_dropped(layer.dropped_tokens, id(layer))
        assert len(reads) == 12 and caught == []  # calls 1, 2, 4, ..., 1024 and 768; the counter did not grow
        layer.dropped_tokens.add_(5)
        for _ in range(1280 - 1100):
            adaptive_head._note_dropped(layer.dropped_tokens, id(layer))
    assert len(reads) == 13 and len(caught) == 1 and "5 target tokens dropped" in str(caught[0].message)


def test_auto_path_is_exact_in_eager_mode(plan):
    """auto = exact in eager mode on every device: no dropped tokens, whatever the targets."""
    layer = build_layer(plan)
    ids = layer.order[torch.full((512,), 250)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(512, D), ids).backward()
    assert int(layer.dropped_tokens) == 0


def _aten_ops_of_compiled_step(layer, x, ids):
    """The aten ops of the forward and backward graphs torch.compile(fullgraph=True) captures for one step."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    ops, unbacked = set(), []

    def record(gm, _inputs):
        for node in gm.graph.nodes:
            if node.op == "call_function":
                ops.add(str(node.target))
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and free_unbacked_symbols(val):
                unbacked.append(str(node.target))
        return make_boxed_func(gm)

    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False, capture_scalar_outputs=False):
        step = torch.compile(layer, fullgraph=True, backend=aot_autograd(fw_compiler=record, bw_compiler=record))
        loss = step(x, ids)
        loss.backward()
    torch._dynamo.reset()
    return ops, unbacked, loss


SYNC_OPS = {"bincount", "nonzero", "_local_scalar_dense", "masked_select", "_unique2", "unique_dim", "item"}


def test_static_step_is_sync_free_when_compiled(plan):
    """CPU proxy for "no host sync": the compiled training step of the static path (fwd + bwd) holds no op that
    reads a device value to the host and no tensor whose shape depends on data (an unbacked size).
    torch 2.13 traces bincount with an unbacked size even with capture_dynamic_output_shape_ops=False, so the
    graphs are inspected rather than trusting a graph break."""
    layer = build_layer(plan, path="static", check_targets="never")
    x = torch.randn(64, D, requires_grad=True)
    _, ids = zipf_ids(layer, 64)
    ops, unbacked, loss = _aten_ops_of_compiled_step(layer, x, ids)
    assert any("scatter_add" in op for op in ops)  # the per-cluster row counts
    assert not [op for op in ops if op.startswith("aten.") and op.split(".")[1] in SYNC_OPS], sorted(ops)
    assert unbacked == []
    eager = build_layer(plan, path="static", check_targets="never")
    eager.load_state_dict(layer.state_dict())
    torch.testing.assert_close(loss, eager(x, ids))


def test_compiled_head_warns_on_dropped_tokens(plan):
    """Off-distribution targets through a compiled head: the drop is warned about, from outside the graph."""
    layer = build_layer(plan, capacity_factor=1.0)  # auto: static under torch.compile
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False):
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        ids = layer.order[torch.full((1024,), 250)]
        with pytest.warns(DroppedTokensWarning, match="dropped"):
            compiled(torch.randn(1024, D), ids)
    torch._dynamo.reset()  # another N or capacity_factor would recompile with them symbolic (see the report)
    assert int(layer.dropped_tokens) == 1024 - layer.capacity(1024)[1]


def test_sample_draws_where_the_generator_lives(plan):
    """`sample` draws with torch.multinomial on the generator's device: on CPU, exactly torch's own draws
    (the CUDA case, a CPU generator for CUDA hidden states, is in tests/test_gpu.py)."""
    layer = build_layer(plan)
    x = torch.randn(32, D)
    a = layer.sample(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(layer.sample(x, generator=torch.Generator().manual_seed(3)), a)
    probs = torch.softmax(torch.randn(4, 7), 1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(adaptive_head._multinomial(probs, torch.Generator().manual_seed(5)), want)


def test_bad_inputs_name_the_value(plan):
    layer = build_layer(plan)
    with pytest.raises(InputError, match=r"width 16 .* expects 32"):
        layer(torch.randn(4, 16), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match=r"ids in \[0, 300\] but the plan's vocabulary has 300"):
        layer(torch.randn(2, D), torch.tensor([0, 300]))
    with pytest.raises(ValueError, match=r"ids in \[-5, 1\]"):  # LayerInputError is also a ValueError
        layer(torch.randn(2, D), torch.tensor([-5, 1]))
    with pytest.raises(InputError, match="integer token ids"):
        layer(torch.randn(2, D), torch.tensor([0.0, 1.0]))
    with pytest.raises(InputError, match="expected a vocabopt.Plan"):
        build_layer({"cutoffs": [1]})
    with pytest.raises(InputError, match="unknown layer option"):
        build_layer(plan, dropuot=0.1)


def test_compile_fullgraph_cpu(plan):
    layer = build_layer(plan)
    x = torch.randn(64, D, requires_grad=True)
    _, ids = zipf_ids(layer, 64)
    compiled = torch.compile(layer, fullgraph=True)
    loss = compiled(x, ids)
    torch.testing.assert_close(loss, layer(x, ids), atol=1e-5, rtol=1e-5)
    loss.backward()
    assert x.grad is not None and layer.out[1].weight.grad is not None


def brute_nucleus(lp_row: torch.Tensor, top_p: float, temperature: float, top_k: int | None = None):
    """Reference nucleus from the full (V,) log-probs: sort, temper, cut at the first cumulative mass >= top_p."""
    v, ids = (lp_row / temperature).double().sort(descending=True)
    if top_k is not None:
        v, ids = v[:top_k], ids[:top_k]
    p = torch.softmax(v, 0)
    n = int((p.cumsum(0) < top_p).sum()) + 1
    return ids[:n], torch.softmax(v[:n], 0)


def trained_like(plan, seed=0):
    """A layer whose tails have spread-out weights and biases, so bounds are not trivially loose or tight."""
    torch.manual_seed(seed)
    layer = build_layer(plan)
    with torch.no_grad():
        layer.head.weight.normal_(std=0.4)
        for out in layer.out:
            out.weight.normal_(std=0.6)
            out.bias.add_(torch.randn_like(out.bias))
    return layer


@pytest.mark.parametrize(
    "temperature, top_p, top_k",
    [(1.0, 0.9, None), (0.7, 0.5, None), (1.4, 0.95, None), (1.0, 1.0, None), (0.8, 0.9, 30)],
)
def test_nucleus_equals_the_full_distributions(plan, temperature, top_p, top_k):
    layer = trained_like(plan)
    x = torch.randn(64, D) * 1.5
    lp = layer.log_prob(x)
    got_lp, got_ids = layer.nucleus(x, top_p, temperature=temperature, top_k=top_k)
    for r in range(x.shape[0]):
        ids, probs = brute_nucleus(lp[r], top_p, temperature, top_k)
        keep = got_lp[r] > -torch.inf
        assert torch.equal(got_ids[r][keep], ids)
        torch.testing.assert_close(got_lp[r][keep].exp().double(), probs, atol=1e-5, rtol=1e-4)


def test_nucleus_skips_tails_that_cannot_enter_it(plan):
    layer = build_layer(plan)  # unigram-initialised: tails carry little mass per token
    x = torch.randn(200, D)
    lp = layer.log_prob(x)
    got_lp, got_ids = layer.nucleus(x, 0.5)
    assert layer.last_tail_evals["skipped"] > 0
    for r in range(0, 200, 7):
        ids, _ = brute_nucleus(lp[r], 0.5, 1.0)
        assert torch.equal(got_ids[r][got_lp[r] > -torch.inf], ids)


@pytest.mark.parametrize("temperature, top_p, top_k", [(1.0, 0.8, None), (0.7, 0.6, None), (1.3, 0.9, 20)])
def test_sample_top_p_matches_distribution(plan, temperature, top_p, top_k):
    layer = trained_like(plan, seed=2)
    torch.manual_seed(1)
    x = torch.randn(1, D).expand(20_000, D)
    draws = layer.sample(
        x, temperature=temperature, top_k=top_k, top_p=top_p, generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        lp = layer.log_prob(x[:1])[0]
    ids, p = brute_nucleus(lp, top_p, temperature, top_k)
    probs = torch.zeros(V, dtype=torch.float64).index_put_((ids,), p)
    assert probs[draws].min() > 0  # never outside the nucleus
    assert chi2_pvalue(draws, probs) > 1e-3


def test_topk_exact_on_spread_tails_and_bounds_follow_weight_edits(plan):
    layer = trained_like(plan, seed=3)
    x = torch.randn(128, D) * 2
    for _ in range(2):
        lp = layer.log_prob(x)
        for k in (1, 7, 50):
            vals, ids = layer.topk(x, k)
            torch.testing.assert_close(vals, lp.topk(k, dim=-1).values, atol=1e-5, rtol=0)
            torch.testing.assert_close(lp.gather(1, ids), vals, atol=1e-5, rtol=0)
        with torch.no_grad():  # in-place edits bump the version counter: the cached bound constants follow
            layer.out[1].weight.mul_(3.0)
            layer.out[1].bias.mul_(2.0)


def test_bound_constants_are_dropped_by_eval_and_refresh(plan):
    layer = trained_like(plan, seed=4)
    x = torch.randn(64, D) * 2
    layer.topk(x, 5)
    layer.out[0].weight.data.mul_(4.0)  # `.data` edits bypass the version counter ...
    layer.eval()  # ... so eval() (or refresh_bounds()) drops the cached constants
    with torch.no_grad():
        lp = layer.log_prob(x)
    torch.testing.assert_close(layer.topk(x, 5)[0], lp.topk(5, dim=-1).values, atol=1e-5, rtol=0)
    layer.out[1].bias.data.add_(3.0)
    layer.refresh_bounds()
    with torch.no_grad():
        lp = layer.log_prob(x)
    torch.testing.assert_close(layer.topk(x, 5)[0], lp.topk(5, dim=-1).values, atol=1e-5, rtol=0)


def test_decode_layout_stores_weights_column_major_and_changes_no_output(plan):
    layer = trained_like(plan, seed=5)
    x = torch.randn(64, D) * 2
    with torch.no_grad():
        ref_lp, ref_top = layer.log_prob(x), layer.topk(x, 7)
    ref_state = {k: v.clone() for k, v in layer.state_dict().items()}
    assert not layer.decode_layout
    assert layer.decode_layout_() is layer and layer.decode_layout and not layer.training
    for m in [layer.head, *layer.proj, *layer.out]:
        w = m.weight
        assert w.stride(0) == 1 and not w.is_contiguous()  # stored as its (in, out) transpose
    with torch.no_grad():  # (with autograd recording the products stay separate: see below)
        fused = layer._fused_weight()  # the head's and the projections' weights: column blocks of one buffer
    width = plan.cutoffs[0] + len(plan.cutoffs)  # the head's outputs: shortlist + one per tail
    assert fused is not None and fused.is_contiguous() and fused.shape == (D, width + sum(plan.proj_dims))
    torch.testing.assert_close(fused[:, :width], layer.head.weight.t(), rtol=0, atol=0)
    assert fused.data_ptr() == layer.head.weight.data_ptr()
    state = layer.state_dict()
    assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state)
    with torch.no_grad():
        lp = layer.log_prob(x)
        torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=1e-5)  # same values, other summation order
        vals, ids = layer.topk(x, 7)
        torch.testing.assert_close(vals, lp.topk(7, dim=-1).values, atol=1e-5, rtol=0)  # exact to its own log_prob
        torch.testing.assert_close(vals, ref_top[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(layer.predict(x), lp.argmax(-1))
    with torch.no_grad():
        stacked = layer._bound_stats()[0]
    assert stacked.data_ptr() == layer.proj[0].weight.data_ptr()  # the bound's projections: a view, no copy
    # with autograd recording, log_prob takes the separate products: gradients reach every weight
    layer.log_prob(x).logsumexp(-1).sum().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in [layer.head.weight, *(q.weight for q in layer.proj)]
    )
    layer.zero_grad(set_to_none=True)
    layer.proj[0].weight.data = layer.proj[0].weight.data.clone()  # moved apart: no longer fused, still exact
    with torch.no_grad():
        assert layer._fused_weight() is None
    with torch.no_grad():
        torch.testing.assert_close(layer.topk(x, 7)[0], layer.log_prob(x).topk(7, dim=-1).values, atol=1e-5, rtol=0)
    layer.decode_layout_()  # fused again
    layer.train()  # training restores nn.Linear's layout
    assert not layer.decode_layout and all(m.weight.is_contiguous() for m in [layer.head, *layer.proj, *layer.out])
    t = layer.order[torch.arange(64) % plan.vocab_size]
    layer(x, t).backward()
    assert all(p.grad is not None for p in layer.parameters())
    layer.quantize_("int8-tails").decode_layout_()  # int8 tails keep their layout; the float head is re-laid
    assert layer.decode_layout and layer.head.weight.t().is_contiguous()
    with torch.no_grad():
        lp = layer.log_prob(x)
        torch.testing.assert_close(layer.topk(x, 7)[0], lp.topk(7, dim=-1).values, atol=1e-5, rtol=0)
