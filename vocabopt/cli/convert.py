"""`vocabopt convert`: a trained full-softmax lm_head -> the plan's adaptive head (SVD per tail + distillation)."""

from __future__ import annotations

import sys

import click

from ._common import echo_json, handle_errors, quiet_option
from .group import main


@main.command("convert")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--weights", required=True, help="the model's weights: a torch.save state dict (.pt) or .safetensors")
@click.option("--key", default=None, help="the lm_head weight's name [default: lm_head.weight, else the embedding]")
@click.option("--hidden-states", "hidden_path", default=None, help=".npy (n, d) hidden states of the model on text")
@click.option("--targets", "targets_path", default=None, help=".npy (n,) next-token ids of those states: perplexity")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True, help="last share of states held out")
@click.option("--steps", type=int, default=300, show_default=True, help="distillation Adam steps (0: none)")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="distillation learning rate")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", required=True, help="the converted head's state dict (.pt) for build_layer(plan)")
@click.option("--report", "report_path", default=None, help="also write the report as JSON here")
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@handle_errors
def convert_cmd(
    plan_path: str,
    weights: str,
    key: str | None,
    hidden_path: str | None,
    targets_path: str | None,
    eval_fraction: float,
    steps: int,
    lr: float,
    seed: int,
    output: str,
    report_path: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Convert the trained (V, d) lm_head in --weights into PLAN's adaptive head: shortlist rows copied, each tail a
    truncated SVD of its rows, cluster logits fitted, then the tails and cluster logits distilled on --hidden-states
    (KL to the original; the copied shortlist rows stay exact).

    \b
    Example:
      vocabopt convert plan.json --weights model.safetensors --hidden-states h.npy --targets y.npy -o head.pt
    """
    from ..convert import convert_head, summary_lines
    from ..errors import InputError
    from ..expand import write_state
    from ..plan import Plan
    from ..weights import read_weights

    if not 0.0 <= eval_fraction < 1.0:
        raise InputError(f"--eval-fraction must be in [0, 1), got {eval_fraction}")
    if targets_path and not hidden_path:
        raise InputError("--targets needs --hidden-states (one target id per hidden state)")
    plan = Plan.load(plan_path)
    state = read_weights(weights)
    fit, heldout = _states(hidden_path, targets_path, eval_fraction)
    say = _progress(steps) if not (as_json or quiet) and fit is not None else None
    conv = convert_head(
        state,
        None,
        plan,
        key=key,
        hidden_states=fit,
        heldout=heldout,
        distil_steps=steps,
        lr=lr,
        seed=seed,
        progress=say,
    )
    write_state(conv.layer.state_dict(), output)
    if report_path:
        conv.report.save(report_path)
    if as_json:
        echo_json(conv.report.to_json() | {"written": output})
        return
    for line in summary_lines(conv.report):
        click.echo(line)
    if not quiet:
        click.echo(f"wrote {output}; load it with layer = vocabopt.build_layer(plan); layer.load_state_dict(...)")


def _states(hidden_path: str | None, targets_path: str | None, eval_fraction: float):
    """(fitting states, (held-out states, targets or None) or None) from the .npy files, split by eval_fraction."""
    import numpy as np
    import torch

    from ..errors import InputError
    from ..replan import read_hidden

    if not hidden_path:
        return None, None
    h = torch.from_numpy(read_hidden(hidden_path))
    t = None
    if targets_path:
        try:
            t = torch.from_numpy(np.load(targets_path, allow_pickle=False)).reshape(-1)
        except (OSError, ValueError) as e:
            raise InputError(f"{targets_path}: not a plain .npy array of ids ({e}); save it with np.save") from None
        if t.numel() != h.shape[0]:
            raise InputError(f"{targets_path}: {t.numel()} ids for {h.shape[0]} hidden states; need one per state")
    n_eval = int(h.shape[0] * eval_fraction)
    if n_eval == 0 or n_eval == h.shape[0]:
        return h, None if t is None else (h, t)
    cut = h.shape[0] - n_eval
    return h[:cut], (h[cut:], None if t is None else t[cut:])


def _progress(steps: int):
    def show(k: int, total: int, loss: float) -> None:
        if k == total or k % max(1, total // 10) == 0:
            click.echo(f"distil {k}/{total}: KL {loss:.4f} nats/token", err=True)
            sys.stderr.flush()

    return show
