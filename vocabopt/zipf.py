"""Zipf fits of token counts: the statistics step of the `analyze` stage.

Inputs: counts, a (V,) int64 array indexed by the tokenizer's own ids (zero counts allowed).
Outputs: `fit(counts)`, a JSON-ready dict stored as `CorpusStats.fits`:
  - "power_law": the discrete power law p(x) = x^-alpha / zeta(alpha, xmin), x >= xmin, fitted to the
    *frequencies* (each nonzero count is one sample) by maximum likelihood with xmin chosen by the
    Kolmogorov-Smirnov distance (Clauset, Shalizi & Newman, "Power-law distributions in empirical data",
    SIAM Review 2009), with a standard error and the rank-frequency exponent it implies.
  - "zipf_mandelbrot": p(r) = (r + q)^-s / sum_{k=1..V} (k + q)^-s over the ranks r = 1..V of all ids,
    fitted by maximum likelihood on the token counts.
Plus helpers to draw the fitted curves over a rank-frequency plot (`zipf_mandelbrot_pmf`, `power_law_ccdf`,
`power_law_rank_curve`).

Why not least squares on a log-log plot: the points of a rank-frequency or histogram plot are neither
independent nor equally noisy (the sparse tail dominates the point count, the log of a small count has a
large, skewed error), so the slope is biased and has no valid error bar; on real word counts it can be off by
a factor of two. Maximum likelihood weighs each sample once, and is asymptotically unbiased and efficient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, special

from .errors import MismatchError

MIN_DISTINCT = 10  # fewer distinct nonzero counts than this: no fit (two parameters, little left to check)
ALPHA_BOUNDS = (1.0001, 6.0)  # alpha <= 1 is not normalisable; alpha > 6 is not a heavy tail worth the name
MIN_TAIL = 10  # samples at or above a candidate xmin
TAIL_FRACTION = 0.01  # ... and at least this share of all samples: xmin is at most the 99th percentile
MAX_XMIN_CANDIDATES = 200  # per scan round; see _xmin_candidates
KS_CELL_BUDGET = 1e7  # candidates x distinct values per scan round (~0.25 s): fewer candidates if many values
EM_MIN_X = 20.0  # from here on, zeta(alpha, x) by Euler-Maclaurin (error < 1e-9 relative for alpha <= 6)
ZM_S_MAX = 20.0  # a fit with s above this, or q above 10 V, has run off along the s, q -> inf ridge where
# (r + q)^-s ~ exp(-s r / q) is an exponential law on the support, not Zipfian: reported as None

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# --- entry point --------------------------------------------------------------------------------------------


def fit(counts: np.ndarray) -> dict[str, Any]:
    """Fit a discrete power law to the frequencies and a Zipf-Mandelbrot law to the ranks of `counts`.

    Args:
        counts: (V,) non-negative integer counts indexed by token id; zero-count ids are ignored by the power
            law and are part of the rank support of the Zipf-Mandelbrot law.

    Returns:
        {"power_law": {...}, "zipf_mandelbrot": {...}} with plain ints/floats, and None wherever a value is
        undefined (all-zero counts, fewer than MIN_DISTINCT distinct nonzero counts, a Zipf-Mandelbrot fit
        that runs off to an exponential law). See `fit_power_law` and `fit_zipf_mandelbrot` for the keys.

    Raises:
        MismatchError: counts is not a 1-D array of non-negative integers.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> fits = fit(rng.zipf(2.0, size=5000))
        >>> round(fits["power_law"]["alpha"], 1)
        2.0
    """
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise MismatchError(f"counts must be one-dimensional (one per token id), got shape {counts.shape}")
    if counts.size and not np.issubdtype(counts.dtype, np.integer):
        if not np.all(np.isfinite(counts)) or np.any(counts != np.round(counts)):
            raise MismatchError("counts must be whole numbers, one per token id")
    counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise MismatchError("counts must be non-negative")
    return {"power_law": fit_power_law(counts[counts > 0]), "zipf_mandelbrot": fit_zipf_mandelbrot(counts)}


# --- discrete power law on the frequencies ------------------------------------------------------------------


def fit_power_law(samples: np.ndarray, xmin: int | None = None) -> dict[str, Any]:
    """Discrete power-law MLE (Clauset, Shalizi & Newman 2009) of positive integer samples.

    For a given xmin the log-likelihood of the n_tail samples x >= xmin is
    -n_tail * log zeta(alpha, xmin) - alpha * sum(log x), maximised over alpha in ALPHA_BOUNDS. Without
    `xmin`, the xmin minimising the KS distance between the tail's empirical CDF and the fitted CDF is chosen
    among the distinct sample values (at most ~2 * MAX_XMIN_CANDIDATES tried, see `_xmin_candidates`).

    Args:
        samples: (n,) positive integers (for token counts: the nonzero counts).
        xmin: fix the lower cut-off instead of scanning for it.

    Returns:
        alpha, alpha_se (1 / sqrt(observed Fisher information)), xmin, n_tail, ks (KS distance of the tail),
        n (all samples), zipf_exponent (1 / (alpha - 1): the rank-frequency slope this tail implies). None
        where undefined; n is always an int.
    """
    x = np.asarray(samples, dtype=np.int64)
    x = x[x > 0]
    result: dict[str, Any] = dict.fromkeys(("alpha", "alpha_se", "xmin", "n_tail", "ks", "zipf_exponent"))
    result["n"] = int(x.size)
    u, m = np.unique(x, return_counts=True)  # distinct values (D,) ascending, multiplicities (D,)
    if u.size < MIN_DISTINCT:
        return result
    tail = _Tail(u, m)
    if xmin is None:
        j = _best_xmin_index(tail)
        if j is None:
            return result
    else:
        if xmin < 1:
            raise ValueError(f"xmin must be a positive integer, got {xmin}")
        j = int(np.searchsorted(u, xmin))  # first distinct value >= xmin
        if j >= u.size - 1:  # fewer than two distinct values at or above xmin: nothing to fit
            return result
    xm = float(u[j]) if xmin is None else float(xmin)
    alpha = _alpha_mle(xm, tail.mean_log[j])
    n_tail = int(tail.n[j])
    result.update(
        alpha=alpha,
        alpha_se=_alpha_se(alpha, xm, n_tail),
        xmin=int(xm),
        n_tail=n_tail,
        ks=_ks_distance(tail, j, xm, alpha),
        zipf_exponent=1.0 / (alpha - 1.0),
    )
    return result


class _Tail:
    """Suffix sums over the distinct sample values, so any candidate xmin's tail is O(1) to summarise."""

    def __init__(self, u: np.ndarray, m: np.ndarray) -> None:
        self.u = u.astype(np.float64)  # (D,)
        self.log_u = np.log(self.u)  # (D,)
        self.m = m.astype(np.float64)  # (D,)
        self.n = np.cumsum(self.m[::-1])[::-1]  # (D,) samples >= u[j]
        self.mean_log = np.cumsum((self.m * self.log_u)[::-1])[::-1] / self.n  # (D,) mean log x, x >= u[j]
        self.below = np.concatenate(([0.0], np.cumsum(self.m)[:-1]))  # (D,) samples < u[j]


