"""Held-out quality of a trained output layer: loss with its per-window spread, per-frequency-band perplexity, and
calibration (top-label ECE and the temperature that minimises held-out NLL), computed by streaming.

Inputs: a trained body and head (`head.log_prob(hidden) -> (n, V)` log-probabilities in token-id order, as the
adaptive layer and the proxy LM's full softmax both provide), the held-out token stream, the band edges in
frequency-rank space (the plan's cutoffs) and the id -> rank map. Output: a `Quality`. Only one chunk of
(rows, V) log-probabilities exists at a time: every statistic is a running sum over chunks.

Definitions:
- loss: mean NLL per held-out token (nats); window_losses: the mean NLL of each held-out window (the unit a
  bootstrap resamples: tokens within a window are correlated, windows far less).
- bands: NLL of the tokens whose target falls in each cluster's rank range (head, tail 0, ...): rare tokens are
  where a low-rank tail loses.
- ECE: top-label expected calibration error over 15 equal-width confidence bins (as torchmetrics'
  `CalibrationError(norm="l1")`): sum_b (n_b / n) |accuracy_b - mean confidence_b|.
- temperature T: argmin over T of the held-out NLL of softmax(log p / T). NLL is convex in beta = 1/T, so its
  value and slope are summed on a coarse grid of beta in one pass (one exp of the chunk per grid point: the
  evaluation's largest cost) and the minimum is found on the cubic through the two grid points whose slopes
  bracket zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .training import heldout_windows

N_BINS = 15  # ECE confidence bins, equal width on [0, 1]
BETAS = np.geomspace(1 / 2.0, 1 / 0.5, 5)  # inverse temperatures sampled: T in [0.5, 2], 2^(1/2) apart
BETA_BLOCK = 1 << 25  # elements of each of the temperature search's two (rows, V) buffers (128 MB in fp32)
CHUNK_WINDOWS = 64  # held-out windows per chunk: (64 x seq_len, V) log-probs at a time
COVERAGE = (0.5, 0.9, 0.99)  # tune's quality bands: the ids covering the first 50%, 90%, 99% of tokens, and the rest


@dataclass
class Quality:
    """Held-out quality of one trained layer (see the module docstring for each definition)."""

    loss: float  # mean NLL per token, nats
    ppl: float
    tokens: int
    window_losses: list[float] = field(default_factory=list)  # mean NLL of each held-out window
    bands: list[dict[str, Any]] = field(default_factory=list)  # {"ranks": [lo, hi], "tokens", "loss", "ppl"}
    accuracy: float = 0.0  # top-1
    ece: float = 0.0
    temperature: float = 1.0
    loss_at_temperature: float = 0.0  # mean NLL after dividing the log-probs by `temperature`

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Quality:
        return cls(**obj)


class QualitySums:
    """Running sums over chunks of (rows, V) log-probabilities; `result()` turns them into a `Quality`."""

    def __init__(self, band_edges: list[int], rank_of: np.ndarray, betas: np.ndarray = BETAS) -> None:
        self.edges = [int(e) for e in band_edges]  # [0, c_0, ..., V]
        self.rank_of = np.asarray(rank_of, dtype=np.int64)  # (V,) id -> frequency rank
        self.betas = np.asarray(betas, dtype=np.float64)
        self.nll = 0.0
        self.tokens = 0
        self.windows: list[float] = []
        self.band_nll = np.zeros(len(self.edges) - 1)
        self.band_tokens = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.bin_count = np.zeros(N_BINS, dtype=np.int64)
        self.bin_conf = np.zeros(N_BINS)
        self.bin_correct = np.zeros(N_BINS)
        self.beta_nll = np.zeros(len(self.betas))
        self.beta_slope = np.zeros(len(self.betas))  # d NLL / d beta

    def add(self, logp: Any, target: Any, window: int) -> None:
        """One chunk: logp (n, V) fp32 log-probabilities by token id, target (n,) ids, `window` tokens per window."""
        import torch

        logp = logp.float()
        target_lp = logp.gather(1, target[:, None]).squeeze(1)  # (n,)
        top_lp, top_id = logp.max(dim=1)  # (n,)
        nll = (-target_lp).double().cpu().numpy()
        self.nll += float(nll.sum())
        self.tokens += nll.size
        self.windows += nll.reshape(-1, window).mean(axis=1).tolist()
        band = np.searchsorted(self.edges[1:-1], self.rank_of[target.cpu().numpy()], side="right")
        self.band_nll += np.bincount(band, weights=nll, minlength=len(self.band_nll))
        self.band_tokens += np.bincount(band, minlength=len(self.band_tokens))
        conf = top_lp.exp().double().cpu().numpy()
        correct = (top_id == target).double().cpu().numpy()
        b = np.minimum((conf * N_BINS).astype(np.int64), N_BINS - 1)
        self.bin_count += np.bincount(b, minlength=N_BINS)
        self.bin_conf += np.bincount(b, weights=conf, minlength=N_BINS)
        self.bin_correct += np.bincount(b, weights=correct, minlength=N_BINS)
        # NLL of softmax(beta * log p) = beta * (m - lp_t) + log sum exp(beta * (log p - m)), m = the row's max;
        # its slope in beta = E_q[log p] - lp_t, q = softmax(beta * log p)
        gap = top_lp - target_lp  # (n,) m - lp_t >= 0
        rows = max(1, BETA_BLOCK // logp.shape[1])  # two (rows, V) buffers at a time, whatever V
        for r0 in range(0, logp.shape[0], rows):
            shifted = (logp[r0 : r0 + rows] - top_lp[r0 : r0 + rows, None]).clamp_(min=-1e4)  # <= 0, finite
            scratch = torch.empty_like(shifted)  # (finite: 0 * -inf below would be nan)
            for i, beta in enumerate(self.betas):
                torch.mul(shifted, float(beta), out=scratch).exp_()  # (rows, V) unnormalised q
                total = scratch.sum(dim=1)  # (rows,)
                mean_shift = scratch.mul_(shifted).sum(dim=1) / total  # (rows,) E_q[log p - m]
                g = gap[r0 : r0 + rows]
                self.beta_nll[i] += float((float(beta) * g + total.log()).double().sum())
                self.beta_slope[i] += float((mean_shift + g).double().sum())

    def result(self) -> Quality:
        n = max(self.tokens, 1)
        loss = self.nll / n
        bands = [
            {
                "ranks": [lo, hi],
                "tokens": int(t),
                "loss": float(s / t) if t else None,
                "ppl": float(math.exp(min(s / t, 700.0))) if t else None,
            }
            for lo, hi, s, t in zip(self.edges[:-1], self.edges[1:], self.band_nll, self.band_tokens)
        ]
        beta, beta_loss = best_beta(self.betas, self.beta_nll / n, self.beta_slope / n)
        return Quality(
            loss=loss,
            ppl=math.exp(min(loss, 700.0)),
            tokens=self.tokens,
            window_losses=self.windows,
            bands=bands,
            accuracy=float(self.bin_correct.sum() / n),
            ece=expected_calibration_error(self.bin_count, self.bin_conf, self.bin_correct),
            temperature=1.0 / beta,
            loss_at_temperature=beta_loss,
        )


def coverage_band_edges(counts_by_rank: np.ndarray) -> list[int]:
    """Rank edges of the bands of ids covering COVERAGE of the tokens (counts sorted by rank), then the rest."""
    vocab = len(counts_by_rank)
    cum = np.cumsum(counts_by_rank) / max(int(np.sum(counts_by_rank)), 1)
    cuts = sorted({int(np.searchsorted(cum, c) + 1) for c in COVERAGE} - {0, vocab})
    return [0, *[c for c in cuts if 0 < c < vocab], vocab]


def expected_calibration_error(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> float:
    """sum_b (n_b / n) |accuracy_b - confidence_b| from per-bin counts and sums."""
    n = max(int(count.sum()), 1)
    return float(np.abs(correct_sum - conf_sum).sum() / n)  # n_b/n * |sum_correct/n_b - sum_conf/n_b|


def best_beta(betas: np.ndarray, mean_nll: np.ndarray, slope: np.ndarray) -> tuple[float, float]:
    """(beta, NLL) at the minimum of a convex curve sampled with its slope at `betas` (increasing): on the cubic
    (Hermite) through the two samples whose slopes bracket zero; at an end of the grid when none do."""
    if slope[0] >= 0:
        return float(betas[0]), float(mean_nll[0])
    if slope[-1] <= 0:
        return float(betas[-1]), float(mean_nll[-1])
    i = int(np.argmax(slope > 0)) - 1  # slope[i] <= 0 < slope[i + 1] (the slope of a convex curve increases)
    h = betas[i + 1] - betas[i]
    u = np.linspace(0.0, 1.0, 2001)  # the cubic on [betas[i], betas[i + 1]], finely
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    cubic = h00 * mean_nll[i] + h10 * h * slope[i] + h01 * mean_nll[i + 1] + h11 * h * slope[i + 1]
    k = int(np.argmin(cubic))
    return float(betas[i] + u[k] * h), float(cubic[k])


def heldout_quality(
    body: Any,
    head: Any,
    data: Any,
    *,
    seq_len: int,
    eval_tokens: int,
    dev: Any,
    autocast: Any,
    band_edges: list[int],
    rank_of: np.ndarray,
) -> Quality:
    """The `Quality` of body + head on `eval_tokens` held-out tokens (windows of seq_len spread over the held-out
    part: `training.heldout_windows`, the windows `training.heldout_loss` scores, so `loss` equals it up to float
    summation order).
    """
    import torch

    inp, tgt = heldout_windows(data, seq_len, eval_tokens, dev)  # (W, T)
    n_win = len(inp)
    sums = QualitySums(band_edges, rank_of)
    was = body.training, head.training
    body.eval(), head.eval()
    with torch.no_grad():
        for i in range(0, n_win, CHUNK_WINDOWS):
            with autocast:
                logp = head.log_prob(body(inp[i : i + CHUNK_WINDOWS]))  # (w, T, V) fp32
            logp = logp.reshape(-1, head_vocab(head))  # (w * T, V)
            sums.add(logp, tgt[i : i + CHUNK_WINDOWS].reshape(-1), seq_len)
    body.train(was[0]), head.train(was[1])
    return sums.result()


def head_vocab(head: Any) -> int:
    """V of an adaptive layer (config.vocab_size) or of a full-softmax nn.Linear (out_features)."""
    config = getattr(head, "config", None)
    return int(config.vocab_size) if config is not None else int(head.out_features)
