"""`vocabopt plan`: one command from a corpus to an exported head — analyze, profile, optimize, export, report.

Inputs: corpus sources, a tokenizer, the hidden width, and a device profile (a file, this device's cached one, or one
measured now with --measure). Outputs, in OUTDIR under fixed names so that each stage can be re-run alone with its
own verb: stats.json (analyze), device.json (profile), plan.json (optimize), adaptive_head.py (export) and
report.html (report), each with its sidecars. Calls the library functions the single verbs call (no subprocesses);
progress goes to stderr, the paths written to stdout (or --json).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..artifacts import atomic_write_bytes, check_writable
from ..device import DTYPES
from ..html_report import render
from ..optimize import optimize
from ..profile import DeviceProfile
from ..stats import CorpusStats
from ._common import echo_json, handle_errors
from .analyze import _corpus_options, _run_analyze
from .group import main
from .optimize import BATCH_TOKENS
from .profile import planning_profile

# Stage -> the file it leaves in OUTDIR (sidecars sit beside these).
OUTPUTS = {
    "analyze": "stats.json",
    "profile": "device.json",
    "optimize": "plan.json",
    "export": "adaptive_head.py",
    "report": "report.html",
}


class _Stages:
    """Progress lines on stderr: "[2/5] profile ..." when a stage starts, its seconds when it ends."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.n, self.t0 = quiet, 0, 0.0

    def start(self, name: str, what: str) -> None:
        self.n += 1
        self.t0 = time.perf_counter()
        if not self.quiet:
            click.echo(f"[{self.n}/{len(OUTPUTS)}] {name}: {what}", err=True)

    def done(self, note: str = "") -> None:
        if not self.quiet:
            click.echo(f"      done in {time.perf_counter() - self.t0:.1f} s{note}", err=True)


@main.command("plan")
@click.argument("sources", nargs=-1, required=True)
@click.option("-t", "--tokenizer", required=True, help="The tokenizer (any format `vocabopt analyze -t` takes).")
@click.option("--hidden", type=int, required=True, help="Width d of the hidden states fed to the output layer.")
@click.option(
    "--batch-tokens", type=int, default=BATCH_TOKENS, show_default=True, help="Tokens per step N to optimize for."
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False),
    help="A DeviceProfile (configs/devices/*.json, vocabopt profile). [default: this device's cached profile, "
    "measured once if there is none]",
)
@click.option("--measure", is_flag=True, help="Measure this device now (quick grid) even if a profile is cached.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None, help="Device to profile.")
@click.option("--dtype", type=click.Choice(list(DTYPES)), default=None, help="dtype to profile. [default: float32]")
@click.option("--mode", type=click.Choice(["train", "infer"]), default="train", show_default=True)
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False), help="Directory for every artifact.")
@click.option("--json", "as_json", is_flag=True, help="Print the paths written and the plan's summary as JSON.")
@_corpus_options
@handle_errors
def plan_cmd(
    sources: tuple[str, ...],
    *,
    tokenizer: str,
    hidden: int,
    batch_tokens: int,
    profile_path: str | None,
    measure: bool,
    device: str | None,
    dtype: str | None,
    mode: str,
    outdir: str,
    as_json: bool,
    quiet: bool,
    **corpus_kw: Any,
) -> None:
    """Corpus to exported head in one command: analyze -> profile -> optimize -> export -> report.

    Every stage's artifact stays in OUTDIR under a fixed name (stats.json, device.json, plan.json, adaptive_head.py,
    report.html), so any stage can be re-run alone with its own verb.

    \b
    Example:
      vocabopt plan corpora/kjv.txt -t corpora/kjv-bpe-8k/tokenizer.json --hidden 512 -o out/kjv
    """
    if profile_path and measure:
        raise click.UsageError("--profile and --measure exclude each other: give a profile, or measure this device")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {stage: out / name for stage, name in OUTPUTS.items()}
    for path in paths.values():
        check_writable(path)  # before minutes of work, so a bad OUTDIR fails fast
    stages = _Stages(quiet or as_json)
    stats = _analyze(stages, sources, tokenizer, paths["analyze"], quiet or as_json, corpus_kw)
    stages.start("profile", profile_path or ("measure this device" if measure else "this device's cached profile"))
    prof, source = planning_profile(profile_path, device, dtype, refresh=measure, quiet=quiet or as_json)
    prof.save(paths["profile"])
    stages.done(f": {prof.describe()} (from {source})")
    stages.start("optimize", f"d={hidden}, N={batch_tokens:,} tokens, mode={mode}")
    plan = optimize(
        stats,
        hidden=hidden,
        profile=prof,
        batch_tokens=batch_tokens,
        mode=mode,
        paths={"stats": str(paths["analyze"]), "profile": str(paths["profile"])},
    )
    plan.save(paths["optimize"])
    stages.done(f": cutoffs {plan.cutoffs}, proj_dims {plan.proj_dims}")
    stages.start("export", "the standalone layer")
    from ..export import export_layer  # imports torch: not at start-up, which every command pays

    written = export_layer(plan, paths["export"])
    stages.done()
    stages.start("report", "one HTML page")
    page = render([stats, prof, plan], title="vocabopt plan", sources=[str(paths[s]) for s in OUTPUTS if s != "report"])
    atomic_write_bytes(paths["report"], page.encode("utf-8"))
    stages.done()
    _print_result(plan, prof, stats, {**paths, "export": written[-1]}, as_json=as_json, quiet=quiet)


def _analyze(
    stages: _Stages, sources: tuple[str, ...], tokenizer: str, path: Path, quiet: bool, kw: dict[str, Any]
) -> CorpusStats:
    stages.start("analyze", f"{len(sources)} source(s) with {tokenizer}")
    stats = _run_analyze(sources, tokenizer, quiet, **kw)
    stats.save(path)
    stages.done(f": {stats.total:,} tokens, {stats.vocab_size:,} ids")
    return stats


def _print_result(
    plan: Any, prof: DeviceProfile, stats: CorpusStats, paths: dict[str, Path], *, as_json: bool, quiet: bool
) -> None:
    p = plan.predicted
    if as_json:
        echo_json(
            {
                "written": {stage: str(path) for stage, path in paths.items()},
                "cutoffs": plan.cutoffs,
                "proj_dims": plan.proj_dims,
                "predicted_ms": p["plan"]["time_ms"],
                "full_softmax_ms": p["full_softmax"]["time_ms"],
                "speedup": p["speedup"],
                "capacity": plan.capacity,
                "profile": prof.describe(),
                "total_tokens": stats.total,
            }
        )
        return
    click.echo(
        f"plan: cutoffs {plan.cutoffs}, proj_dims {plan.proj_dims}: {p['plan']['time_ms']:.2f} ms vs full softmax "
        f"{p['full_softmax']['time_ms']:.2f} ms ({p['speedup']:.2f}x, predicted on {prof.describe()})"
    )
    if quiet:
        return
    for stage, path in paths.items():
        click.echo(f"wrote {stage:<9} {path}")
    click.echo(f"re-run a stage alone, e.g.: vocabopt optimize {paths['analyze']} --hidden {plan.hidden} ...")
