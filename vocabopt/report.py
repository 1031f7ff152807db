"""Human-readable views of the analyzer's artifacts: a text summary, a comparison table, the rank-frequency plot.

Inputs: CorpusStats (or rows from `vocabopt.compare`). Outputs: strings and PNG files (matplotlib, imported lazily).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .stats import CorpusStats


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def summary_text(stats: CorpusStats) -> str:
    """A few lines a person reads after `vocabopt analyze`."""
    s = stats.summary()
    pl = stats.fits.get("power_law") or {}
    zm = stats.fits.get("zipf_mandelbrot") or {}
    k = s.get("k_for_coverage", {})
    lines = [
        f"tokenizer      {stats.tokenizer.name}  [sha256 {stats.tokenizer.sha256[:12]}]",
        f"corpus         {len(stats.sources)} source(s), {stats.n_bytes:,} bytes, {s['sequences']:,} sequences "
        f"(counted by the {stats.options.get('count_path', '?')} path)",
        f"tokens         {s['total_tokens']:,}  ({_fmt(s['bytes_per_token'], '.2f')} bytes/token, "
        f"{_fmt(s['tokens_per_word'], '.2f')} tokens/word)",
        f"vocabulary     {s['vocab_size']:,} ids: {s['types_seen']:,} seen, {s['never_seen_ids']:,} never seen, "
        f"{s['hapax_legomena']:,} seen once",
        f"entropy        {_fmt(s.get('entropy_bits'), '.3f')} bits/token (unigram perplexity "
        f"{_fmt(s.get('perplexity_unigram'), ',.0f')}); Good-Turing unseen mass {_fmt(s['good_turing_unseen_mass'])}",
        "coverage       " + ", ".join(f"{float(t):.1%}: top {v:,}" for t, v in k.items()),
    ]
    if pl.get("alpha") is not None:
        lines.append(
            f"power law      alpha {pl['alpha']:.3f} ± {_fmt(pl.get('alpha_se'), '.3f')} for counts >= {pl['xmin']} "
            f"({pl['n_tail']:,} types, KS {pl['ks']:.3f}); rank exponent {_fmt(pl.get('zipf_exponent'), '.3f')}"
        )
    if zm.get("s") is not None:
        lines.append(f"Zipf-Mandelbrot p(r) ∝ (r + {zm['q']:.2f})^-{zm['s']:.3f} over {zm['V']:,} ranks")
    return "\n".join(lines)


def compare_text(rows: list[dict[str, Any]]) -> str:
    """A table comparing tokenizers on one corpus (rows from `vocabopt.compare`)."""
    header = f"{'tokenizer':<44} {'ids':>8} {'tokens':>11} {'bytes/tok':>9} {'unused':>7} {'k@90%':>8} {'H bits':>7}"
    out = [header, "-" * len(header)]
    for r in rows:
        out.append(
            f"{r['tokenizer'][:44]:<44} {r['vocab_size']:>8,} {r['tokens']:>11,} "
            f"{_fmt(r['bytes_per_token'], '.2f'):>9} {r['never_used_share']:>7.1%} {r['k_90']:>8,} "
            f"{r['entropy_bits']:>7.2f}"
        )
    return "\n".join(out)


def plot_rank_frequency(stats: CorpusStats, path: str | Path) -> None:
    """Write `rank_frequency_png(stats)` to `path` atomically."""
    from .artifacts import atomic_write_bytes

    atomic_write_bytes(path, rank_frequency_png(stats))


def rank_frequency_png(stats: CorpusStats) -> bytes:
    """PNG: rank-frequency on log-log axes with the Zipf-Mandelbrot fit, and the coverage curve."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import zipf

    counts = np.sort(stats.counts)[::-1]
    total = max(int(counts.sum()), 1)
    ranks = np.arange(1, counts.size + 1)
    seen = counts > 0
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.loglog(ranks[seen], counts[seen] / total, ".", ms=2, color="C0", label="observed")
    zm = stats.fits.get("zipf_mandelbrot") or {}
    if zm.get("s") is not None:
        fitted = zipf.zipf_mandelbrot_pmf(ranks, zm["s"], zm["q"], counts.size)
        ax.loglog(ranks, fitted, "-", color="C3", lw=1.2, label=f"Zipf-Mandelbrot s={zm['s']:.2f}, q={zm['q']:.1f}")
    ax.set_xlabel("rank")
    ax.set_ylabel("relative frequency")
    ax.set_title("rank-frequency")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    coverage = np.cumsum(counts) / total
    ax2.semilogx(ranks, coverage, color="C0")
    for t in (0.5, 0.9, 0.99):
        k = int(np.searchsorted(coverage, t - 1e-12) + 1)
        ax2.axhline(t, color="grey", lw=0.5, ls=":")
        ax2.plot([k], [t], "o", color="C3", ms=4)
        ax2.annotate(f"{t:.0%}: top {k:,}", (k, t), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax2.set_xlabel("top-k ids (by frequency)")
    ax2.set_ylabel("share of tokens covered")
    ax2.set_title("coverage")
    ax2.set_ylim(0, 1.02)
    ax2.grid(True, which="both", alpha=0.2)
    fig.suptitle(f"{stats.tokenizer.name}: {total:,} tokens", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
