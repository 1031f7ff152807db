"""`vocabopt optimize`: recommend cutoffs and projection sizes for a corpus, a device and a batch size."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..artifacts import atomic_write_bytes, check_writable
from ..device import DTYPES
from ..optimize import FLOOR_CAVEAT, folklore_skipped, optimize
from ..plan import Plan
from ..plots import plan_png
from ..profile import DeviceProfile
from ..stats import CorpusStats
from ._common import echo_json, handle_errors, human_bytes, int_list, quiet_option
from .group import main
from .profile import planning_profile

BATCH_TOKENS = 2048  # --batch-tokens default: tokens per step (e.g. 8 sequences of 256, or 1 of 2048)


@main.command("optimize")
@click.argument("stats", type=click.Path(dir_okay=False))
@click.option("--hidden", type=int, required=True, help="Width d of the hidden states fed to the output layer.")
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False),
    help="A DeviceProfile (vocabopt profile, or configs/devices/*.json). [default: this device's cached profile "
    "(full grid if cached, else the quick grid, measured once: ~1.5 min on a 2-core CPU) and reused]",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda", "mps"]),
    default=None,
    help="Without --profile: the device to profile (cached). With it: refuse a profile of another device.",
)
@click.option("--refresh", is_flag=True, help="Without --profile: measure this device again even if cached.")
@click.option("--dtype", type=click.Choice(list(DTYPES)), default=None, help="Warn if the profile is another dtype.")
@click.option(
    "--batch-tokens",
    type=int,
    default=BATCH_TOKENS,
    show_default=True,
    help="Tokens per step N (batch x sequence length) the design is optimized for.",
)
@click.option("--mode", type=click.Choice(["train", "infer"]), default="train", show_default=True)
@click.option(
    "--decode",
    type=click.Choice(["full", "greedy"]),
    default=None,
    help="infer: greedy/top-k decoding (a tail for its share of rows; the default) or the full distribution "
    "(every cluster per row: more memory than the full softmax, so no design is proposed).",
)
@click.option("--max-clusters", type=int, default=4, show_default=True)
@click.option("--div-value", type=float, default=4.0, show_default=True, help="Projection rule: d // div^(i+1).")
@click.option(
    "--min-proj",
    type=int,
    default=None,
    help="Lower bound on every projection size. [default: the profile's alignment (8 on CPU): smaller ones are "
    "predicted no faster; 1: no floor]",
)
@click.option("--proj-dims", callback=int_list, default=None, help="Explicit projection sizes, e.g. 256,64,16.")
@click.option("--min-head", type=int, default=None, help="Smallest head shortlist to consider.")
@click.option("--max-head", type=int, default=None, help="Largest head shortlist to consider.")
@click.option(
    "--cutoffs",
    callback=int_list,
    default=None,
    help="Evaluate these cutoffs (e.g. 2000,10000) against the search instead of recommending.",
)
@click.option("--candidates", type=int, default=256, show_default=True, help="Cutoff grid size for the DP.")
@click.option(
    "--tolerance",
    type=float,
    default=0.02,
    show_default=True,
    help="Recommend the most capacity within this share of the fastest predicted time.",
)
@click.option(
    "--min-capacity",
    type=float,
    default=None,
    help="Recommend only designs with at least this capacity (share-weighted width / d; 1 = full softmax). "
    "[default: the capacity of the paper's [2000, 10000] on this corpus: a heuristic that measures no quality; "
    "`vocabopt tune` / --from-tune measure it]",
)
@click.option(
    "--from-tune",
    "from_tune",
    type=click.Path(dir_okay=False),
    default=None,
    help="A plan from `vocabopt tune` (same corpus, tokenizer, width): recommend on its measured penalty model "
    "instead of the capacity floor.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="plan.json", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the frontier/breakdown PNG.")
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan's JSON instead of tables.")
@handle_errors
def optimize_cmd(
    stats: str,
    hidden: int,
    profile_path: str | None,
    device: str | None,
    refresh: bool,
    dtype: str | None,
    batch_tokens: int,
    mode: str,
    decode: str | None,
    max_clusters: int,
    div_value: float,
    min_proj: int | None,
    proj_dims: list[int] | None,
    min_head: int | None,
    max_head: int | None,
    cutoffs: list[int] | None,
    candidates: int,
    tolerance: float,
    min_capacity: float | None,
    from_tune: str | None,
    output: str,
    plot: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Choose the adaptive softmax's cutoffs and projection sizes by dynamic programming on measured costs.

    \b
    Example:
      vocabopt optimize out/stats.json --hidden 512 --profile out/device.json -o out/plan.json --plot out/plan.png
    """
    for path in (output, plot):
        if path:
            check_writable(path)  # before the work, so a bad -o/--plot fails fast and writes nothing
    corpus = CorpusStats.load(stats)
    prof, profile_source = planning_profile(profile_path, device, dtype, refresh=refresh, quiet=quiet or as_json)
    t0 = time.perf_counter()
    plan = optimize(
        corpus,
        hidden=hidden,
        profile=prof,
        batch_tokens=batch_tokens,
        mode=mode,
        decode=decode,
        max_clusters=max_clusters,
        div_value=div_value,
        min_proj=min_proj,
        proj_dims=proj_dims,
        min_head=min_head,
        max_head=max_head,
        candidates=candidates,
        tolerance=tolerance,
        min_capacity=min_capacity,
        cutoffs=cutoffs,
        paths={"stats": stats, "profile": profile_source},
        from_tune=Plan.load(from_tune) if from_tune else None,
    )
    seconds = time.perf_counter() - t0
    png = plan_png(plan) if plot else None  # rendered before anything is written
    plan.save(output)
    if plot:
        atomic_write_bytes(plot, png)
    if as_json:
        echo_json({**plan.to_json(), "output": output})
        return
    _print_tables(plan, prof, None if quiet else output, plot, seconds)


