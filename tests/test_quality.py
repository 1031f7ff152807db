"""vocabopt.quality: streamed held-out statistics against direct computations on the whole (N, V) matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vocabopt.layer import build_layer
from vocabopt.plan import Plan
from vocabopt.quality import N_BINS, QualitySums, best_beta, heldout_quality
from vocabopt.training import (
    CURVE_STRIDE,
    TokenStream,
    _body,
    _full_softmax,
    curve_point,
    heldout_loss,
    heldout_windows,
)

V, N, WINDOW = 60, 900, 15


@pytest.fixture(scope="module")
def case():
    """Over-confident logits (targets drawn from softmax(z), scored with softmax(1.6 z)): the best T is near 1.6."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(N, V, generator=gen) * 1.5
    target = torch.multinomial(torch.softmax(z, dim=1), 1, generator=gen).squeeze(1)
    logp = torch.log_softmax(1.6 * z, dim=1)
    rank_of = np.random.default_rng(0).permutation(V)
    return logp, target, rank_of


def _streamed(logp, target, rank_of, edges):
    sums = QualitySums(edges, rank_of)
    for i in range(0, N, 300):  # three chunks
        sums.add(logp[i : i + 300], target[i : i + 300], WINDOW)
    return sums.result()


def test_loss_windows_and_bands_match_a_direct_count(case):
    logp, target, rank_of = case
    edges = [0, 10, 35, V]
    q = _streamed(logp, target, rank_of, edges)
    nll = -logp.gather(1, target[:, None]).squeeze(1).double().numpy()
    assert q.loss == pytest.approx(nll.mean()) and q.tokens == N
    np.testing.assert_allclose(q.window_losses, nll.reshape(-1, WINDOW).mean(axis=1))
    ranks = rank_of[target.numpy()]
    for band, (lo, hi) in zip(q.bands, zip(edges[:-1], edges[1:])):
        inside = (ranks >= lo) & (ranks < hi)
        assert band["tokens"] == inside.sum()
        assert band["loss"] == pytest.approx(nll[inside].mean())


def test_ece_matches_a_torchmetrics_style_computation(case):
    """Top-label ECE with 15 equal-width bins on the full probability matrix, written independently."""
    logp, target, rank_of = case
    q = _streamed(logp, target, rank_of, [0, V])
    probs = logp.exp().double()
    conf, pred = probs.max(dim=1)
    acc = (pred == target).double()
    boundaries = torch.linspace(0, 1, N_BINS + 1, dtype=torch.float64)
    ece = 0.0
    for lo, hi in zip(boundaries[:-1], boundaries[1:]):
        inside = (conf >= lo) & (conf < hi) if hi < 1 else (conf >= lo)
        if inside.any():
            ece += inside.double().mean() * (acc[inside].mean() - conf[inside].mean()).abs()
    assert q.ece == pytest.approx(float(ece), abs=1e-9)
    assert q.accuracy == pytest.approx(float(acc.mean()))


def test_temperature_is_the_brute_force_minimiser(case):
    logp, target, rank_of = case
    q = _streamed(logp, target, rank_of, [0, V])
    temps = np.linspace(0.5, 2.0, 3001)
    losses = [float(torch.nn.functional.cross_entropy(logp.double() / t, target)) for t in temps]
    best = temps[int(np.argmin(losses))]
    assert q.temperature == pytest.approx(best, abs=0.01)
    assert q.loss_at_temperature == pytest.approx(min(losses), abs=1e-4)
    assert q.loss_at_temperature < q.loss  # over-confident logits: T > 1 helps
    assert 1.3 < q.temperature < 1.9


@pytest.mark.parametrize("adaptive", [True, False])
def test_heldout_quality_scores_the_same_windows_as_heldout_loss(adaptive):
    torch.manual_seed(0)
    counts = np.round(1e4 / np.arange(1, V + 1)).astype(np.int64)
    plan = Plan.from_cutoffs(counts, hidden=8, cutoffs=[10, 30])
    body = _body("lstm", V, 8, 16)
    head = build_layer(plan) if adaptive else _full_softmax(plan)
    data = TokenStream(ids=np.random.default_rng(1).integers(0, V, 3000), split=2000)
    ctx = torch.autocast("cpu", enabled=False)
    kw = {"seq_len": 16, "eval_tokens": 800, "dev": torch.device("cpu"), "autocast": ctx}
    q = heldout_quality(body, head, data, **kw, band_edges=[0, 10, 30, V], rank_of=plan.rank_of)
    assert q.loss == pytest.approx(heldout_loss(body, head, data, **kw), rel=1e-5)
    assert q.tokens == 800 and len(q.window_losses) == 50
    assert sum(b["tokens"] for b in q.bands) == 800
    # a learning curve's point scores every CURVE_STRIDE-th of these windows; `curve_point` ends the curve there
    assert curve_point(q.window_losses) == pytest.approx(heldout_loss(body, head, data, **kw, stride=2), rel=1e-5)


