"""`vocabopt profile`: measure the output layer's kernels on this device and write a DeviceProfile."""

from __future__ import annotations

import sys

import click

from ..artifacts import check_writable
from ..device import DTYPES
from ..profiler import profile_device
from ._common import echo_json, handle_errors
from .group import main


@main.command("profile")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True)
@click.option("--quick", is_flag=True, help="Coarser grid, smaller budget (~1.5 minutes on a 2-core CPU).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Where to write device.json.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
@handle_errors
def profile_cmd(device: str, dtype: str, quick: bool, output: str, as_json: bool) -> None:
    """Time the layer's kernels (linear fwd/bwd, NLL, gather/scatter, per-cluster cost) over a grid of shapes.

    Run it on the machine you will train on, with nothing else busy; the optimizer reads the result with
    --profile. Profiles of other devices (configs/devices/*.json) let you plan for a GPU you are not on.
    """
    check_writable(output)  # before minutes of measuring
    show = sys.stderr.isatty() and not as_json

    def progress(done: int, total: int) -> None:
        if show:
            sys.stderr.write(f"\rprofiling: {done}/{total} samples ({done / total:.0%})\x1b[K")

    prof = profile_device(device=device, dtype=dtype, quick=quick, progress=progress)
    if show:
        sys.stderr.write("\n")
    prof.save(output)
    summary = {"output": output, **prof.summary()}
    if as_json:
        echo_json(summary)
        return
    click.echo(f"device     {prof.describe()}, {summary['threads']} threads")
    click.echo(
        f"measured   {summary['wall_s']} s, {prof.settings['samples']} samples per point, "
        f"{'quick' if quick else 'full'} grid"
    )
    click.echo(
        f"matmul     up to {summary['matmul_peak_gflops']:.0f} GFLOP/s; "
        f"NLL up to {summary['nll_bandwidth_gbs']:.0f} GB/s; "
        f"per-cluster fixed cost >= {summary['cluster_fixed_train_ms_min']:.3f} ms (fwd+bwd)"
    )
    click.echo(f"alignment  cutoffs rounded to multiples of {prof.alignment}")
    click.echo(f"wrote      {output}")
