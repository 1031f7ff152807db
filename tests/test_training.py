"""The proxy LM's training (vocabopt/training.py): the weights' moving average that every evaluation scores."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import vocabopt
from vocabopt.plan import Plan
from vocabopt.profile import synthetic_profile
from vocabopt.training import CURVE_STRIDE, EMA, TokenStream, Trainer, TrainSettings, heldout_loss, train_lockstep
from vocabopt.validate import batch_offsets, load_tokens

BPE = Path(__file__).resolve().parents[1] / "corpora" / "kjv-bpe-8k" / "tokenizer.json"


torch = pytest.importorskip("torch")

SETTINGS = TrainSettings(model="lstm", seq_len=16, batch_size=8, steps=12, lr=1e-2, eval_tokens=512, eval_every=4)


def test_the_average_follows_the_warmed_up_decay_and_swaps_back_exactly():
    """update_average against the recurrence written out by hand; swap_average twice is the identity."""
    w = torch.nn.Parameter(torch.zeros(3))
    tr = Trainer("x", None, None, None, [w], None, average=[w.detach().clone()])
    reference = np.zeros(3)
    for k, value in enumerate([1.0, 5.0, -2.0, 4.0, 3.0] * 40, 1):  # the warm-up ends at step 170
        with torch.no_grad():
            w.fill_(value)
        tr.update_average(k, EMA)
        decay = min(EMA, (1 + k) / (10 + k))
        reference = decay * reference + (1 - decay) * value
        np.testing.assert_allclose(tr.average[0].numpy(), reference, rtol=1e-5, atol=1e-6)
    assert decay == EMA  # the warm-up reached the decay within the loop
    tr.swap_average()
    np.testing.assert_allclose(w.detach().numpy(), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tr.average[0].numpy(), 3.0)  # the last iterate, kept
    tr.swap_average()
    assert float(w[0]) == 3.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, corpus_slice):
    path = tmp_path_factory.mktemp("training") / "tiny.txt"
    text = corpus_slice.read_text(encoding="utf-8")[:60_000]
    path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    stats = vocabopt.analyze([str(path)], tokenizer=str(BPE))
    prof = synthetic_profile(lambda kernel, *c: 0.01 + 1e-7 * np.prod(c, axis=0))
    plan = vocabopt.optimize(stats, hidden=16, profile=prof, batch_tokens=128, min_capacity=0.0)
    data = load_tokens(plan, [str(path)], str(BPE), heldout=0.1, seq_len=16, max_tokens=None)
    layer = Plan.from_cutoffs(stats, hidden=16, cutoffs=plan.cutoffs, proj_dims=plan.proj_dims)
    return plan, data, layer


def _train(plan: Plan, data: TokenStream, layer: Plan, settings: TrainSettings):
    offsets = batch_offsets(data.split, settings.seq_len, settings.batch_size, settings.steps, settings.seed)
    dev = torch.device("cpu")
    (tr,), batches = train_lockstep(
        {"design": layer}, plan, data, offsets, settings, dev=dev, tdtype=torch.float32, progress=None
    )
    return tr, batches


def test_evaluations_score_the_average_of_the_same_trajectory(tiny_run, monkeypatch):
    """The average changes what is scored, never how the model trains: the same training losses with and without
    it; without it the trained weights are the last iterate, with it they are the average of the run's iterates
    (accumulated here by hand with the documented recurrence from the initial weights), and the learning curve
    scores the average."""
    plan, data, layer = tiny_run
    seen = []  # per optimizer step: (the iterate, the average before this step's update)
    original = Trainer.update_average

    def record(self, step, decay):
        seen.append(([p.detach().clone() for p in self.params], [a.clone() for a in self.average or []]))
        original(self, step, decay)

    monkeypatch.setattr(Trainer, "update_average", record)
    averaged, batches = _train(plan, data, layer, SETTINGS)
    monkeypatch.setattr(Trainer, "update_average", original)
    plain, _ = _train(plan, data, layer, replace(SETTINGS, ema=0.0))

    assert len(seen) == SETTINGS.steps
    assert averaged.train_curve == plain.train_curve  # the same trajectory
    for p, last in zip(plain.params, seen[-1][0], strict=True):
        assert torch.equal(p.detach(), last)  # without the average: the last iterate
    reference = [t.double() for t in seen[0][1]]  # the initial weights
    for k, (weights, _) in enumerate(seen, 1):
        decay = min(EMA, (1 + k) / (10 + k))
        reference = [decay * r + (1 - decay) * w.double() for r, w in zip(reference, weights, strict=True)]
    for p, r in zip(averaged.params, reference, strict=True):
        np.testing.assert_allclose(p.detach().double().numpy(), r.numpy(), rtol=1e-4, atol=1e-6)
    assert averaged.average is None  # the average has become the weights
    assert not all(torch.equal(a, b) for a, b in zip(averaged.params, plain.params, strict=True))
    assert [k for k, _ in averaged.eval_curve] == [4, 8]
    assert averaged.eval_curve != plain.eval_curve  # the curve scores the average, not the iterate
    # the curve's point at step 8 is the average's held-out loss then: swap the recorded average in and score it
    for p, a in zip(averaged.params, seen[8][1], strict=True):  # the average after step 8's update
        with torch.no_grad():
            p.copy_(a)
    dev = torch.device("cpu")
    at_8 = heldout_loss(
        averaged.body,
        averaged.head,
        data,
        seq_len=16,
        eval_tokens=512,
        dev=dev,
        autocast=batches.autocast,
        stride=CURVE_STRIDE,
    )
    assert averaged.eval_curve[1][1] == pytest.approx(at_8, rel=1e-6)