def _best_xmin_index(tail: _Tail) -> int | None:
    """Index into the distinct values of the xmin with the smallest KS distance, or None if no candidate."""
    n_all = tail.n[0]
    # A candidate keeps at least two distinct values and MIN_TAIL (and TAIL_FRACTION of) samples; since the
    # tail shrinks as xmin grows, the admissible candidates are a prefix 0..n_adm-1 of the distinct values.
    ok = tail.n >= max(MIN_TAIL, TAIL_FRACTION * n_all)
    ok[-1] = False
    n_adm = int(np.count_nonzero(ok))
    if n_adm == 0:
        return None
    # Token counts have ~2 sqrt(max count) distinct values (1e4-1e5); each candidate's KS test touches all of
    # them, so past D = 5e4 distinct values the candidate count shrinks to keep the scan's time bounded.
    per_round = int(np.clip(KS_CELL_BUDGET // tail.u.size, 30, MAX_XMIN_CANDIDATES))
    coarse = _xmin_candidates(0, n_adm - 1, per_round)
    ks = _scan(tail, coarse)
    b = int(np.argmin(ks))
    # Refine between the best coarse candidate's neighbours, where the coarse grid skipped values.
    lo = coarse[b - 1] + 1 if b > 0 else 0
    hi = coarse[b + 1] - 1 if b + 1 < coarse.size else n_adm - 1
    fine = np.setdiff1d(_xmin_candidates(lo, hi, per_round), coarse)
    cand = np.concatenate((coarse, fine))
    ks = np.concatenate((ks, _scan(tail, fine)))
    best = np.flatnonzero(ks == ks.min())
    return int(cand[best].min())  # ties: the smallest xmin, i.e. the larger tail


def _xmin_candidates(lo: int, hi: int, num: int) -> np.ndarray:
    """Indices lo..hi into the distinct values, all of them if at most num, else num log-spaced.

    Log spacing in index keeps every one of the smallest values (where real xmins sit and where each value
    carries many samples) and thins out the sparse high values, whose tails are small and KS distances noisy.
    """
    if hi - lo + 1 <= num:
        return np.arange(lo, hi + 1)
    steps = np.geomspace(1.0, hi - lo + 1.0, num)
    return np.unique(lo + np.round(steps).astype(np.int64) - 1)


def _scan(tail: _Tail, cand: np.ndarray) -> np.ndarray:
    """KS distance (C,) of the MLE fit at each candidate xmin index in cand (C,)."""
    alphas = _alpha_mle_many(tail.u[cand], tail.mean_log[cand])
    return np.array([_ks_distance(tail, int(j), float(tail.u[j]), float(a)) for j, a in zip(cand, alphas, strict=True)])


def _nll_per_sample(alpha: np.ndarray | float, xmin: np.ndarray | float, mean_log: np.ndarray | float) -> np.ndarray:
    """Negative log-likelihood per tail sample: log zeta(alpha, xmin) + alpha * mean(log x)."""
    return np.log(special.zeta(alpha, xmin)) + alpha * mean_log


def _alpha_mle_many(xmins: np.ndarray, mean_log: np.ndarray) -> np.ndarray:
    """MLE of alpha (C,) for many candidate xmins (C,) at once, by golden-section search.

    The negative log-likelihood is convex in alpha (log zeta is a log-sum-exp of functions linear in alpha),
    so the search finds the unique minimum in ALPHA_BOUNDS or the bound nearest it. Vectorised over
    candidates: 60 rounds of two Hurwitz zeta calls on (C,) arrays, the interval shrinking to ~1e-12.
    """
    lo = np.full(xmins.shape, ALPHA_BOUNDS[0])
    hi = np.full(xmins.shape, ALPHA_BOUNDS[1])
    for _ in range(60):
        c = hi - _GOLDEN * (hi - lo)
        d = lo + _GOLDEN * (hi - lo)
        left = _nll_per_sample(c, xmins, mean_log) < _nll_per_sample(d, xmins, mean_log)
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
    return (lo + hi) / 2.0


def _alpha_mle(xmin: float, mean_log: float) -> float:
    """MLE of alpha for one xmin (bounded Brent search); the reported value."""
    res = optimize.minimize_scalar(
        lambda a: float(_nll_per_sample(a, xmin, mean_log)),
        bounds=ALPHA_BOUNDS,
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(res.x)


def _alpha_se(alpha: float, xmin: float, n_tail: int) -> float | None:
    """Standard error 1 / sqrt(n_tail * d2/dalpha2 log zeta(alpha, xmin)), from the observed information.

    The second derivative is the variance of log X under the fit; taken by central differences (h = 1e-3, or
    less near alpha = 1 where zeta has its pole), whose O(h^2) error is far below the statistical one. The
    continuous formula (alpha - 1) / sqrt(n) understates it at small xmin (xmin = 1: by 6% at alpha = 2, by
    17% at alpha = 3).
    """
    h = min(1e-3, (alpha - 1.0) / 2.0)
    f = np.log(special.zeta(np.array([alpha - h, alpha, alpha + h]), xmin))
    d2 = (f[0] - 2.0 * f[1] + f[2]) / (h * h)
    if not (np.isfinite(d2) and d2 > 0.0):
        return None  # alpha at the lower bound, where zeta's pole makes the difference meaningless
    return float(1.0 / math.sqrt(n_tail * d2))


def _hurwitz_zeta(alpha: float, x: np.ndarray, x_pow: np.ndarray) -> np.ndarray:
    """zeta(alpha, x) = sum_{k>=0} (x + k)^-alpha for x (D,) >= 1, given x_pow = x^-alpha (D,).

    scipy's zeta costs ~150 ns a value; the KS scan needs it at every distinct count for every candidate xmin
    (millions of values for a 256K vocabulary), so for x >= EM_MIN_X use the Euler-Maclaurin expansion, whose
    next term is below 1e-9 relative there: x^-alpha * (x/(alpha-1) + 1/2 + B2 terms).
    """
    out = np.empty_like(x)
    small = x < EM_MIN_X  # only the distinct values 1..19: a handful
    out[small] = special.zeta(alpha, x[small])
    xb, pb = x[~small], x_pow[~small]
    inv2 = 1.0 / (xb * xb)
    a = alpha
    b2, b4, b6 = a / 12.0, a * (a + 1) * (a + 2) / 720.0, a * (a + 1) * (a + 2) * (a + 3) * (a + 4) / 30240.0
    out[~small] = pb * (xb / (a - 1.0) + 0.5 + (b2 - (b4 - b6 * inv2) * inv2) / xb)
    return out


def _ks_distance(tail: _Tail, j: int, xmin: float, alpha: float) -> float:
    """Exact KS distance sup_x |F_data(x) - F_fit(x)| over x >= xmin; the tail's first distinct value is u[j].

    Both CDFs are step functions on the integers; the data's is flat between consecutive distinct values
    u_i < u_{i+1}, so the sup is reached at x = u_i (both CDFs just after the jump at u_i) or at
    x = u_{i+1} - 1 (just before the next data jump). Where u_{i+1} = u_i + 1 these are the same point, but
    across the gaps of the sparse high tail they are not; evaluating only P(X < u_i), as `powerlaw` does,
    misses the second kind.
    """
    u, log_u = tail.u[j:], tail.log_u[j:]
    n_t = tail.n[j]
    p = np.exp(-alpha * log_u)  # (D_t,) u^-alpha
    z = _hurwitz_zeta(alpha, u, p)  # (D_t,) zeta(alpha, u): model mass at >= u, unnormalised
    z0 = special.zeta(alpha, xmin)  # model mass at >= xmin, the normaliser
    fit_le = 1.0 - (z - p) / z0  # P_fit(X <= u_i)
    fit_lt = 1.0 - z / z0  # P_fit(X < u_i) = P_fit(X <= u_i - 1)
    data_le = (np.cumsum(tail.m[j:])) / n_t  # P_data(X <= u_i)
    data_lt = (tail.below[j:] - tail.below[j]) / n_t  # P_data(X < u_i)
    return float(max(np.max(np.abs(data_le - fit_le)), np.max(np.abs(data_lt - fit_lt))))


def power_law_ccdf(x: np.ndarray | float, alpha: float, xmin: int) -> np.ndarray:
    """P(X >= x) = zeta(alpha, x) / zeta(alpha, xmin) of the fitted discrete power law (1 below xmin).

    Args:
        x: values (any shape); non-integers are floored.
        alpha, xmin: the fit, as in `fit(...)["power_law"]`.

    Returns:
        Array of x's shape.
    """
    x = np.floor(np.asarray(x, dtype=np.float64))
    return np.where(x <= xmin, 1.0, special.zeta(alpha, np.maximum(x, xmin)) / special.zeta(alpha, xmin))


def power_law_pmf(x: np.ndarray | float, alpha: float, xmin: int) -> np.ndarray:
    """P(X = x) = x^-alpha / zeta(alpha, xmin) for integer x >= xmin, 0 below."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= xmin, np.maximum(x, xmin) ** -alpha / special.zeta(alpha, xmin), 0.0)


def power_law_rank_curve(alpha: float, xmin: int, n_tail: int, num: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The fitted power law as a rank-frequency curve, to draw over a plot of sorted counts.

    The expected rank of count x among the n_tail tail ids is n_tail * P(X >= x); this is evaluated on a log
    grid of counts from xmin up to where the expected rank reaches 1.

    Returns:
        (ranks (num,), counts (num,)), ranks descending from n_tail to ~1 as counts rise from xmin.
    """
    top = xmin * float(n_tail) ** (1.0 / (alpha - 1.0))  # continuous approximation of the count at rank 1
    x = np.unique(np.floor(np.geomspace(xmin, max(top, xmin + 1.0), num)))
    return n_tail * power_law_ccdf(x, alpha, xmin), x


# --- Zipf-Mandelbrot on the ranks ---------------------------------------------------------------------------


def fit_zipf_mandelbrot(counts: np.ndarray) -> dict[str, Any]:
    """Maximum-likelihood Zipf-Mandelbrot law over the ranks of all V ids.

    Counts sorted descending give rank r = 1..V (zero counts included: the vocabulary is the finite support);
    maximises sum_r c_r log p(r), p(r) = (r + q)^-s / sum_{k=1..V} (k + q)^-s, over s > 0 and q > -1 by BFGS
    with the analytic gradient, unconstrained in (log s, log(1 + q)).

    Args:
        counts: (V,) non-negative integer counts, any order.

    Returns:
        s, q, loglik_per_token (mean log p over tokens, nats) and V. s, q and loglik_per_token are None when
        there are no tokens, fewer than MIN_DISTINCT distinct nonzero counts (the two parameters would only
        interpolate a handful of points), or the fit runs past ZM_S_MAX or q > 10 V.
    """
    c = np.sort(np.asarray(counts, dtype=np.float64))[::-1]  # (V,) descending
    V = int(c.size)
    result: dict[str, Any] = {"s": None, "q": None, "loglik_per_token": None, "V": V}
    n_nz = int(np.count_nonzero(c))
    if n_nz == 0 or np.unique(c[:n_nz]).size < MIN_DISTINCT:
        return result
    f = c[:n_nz] / c.sum()  # (n_nz,) token share of each nonzero rank
    k0 = np.arange(0.0, V)  # (V,) rank - 1

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        # Clipped so that trial steps far out stay finite; q + 1 > 0 is kept exactly by adding it to k - 1.
        s, q1 = math.exp(min(theta[0], 30.0)), math.exp(min(max(theta[1], -700.0), 30.0))  # q1 = 1 + q
        lk = np.log(k0 + q1)  # (V,) log(k + q)
        w = np.exp(-s * (lk - lk[0]))  # (V,) (k+q)^-s scaled by (1+q)^s, the largest term: no overflow
        z = w.sum()
        p = w / z  # (V,) the model pmf
        inv = np.exp(-lk)  # (V,) 1 / (k + q)
        data_lk = _dot(f, lk[:n_nz])
        value = s * data_lk + (-s * lk[0] + math.log(z))  # -(1/N) sum c_r log p(r)
        g_s = data_lk - _dot(p, lk)
        g_q = s * (_dot(f, inv[:n_nz]) - _dot(p, inv))
        return float(value), np.array([g_s * s, g_q * q1])  # ds/dlog s = s, dq/dlog(1+q) = 1 + q

    # BFGS rather than L-BFGS-B: with two parameters the work is all in nll, and scipy's L-BFGS-B calls
    # threaded BLAS on every step, which on a busy 2-core machine cost 10x the whole fit.
    res = optimize.minimize(
        nll,
        x0=np.array([math.log(_zm_start_s(c[:n_nz])), 0.0]),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-9, "maxiter": 500},
    )
    s, q, value = math.exp(res.x[0]), math.expm1(res.x[1]), float(res.fun)
    if s > ZM_S_MAX or q > 10.0 * V:
        return result
    if not all(math.isfinite(v) for v in (s, q, value)):
        return result
    result.update(s=s, q=q, loglik_per_token=-value)
    return result


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """a . b without BLAS: OpenBLAS threads its dot past ~10K elements, and on a busy 2-core machine its
    spinning threads made each likelihood evaluation 5x slower than this single-threaded loop."""
    return float(np.einsum("i,i->", a, b))


def _zm_start_s(c_nz: np.ndarray) -> float:
    """Starting s: the least-squares log-log slope over the nonzero ranks (biased, but a fine start)."""
    r = np.log(np.arange(1.0, c_nz.size + 1.0))
    r -= r.mean()
    slope = -_dot(r, np.log(c_nz)) / max(_dot(r, r), 1e-12)
    return float(np.clip(slope, 0.1, 5.0))


def zipf_mandelbrot_pmf(ranks: np.ndarray, s: float, q: float, V: int) -> np.ndarray:
    """Probability of the given 1-based ranks under the Zipf-Mandelbrot law on ranks 1..V.

    Args:
        ranks: integer ranks in 1..V, any shape.
        s, q, V: the fit, as in `fit(...)["zipf_mandelbrot"]`.

    Returns:
        p(r) = (r + q)^-s / sum_{k=1..V} (k + q)^-s, of ranks' shape. Multiply by the token total to draw the
        expected counts over a rank-frequency plot.
    """
    lk = np.log(np.arange(1.0, V + 1.0) + q)  # (V,)
    log_z = -s * lk[0] + math.log(float(np.exp(-s * (lk - lk[0])).sum()))
    return np.exp(-s * np.log(np.asarray(ranks, dtype=np.float64) + q) - log_z)
