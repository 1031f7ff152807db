"""expand_head: old weights bit-identical, old tokens' relative log-probs unchanged (fp64), new tokens placed by
frequency and initialised by the documented rules (checked against hand computations), incompatible tokenizers
refused, and the expanded head loaded by the exported module."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vocabopt import MismatchError, Plan, build_layer
from vocabopt.cli import main
from vocabopt.errors import InputError
from vocabopt.expand import HF_COV_SCALE, expand_head, write_state
from vocabopt.export import export_layer

V, D = 60, 8


def _trained(seed: int = 0, cutoffs=(10, 30), dims=(4, 2)) -> tuple[Plan, dict]:
    """A plan over V ids and a layer with random (not unigram) fp64 weights standing in for a trained head."""
    rng = np.random.default_rng(seed)
    counts = (1000 / np.arange(1, V + 1)).astype(np.int64)[rng.permutation(V)]
    plan = Plan.from_cutoffs(counts, hidden=D, cutoffs=list(cutoffs), proj_dims=list(dims))
    torch.manual_seed(seed)
    layer = build_layer(plan).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    return plan, layer.state_dict()


def ref_log_prob(state: dict, plan: Plan, h: torch.Tensor) -> torch.Tensor:
    """(n, V) fp64 log-probs by original id, straight from the definitions (head softmax, tail softmax + cluster)."""
    S, J = plan.cutoffs[0], len(plan.cutoffs)
    head = h @ state["head.weight"].double().T + state["head.bias"].double()
    head_lp = torch.log_softmax(head, -1)
    by_rank = [head_lp[:, :S]]
    for i in range(J):
        z = h @ state[f"proj.{i}.weight"].double().T
        tail = z @ state[f"out.{i}.weight"].double().T + state[f"out.{i}.bias"].double()
        by_rank.append(torch.log_softmax(tail, -1) + head_lp[:, S + i : S + i + 1])
    by_rank = torch.cat(by_rank, 1)
    out = torch.empty_like(by_rank)
    out[:, torch.from_numpy(plan.order)] = by_rank
    return out


def _rows_by_id(state: dict, plan: Plan) -> dict[int, tuple[torch.Tensor, torch.Tensor, int]]:
    """id -> (its weight row, its bias, its cluster) in `state`."""
    out = {}
    for c, (lo, hi) in enumerate(plan.bounds):
        w = state["head.weight"] if c == 0 else state[f"out.{c - 1}.weight"]
        b = state["head.bias"] if c == 0 else state[f"out.{c - 1}.bias"]
        for r in range(lo, hi):
            out[int(plan.order[r])] = (w[r - lo], b[r - lo], c)
    return out


OLD = [f"t{i}" for i in range(V)]
NEW = [*OLD, "n0", "n1", "n2", "n3", "n4"]
NEW_COUNTS = np.concatenate([np.arange(V, 0, -1) * 10, [10_000, 3, 0, 300, 595]]).astype(np.int64)


def test_old_weights_are_copied_bit_for_bit():
    plan, state = _trained()
    ex = expand_head(state, plan, NEW, old_tokens=OLD, stats=NEW_COUNTS)
    old_rows, new_rows = _rows_by_id(state, plan), _rows_by_id(ex.state, ex.plan)
    for t in range(V):
        assert torch.equal(old_rows[t][0], new_rows[t][0]) and torch.equal(old_rows[t][1], new_rows[t][1])
        assert old_rows[t][2] == new_rows[t][2]  # same cluster
    J = len(plan.cutoffs)
    assert torch.equal(ex.state["head.weight"][-J:], state["head.weight"][-J:])  # cluster logits
    assert all(torch.equal(ex.state[f"proj.{i}.weight"], state[f"proj.{i}.weight"]) for i in range(J))


@pytest.mark.parametrize("stats", [None, NEW_COUNTS])
def test_old_tokens_relative_log_probs_are_unchanged_in_fp64(stats):
    plan, state = _trained()
    mass = 1e-3
    ex = expand_head(state, plan, NEW, old_tokens=OLD, stats=stats, mass=mass)
    h = torch.randn(200, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    old, new = ref_log_prob(state, plan, h), ref_log_prob(ex.state, ex.plan, h)
    new_mass = new[:, V:].exp().sum(1)
    assert float(new_mass.max()) <= mass  # the stated bound, for every hidden state
    restricted = torch.log_softmax(new[:, :V], 1)  # new distribution restricted to old tokens, renormalised
    kl = (old.exp() * (old - restricted)).sum(1)
    assert float(kl.max()) < 1e-5 and float(kl.abs().max()) < mass**2 * 10
    shift = new[:, :V] - old  # across clusters the log-prob ratios move by at most log(1 + mass)
    assert float((shift.max(1).values - shift.min(1).values).max()) <= math.log1p(mass)
    # within one cluster the log-prob differences are exactly those of the old head (the normaliser cancels)
    for lo, hi in plan.bounds:
        ids = torch.from_numpy(plan.order[lo:hi])
        d_old, d_new = old[:, ids] - old[:, ids[:1]], new[:, ids] - new[:, ids[:1]]
        assert torch.allclose(d_old, d_new, rtol=0, atol=1e-12)


def test_new_tokens_in_the_head_leave_old_log_prob_ratios_exact():
    plan, state = _trained()
    counts = np.concatenate([np.arange(V, 0, -1), [10_000]]).astype(np.int64)  # one new, very frequent token
    ex = expand_head(state, plan, [*OLD, "hot"], old_tokens=OLD, stats=counts, mass=0.01)
    assert ex.cluster_of == {V: 0}
    h = torch.randn(50, D, dtype=torch.float64)
    old, new = ref_log_prob(state, plan, h), ref_log_prob(ex.state, ex.plan, h)
    assert torch.allclose(torch.log_softmax(new[:, :V], 1), old, rtol=0, atol=1e-12)  # KL exactly 0 up to fp64


def test_placement_by_frequency():
    plan, state = _trained()
    ex = expand_head(state, plan, NEW, old_tokens=OLD, stats=NEW_COUNTS)
    # old counts in the new data are 600, 590, ..., 10 (ids 0..59): rank = number of old tokens counted >= c
    # 10000 -> rank 0 (head); 3 and 0 -> rank 60 (last tail); 300 -> 31 old >= 300 (tail 1, ranks 30..59);
    # 595 -> rank 1 (head)
    assert ex.cluster_of == {60: 0, 61: 2, 62: 2, 63: 2, 64: 0}
    assert ex.plan.cutoffs == [12, 32] and ex.plan.vocab_size == V + 5
    assert ex.plan.order[10:12].tolist() == [60, 64]  # appended at the end of their cluster, in id order
    no_stats = expand_head(state, plan, NEW, old_tokens=OLD)
    assert set(no_stats.cluster_of.values()) == {2} and no_stats.plan.cutoffs == plan.cutoffs


def test_mean_init_matches_a_hand_computation():
    plan, state = _trained()
    ex = expand_head(state, plan, NEW, old_tokens=OLD, stats=NEW_COUNTS, mass=0.05)
    K = 5
    W = state["out.1.weight"].numpy()  # tail 1 holds ids 61, 62, 63
    b = state["out.1.bias"].numpy()
    rows = _rows_by_id(ex.state, ex.plan)
    for t in (61, 62, 63):
        np.testing.assert_allclose(rows[t][0].numpy(), W.mean(0), rtol=0, atol=1e-15)
        assert float(rows[t][1]) == pytest.approx(b.mean() + math.log(0.05 / K), abs=1e-12)
    Wh, bh = state["head.weight"][:10].numpy(), state["head.bias"][:10].numpy()
    np.testing.assert_allclose(rows[60][0].numpy(), Wh.mean(0), rtol=0, atol=1e-15)
    assert float(rows[60][1]) == pytest.approx(bh.mean() + math.log(0.05 / K), abs=1e-12)
    assert ex.mass == 0.05


def test_mean_init_with_hf_covariance_stays_near_the_mean():
    plan, state = _trained()
    ex = expand_head(state, plan, NEW, old_tokens=OLD, cov_scale=HF_COV_SCALE, seed=3)
    W = state["out.1.weight"]
    new = ex.state["out.1.weight"][W.shape[0] :]
    spread = (new - W.mean(0)).norm(dim=1)
    assert float(spread.max()) < 1e-3 and float(spread.min()) > 0  # drawn around the mean, not at it
    assert math.isnan(ex.mass)  # no exact bound once rows are drawn


def test_subword_init_matches_a_hand_computation():
    plan, state = _trained()
    head_id, tail0_id, tail1_id = (int(plan.order[r]) for r in (3, 15, 40))
    pieces = {60: [head_id, tail1_id], 61: [tail0_id], 62: [], 63: [head_id], 64: [head_id]}
    ex = expand_head(
        state, plan, NEW, old_tokens=OLD, stats=NEW_COUNTS, init="subword", split=lambda t: pieces[t], mass=0.01
    )
    P1 = state["proj.1.weight"].numpy()  # (2, d)
    u = state["out.1.weight"][40 - 30].numpy()
    w = state["head.weight"][3].numpy()
    rows = _rows_by_id(ex.state, ex.plan)
    np.testing.assert_allclose(rows[60][0].numpy(), (w + u @ P1) / 2, atol=1e-12)  # head target: d-space mean
    u0 = state["out.0.weight"][15 - 10].numpy()
    v = u0 @ state["proj.0.weight"].numpy()  # tail-0 piece's d-space row, mapped into tail 1's space
    np.testing.assert_allclose(rows[61][0].numpy(), np.linalg.lstsq(P1.T, v, rcond=None)[0], atol=1e-10)
    np.testing.assert_allclose(rows[63][0].numpy(), np.linalg.lstsq(P1.T, w, rcond=None)[0], atol=1e-10)
    assert float(rows[61][1]) == pytest.approx(state["out.1.bias"].numpy().mean(), abs=1e-12)
    assert ex.fallback == [62]  # no pieces: the mean rule
    np.testing.assert_allclose(rows[62][0].numpy(), state["out.1.weight"].numpy().mean(0), atol=1e-15)


@pytest.mark.parametrize(
    ("new", "needle"),
    [
        ([*OLD[:5], OLD[6], OLD[5], *OLD[7:], "x"], "renumbers it to id 6"),
        ([*OLD[:5], "other", *OLD[6:], "x"], "drops it"),
        (OLD[:-1], "fewer than"),
    ],
)
def test_incompatible_tokenizers_are_refused(new, needle):
    plan, state = _trained()
    with pytest.raises(MismatchError, match=needle) as e:
        expand_head(state, plan, new, old_tokens=OLD)
    assert "\n" not in str(e.value) and ("add" in str(e.value) or "extend" in str(e.value))


def test_bad_inputs_are_refused():
    plan, state = _trained()
    with pytest.raises(InputError, match="adds no tokens"):
        expand_head(state, plan, OLD, old_tokens=OLD)
    with pytest.raises(InputError, match="needs the old tokenizer"):
        expand_head(state, plan, NEW, old_tokens=OLD, init="subword")
    with pytest.raises(MismatchError, match="stats has 3 ids"):
        expand_head(state, plan, NEW, old_tokens=OLD, stats=np.ones(3, dtype=np.int64))
    other, _ = _trained(seed=1)
    with pytest.raises(MismatchError, match="frequency order"):
        expand_head(state, other, NEW, old_tokens=OLD)


def test_the_exported_module_loads_the_expanded_head(tmp_path):
    plan, state = _trained()
    ex = expand_head(state, plan, NEW, old_tokens=OLD, stats=NEW_COUNTS)
    path = export_layer(ex.plan, tmp_path / "grown_head.py")[-1]
    spec = importlib.util.spec_from_file_location("grown_head", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["grown_head"] = mod
    try:
        spec.loader.exec_module(mod)
        head = mod.build_head().double()
        head.load_state_dict(ex.state)
    finally:
        del sys.modules["grown_head"]
    lib = build_layer(ex.plan).double()
    lib.load_state_dict(ex.state)
    h = torch.randn(20, D, dtype=torch.float64)
    ref = ref_log_prob(ex.state, ex.plan, h)
    assert torch.allclose(head.log_prob(h).double(), ref, atol=1e-5)
    assert torch.allclose(lib.log_prob(h).double(), ref, atol=1e-5)
    targets = torch.tensor([0, 59, 60, 61, 62, 63, 64] * 2)  # original ids, new ones included
    nll = head(h[:14], targets, reduction="none").double()
    assert torch.allclose(nll, -ref[:14].gather(1, targets[:, None])[:, 0], atol=1e-5)


def _tokenizers(tmp_path):
    from tokenizers import Tokenizer

    old = str(Path(__file__).resolve().parents[1] / "corpora" / "kjv-bpe-8k" / "tokenizer.json")
    tok = Tokenizer.from_file(old)
    tok.add_tokens(["Jerusalemite", "covenantal"])
    new = tmp_path / "new.json"
    tok.save(str(new))
    return old, str(new), tok.get_vocab_size() - 2


def test_cli_expand_with_real_tokenizers(tmp_path):
    old, new, n = _tokenizers(tmp_path)
    counts = np.arange(n, 0, -1, dtype=np.int64)
    plan = Plan.from_cutoffs(counts, hidden=16, cutoffs=[500, 2000])
    plan.save(tmp_path / "plan.json")
    layer = build_layer(plan)
    write_state(layer.state_dict(), str(tmp_path / "head.pt"))
    args = ["expand", str(tmp_path / "head.pt"), str(tmp_path / "plan.json"), "--old-tokenizer", old]
    res = CliRunner().invoke(main, [*args, "--new-tokenizer", new, "--init", "subword", "-o", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    grown = Plan.load(tmp_path / "g.plan.json")
    assert grown.vocab_size == n + 2
    layer2 = build_layer(grown)
    layer2.load_state_dict(torch.load(tmp_path / "g.pt", weights_only=True))
    res = CliRunner().invoke(main, [*args, "--new-tokenizer", old, "-o", str(tmp_path / "h")])
    assert res.exit_code == 1 and "adds no tokens" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "h.pt").exists()
