"""`vocabopt drift`: have the new data's frequencies moved far enough from the plan's to re-plan?"""

from __future__ import annotations

import click

from ._common import echo_json, handle_errors, quiet_option
from .group import main


@main.command("drift")
@click.argument("old_path", metavar="OLD_STATS", type=click.Path(dir_okay=False))
@click.argument("new_path", metavar="NEW_STATS", type=click.Path(dir_okay=False))
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--profile", "profile_path", default=None, help="device profile [default: this device's cached one]")
@click.option("--batch-tokens", type=int, default=None, help="tokens per step (default: the plan's)")
@click.option("--min-gain", type=float, default=0.05, show_default=True, help="re-plan above this predicted speedup")
@click.option("-o", "--output", default=None, help="also write the best new plan here (plan JSON)")
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@handle_errors
def drift_cmd(
    old_path: str,
    new_path: str,
    plan_path: str,
    profile_path: str | None,
    batch_tokens: int | None,
    min_gain: float,
    output: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Compare PLAN's frequencies (OLD_STATS) with NEW_STATS: cluster shares, crossings, predicted step times.

    \b
    Example:
      vocabopt drift old.stats.json new.stats.json plan.json --profile device.json -o new_plan.json
    """
    from ..drift import drift
    from ..plan import Plan
    from ..stats import CorpusStats
    from .profile import planning_profile

    plan = Plan.load(plan_path)
    old, new = CorpusStats.load(old_path), CorpusStats.load(new_path)
    profile, _source = planning_profile(profile_path, None, None, quiet=quiet or as_json)
    rep = drift(old, new, plan, profile=profile, batch_tokens=batch_tokens, min_gain=min_gain)
    if output:
        rep.new_plan.save(output)
    if as_json:
        echo_json(rep.to_json() | ({"written": output} if output else {}))
        return
    click.echo("cluster  share then  share now")
    for c, (a, b) in enumerate(zip(rep.shares_then, rep.shares_now, strict=True)):
        click.echo(f"{'head' if c == 0 else f'tail{c - 1}':<7} {a:10.4f} {b:10.4f}")
    click.echo(
        f"{rep.crossed} tokens crossed a cutoff ({rep.crossed_up} towards the head); TV distance "
        f"{rep.total_variation:.3f}"
    )
    for e in rep.examples[:5]:
        click.echo(f"  {e['token']!r}: cluster {e['cluster_then']} -> {e['cluster_now']} ({e['count_now']:,} now)")
    click.echo(f"old plan {plan.cutoffs}: {rep.old_plan_ms:.2f} ms/step, capacity {rep.old_capacity:.3f}")
    click.echo(f"new plan {rep.new_cutoffs}: {rep.new_plan_ms:.2f} ms/step, capacity {rep.new_capacity:.3f}")
    click.echo(f"recommendation: {rep.recommendation} ({rep.reason})")
    if output and not quiet:
        click.echo(f"wrote {output}")
