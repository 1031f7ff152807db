"""`vocabopt profile`: measure the output layer's kernels on this device (or reuse the cached profile of it).

Also the profile every verb plans with (`planning_profile`): a given file, else this device's cached profile (the
full grid's when `vocabopt profile` measured it, else the quick one), measured once (profile_cache) and reused by
optimize, plan and profile until the device, dtype, torch, matmul precision, vocabopt or grid changes, or --refresh
asks for a new measurement.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..artifacts import check_writable
from ..device import DTYPES
from ..optimize import planning_profile as load_profile
from ..profile import DeviceProfile
from ..profile_cache import CacheKey, cached_profile, lookup
from ._common import StepProgress, echo_json, handle_errors, quiet_option
from .group import main

QUICK_NOTE = "~1.5 minutes on a 2-core CPU"  # the quick grid; the full one took 400.9 s for configs/devices' profile


def planning_profile(
    path: str | None, device: str | None, dtype: str | None, *, refresh: bool = False, quiet: bool = False
) -> tuple[DeviceProfile, str]:
    """The profile to plan with and where it came from: the file at `path`, else this device's cached full-grid
    profile (`vocabopt profile` measures the full grid by default), else its cached quick one (measured now, with
    progress on stderr, if there is none or `refresh`)."""
    if path:
        return load_profile(path, device, dtype), path
    full = None if refresh else lookup(device or "auto", dtype or "float32", quick=False)
    if full is not None:
        if not quiet:
            click.echo(f"using the cached profile {full[1]} (full grid; --refresh measures a quick one)", err=True)
        return full[0], str(full[1])
    prof, cache, _hit = measure_or_reuse(device or "auto", dtype or "float32", quick=True, refresh=refresh, quiet=quiet)
    return prof, str(cache)


def measure_or_reuse(
    device: str, dtype: str, *, quick: bool, refresh: bool, quiet: bool
) -> tuple[DeviceProfile, Path, bool]:
    """`profile_cache.cached_profile` with the CLI's messages: the wait announced, progress, warnings."""
    bar = StepProgress("profiling", enabled=not quiet)

    def announce(key: CacheKey) -> None:
        if not quiet:
            why = "--refresh" if refresh else "no cached profile"
            wait = QUICK_NOTE if quick else "minutes"
            click.echo(f"{why}: measuring {key.device}, {key.dtype} ({key.grid} grid, {wait}) ...", err=True)

    def warn(message: str) -> None:
        if not quiet:
            click.echo(f"Warning: {message}", err=True)

    try:
        prof, cache, hit = cached_profile(
            device, dtype, quick=quick, refresh=refresh, progress=bar, on_warning=warn, on_measure=announce
        )
    finally:
        bar.close()
    if hit and not quiet:
        click.echo(f"using the cached profile {cache} (--refresh measures again)", err=True)
    return prof, cache, hit


@main.command("profile")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True)
@click.option("--quick", is_flag=True, help=f"Coarser grid, smaller budget ({QUICK_NOTE}).")
@click.option("--refresh", is_flag=True, help="Measure again even if this device's profile is cached.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write device.json here. [default: none]"
)
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
@handle_errors
def profile_cmd(
    device: str, dtype: str, quick: bool, refresh: bool, output: str | None, quiet: bool, as_json: bool
) -> None:
    """Time the layer's kernels (linear fwd/bwd, NLL, gather/scatter, per-cluster cost) over a grid of shapes.

    Run it on the machine you will train on, with nothing else busy. The profile is cached by device, dtype, torch
    version and grid ($VOCABOPT_CACHE_DIR, else $XDG_CACHE_HOME/vocabopt or ~/.cache/vocabopt), so optimize and
    plan reuse it; --refresh measures again. Profiles of other devices (configs/devices/*.json) let you plan for a
    GPU you are not on.

    \b
    Example:
      vocabopt profile --quick -o out/device.json
    """
    if output:
        check_writable(output)  # before minutes of measuring
    prof, cache, hit = measure_or_reuse(device, dtype, quick=quick, refresh=refresh, quiet=quiet or as_json)
    if output:
        prof.save(output)
    summary = {"output": output, "cache": str(cache), "cached": hit, **prof.summary()}
    if as_json:
        echo_json(summary)
        return
    click.echo(f"device     {prof.describe()}, {summary['threads']} threads")
    click.echo(
        f"measured   {summary['wall_s']} s" + (" (earlier; cached)" if hit else "") + f", "
        f"{prof.settings['samples']} samples per point, {'quick' if prof.settings.get('quick') else 'full'} grid"
    )
    click.echo(
        f"matmul     up to {summary['matmul_peak_gflops']:.0f} GFLOP/s; "
        f"NLL up to {summary['nll_bandwidth_gbs']:.0f} GB/s; "
        f"per-cluster fixed cost >= {summary['cluster_fixed_train_ms_min']:.3f} ms (fwd+bwd)"
    )
    click.echo(f"alignment  cutoffs rounded to multiples of {prof.alignment}")
    if not quiet:
        click.echo(f"cache      {cache}")
        if output:
            click.echo(f"wrote      {output}")