@pytest.mark.parametrize("eval_tokens", [5, 64, 800, 10_000])
def test_heldout_windows_spread_over_the_held_out_part_without_overlap(eval_tokens):
    """Windows cover the held-out part from its start to its end (not its first tokens alone), never overlap and
    never reach into the training part; each target is the id after its input."""
    ids = np.random.default_rng(0).permutation(5000)  # distinct ids: a window's position is read back from them
    data = TokenStream(ids=ids, split=2000)
    inp, tgt = heldout_windows(data, 16, eval_tokens, torch.device("cpu"))
    pos = {int(v): i for i, v in enumerate(ids)}
    starts = np.array([pos[int(w[0])] for w in inp])
    n = max(1, min(eval_tokens // 16, (5000 - 2000 - 1) // 16))
    assert inp.shape == tgt.shape == (n, 16)
    assert starts[0] == 2000 and np.all(np.diff(starts) >= 16)  # held out only, no overlap
    if n > 1:  # the last window ends less than one stride before the held-out part does
        assert 5000 - (starts[-1] + 17) < (5000 - 2000 - 1 - 16) // (n - 1)
    for s, x, y in zip(starts, inp, tgt):
        assert np.array_equal(x.numpy(), ids[s : s + 16]) and np.array_equal(y.numpy(), ids[s + 1 : s + 17])


def test_temperature_search_in_row_blocks_gives_the_same_answer(case, monkeypatch):
    """The beta sums run over blocks of rows (bounded buffers at any V); blocks of 7 rows (ragged last block) give
    what one block per chunk gives."""
    from vocabopt import quality

    logp, target, rank_of = case
    whole = _streamed(logp, target, rank_of, [0, V])
    monkeypatch.setattr(quality, "BETA_BLOCK", 7 * V)
    blocks = _streamed(logp, target, rank_of, [0, V])
    assert blocks.temperature == pytest.approx(whole.temperature, abs=1e-9)
    assert blocks.loss_at_temperature == pytest.approx(whole.loss_at_temperature, rel=1e-9)


def test_curve_windows_are_every_other_window_of_the_evaluation():
    data = TokenStream(ids=np.random.default_rng(2).permutation(5000), split=2000)
    inp, tgt = heldout_windows(data, 16, 800, torch.device("cpu"))
    sub_inp, sub_tgt = heldout_windows(data, 16, 800, torch.device("cpu"), stride=CURVE_STRIDE)
    assert CURVE_STRIDE == 2 and torch.equal(sub_inp, inp[::2]) and torch.equal(sub_tgt, tgt[::2])


def test_heldout_windows_of_a_held_out_part_one_window_long():
    data = TokenStream(ids=np.arange(100), split=100 - 17)  # exactly seq_len + 1 held-out ids
    inp, tgt = heldout_windows(data, 16, 800, torch.device("cpu"))
    assert inp.tolist() == [list(range(83, 99))] and tgt.tolist() == [list(range(84, 100))]
    with pytest.raises(ValueError, match="shorter than one window"):
        heldout_windows(TokenStream(ids=np.arange(100), split=90), 16, 800, torch.device("cpu"))


@pytest.mark.parametrize("minimum", [0.55, 0.8, 1.0, 1.37, 1.9])
def test_best_beta_finds_a_convex_curves_minimum_from_values_and_slopes(minimum):
    """f(b) = b - minimum * log(b) is convex with its minimum at b = minimum: found from 7 samples to 0.1%."""
    betas = np.geomspace(0.5, 2.0, 7)
    f, slope = betas - minimum * np.log(betas), 1 - minimum / betas
    beta, value = best_beta(betas, f, slope)
    assert beta == pytest.approx(minimum, rel=1e-3)
    assert value == pytest.approx(minimum - minimum * np.log(minimum), abs=1e-4)  # the cubic, not the curve


def test_best_beta_at_the_ends_of_the_grid():
    betas = np.geomspace(0.5, 2.0, 7)
    rising, falling = betas**2, -betas
    assert best_beta(betas, rising, 2 * betas) == (0.5, 0.25)  # slope > 0 everywhere: the smallest beta (T = 2)
    assert best_beta(betas, falling, -np.ones(7)) == (2.0, -2.0)  # slope < 0 everywhere: the largest (T = 0.5)
