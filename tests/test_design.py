"""vocabopt.design: each rule of the design arithmetic pinned once, against a reference (brute force, torch's own
modules, the exported layer's own copy of the rule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vocabopt import design
from vocabopt.adaptive_head import AdaptiveHeadConfig, AdaptiveSoftmax
from vocabopt.errors import InputError
from vocabopt.layer import build_layer
from vocabopt.plan import Plan


def test_frequency_order_is_a_stable_sort_by_decreasing_count():
    counts = np.array([3, 9, 3, 0, 9, 1])
    brute = sorted(range(counts.size), key=lambda i: (-counts[i], i))
    assert design.frequency_order(counts).tolist() == brute


@pytest.mark.parametrize(
    "hidden, n, div, min_proj, want",
    [
        (512, 3, 4.0, None, [128, 32, 8]),
        (64, 4, 4.0, None, [16, 4, 1, 1]),  # never below 1
        (64, 4, 4.0, 8, [16, 8, 8, 8]),  # min_proj is a floor
        (64, 2, 0.5, None, [64, 64]),  # never above hidden
        (100, 2, 3.0, None, [33, 11]),  # floor division, as ALSWL
    ],
)
def test_projection_rule(hidden, n, div, min_proj, want):
    assert design.proj_dims(hidden, n, div_value=div, min_proj=min_proj) == want


def test_projection_rule_refuses_a_non_positive_divisor():
    with pytest.raises(InputError, match="div_value=0"):
        design.proj_dims(64, 2, div_value=0)


@pytest.mark.parametrize(
    "cutoffs, match",
    [
        ([], "cutoffs is empty"),
        ([100, 20], "strictly increasing"),
        ([0, 20], "strictly increasing"),
        ([20, 20], "strictly increasing"),
        ([20, 500], r"drop the ones >= 500 \(e.g. \[20\]\)"),
        ([2.5], "must be integers"),
    ],
)
def test_cutoff_checks_name_the_problem_and_a_fix(cutoffs, match):
    with pytest.raises(InputError, match=match):
        design.check_cutoffs(cutoffs, 500)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 60), max_size=5), st.integers(2, 50))
def test_the_exported_layer_accepts_exactly_the_cutoffs_design_accepts(cutoffs, vocab):
    """The layer file cannot import vocabopt and keeps its own check; both must agree on every input."""
    try:
        design.check_cutoffs(cutoffs, vocab)
        ok = True
    except InputError:
        ok = False
    try:
        AdaptiveHeadConfig(vocab_size=vocab, hidden=8, cutoffs=cutoffs, proj_dims=[1] * len(cutoffs))
        layer_ok = True
    except ValueError:
        layer_ok = False
    assert ok == layer_ok


def test_clip_keeps_the_cutoffs_inside_the_vocabulary():
    assert design.clip_cutoffs([2000, 10000, 200000], 50000) == [2000, 10000]
    assert design.clip_cutoffs([20000, 40000], 8000) == []


def test_shares_and_capacity_against_a_direct_count():
    rng = np.random.default_rng(0)
    counts = np.sort(rng.integers(0, 1000, 300))[::-1]
    cut = [10, 60]
    shares = design.cluster_shares(counts, cut)
    total = counts.sum()
    assert shares == pytest.approx([counts[:10].sum() / total, counts[10:60].sum() / total, counts[60:].sum() / total])
    assert sum(shares) == pytest.approx(1.0)
    assert design.capacity(shares, 64, [16, 4]) == pytest.approx(shares[0] + shares[1] / 4 + shares[2] / 16)
    assert design.capacity([1.0, 0.0], 64, [1]) == 1.0  # everything in the head: the full softmax's capacity


def test_parameter_count_is_the_built_layers():
    counts = np.arange(500)[::-1].astype(np.int64)
    plan = Plan.from_cutoffs(counts, hidden=32, cutoffs=[20, 100, 300], proj_dims=[16, 5, 2])
    layer = build_layer(plan)
    n = sum(p.numel() for p in layer.parameters())
    assert design.n_params(500, 32, [20, 100, 300], [16, 5, 2]) == n == plan.n_params()
    full = torch.nn.Linear(32, 500)
    assert design.full_softmax_params(500, 32) == sum(p.numel() for p in full.parameters())


def test_static_rows_is_the_layers_own_budget():
    """The cost model's row budget for the static path equals AdaptiveSoftmax.capacity, factor included."""
    assert design.CAPACITY_FACTOR == AdaptiveHeadConfig.__dataclass_fields__["capacity_factor"].default
    shares = [0.80, 0.15, 0.04, 0.01]
    for factor in (design.CAPACITY_FACTOR, 1.0, 3.5):
        cfg = AdaptiveHeadConfig(
            vocab_size=1000,
            hidden=8,
            cutoffs=[10, 100, 400],
            proj_dims=[4, 2, 1],
            shares=shares,
            capacity_factor=factor,
        )
        layer = AdaptiveSoftmax(cfg, order=torch.arange(1000))
        for n in (1, 37, 2048, 100_000):
            want = layer.capacity(n)
            got = design.static_rows(n, np.array(shares[1:]), factor)
            assert got.tolist() == want


def test_alswl_div_value_builds_the_same_projections():
    for hidden, dims in [(512, [128, 32]), (96, [48, 24, 12]), (100, [25, 6]), (64, [64])]:
        div = design.alswl_div_value(hidden, dims)
        assert div is not None
        alswl = torch.nn.AdaptiveLogSoftmaxWithLoss(hidden, 5000, [100, 1000, 3000][: len(dims)], div_value=div)
        assert [seq[0].out_features for seq in alswl.tail] == dims
    assert design.alswl_div_value(512, [128, 64]) is None  # not a geometric rule
