"""convert_head against references: exact-rank tails convert with zero error (the within-cluster distribution is the
original's), shortlist rows are copied bit for bit, clusters of equal rows give the whole distribution exactly, the
report's numbers match a brute-force computation, distillation lowers the KL on held-out states, bad input fails in
one line (library and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import vocabopt
from vocabopt import Plan, build_layer
from vocabopt.cli import main
from vocabopt.convert import ConvertReport, convert_head, distil, summary_lines
from vocabopt.errors import InputError, MismatchError
from vocabopt.replan import factor_tail
from vocabopt.weights import read_weights

V, D, CUT, PROJ = 300, 32, [40, 140], [8, 3]


def _plan() -> Plan:
    counts = (1e6 / np.arange(1, V + 1) ** 1.1).astype(np.int64) + 1
    perm = np.random.default_rng(0).permutation(V)  # tokenizer ids are not in frequency order
    return Plan.from_cutoffs(counts[perm], hidden=D, cutoffs=CUT, proj_dims=PROJ)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _low_rank_head(plan: Plan, ranks: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, d) weight by id whose tail blocks (in the plan's rank order) have exactly the given ranks; (V,) bias."""
    g = _gen(seed)
    edges = [0, *plan.cutoffs, V]
    blocks = [torch.randn(edges[1], D, generator=g)]
    for i, r in enumerate(ranks):
        n = edges[i + 2] - edges[i + 1]
        blocks.append(torch.randn(n, r, generator=g) @ torch.randn(r, D, generator=g) / r**0.5)
    W = torch.empty(V, D)
    W[torch.from_numpy(plan.order)] = torch.cat(blocks) * 0.5  # row of id order[rank] = block row `rank`
    return W, torch.randn(V, generator=g)


def _original_lp(W, b, x):
    return torch.log_softmax(x.double() @ W.double().T + b.double(), -1)  # (n, V) fp64 by id


def test_exact_rank_tails_convert_with_zero_error():
    plan = _plan()
    W, b = _low_rank_head(plan, PROJ)
    conv = convert_head(W, b, plan, distil_steps=0)
    layer = conv.layer
    assert all(t["relative_error"] < 1e-6 for t in conv.report.tails)
    x = torch.randn(50, D, generator=_gen(1))
    ref = _original_lp(W, b, x)
    rank_of = torch.from_numpy(plan.rank_of)
    for i, (lo, hi) in enumerate(plan.bounds[1:]):
        ids = torch.from_numpy(plan.order[lo:hi])
        want = torch.log_softmax(ref[:, ids], -1)  # original log p(token | tail i), by the tail's rank order
        got = layer._tail_log_prob(i, x)  # the layer's, same order
        assert torch.allclose(got.double(), want, atol=1e-4), i
        recon = layer.out[i].weight @ layer.proj[i].weight  # (size_i, d) the layer's effective rows
        assert torch.allclose(recon, W[ids], atol=1e-5)
    assert rank_of.numel() == V


def test_shortlist_rows_are_copied_exactly_and_owned():
    plan = _plan()
    W, b = _low_rank_head(plan, [D, D])
    lin = torch.nn.Linear(D, V)
    with torch.no_grad():
        lin.weight.copy_(W), lin.bias.copy_(b)
    layer = convert_head(lin, None, plan, distil_steps=0).layer
    S, short = plan.cutoffs[0], torch.from_numpy(plan.order[: plan.cutoffs[0]])
    assert torch.equal(layer.head.weight[:S], W[short]) and torch.equal(layer.head.bias[:S], b[short])
    before = layer.head.weight.clone()
    with torch.no_grad():
        lin.weight.add_(1.0)  # the converted head holds its own copy
    assert torch.equal(layer.head.weight, before)


def test_tied_state_dict_uses_the_embedding_and_copies_it():
    plan = _plan()
    W, _ = _low_rank_head(plan, PROJ)
    emb = torch.nn.Embedding(V, D)
    with torch.no_grad():
        emb.weight.copy_(W)
    state = {"model.embed_tokens.weight": emb.weight, "model.norm.weight": torch.ones(D)}  # no lm_head: tied
    conv = convert_head(state, None, plan, distil_steps=0)
    assert conv.report.tied and conv.report.source == "model.embed_tokens.weight"
    S, short = plan.cutoffs[0], torch.from_numpy(plan.order[: plan.cutoffs[0]])
    assert torch.equal(conv.layer.head.weight[:S], W[short])
    ptrs = {p.data_ptr() for p in conv.layer.parameters()}
    assert emb.weight.data_ptr() not in ptrs
    with torch.no_grad():
        emb.weight.mul_(2.0)
    assert torch.equal(conv.layer.head.weight[:S], W[short])
    both = {"lm_head.weight": W.clone(), "model.embed_tokens.weight": W.clone()}  # saved with both keys, equal
    assert convert_head(both, None, plan, distil_steps=0).report.tied


