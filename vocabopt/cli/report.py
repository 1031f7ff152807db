"""`vocabopt report`: any of a user's artifacts -> one self-contained HTML page (vocabopt.html_report)."""

from __future__ import annotations

import click

from ._common import echo_json, handle_errors
from .group import main


@main.command("report")
@click.argument("paths", metavar="ARTIFACT...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default="report.html", show_default=True, help="HTML to write."
)
@click.option("--title", default="vocabopt report", show_default=True, help="The page's title.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@handle_errors
def report_cmd(paths: tuple[str, ...], output: str, title: str, quiet: bool, as_json: bool) -> None:
    """One HTML file from any of: stats, profile, plan (a tuned plan adds its tune evidence), bench, decode and
    validate JSON. Figures are embedded; the page needs no network and no JavaScript.

    \b
    Example:
      vocabopt report out/stats.json out/plan.json out/bench.json out/validate.json -o out/report.html
    """
    from ..artifacts import atomic_write_bytes, check_writable
    from ..html_report import read_artifact, render

    check_writable(output)  # before loading and rendering, so a bad path fails fast
    loaded = [read_artifact(p) for p in paths]
    page = render(loaded, title=title, sources=list(paths))
    atomic_write_bytes(output, page.encode("utf-8"))
    if as_json:
        echo_json({"output": output, "artifacts": [type(a).__name__ for a in loaded], "bytes": len(page.encode())})
    elif not quiet:
        kinds = ", ".join(type(a).__name__ for a in loaded)
        click.echo(f"wrote {output} ({kinds}; {len(page.encode()) / 1e6:.1f} MB, self-contained)")
