"""`vocabopt tune`: the fastest output layer within a measured perplexity tolerance of the full softmax."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..artifacts import atomic_write_bytes, check_writable
from ._common import echo_json, handle_errors
from .group import main


@main.command("tune")
@click.argument("stats", type=click.Path(dir_okay=False))
@click.option("--corpus", "corpus", multiple=True, required=True, help="Corpus source (repeatable).")
@click.option("-t", "--tokenizer", required=True, help="The tokenizer the stats were counted with.")
@click.option("--hidden", type=int, required=True, help="Width d of the hidden states fed to the output layer.")
@click.option("--batch-tokens", type=int, default=2048, show_default=True, help="Tokens per step N the design is for.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), required=True, help="A DeviceProfile.")
@click.option("--tolerance", type=float, default=0.01, show_default=True, help="Allowed perplexity penalty (0.01=1%).")
@click.option("--steps", type=int, default=300, show_default=True, help="Proxy-LM steps per run.")
@click.option("--model", type=click.Choice(["lstm", "transformer"]), default="lstm", show_default=True)
@click.option(
    "--seeds", type=int, default=2, show_default=True, help="Trainings per design (>= 2: interval includes runs)."
)
@click.option(
    "--candidates", type=int, default=2, show_default=True, help="Frontier designs in the first round (>= 2)."
)
@click.option(
    "--refine",
    type=int,
    default=4,
    show_default=True,
    help="Rounds after the first: the interpolated choice, or a faster design probed below a passing one (0: none).",
)
@click.option(
    "--budget-minutes",
    type=float,
    default=15.0,
    show_default=True,
    help="Start a refinement round only if it fits in this wall time (0: no limit; the first round always runs).",
)
@click.option(
    "--folklore/--no-folklore",
    default=True,
    show_default=True,
    help="Also train the folklore designs (a design that passes anchors the refinement's probes).",
)
@click.option("--race/--no-race", default=True, show_default=True, help="Stop training designs above the tolerance.")
@click.option("--confirm", is_flag=True, help="Train the chosen design once more with a new seed (winner's curse).")
@click.option("--train-tokens", type=int, default=None, help="Tokens of your real run: compare there (else asymptote).")
@click.option("--seq-len", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--max-tokens", type=int, default=None, help="Use only the first N tokens of the corpus.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="plan.json", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Frontier with measured quality (PNG).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr, no 'wrote' line.")
@click.option("--json", "as_json", is_flag=True, help="Print the tuned plan's JSON.")
@handle_errors
def tune_cmd(
    stats: str, profile_path: str, output: str, plot: str | None, quiet: bool, as_json: bool, **kw: Any
) -> None:
    """Train the proxy LM with frontier designs and the full softmax; keep the fastest within --tolerance.

    \b
    Example:
      vocabopt tune stats.json --corpus corpora/kjv.txt -t corpora/kjv-bpe-8k/tokenizer.json --hidden 256 \\
        --profile configs/devices/cpu-xeon-2core-float32.json --tolerance 0.01 -o tuned.json
    """
    from ..plots import tune_png
    from ..profile import DeviceProfile
    from ..stats import CorpusStats
    from ..training import TrainSettings
    from ..tune import tune

    for path in (output, plot):
        if path:
            check_writable(path)  # before minutes of work, so a bad path fails fast
    tty = sys.stderr.isatty()

    def progress(what: str, done: int, total: int) -> None:  # a live line on a terminal, every 10% in a log
        if quiet:
            return
        if tty:
            click.echo(f"\r{what}: step {done}/{total}\x1b[K", err=True, nl=done == total)
        elif done == total or done % max(1, total // 10) == 0:
            click.echo(f"{what}: step {done}/{total}", err=True)

    train = TrainSettings(
        model=kw.pop("model"), seq_len=kw.pop("seq_len"), batch_size=kw.pop("batch_size"), steps=kw.pop("steps")
    )
    budget = kw.pop("budget_minutes")
    plan = tune(
        CorpusStats.load(stats),
        budget_minutes=None if budget == 0 else budget,
        sources=list(kw.pop("corpus")),
        profile=DeviceProfile.load(profile_path),
        train=train,
        progress=progress,
        **kw,
    )
    png = tune_png(plan) if plot else None  # rendered before anything is written
    plan.save(output)
    if plot:
        atomic_write_bytes(plot, png)
    if as_json:
        echo_json({**plan.to_json(), "output": output})
        return
    _print_table(plan)
    if not quiet:
        click.echo(f"wrote {output}" + (f" and {plot}" if plot else ""))


def _print_table(plan: Any) -> None:
    t = plan.provenance["tune"]
    full = t["full_softmax"]
    click.echo(f"penalty = held-out perplexity / full softmax's - 1; compared at: {t['basis']}")
    click.echo(
        f"{'design':<14}{'cutoffs':<26}{'capacity':>9}{'penalty':>9}{'95% interval':>21}{'ppl':>9}"
        f"{'pred. x':>8}{'proxy x':>8}{'equal-time':>11}"
    )
    click.echo(
        f"{'full softmax':<14}{'-':<26}{1.0:>9.3f}{'-':>9}{'-':>21}{full['heldout_ppl']:>9.2f}{'1.00x':>8}{'1.00x':>8}"
    )
    full_ms = plan.predicted["full_softmax"]["time_ms"]
    seeds = t["proxy"]["seeds"]
    for m in t["measured"]:
        mark = "^" if m.get("seeds", seeds) < seeds else "+" if m.get("tie_break") else ""
        interval = f"[{_pct(m['low'])}, {_pct(m['high'])}]" + mark
        eq = _pct(m["equal_time_penalty"]) if m["equal_time_penalty"] is not None else "-"
        eq += "*" if m.get("equal_time_basis") == "measured" and m["equal_time_penalty"] is not None else ""
        click.echo(
            f"{m['name']:<14}{str(m['cutoffs']):<26}{m['capacity']:>9.3f}{_pct(m['penalty']):>9}{interval:>21}"
            f"{m['heldout_ppl']:>9.2f}{full_ms / m['predicted_ms']:>7.2f}x{m['proxy_speedup']:>7.2f}x{eq:>11}"
        )
    if any(m.get("equal_time_basis") == "measured" for m in t["measured"]):
        click.echo(
            "equal-time *: the design at the end of its proxy run vs the full softmax after the same wall time "
            "(measured in the run, not at your training length; unmarked: the fitted curves at --train-tokens)"
        )
    if any(m.get("seeds", seeds) < seeds for m in t["measured"]):
        click.echo(
            f"^ out of the race: above the tolerance after fewer than {seeds} seeds, so not trained further "
            "(the interval is from the seeds it trained)"
        )
    for m in (m for m in t["measured"] if m.get("tie_break")):
        click.echo(
            f"+ {m['name']}: undecided after {seeds} seeds (each seed within the tolerance, the interval not), "
            f"one more seed in round {m['tie_break']}"
        )
    c = t["chosen"]
    if t["met"]:
        verdict = f"within the {t['tolerance']:.1%} tolerance"
    elif t.get("met_at_end_of_run"):
        verdict = "within the tolerance at the end of the run only: provisional (short runs favour small heads)"
    else:
        verdict = f"NO design met the {t['tolerance']:.1%} tolerance: the best trade-off measured, not a pass"
    how = "trained" if c.get("measured") else "interpolated, not trained"
    click.echo(
        f"chosen: cutoffs {c['cutoffs']}, proj_dims {c['proj_dims']} ({how}): "
        f"{plan.predicted['speedup']:.2f}x predicted speed-up; {c.get('bound', 'model')} penalty "
        f"{_pct(c['predicted_penalty'])} (upper {_pct(c['predicted_high'])}); {verdict}"
    )
    stop = (t.get("budget") or {}).get("stopped")
    if stop:
        click.echo(
            f"refinement round {stop['round']} not run: its estimate ({stop['estimate_minutes']:.1f} min) would "
            f"pass the {t['budget']['minutes']:g}-minute budget ({max(0.0, stop['left_minutes']):.1f} min left); raise "
            "--budget-minutes"
        )
    conf = t.get("confirmation")
    if conf:
        word = "confirmed" if conf["confirmed"] else "NOT confirmed: its pass may be luck among several designs"
        click.echo(
            f"confirmation (seed {conf['seed']}, one more run): penalty {_pct(conf['penalty'])} "
            f"[{_pct(conf['low'])}, {_pct(conf['high'])}] -> {word}"
        )
    if t["proxy"]["seeds"] < 2:
        click.echo(
            "warning: one training per design: the intervals cover held-out windows only, not run-to-run variance "
            "(which measured several % on 300-step runs: docs/benchmarks.md); use --seeds 2 or more",
            err=True,
        )
    if t["model"]["monotone_violations"]:
        click.echo(
            f"warning: {t['model']['monotone_violations']} pair(s) of designs contradict a penalty that falls with "
            "capacity (a design's interval lies wholly above a less capacious one's): the model pooled them",
            err=True,
        )


def _pct(share: float) -> str:
    """A penalty as a signed percentage; beyond +-999% (an interval a short run cannot pin down) as '>+999%'."""
    if share > 9.99:
        return ">+999%"
    return f"{share:+.2%}"