def _equal_row_head(plan: Plan, seed: int = 0):
    """Tails whose rows are all equal (different biases): lse over a tail is then linear in h, so an adaptive head
    with rank-1 tails represents the original distribution exactly."""
    g = _gen(seed)
    W_rank = torch.randn(V, D, generator=g) * 0.5
    for lo, hi in plan.bounds[1:]:
        W_rank[lo:hi] = torch.randn(D, generator=g) * 0.5
    W = torch.empty(V, D)
    W[torch.from_numpy(plan.order)] = W_rank
    return W, torch.randn(V, generator=g)


@pytest.mark.parametrize("with_states", [False, True])
def test_equal_row_clusters_give_the_whole_distribution(with_states):
    """Closed form (the tangent of lse at h = 0, exact for equal rows) and least squares both fit the cluster
    logits exactly, so the full log_prob equals the original's."""
    plan = _plan()
    W, b = _equal_row_head(plan)
    h = torch.randn(400, D, generator=_gen(2)) if with_states else None
    conv = convert_head(W, b, plan, hidden_states=h, distil_steps=0)
    x = torch.randn(64, D, generator=_gen(3))
    assert torch.allclose(conv.layer.log_prob(x).double(), _original_lp(W, b, x), atol=1e-4)
    if with_states:
        assert conv.report.cluster_logit_rmse < 1e-4
        assert conv.report.before.kl < 1e-6 and conv.report.before.top1_agreement == 1.0
    else:
        assert conv.report.before is None and conv.report.cluster_logit_rmse is None


def test_closed_form_cluster_logits_are_the_tangent_of_lse_at_zero():
    """Without hidden states each cluster logit is lse_j(h . w_j + b_j)'s tangent plane at h = 0 (autograd as the
    reference), hence a lower bound on it for every h (lse is convex)."""
    plan = _plan()
    W, b = _low_rank_head(plan, PROJ)
    layer = convert_head(W, b, plan, distil_steps=0).layer
    S, x = plan.cutoffs[0], torch.randn(100, D, generator=_gen(16), dtype=torch.float64)
    for i, (lo, hi) in enumerate(plan.bounds[1:]):
        ids = torch.from_numpy(plan.order[lo:hi])
        h0 = torch.zeros(D, dtype=torch.float64, requires_grad=True)
        lse = torch.logsumexp(W[ids].double() @ h0 + b[ids].double(), 0)
        (grad,) = torch.autograd.grad(lse, h0)
        assert torch.allclose(layer.head.weight[S + i].double(), grad, atol=1e-6)
        assert float(layer.head.bias[S + i].detach()) == pytest.approx(float(lse.detach()), abs=1e-5)
        exact = torch.logsumexp(x @ W[ids].double().T + b[ids].double(), 1)  # (n,)
        tangent = x @ layer.head.weight[S + i].double() + layer.head.bias[S + i].double()
        assert bool((tangent <= exact + 1e-5).all())


def test_report_matches_brute_force():
    plan = _plan()
    W, b = _low_rank_head(plan, [4, 1])  # below the projections' rank: not exact
    W = W + 0.3 * torch.randn(V, D, generator=_gen(4))
    h = torch.randn(300, D, generator=_gen(5))
    hx, ht = torch.randn(80, D, generator=_gen(6)), torch.randint(0, V, (80,), generator=_gen(7))
    conv = convert_head(W, b, plan, hidden_states=h, heldout=(hx, ht), distil_steps=0)
    q = conv.report.before
    with torch.no_grad():
        lt, ls = torch.log_softmax(hx @ W.T + b, -1), conv.layer.log_prob(hx)
    kl = (lt.exp() * (lt - ls)).sum(1).mean()
    assert q.kl == pytest.approx(float(kl), rel=1e-4) and q.kl > 0.01
    assert q.top1_agreement == pytest.approx(float((lt.argmax(1) == ls.argmax(1)).double().mean()))
    assert q.nll_original == pytest.approx(float(F.cross_entropy(hx @ W.T + b, ht)), rel=1e-5)
    assert q.nll_adaptive == pytest.approx(float(-conv.layer.target_log_prob(hx, ht).detach().mean()), rel=1e-5)
    assert q.ppl_change == pytest.approx(np.exp(q.nll_adaptive - q.nll_original) - 1)
    assert conv.report.evaluated_on == "held-out states"


