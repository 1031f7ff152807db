"""The cost model: designs sum their parts, modes and recipes follow the layer, bad designs are named."""

from __future__ import annotations

import numpy as np
import pytest

from vocabopt import cost, kernels
from vocabopt.errors import InputError
from vocabopt.profile import synthetic_profile


def power_law(name, *c):
    """Exactly linear in log space: multilinear log interpolation must reproduce it between grid points."""
    t = 1e-3 * np.ones_like(c[0], dtype=float)
    for x, e in zip(c, (0.9, 0.7, 0.8), strict=False):
        t = t * x**e
    return t


def zipf_counts(v: int, alpha: float = 1.1) -> np.ndarray:
    return np.maximum((1e7 / np.arange(1, v + 1) ** alpha).astype(np.int64), 1)


@pytest.fixture(scope="module")
def prof():
    return synthetic_profile(power_law)


def test_predict_is_the_sum_of_its_parts(prof):
    counts = zipf_counts(20000)
    p = cost.predict(prof, counts, hidden=256, cutoffs=[1000, 5000], proj_dims=[64, 16], batch_tokens=1024)
    parts = [c["time_ms"] for c in p.clusters]
    assert p.time_ms == pytest.approx(sum(parts), rel=1e-12)
    assert all(t > 0 for t in parts) and p.time_ms >= max(parts)
    assert sum(c["size"] for c in p.clusters) == 20000 + 2  # head holds one logit per tail
    assert sum(c["share"] for c in p.clusters) == pytest.approx(1.0)
    assert p.memory_bytes > 0
    full = cost.predict(prof, counts, hidden=256, cutoffs=[], proj_dims=[], batch_tokens=1024)
    assert full.time_ms > p.time_ms  # the power-law device rewards skipping rare tails
    assert full.memory_bytes > p.memory_bytes


def test_modes(prof):
    counts = zipf_counts(20000)
    design = {"hidden": 256, "cutoffs": [1000, 5000], "proj_dims": [64, 16], "batch_tokens": 1024}
    train = cost.predict(prof, counts, mode="train", **design)
    full = cost.predict(prof, counts, mode="infer", decode="full", **design)
    greedy = cost.predict(prof, counts, mode="infer", decode="greedy", **design)
    assert greedy.time_ms < full.time_ms  # greedy skips tails for most rows
    assert greedy.time_ms < train.time_ms  # no backward
    with pytest.raises(InputError, match="mode"):
        cost.predict(prof, counts, hidden=256, cutoffs=[1000], proj_dims=[64], batch_tokens=1024, mode="eval")


def test_cutoffs_beyond_the_vocabulary_name_it(prof):
    with pytest.raises(InputError, match="vocabulary of 5,000 ids"):
        cost.predict(prof, zipf_counts(5000), hidden=64, cutoffs=[2000, 10000], proj_dims=[16, 4], batch_tokens=256)
    with pytest.raises(InputError, match="one per cutoff"):
        cost.predict(prof, zipf_counts(5000), hidden=64, cutoffs=[200, 1000], proj_dims=[16], batch_tokens=256)


def test_empty_tail_pays_only_its_fixed_cost(prof):
    ms_empty, _ = cost.tail_ms(prof, 1024, 256, proj=64, size=5000, share=0.0)
    fixed, _ = kernels.tables(prof)["cluster_fixed_train"](1024, 256)
    assert float(ms_empty) == pytest.approx(float(fixed))


def test_recipes_follow_the_layers_kernel_choice(prof):
    from vocabopt.adaptive_head import AdaptiveHeadConfig

    assert cost.CHUNK_ABOVE == AdaptiveHeadConfig.chunk_above  # the model and the layer switch at one size
    t = kernels.tables(prof)
    n, d, proj = 1024, 256, 64
    share = 1.0 - 1e-13  # every row busy: rows = n, P(busy) = 1
    common = sum(float(t[k](n, d, proj)[0]) for k in ("linear_fwd", "linear_dinput", "linear_dweight"))
    common += float(t["gather_fwd"](n, d)[0]) + float(t["gather_bwd"](n, d)[0])
    common += float(t["cluster_fixed_train"](n, d)[0])
    small = cost.CHUNK_ABOVE // n  # logits kept: the head's kernel
    kept = float(t["linear_nll_keep_fwd"](n, proj, small)[0]) + float(t["linear_nll_keep_bwd"](n, proj, small)[0])
    assert float(cost.tail_ms(prof, n, d, proj=proj, size=small, share=share)[0]) == pytest.approx(
        common + kept, rel=1e-9
    )
    big = 2 * small  # chunked: the fused kernel that recomputes the logits
    chunked = float(t["linear_nll_fwd"](n, proj, big)[0]) + float(t["linear_nll_bwd"](n, proj, big)[0])
    assert float(cost.tail_ms(prof, n, d, proj=proj, size=big, share=share)[0]) == pytest.approx(
        common + chunked, rel=1e-9
    )
    # The head (train): step bookkeeping plus the kept-logits kernel over all N rows, one logit per tail included.
    head = float(t["step_fixed_train"](n, d)[0]) + sum(
        float(t[k](n, d, 1002)[0]) for k in ("linear_nll_keep_fwd", "linear_nll_keep_bwd")
    )
    assert float(cost.head_ms(prof, n, d, 1002)[0]) == pytest.approx(head, rel=1e-9)
