"""`vocabopt bench`: measure the plan's layer on this device next to the cost model, full softmax and ALSWL."""

from __future__ import annotations

import sys
import time

import click

from ..artifacts import check_writable
from ._common import echo_json, handle_errors, human_bytes
from .group import main

PROGRESS_EVERY_S = 5.0  # without a terminal: one progress line at most this often (a log, a CI job)


@main.command("bench")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
@click.option("--batch-tokens", type=int, default=None, help="Tokens per step N. Default: the plan's.")
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A DeviceProfile for the predicted column (default: none, predictions omitted).",
)
@click.option("--reps", type=int, default=7, show_default=True, help="Timed steps per method.")
@click.option(
    "--mode",
    type=click.Choice(["train", "infer"]),
    default="train",
    show_default=True,
    help="train: fwd+bwd of a training step; infer: per-token decode latency (exactness checked) vs the full lm_head.",
)
@click.option("--batch", "batches", default="1,8,64", show_default=True, help="infer: rows per call, comma-separated.")
@click.option(
    "--decode",
    "decodes",
    default="greedy,topk,sample",
    show_default=True,
    help="infer: comma-separated from greedy, topk, sample (T 0.7 and 1.0, with and without top-k), topp.",
)
@click.option("--top-k", "top_k", type=int, default=50, show_default=True, help="infer: k of topk and top-k sampling.")
@click.option("--top-p", "top_p", type=float, default=0.9, show_default=True, help="infer: nucleus mass of topp.")
@click.option("--no-full", is_flag=True, help="Skip the full softmax rows (seconds per step on a CPU at V=50K).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write the result JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print predicted and measured figures per row as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or 'wrote' lines on stderr/stdout; the table stays.")
@handle_errors
def bench_cmd(
    plan_path: str,
    device: str,
    dtype: str,
    batch_tokens: int | None,
    profile_path: str | None,
    reps: int,
    mode: str,
    batches: str,
    decodes: str,
    top_k: int,
    top_p: float,
    no_full: bool,
    output: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Time forward+backward of the layer designed by PLAN, with targets drawn from its frequency distribution.

    Example: vocabopt bench out/plan.json --profile out/device.json -o out/bench.json
    """
    from ..bench import bench
    from ..plan import Plan
    from ..profile import DeviceProfile, mismatch_warnings

    for path in (output,):
        if path:
            check_writable(path)  # before minutes of work, so a bad path fails fast
    plan = Plan.load(plan_path)
    if mode == "infer":
        _infer(plan, device, batches, decodes, top_k, top_p, reps, not no_full, output, as_json)
        return
    prof = DeviceProfile.load(profile_path) if profile_path else None
    if prof is not None:
        for w in mismatch_warnings(prof, None if device == "auto" else device, dtype):
            click.echo(f"Warning: {w}", err=True)
    progress = _Progress(quiet)
    try:
        result = bench(
            plan,
            device=device,
            dtype=dtype,
            batch_tokens=batch_tokens,
            profile=prof,
            reps=reps,
            full_softmax=not no_full,
            progress=progress,
        )
    finally:
        progress.close()
    if output:
        result.save(output)
    if as_json:
        echo_json(result.to_json())
        return
    _print_table(result)
    if output and not quiet:
        click.echo(f"wrote {output}")


def _print_table(result) -> None:
    from ..bench import noise_warnings

    click.echo(f"{result.device}, {result.dtype}, N={result.batch_tokens}, d={result.hidden}, V={result.vocab_size}")
    click.echo(
        f"{'method':<34}{'median ms':>10}{'p20-p80 ms':>16}{'predicted':>10}{'error':>7}{'vs full':>9}"
        f"{'saved':>10}{'step peak':>11}{'resident':>10}"
    )
    full = result.row("full softmax")
    size = lambda b: human_bytes(b) if b is not None else "-"  # noqa: E731
    for r in result.rows:
        pred = f"{r.predicted_ms:.1f}" if r.predicted_ms is not None else "-"
        err = f"{r.error:+.0%}" if r.error is not None else "-"
        vs = f"{full.measured_ms / r.measured_ms:.2f}x" if full else "-"
        spread = f"{r.p20_ms:.1f}-{r.p80_ms:.1f}"
        click.echo(
            f"{r.method:<34}{r.measured_ms:>10.1f}{spread:>16}{pred:>10}{err:>7}{vs:>9}"
            f"{human_bytes(r.saved_bytes):>10}{size(r.peak_bytes):>11}{size(r.resident_bytes):>10}"
        )
    click.echo(
        "saved: kept from forward to backward; step peak: one whole fwd+bwd above the memory in use before it "
        f"({result.environment.get('peak_memory') or 'not measured'}); resident: kept between steps "
        "(parameters, gradients, buffers, scratch)"
    )
    for note in result.notes:
        click.echo(note)
    for w in noise_warnings(result.rows):
        click.echo(f"Warning: {w}", err=True)


class _Progress:
    """Progress of a bench on stderr: a live line on a terminal, else a line every PROGRESS_EVERY_S seconds."""

    def __init__(self, quiet: bool = False) -> None:
        self.tty, self.start, self.last, self.live = sys.stderr.isatty(), time.monotonic(), None, False
        self.quiet = quiet

    def __call__(self, method: str, done: int, rounds: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty and self.last is not None and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        what = f"round {done}/{rounds}, {method} timed" if done else f"warm-up, {method} ran"
        line = f"bench: {what}, {now - self.start:.0f} s elapsed"
        if self.tty:
            click.echo("\r" + line + "\x1b[K", err=True, nl=False)
            self.live = True
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.live:
            click.echo("", err=True)


def _infer(plan, device, batches, decodes, top_k, top_p, reps, full, output, as_json) -> None:
    from ..decode import bench_decode
    from ..errors import InputError

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"--batch {batches!r}: expected comma-separated integers, e.g. --batch 1,8,64") from None
    names = [d.strip() for d in decodes.split(",") if d.strip()]
    result = bench_decode(plan, device=device, batches=sizes, decodes=names, k=top_k, top_p=top_p, reps=reps, full=full)
    if output:
        result.save(output)
    if as_json:
        echo_json(result.to_json())
        return
    click.echo(f"{result.device}, d={result.hidden}, V={result.vocab_size}: ms per token (per call / batch)")
    click.echo(
        f"{'decode':<24}{'batch':>6}{'vocabopt':>11}{'layout':>14}{'full':>11}{'layout':>14}{'speed-up':>10}"
        f"{'tails run/skipped':>19}"
    )
    for decode, batch in dict.fromkeys((r.decode, r.batch) for r in result.rows):
        r, full_row = result.row(decode, batch), result.row(decode, batch, "full lm_head")
        f, fl = (f"{full_row.ms_per_token:.3f}", full_row.layout) if full_row else ("-", "-")
        up = f"{result.speedup(decode, batch):.1f}x" if full_row else "-"
        tails = f"{r.tails_evaluated}/{r.tails_skipped}"
        click.echo(f"{decode:<24}{batch:>6}{r.ms_per_token:>11.3f}{r.layout:>14}{f:>11}{fl:>14}{up:>10}{tails:>19}")
    click.echo("each head in its fastest weight layout; every adaptive decode was checked against the head's own")
    click.echo("full log_prob in this run")
    if output:
        click.echo(f"wrote {output}")