def _print_tables(plan: Plan, prof: DeviceProfile, output: str | None, plot: str | None, seconds: float) -> None:
    """The plan's tables on stdout; the closing 'wrote' line unless `output` is None (-q)."""
    p = plan.predicted
    full = p["full_softmax"]
    click.echo(f"profile    {prof.describe()}")
    click.echo(
        f"workload   V={plan.vocab_size:,}, d={plan.hidden}, N={plan.batch_tokens:,} tokens, mode={plan.mode}"
        + (f" ({p['decode']})" if plan.mode == "infer" else "")
    )
    click.echo("")
    click.echo(
        ("given" if plan.provenance["options"].get("cutoffs") else "recommended")
        + f": cutoffs {plan.cutoffs}, proj_dims {plan.proj_dims}  ->  "
        f"{p['plan']['time_ms']:.2f} ms vs full softmax {full['time_ms']:.2f} ms "
        f"({p['speedup']:.2f}x), memory {human_bytes(p['plan']['memory_bytes'])} vs "
        f"{human_bytes(full['memory_bytes'])}" + (" [extrapolated]" if p["plan"]["extrapolated"] else "")
    )
    measured = plan.provenance["options"].get("from_tune")
    if plan.provenance["options"].get("cutoffs"):
        click.echo(f"  capacity {plan.capacity:.3f} (share-weighted width / d; 1 = full softmax)")
    elif measured:
        click.echo(
            f"  capacity {plan.capacity:.3f}; measured quality (--from-tune, {measured['basis']}): "
            f"{measured.get('bound', 'model')} penalty {measured['predicted_penalty']:+.2%}, "
            f"upper {measured['predicted_high']:+.2%} "
            + ("within" if measured["met"] else "NOT within")
            + f" the {measured['tolerance']:.1%} tolerance"
        )
    else:
        click.echo(
            f"  capacity {plan.capacity:.3f}; floor (--min-capacity): {plan.provenance['options']['min_capacity_rule']}"
            f" ({FLOOR_CAVEAT})"
        )
    click.echo(f"  {'cluster':<8} {'ranks':>19} {'share':>8} {'dim':>5} {'ms':>9}")
    edges = [0, *plan.cutoffs, plan.vocab_size]
    for i, c in enumerate(p["plan"]["clusters"]):
        click.echo(
            f"  {c['name']:<8} {f'[{edges[i]:,}, {edges[i + 1]:,})':>19} {c['share']:>8.2%} "
            f"{c['proj_dim']:>5} {c['time_ms']:>9.2f}"
        )
    click.echo("")
    click.echo("best design per number of tail clusters:")
    for j, d in p["best_per_clusters"].items():
        click.echo(
            f"  J={j}  {str(d['cutoffs']):<36} {d['time_ms']:>9.2f} ms  "
            f"{full['time_ms'] / d['time_ms']:>6.2f}x"
            f"  capacity {d['capacity']:.3f}"
        )
    click.echo("")
    click.echo("Pareto frontier (time vs capacity = sum of share x dim / d; params; faster than the full softmax):")
    for d in p["frontier"]:
        click.echo(
            f"  {str(d['cutoffs']):<36} {str(d['proj_dims']):<18} {d['time_ms']:>9.2f} ms  "
            f"capacity {d['capacity']:.3f}  {d['params'] / 1e6:>7.2f}M params"
        )
    click.echo("")
    click.echo("folklore designs (same projection rule):")
    for f in p["folklore"]:
        click.echo(
            f"  {f['name']:<16} {str(f['cutoffs']):<24} {f['time_ms']:>9.2f} ms  {f['speedup']:>6.2f}x  "
            f"memory {human_bytes(f['memory_bytes'])}  "
            f"(plan is {f['time_ms'] / p['plan']['time_ms']:.2f}x faster)"
        )
    for name, cut in folklore_skipped(plan):
        click.echo(f"  {name:<16} {str(cut):<24} n/a: no cutoff below V={plan.vocab_size:,}")
    if output is None:
        return
    click.echo("")
    click.echo(f"wrote {output}" + (f" and {plot}" if plot else "") + f" (search {seconds:.3f} s)")
    if Path(output).suffix not in (".json", ".npz"):
        click.echo(
            "note: the plan is JSON with .npy sidecars; name it .json, or .npz for one self-contained file", err=True
        )