@pytest.mark.parametrize("n", [20, 300])  # the SVD path, and the Gram path of tall blocks (n > 2d)
def test_factor_tail_error_is_the_discarded_singular_values(n):
    E = torch.randn(n, 12, generator=_gen(8), dtype=torch.float64)
    proj, rows, fit = factor_tail(E, 5)
    S = torch.linalg.svdvals(E)  # the reference: Eckart-Young
    assert float(torch.linalg.norm(E - rows @ proj)) == pytest.approx(float(S[5:].square().sum().sqrt()), rel=1e-9)
    assert fit["relative_error"] == pytest.approx(float(S[5:].norm() / E.norm()), rel=1e-9)
    low = E[:, :3] @ torch.randn(3, 12, generator=_gen(17), dtype=torch.float64)  # exact rank 3 < p
    proj, rows, fit = factor_tail(low, 5)
    assert torch.allclose(rows @ proj, low, atol=1e-9) and fit["relative_error"] < 1e-6
    small = torch.randn(3, 12, generator=_gen(9), dtype=torch.float64)  # fewer tokens than the projection
    proj, rows, fit = factor_tail(small, 5)
    assert proj.shape == (5, 12) and rows.shape == (3, 5) and torch.allclose(rows @ proj, small, atol=1e-12)
    assert bool((proj.norm(dim=1) > 0).all())  # spare directions keep a live projection row for distillation


def test_distillation_lowers_kl_on_heldout_states():
    plan = _plan()
    W, b = _low_rank_head(plan, [16, 8])  # more rank than the projections hold
    h = torch.randn(1500, D, generator=_gen(10))
    hx = torch.randn(300, D, generator=_gen(11))
    seen = []
    conv = convert_head(
        W, b, plan, hidden_states=h, heldout=(hx, None), distil_steps=60, lr=3e-3, progress=lambda *a: seen.append(a)
    )
    r = conv.report
    assert r.after.kl < 0.9 * r.before.kl and r.distil["kept"] == "distilled"
    assert len(seen) == 60 and seen[-1][:2] == (60, 60)
    with torch.no_grad():
        ls, lt = conv.layer.log_prob(hx), torch.log_softmax(hx @ W.T + b, -1)
    assert r.after.kl == pytest.approx(float((lt.exp() * (lt - ls)).sum(1).mean()), rel=1e-4)
    assert r.distillation_discarded is None
    assert any(line.startswith("after distillation") for line in summary_lines(r))
    # the copied shortlist is not distilled: its rows and biases are still the original's, bit for bit
    ids = torch.from_numpy(plan.order[: CUT[0]])
    assert torch.equal(conv.layer.head.weight[: CUT[0]], W[ids]) and torch.equal(conv.layer.head.bias[: CUT[0]], b[ids])
    undistilled = convert_head(W, b, plan, hidden_states=h, distil_steps=0).layer
    assert not torch.equal(conv.layer.head.weight[CUT[0] :], undistilled.head.weight[CUT[0] :])  # cluster rows moved


def test_distil_keeps_frozen_rows_of_a_head_without_bias():
    """`distil` on its own: a layer whose head has no bias keeps its first rows bit for bit, the rest move; a frozen
    count past the shortlist is refused."""
    plan = _plan()
    W, b = _low_rank_head(plan, [16, 8])
    layer = build_layer(plan, head_bias=False)
    before = layer.head.weight.detach().clone()
    x = torch.randn(200, D, generator=_gen(14))
    distil(layer, W, b, x, steps=5, lr=1e-2, batch_rows=32, frozen_rows=CUT[0])
    assert layer.head.bias is None and torch.equal(layer.head.weight[: CUT[0]], before[: CUT[0]])
    assert not torch.equal(layer.head.weight[CUT[0] :], before[CUT[0] :])
    with pytest.raises(InputError, match="frozen_rows"):
        distil(layer, W, b, x, steps=1, lr=1e-2, batch_rows=32, frozen_rows=CUT[0] + 1)


