"""CUDA readiness (issue 14): the layer's CUDA-only claims, checked on a GPU (`pytest -m gpu`, skipped without
one), and what the GPU image needs on any machine (`import vocabopt` without `datasets`)."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vocabopt.layer import build_layer, load_alswl
from vocabopt.plan import Plan

V, D, CUTOFFS = 2000, 64, [100, 600]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_import_without_datasets():
    """The GPU image has torch, transformers, pyarrow but no `datasets`: vocabopt, its CLI and the corpus readers
    import without it (only reading a `datasets` folder needs it)."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "datasets" or name.startswith("datasets."):
                    raise ImportError("datasets is blocked")
        sys.meta_path.insert(0, Block())
        import vocabopt, vocabopt.cli, vocabopt.corpus.records, vocabopt.layer, vocabopt.profiler, vocabopt.training
        assert "datasets" not in sys.modules
        try:
            import datasets
        except ImportError:
            print("blocked")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "blocked", r.stderr


@pytest.fixture(scope="module")
def plan() -> Plan:
    counts = np.round(1e6 / np.arange(1, V + 1) ** 1.1).astype(np.int64)
    return Plan.from_cutoffs(counts, hidden=D, cutoffs=CUTOFFS, provenance={"name": "gpu-toy"})


def targets(plan, n, seed=0):
    p = plan.counts_by_rank / plan.counts_by_rank.sum()
    ranks = np.random.default_rng(seed).choice(V, size=n, p=p)
    return torch.from_numpy(plan.order[ranks]).cuda()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("path", ["exact", "static"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_parity_under_autocast(plan, path, dtype):
    """bf16/fp16 autocast on CUDA: loss within low-precision tolerance of torch's ALSWL in fp32 (same weights) and
    of the fp32 full softmax built from the layer's own log_prob; log_prob sums to 1 in fp32."""
    torch.manual_seed(0)
    alswl = torch.nn.AdaptiveLogSoftmaxWithLoss(D, V, CUTOFFS, div_value=4.0).cuda()
    layer = load_alswl(build_layer(plan, path=path, capacity_factor=4.0), alswl.cpu()).cuda()
    alswl.cuda()
    x, t = torch.randn(512, D, device="cuda"), targets(plan, 512)
    with torch.autocast("cuda", dtype=dtype):
        loss = layer(x, t)
    want = alswl(x, layer.rank_of[t]).loss
    torch.testing.assert_close(loss, want, atol=0.05, rtol=0.02)
    full = F.nll_loss(layer.log_prob(x), t)  # fp32 full softmax over the same logits
    torch.testing.assert_close(loss, full, atol=0.05, rtol=0.02)
    assert int(layer.dropped_tokens) == 0


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("path", ["exact", "static"])
def test_gradcheck_float64_on_cuda(plan, path):
    small = Plan.from_cutoffs(plan.counts_by_rank[:60], hidden=6, cutoffs=[10, 30], provenance={"name": "g"})
    layer = build_layer(small, path=path, capacity_factor=8.0, chunk_above=0, tail_chunk=7).double().cuda()
    x = torch.randn(16, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    t = torch.from_numpy(small.order[np.arange(16) * 3 % 60]).cuda()
    assert torch.autograd.gradcheck(lambda h: layer(h, t, reduction="sum"), (x,))


def _static_step(plan):
    layer = build_layer(plan, path="static", check_targets="never").cuda()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, t = torch.randn(1024, D, device="cuda"), targets(plan, 1024)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = layer(x, t)
        loss.backward()
        opt.step()
        return loss

    return layer, step


@pytest.mark.gpu
@cuda
def test_static_step_is_sync_free(plan):
    layer, step = _static_step(plan)
    step()  # warm-up: allocations, cuBLAS handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert int(layer.dropped_tokens) == 0


@pytest.mark.gpu
@cuda
def test_static_step_captures_in_a_cuda_graph(plan):
    layer, step = _static_step(plan)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()
    before = layer.head.weight.detach().clone()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(loss) and not torch.equal(before, layer.head.weight)  # the replay trained a step


@pytest.mark.gpu
@cuda
def test_compiled_step_matches_eager(plan):
    layer = build_layer(plan).cuda()
    x, t = torch.randn(1024, D, device="cuda", requires_grad=True), targets(plan, 1024)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False):
        loss = torch.compile(layer, fullgraph=True)(x, t)
    loss.backward()
    torch.testing.assert_close(loss, layer(x, t), atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@cuda
def test_eval_and_compiled_eval_never_drop(plan):
    layer = build_layer(plan, path="static", capacity_factor=1.0).cuda().eval()
    x, t = torch.randn(1024, D, device="cuda"), layer.order[torch.full((1024,), V - 1, device="cuda")]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.compile(layer, fullgraph=True)(x, t)
    exact = build_layer(plan, path="exact").cuda().eval()
    exact.load_state_dict(layer.state_dict())
    torch.testing.assert_close(got, exact(x, t), atol=1e-4, rtol=1e-4)
    assert int(layer.dropped_tokens) == 0


@pytest.mark.gpu
@cuda
def test_sample_with_a_cpu_generator_on_cuda(plan):
    layer = build_layer(plan).cuda()
    h = torch.randn(64, D, device="cuda")
    a = layer.sample(h, generator=torch.Generator().manual_seed(1))
    b = layer.sample(h, generator=torch.Generator().manual_seed(1))
    assert a.device.type == "cuda" and torch.equal(a, b)
    assert layer.sample(h, top_k=5, generator=torch.Generator().manual_seed(1)).device.type == "cuda"


@pytest.mark.gpu
@cuda
def test_hf_head_in_bf16_on_cuda(plan):
    from vocabopt.hf import causal_lm_loss, replace_lm_head

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Cfg", (), {"hidden_size": D, "vocab_size": V})()
            self.emb = torch.nn.Embedding(V, D)
            self.lm_head = torch.nn.Linear(D, V, bias=False)

        def base_model(self, input_ids, attention_mask=None):
            return (self.emb(input_ids),)

    model = Model().cuda().to(torch.bfloat16)
    head = replace_lm_head(model, plan)
    assert head.head.weight.dtype == torch.bfloat16 and head.head.weight.is_cuda
    ids = torch.randint(0, V, (4, 33), device="cuda")
    loss = causal_lm_loss(model, ids)
    loss.backward()
    want = copy.deepcopy(head).float()(model.emb(ids)[:, :-1].float(), ids[:, 1:])
    torch.testing.assert_close(loss, want, atol=0.05, rtol=0.02)
    assert head.predict(model.emb(ids)).shape == (4, 33)
