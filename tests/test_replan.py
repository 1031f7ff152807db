"""replan_head: head-bound tokens get their exact d-space row, new tails are the best rank-d_j fit (the error equals
the discarded singular values), and re-planning to the same design reproduces the old distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_expand import D, V, _trained, ref_log_prob

from vocabopt import MismatchError, Plan, build_layer
from vocabopt.cli import main
from vocabopt.errors import InputError
from vocabopt.expand import write_state
from vocabopt.replan import log_offsets, replan_head


def _hidden(n: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_tokens_moving_into_the_head_get_their_exact_row():
    plan, state = _trained()
    new_plan = Plan(
        vocab_size=V, hidden=D, order=plan.order, cutoffs=[20, 40], proj_dims=[4, 2], counts_by_rank=plan.counts_by_rank
    )
    r = replan_head(state, plan, new_plan, hidden=_hidden())
    o = log_offsets(state, plan, _hidden())
    for rank in range(10, 20):  # tail 0 -> head
        u, P = state["out.0.weight"][rank - 10], state["proj.0.weight"]
        assert torch.equal(r.state["head.weight"][rank], (u[None, :] @ P)[0])  # P^T u, exactly
        assert float(r.state["head.bias"][rank]) == pytest.approx(float(state["out.0.bias"][rank - 10] + o[1]))
    for rank in range(10):  # head tokens stay; their bias moves by the head's offset
        assert torch.equal(r.state["head.weight"][rank], state["head.weight"][rank])
        assert float(r.state["head.bias"][rank]) == pytest.approx(float(state["head.bias"][rank] + o[0]))
    h = _hidden(5, seed=9)  # a moved token's logit is its old tail logit plus a constant
    moved = h @ r.state["head.weight"][10:20].T + r.state["head.bias"][10:20]
    tail = (h @ state["proj.0.weight"].T) @ state["out.0.weight"][:10].T + state["out.0.bias"][:10]
    assert torch.allclose(moved - tail, (o[1]).expand_as(moved), atol=1e-12)


def test_the_svd_fit_error_equals_the_discarded_singular_values():
    plan, state = _trained()
    new_plan = Plan(  # new tail 0 mixes head, tail-0 (rank 4) and tail-1 (rank 2) rows into rank 2: lossy
        vocab_size=V, hidden=D, order=plan.order, cutoffs=[5, 35], proj_dims=[2, 1], counts_by_rank=plan.counts_by_rank
    )
    r = replan_head(state, plan, new_plan, hidden=_hidden())
    from vocabopt.replan import all_rows

    E, _ = all_rows(state, plan)
    for j, ((lo, hi), p) in enumerate(zip(new_plan.bounds[1:], new_plan.proj_dims, strict=True)):
        sv = np.linalg.svd(E[lo:hi].numpy(), compute_uv=False)
        fitted = r.state[f"out.{j}.weight"] @ r.state[f"proj.{j}.weight"]
        err = float(torch.linalg.norm(E[lo:hi] - fitted))
        assert err == pytest.approx(float(np.sqrt(np.sum(sv[p:] ** 2))), rel=1e-9)
        assert r.tails[j]["fit_error"] == pytest.approx(err, rel=1e-12) and err > 0
        # no rank-p fit is better: random rank-p candidates all do worse (Eckart-Young)
        g = np.random.default_rng(j)
        for _ in range(20):
            A, B = g.normal(size=(hi - lo, p)), g.normal(size=(p, D))
            B = np.linalg.lstsq(A, E[lo:hi].numpy(), rcond=None)[0]
            assert np.linalg.norm(E[lo:hi].numpy() - A @ B) >= err - 1e-9
    assert r.tails[0]["from_clusters"] == [5, 20, 5]  # ranks 5..35: 5 head, 20 tail-0, 5 tail-1 tokens


def test_replanning_to_the_same_design_reproduces_the_distribution():
    plan, state = _trained()
    r = replan_head(state, plan, plan, hidden=_hidden())
    assert all(t["fit_error"] < 1e-9 for t in r.tails) and r.cluster_logit_rmse < 1e-9
    h = _hidden(50, seed=4)
    assert torch.allclose(ref_log_prob(r.state, plan, h), ref_log_prob(state, plan, h), atol=1e-8)


def test_heldout_loss_is_reported_and_the_new_layer_loads():
    plan, state = _trained()
    new_plan = Plan.from_cutoffs(np.arange(V, 0, -1), hidden=D, cutoffs=[15, 45], proj_dims=[4, 2])
    ht = _hidden(64, seed=5), torch.randint(0, V, (64,), generator=torch.Generator().manual_seed(0))
    r = replan_head(state, plan, new_plan, hidden=_hidden(), heldout=ht)
    old = -ref_log_prob(state, plan, ht[0]).gather(1, ht[1][:, None]).mean()
    new = -ref_log_prob(r.state, new_plan, ht[0]).gather(1, ht[1][:, None]).mean()
    assert r.heldout["old"] == pytest.approx(float(old), rel=1e-9)
    assert r.heldout["migrated"] == pytest.approx(float(new), rel=1e-9)
    build_layer(new_plan).double().load_state_dict(r.state)


def test_mismatched_inputs_are_refused():
    plan, state = _trained()
    other = Plan.from_cutoffs(np.arange(V + 1, 0, -1), hidden=D, cutoffs=[10, 30])
    with pytest.raises(MismatchError, match="same tokenizer"):
        replan_head(state, plan, other, hidden=_hidden())
    with pytest.raises(InputError, match=r"\(n, 8\)"):
        replan_head(state, plan, plan, hidden=torch.randn(5, 3))


def test_cli_replan(tmp_path):
    plan, state = _trained()
    new_plan = Plan.from_cutoffs(np.arange(V, 0, -1), hidden=D, cutoffs=[15, 45], proj_dims=[4, 2])
    plan.save(tmp_path / "old.json")
    new_plan.save(tmp_path / "new.json")
    write_state(state, str(tmp_path / "head.pt"))
    np.save(tmp_path / "h.npy", _hidden().numpy())
    args = ["replan", str(tmp_path / "head.pt"), str(tmp_path / "old.json"), str(tmp_path / "new.json")]
    res = CliRunner().invoke(main, [*args, "--hidden", str(tmp_path / "h.npy"), "-o", str(tmp_path / "m.pt")])
    assert res.exit_code == 0, res.output
    build_layer(new_plan).double().load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    np.save(tmp_path / "bad.npy", np.zeros(4))
    res = CliRunner().invoke(main, [*args, "--hidden", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "n.pt")])
    assert res.exit_code == 1 and "(n, d) float array" in res.output and not (tmp_path / "n.pt").exists()


@pytest.mark.parametrize("rcond", [None, "default"])
def test_cluster_logits_stay_small_on_layer_norm_hidden_states(rcond, monkeypatch):
    """After a LayerNorm, hidden states (fp32) lie on a hyperplane: [h, 1] is rank-deficient up to rounding, and an
    untruncated least-squares fit blows the cluster-logit weights up (the first case shows the failure is real)."""
    import vocabopt.replan as rp

    if rcond is None:
        monkeypatch.setattr(rp, "RCOND", None)
    plan, state = _trained()
    ln = torch.nn.LayerNorm(D)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
        h = ln(torch.randn(400, D, generator=torch.Generator().manual_seed(2))).double()  # fp32 -> fp64
    new_plan = Plan.from_cutoffs(np.arange(V, 0, -1), hidden=D, cutoffs=[15, 45], proj_dims=[4, 2])
    w = replan_head(state, plan, new_plan, hidden=h).state["head.weight"][15:]  # the cluster-logit rows
    if rcond is None:
        assert float(w.norm()) > 1e3
    else:
        assert float(w.norm()) < 100


@pytest.mark.slow
def test_the_benchmark_smoke_run(tmp_path):
    """benchmarks/expand_replan.py --quick runs end to end (~1 min) and prints its three tables."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "expand_replan.py"), "--quick", "--no-write"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in ("| adaptive |", "| full |", "| kept |", "| replanned |", "recommendation:"):
        assert needle in out.stdout
