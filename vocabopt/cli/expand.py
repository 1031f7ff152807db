"""`vocabopt expand`: add a new tokenizer's tokens to a trained head (new plan + state dict)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import echo_json, handle_errors, quiet_option
from .group import main


@main.command("expand")
@click.argument("state_path", metavar="STATE", type=click.Path(dir_okay=False))
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--old-tokenizer", required=True, help="the tokenizer.json the head was trained with")
@click.option("--new-tokenizer", required=True, help="a tokenizer.json that extends it (same ids, tokens added)")
@click.option("--stats", "stats_path", default=None, help="CorpusStats of new data (new tokenizer): place by count")
@click.option("--init", type=click.Choice(["mean", "subword"]), default="mean", show_default=True)
@click.option("--mass", type=float, default=1e-3, show_default=True, help="init mean: new tokens' probability bound")
@click.option("-o", "--output", required=True, help="output stem: writes STEM.plan.json and STEM.pt")
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@handle_errors
def expand_cmd(
    state_path: str,
    plan_path: str,
    old_tokenizer: str,
    new_tokenizer: str,
    stats_path: str | None,
    init: str,
    mass: float,
    output: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Add the tokens of --new-tokenizer to the trained head STATE (torch.save of its state_dict) built from PLAN.

    Old weights are copied exactly; new rows start at their cluster's mean (or the mean of their old pieces).

    \b
    Example:
      vocabopt expand head.pt plan.json --old-tokenizer tok.json --new-tokenizer tok_plus.json -o grown
    """
    from ..expand import expand_head, read_state, subword_splitter, tokenizer_vocab, write_state
    from ..plan import Plan
    from ..stats import CorpusStats

    plan, state = Plan.load(plan_path), read_state(state_path)
    old_tokens, old_tok = tokenizer_vocab(old_tokenizer)
    new_tokens, new_tok = tokenizer_vocab(new_tokenizer)
    stats = CorpusStats.load(stats_path) if stats_path else None
    split = subword_splitter(old_tok, new_tok) if init == "subword" else None
    ex = expand_head(state, plan, new_tokens, old_tokens=old_tokens, stats=stats, init=init, mass=mass, split=split)
    plan_out, state_out = Path(f"{output}.plan.json"), Path(f"{output}.pt")
    write_state(ex.state, str(state_out))
    ex.plan.save(plan_out)
    summary = ex.summary() | {"written": [str(plan_out), str(state_out)]}
    if as_json:
        echo_json(summary)
        return
    click.echo(f"added {summary['added']} tokens (per cluster {summary['added_per_cluster']}), init {init}")
    click.echo(f"new vocabulary {ex.plan.vocab_size}, cutoffs {ex.plan.cutoffs}")
    if summary["mass_bound"] is not None:
        click.echo(f"new tokens take at most {mass:g} of the probability for any hidden state")
    if not quiet:
        click.echo(f"wrote {plan_out} and {state_out}")