def test_distillation_that_hurts_is_undone(tmp_path):
    """Undone distillation: `after` describes the head returned (== before, measured again here by brute force), the
    worse distilled figures are kept as `distillation_discarded`, and the summary never calls them "after"."""
    plan = _plan()
    W, b = _equal_row_head(plan)  # converts exactly: any distillation step can only move away
    h = torch.randn(400, D, generator=_gen(12))
    conv = convert_head(W, b, plan, hidden_states=h, distil_steps=5, lr=1.0)
    r = conv.report
    assert r.distil["kept"].startswith("converted")
    x = torch.randn(16, D, generator=_gen(13))
    assert torch.allclose(conv.layer.log_prob(x).double(), _original_lp(W, b, x), atol=1e-4)
    with torch.no_grad():
        lt, ls = torch.log_softmax(h @ W.T + b, -1), conv.layer.log_prob(h)
    assert r.after == r.before and r.after.kl == pytest.approx(float((lt.exp() * (lt - ls)).sum(1).mean()), abs=1e-6)
    assert r.distillation_discarded.kl > 100 * max(r.before.kl, 1e-6) and r.distillation_discarded.rows == 400
    lines = summary_lines(r)
    assert not any(line.startswith("after distillation") for line in lines)
    assert any(
        line.startswith("distillation discarded") and f"{r.distillation_discarded.kl:.4f}" in line for line in lines
    )
    r.save(tmp_path / "r.json")
    assert ConvertReport.load(tmp_path / "r.json") == r  # the discarded figures survive the JSON round trip


def test_padded_vocabulary_is_cut_to_the_plan(caplog):
    """An lm_head padded past the plan's ids (320 rows, 300 ids, as an 8064-row table for 8000 ids) converts exactly
    as its first 300 rows do; zero padding passes silently, nonzero padding is logged and counted in the report."""
    plan = _plan()
    W, b = _low_rank_head(plan, PROJ)
    want = convert_head(W, b, plan, distil_steps=0)
    Wp, bp = torch.cat([W, torch.zeros(20, D)]), torch.cat([b, torch.zeros(20)])
    with caplog.at_level("WARNING", logger="vocabopt.convert"):
        got = convert_head(Wp, bp, plan, distil_steps=0)
    assert not caplog.records
    assert got.report.padded_rows == 20 and got.report.padded_rows_nonzero == 0
    for k, v in want.layer.state_dict().items():
        assert torch.equal(got.layer.state_dict()[k], v), k
    assert any("dropped 20 padded rows" in line for line in summary_lines(got.report))
    Wp[V + 3] = 1.0  # two padded rows that hold something: a plan for a smaller tokenizer than the model's?
    bp[V + 7] = 0.5
    with caplog.at_level("WARNING", logger="vocabopt.convert"):
        got = convert_head(Wp, bp, plan, distil_steps=0)
    assert got.report.padded_rows_nonzero == 2 and "2 of the 20 dropped rows are nonzero" in caplog.text
    assert torch.equal(got.layer.head.weight, want.layer.head.weight)
    with pytest.raises(MismatchError, match="the weight's 320 rows need"):
        convert_head(Wp, b, plan)  # the bias must be the table's own
    with pytest.raises(MismatchError, match="at least V rows"):
        convert_head(W[:-1], None, plan)
    with pytest.raises(MismatchError, match="transposed"):
        convert_head(Wp.T, None, plan)


def test_bad_input_is_one_line():
    plan = _plan()
    W, b = _low_rank_head(plan, PROJ)
    with pytest.raises(MismatchError, match="V=300, d=32"):
        convert_head(W[:-1], None, plan)
    with pytest.raises(MismatchError, match="transposed"):
        convert_head(W.T, None, plan)
    with pytest.raises(MismatchError, match="bias"):
        convert_head(W, b[:5], plan)
    with pytest.raises(InputError, match="NaN"):
        convert_head(torch.full((V, D), float("nan")), None, plan)
    with pytest.raises(InputError, match="hidden_states"):
        convert_head(W, b, plan, hidden_states=torch.randn(10, D + 1))
    with pytest.raises(InputError, match="targets hold ids"):
        convert_head(W, b, plan, heldout=(torch.randn(4, D), torch.tensor([0, 1, 2, V])))
    with pytest.raises(InputError, match="--key"):
        convert_head({"foo.weight": W}, None, plan, key="lm_head.weight")
    with pytest.raises(InputError, match="vocabopt.Plan"):
        convert_head(W, b, None)


