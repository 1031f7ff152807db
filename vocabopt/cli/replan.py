"""`vocabopt replan`: migrate a trained head to a new plan's cutoffs."""

from __future__ import annotations

import click

from ._common import echo_json, handle_errors, quiet_option
from .group import main


@main.command("replan")
@click.argument("state_path", metavar="STATE", type=click.Path(dir_okay=False))
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.argument("new_plan_path", metavar="NEW_PLAN", type=click.Path(dir_okay=False))
@click.option("--hidden", "hidden_path", required=True, help=".npy (n, d) sample hidden states of the model")
@click.option("-o", "--output", required=True, help="the migrated state dict (.pt)")
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="print the fit report as JSON")
@handle_errors
def replan_cmd(
    state_path: str, plan_path: str, new_plan_path: str, hidden_path: str, output: str, quiet: bool, as_json: bool
) -> None:
    """Move the trained head STATE from PLAN to NEW_PLAN (same vocabulary): exact rows into the head, SVD fits for
    tails, cluster logits refitted on --hidden.

    \b
    Example:
      vocabopt replan grown.pt grown.plan.json new_plan.json --hidden h.npy -o replanned.pt
    """
    import torch

    from ..expand import read_state, write_state
    from ..plan import Plan
    from ..replan import read_hidden, replan_head

    plan, new_plan, state = Plan.load(plan_path), Plan.load(new_plan_path), read_state(state_path)
    r = replan_head(state, plan, new_plan, hidden=torch.from_numpy(read_hidden(hidden_path)))
    write_state(r.state, output)
    if as_json:
        echo_json(r.summary() | {"written": output})
        return
    for t in r.tails:
        rel = t["fit_error"] / max(t["norm"], 1e-30)
        click.echo(f"tail{t['tail']}: {t['tokens']} tokens, d={t['proj_dim']}, relative fit error {rel:.2e}")
    click.echo(f"cluster logits refitted: RMSE {r.cluster_logit_rmse:.3f} nats on {hidden_path}")
    if not quiet:
        click.echo(f"wrote {output}; build the layer from {new_plan_path} and load it, then fine-tune briefly")
