"""`vocabopt validate`: train the same small LM with the plan's layer and the full softmax; compare them."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..artifacts import atomic_write_bytes, check_writable
from ._common import echo_json, handle_errors, human_bytes, int_list
from .group import main


@main.command("validate")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--corpus", "corpus", multiple=True, required=True, help="Corpus source (repeatable).")
@click.option("-t", "--tokenizer", required=True, help="The tokenizer.json the plan's stats were counted with.")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--model", type=click.Choice(["lstm", "transformer"]), default="lstm", show_default=True)
@click.option("--seq-len", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--heldout", type=float, default=0.05, show_default=True, help="Fraction held out (the end).")
@click.option("--eval-every", type=int, default=0, help="Also score the held-out part every N steps.")
@click.option("--folklore", callback=int_list, default=None, help="Also train these cutoffs, e.g. 2000,10000.")
@click.option("--max-tokens", type=int, default=None, help="Use only the first N tokens of the corpus.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--quantize",
    type=click.Choice(["int8-tails", "int8"]),
    default=None,
    help="Also compare the trained head with its weight-only int8 copy on the held-out part (KL, top-1, ppl).",
)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the learning curves (PNG).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the result JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr, no 'wrote' lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def validate_cmd(
    plan_path: str,
    corpus: tuple[str, ...],
    tokenizer: str,
    steps: int,
    model: str,
    seq_len: int,
    batch_size: int,
    lr: float,
    heldout: float,
    eval_every: int,
    folklore: list[int] | None,
    max_tokens: int | None,
    device: str,
    dtype: str,
    seed: int,
    quantize: str | None,
    plot: str | None,
    output: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Train one small LM per output layer (PLAN's, full softmax, --folklore) with identical settings.

    \b
    Example:
      vocabopt validate plan.json --corpus corpora/kjv.txt -t corpora/kjv-bpe-8k/tokenizer.json --plot curves.png
    """
    from ..plan import Plan
    from ..plots import curves_png
    from ..validate import validate

    for path in (output, plot):
        if path:
            check_writable(path)  # before minutes of work, so a bad path fails fast
    show = not quiet and sys.stderr.isatty()

    latest: dict[str, float] = {}

    def progress(name: str, step: int, total: int, loss: float) -> None:  # one line: every run's latest loss
        latest[name] = loss
        if show and (step % 5 == 0 or step == total) and name == next(reversed(latest)):
            losses = "  ".join(f"{n} {v:.3f}" for n, v in latest.items())
            end = "\n" if step == total else ""
            click.echo(f"\rstep {step:>5}/{total}  loss: {losses}\x1b[K{end}", err=True, nl=False)

    result = validate(
        Plan.load(plan_path),
        list(corpus),
        tokenizer,
        steps=steps,
        model=model,
        seq_len=seq_len,
        batch_size=batch_size,
        lr=lr,
        heldout=heldout,
        eval_every=eval_every,
        folklore=folklore,
        max_tokens=max_tokens,
        device=device,
        dtype=dtype,
        seed=seed,
        quantize=quantize,
        progress=progress,
    )
    png = curves_png(result) if plot else None  # rendered before anything is written
    if output:
        result.save(output)
    if plot:
        atomic_write_bytes(plot, png)
    if as_json:
        echo_json(result.to_json())
        return
    _print_table(result)
    if result.quantized:
        _print_quantized(result.quantized)
    for path in (plot, output) if not quiet else ():
        if path:
            click.echo(f"wrote {path}")


def _print_table(result: Any) -> None:
    s = result.settings
    click.echo(
        f"{s['model']} d={s['hidden']} V={s['vocab_size']}, {s['steps']} steps of {s['tokens_per_step']} "
        f"tokens, {s['device']} {s['dtype']}; held-out {s['eval_tokens']:,} tokens never trained on"
    )
    click.echo(
        f"{'layer':<14}{'cutoffs':<24}{'held-out ppl':>13}{'vs full':>9}{'step ms':>9}{'tok/s':>9}"
        f"{'speed-up':>9}{'saved':>10}{'ECE':>7}{'T':>6}"
    )
    summ = result.summary()
    for r in result.runs:
        gap = f"{summ[r.name]['ppl_gap']:+.1%}" if r.name in summ else "-"
        sp = f"{summ[r.name]['speedup']:.2f}x" if r.name in summ else "-"
        click.echo(
            f"{r.name:<14}{str(r.cutoffs or '-'):<24}{r.heldout_ppl:>13.2f}{gap:>9}{r.step_ms:>9.1f}"
            f"{r.tokens_per_s:>9.0f}{sp:>9}{human_bytes(r.saved_bytes):>10}{r.ece:>7.3f}{r.temperature:>6.2f}"
        )
    edges = [b["ranks"] for b in result.runs[0].bands]
    click.echo("held-out perplexity per frequency band (ranks of the plan's clusters):")
    click.echo(f"{'layer':<14}" + "".join(f"{f'[{lo:,}, {hi:,})':>20}" for lo, hi in edges))
    for r in result.runs:
        cells = [f"{b['ppl']:.1f}" if b["ppl"] is not None else "-" for b in r.bands]
        click.echo(f"{r.name:<14}" + "".join(f"{c:>20}" for c in cells))
    for name, row in summ.items():
        if row.get("equal_time_ppl_gap") is not None:
            click.echo(
                f"{name}: at equal wall time (measured in the run) {row['equal_time_ppl_gap']:+.1%} vs full softmax"
            )


def _print_quantized(q: dict[str, Any]) -> None:
    fp, qb = q["bytes_fp32"], q["bytes_quantized"]
    click.echo(
        f"{q['mode']} head ({q['matmul']}) vs fp32 on {q['tokens']:,} held-out tokens: KL {q['kl']:.2e} nats/token, "
        f"top-1 agreement {q['top1_agreement']:.2%}, perplexity {q['ppl_change']:+.3%}; tail weights "
        f"{human_bytes(fp['tails'])} -> {human_bytes(qb['tails'])}, head {human_bytes(fp['head'])} -> "
        f"{human_bytes(qb['head'])}"
    )
