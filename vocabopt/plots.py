"""Plots: the PNG figures the CLI writes, each rendered to bytes from one artifact (matplotlib, imported lazily).

Inputs: CorpusStats (rank-frequency plot), Plan (frontier and per-cluster cost), ValidationResult (training curves).
Outputs: PNG bytes; the CLI writes them atomically next to the artifact. Nothing here reads files or measures.
"""

from __future__ import annotations

import io
from typing import Any

from .plan import Plan


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, dpi: int = 110) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def rank_frequency_png(stats: Any) -> bytes:
    """PNG: rank-frequency of a CorpusStats on log-log axes with the Zipf-Mandelbrot fit, and the coverage curve."""
    import numpy as np

    from . import zipf

    plt = _pyplot()
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
    return _png(fig)


def plan_png(plan: Plan) -> bytes:
    """PNG: the frontier (time vs capacity), the plan and folklore marked, and the plan's cost per cluster."""
    plt = _pyplot()
    p = plan.predicted
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    front = p["frontier"]
    ax1.plot([d["time_ms"] for d in front], [d["capacity"] for d in front], "o-", ms=3, label="frontier")
    ax1.scatter(
        [p["plan"]["time_ms"]], [plan.capacity], marker="*", s=160, c="C3", zorder=3, label=f"plan {plan.cutoffs}"
    )
    for f in p["folklore"]:
        ax1.scatter([f["time_ms"]], [f["capacity"]], marker="x", s=50, label=f"{f['name']} {f['cutoffs']}")
    ax1.axvline(p["full_softmax"]["time_ms"], color="gray", ls="--", lw=1, label="full softmax")
    ax1.set(
        xscale="log",
        xlabel="predicted ms per step",
        ylabel="capacity (share-weighted dim / d)",
        title=f"V={plan.vocab_size:,}, d={plan.hidden}, N={plan.batch_tokens}, {plan.mode}",
    )
    ax1.legend(fontsize=7)
    names = [c["name"] for c in p["plan"]["clusters"]]
    ax2.bar(names, [c["time_ms"] for c in p["plan"]["clusters"]], color="C0")
    ax2.set(ylabel="predicted ms", title=f"plan cost per cluster (total {p['plan']['time_ms']:.1f} ms)")
    fig.tight_layout()
    return _png(fig)


def curves_png(result: Any) -> bytes:
    """PNG: training (smoothed) and held-out loss per step for every run of a ValidationResult."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in result.runs:
        steps, losses = zip(*r.train_curve, strict=True)
        k = max(1, len(losses) // 30)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        (line,) = ax.plot(steps[k - 1 :], smooth, label=f"{r.name} (train)", alpha=0.8)
        es, el = zip(*r.eval_curve, strict=True)
        ax.plot(es, el, "o--", color=line.get_color(), label=f"{r.name} held-out ppl {r.heldout_ppl:.1f}")
    s = result.settings
    ax.set(
        xlabel="step",
        ylabel="loss (nats/token)",
        title=f"{s['model']}, d={s['hidden']}, V={s['vocab_size']}, {s['tokens_per_step']} tokens/step",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def tune_png(plan: Plan) -> bytes:
    """PNG: the measured penalty of each trained design (95% intervals) and the monotone model, against capacity and
    against predicted step time, with the tolerance and the chosen design marked."""
    plt = _pyplot()
    t = plan.provenance["tune"]
    rows, model, chosen = t["measured"], t["model"], t["chosen"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((ax1, "capacity", "capacity (share-weighted dim / d)"), (ax2, "predicted_ms", "ms")):
        x = [r[key] for r in rows]
        y = [100 * r["penalty"] for r in rows]
        err = [[100 * (r["penalty"] - r["low"]) for r in rows], [100 * (r["high"] - r["penalty"]) for r in rows]]
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label="measured (95% interval)")
        ax.axhline(100 * t["tolerance"], color="C3", ls="--", lw=1, label=f"tolerance {t['tolerance']:.1%}")
        chosen_x = chosen["capacity"] if key == "capacity" else chosen["time_ms"]
        ax.scatter([chosen_x], [100 * chosen["predicted_penalty"]], marker="*", s=160, c="C3", zorder=3, label="chosen")
        ax.set(xlabel=label, ylabel="perplexity penalty vs full softmax (%)")
    ax1.plot(model["capacity"], [100 * p for p in model["penalty"]], "-", color="C2", label="monotone model")
    ax1.plot(model["capacity"], [100 * p for p in model["high"]], ":", color="C2", label="model, upper bound")
    ax2.set_xscale("log")
    ax1.set_title(f"V={plan.vocab_size:,}, d={plan.hidden}: quality ({t['basis'][:40]}...)", fontsize=9)
    ax2.set_title("quality vs predicted step time", fontsize=9)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
