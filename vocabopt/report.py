"""Human-readable views of the analyzer's artifacts: a text summary and a comparison table.

Inputs: CorpusStats (or rows from `vocabopt.compare`). Outputs: strings. (The rank-frequency figure is
`vocabopt.plots.rank_frequency_png`.)
"""

from __future__ import annotations

from typing import Any

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
    lines += _under_trained_lines(stats)
    return "\n".join(lines)


def _under_trained_lines(stats: CorpusStats) -> list[str]:
    """Never / rarely seen ids by kind, with a few examples each (see CorpusStats.under_trained)."""
    report = stats.under_trained(examples=3)
    lines = []
    for name, label in (("never", "never seen"), ("rare", f"seen 1-{report['rare_count']}x")):
        groups = sorted(report[name].items(), key=lambda kv: -kv[1]["n"])
        if groups:
            parts = [f"{kind} {g['n']:,} ({', '.join(map(repr, g['examples']))})" for kind, g in groups]
            lines.append(f"{'under-trained' if not lines else '':<14} {label}: " + "; ".join(parts))
    return lines


def compare_text(rows: list[dict[str, Any]]) -> str:
    """A table comparing tokenizers on one corpus (rows from `vocabopt.compare`)."""
    header = f"{'tokenizer':<44} {'ids':>8} {'tokens':>11} {'bytes/tok':>9} {'unused':>7} {'k@90%':>8} {'H bits':>7}"
    out = [header, "-" * len(header)]
    for row in rows:
        out.append(
            f"{row['tokenizer'][:44]:<44} {row['vocab_size']:>8,} {row['tokens']:>11,} "
            f"{_fmt(row['bytes_per_token'], '.2f'):>9} {row['never_used_share']:>7.1%} {row['k_90']:>8,} "
            f"{row['entropy_bits']:>7.2f}"
        )
    return "\n".join(out)
