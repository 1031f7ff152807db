"""`vocabopt export`: a plan -> a standalone adaptive-softmax layer file."""

from __future__ import annotations

import click

from ._common import echo_json, handle_errors, quiet_option
from .group import main


@main.command("export")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="file to write (.py or .json)")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["module", "config", "torch"]),
    default="module",
    show_default=True,
    help="module: torch-only layer file; config: JSON config; torch: AdaptiveLogSoftmaxWithLoss builder",
)
@click.option("--dropout", type=float, default=None, help="dropout on the tail projections")
@click.option("--tie-input", is_flag=True, help="also expose a tied adaptive input embedding (layer.embed)")
@click.option(
    "--quantize",
    type=click.Choice(["int8-tails", "int8"]),
    default=None,
    help="weight-only int8 (per-output-channel scales) for the tails (int8: and the head); inference only",
)
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="print the written paths as JSON")
@handle_errors
def export_cmd(
    plan_path: str,
    output: str,
    fmt: str,
    dropout: float | None,
    tie_input: bool,
    quantize: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Write the layer designed by PLAN (from `vocabopt optimize` or Plan.save) as a file that needs only torch.

    \b
    Example:
      vocabopt export out/plan.json -o out/adaptive_head.py
    """
    from ..export import export_layer
    from ..plan import Plan

    plan = Plan.load(plan_path)
    overrides = {"tie_input": True} if tie_input else {}
    if dropout is not None:
        overrides["dropout"] = dropout
    if quantize:
        overrides["quantize"] = quantize
    paths = export_layer(plan, output, format=fmt, **overrides)
    if as_json:
        echo_json({"written": [str(p) for p in paths], "format": fmt, "plan": plan.summary()})
        return
    if quiet:
        return
    for p in paths:
        click.echo(f"wrote {p}")
    if fmt == "module":
        click.echo(f"use: from {paths[-1].stem} import build_head; head = build_head(); loss = head(hidden, targets)")