def test_cli_converts_and_reports(tmp_path):
    plan = _plan()
    plan.save(tmp_path / "plan.json")
    W, b = _low_rank_head(plan, [12, 6])
    torch.save({"lm_head.weight": W, "lm_head.bias": b, "body.x": torch.ones(3)}, tmp_path / "model.pt")
    np.save(tmp_path / "h.npy", torch.randn(500, D, generator=_gen(14)).numpy())
    np.save(tmp_path / "t.npy", torch.randint(0, V, (500,), generator=_gen(15)).numpy())
    args = ["convert", str(tmp_path / "plan.json"), "--weights", str(tmp_path / "model.pt")]
    args += ["--hidden-states", str(tmp_path / "h.npy"), "--targets", str(tmp_path / "t.npy"), "--steps", "20"]
    args += ["-o", str(tmp_path / "head.pt"), "--report", str(tmp_path / "r.json")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "top-1 agreement" in res.output and "perplexity" in res.output and "50 held-out states" in res.output
    saved = torch.load(tmp_path / "head.pt", weights_only=True)
    build_layer(plan).load_state_dict(saved)  # loads into the plan's layer
    h, t = torch.from_numpy(np.load(tmp_path / "h.npy")), torch.from_numpy(np.load(tmp_path / "t.npy"))
    lib = convert_head(W, b, plan, hidden_states=h[:450], heldout=(h[450:], t[450:]), distil_steps=20)
    for k, v in lib.layer.state_dict().items():  # the CLI is the library call on the split it describes
        assert torch.allclose(saved[k].double(), v.double(), atol=1e-6), k
    report = ConvertReport.load(tmp_path / "r.json")
    assert report.before.rows == 50 and report.after.kl == pytest.approx(lib.report.after.kl, rel=1e-5)
    assert report.before == lib.report.before and report.tails == lib.report.tails  # the JSON round trip


def test_cli_padded_table_and_undone_distillation(tmp_path):
    """The CLI on a padded table (cut to the plan, said in the summary) whose distillation hurts (the summary says it
    was discarded and never prints discarded figures as "after distillation")."""
    plan = _plan()
    plan.save(tmp_path / "plan.json")
    W, b = _equal_row_head(plan)
    torch.save({"lm_head.weight": torch.cat([W, torch.zeros(12, D)])}, tmp_path / "model.pt")
    np.save(tmp_path / "h.npy", torch.randn(400, D, generator=_gen(12)).numpy())
    args = ["convert", str(tmp_path / "plan.json"), "--weights", str(tmp_path / "model.pt"), "--lr", "1.0"]
    args += ["--hidden-states", str(tmp_path / "h.npy"), "--steps", "5", "-o", str(tmp_path / "head.pt"), "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "dropped 12 padded rows past the plan's 300 ids (0 of them nonzero)" in res.output
    assert "distillation discarded" in res.output and "after distillation" not in res.output
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["after"] == out["before"] and out["distillation_discarded"]["kl"] > out["before"]["kl"]
    assert out["padded_rows"] == 12


def test_cli_shape_mismatch_and_safetensors(tmp_path):
    plan = _plan()
    plan.save(tmp_path / "plan.json")
    W, _ = _low_rank_head(plan, PROJ)
    torch.save({"lm_head.weight": W[:, :-2].contiguous()}, tmp_path / "bad.pt")
    res = CliRunner().invoke(
        main,
        ["convert", str(tmp_path / "plan.json"), "--weights", str(tmp_path / "bad.pt")]
        + [
            "-o",
            str(tmp_path / "o.pt"),
        ],
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert (
        res.output.strip().startswith("Error:") and "d=32" in res.output and len(res.output.strip().splitlines()) == 1
    )
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file({"transformer.wte.weight": W}, str(tmp_path / "m.safetensors"))
    assert torch.equal(read_weights(str(tmp_path / "m.safetensors"))["transformer.wte.weight"], W)
    res = CliRunner().invoke(
        main,
        ["convert", str(tmp_path / "plan.json"), "--weights", str(tmp_path / "m.safetensors")]
        + ["-o", str(tmp_path / "o.pt"), "--json"],
    )
    assert res.exit_code == 0, res.output
    assert '"tied": true' in res.output
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    res = CliRunner().invoke(
        main,
        ["convert", str(tmp_path / "plan.json"), "--weights", str(tmp_path / "junk.pt")]
        + ["-o", str(tmp_path / "o.pt")],
    )
    assert res.exit_code == 1 and "loads safely" in res.output


def test_package_exports_convert_head():
    assert vocabopt.convert_head is convert_head


def test_transformers_model_tied_lm_head():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_embd=D, n_layer=1, n_head=2, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg)  # ties lm_head to the input embedding by default
    conv = convert_head(model, None, _plan(), distil_steps=0)
    assert conv.report.tied and conv.report.source == "model lm_head"
    plan = _plan()
    S, short = plan.cutoffs[0], torch.from_numpy(plan.order[: plan.cutoffs[0]])
    assert torch.equal(conv.layer.head.weight[:S], model.transformer.wte.weight[short])
    assert model.transformer.wte.weight.data_ptr() not in {p.data_ptr() for p in conv.layer.parameters()}
