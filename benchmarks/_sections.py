"""Shared by the optimizer's benchmarks: machine facts, and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    import torch

    from vocabopt.device import device_name

    return f"{device_name('cpu').removeprefix('cpu: ')}, torch {torch.__version__}, {datetime.date.today()}"


def command() -> str:
    return "python " + " ".join(["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]])


def write_section(heading: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) the section `## heading` of docs/benchmarks.md, leaving other sections alone."""
    marker = f"## {heading}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(marker + "\n")
    section = f"{marker}\n\n{body.strip()}\n"
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[nxt:] if nxt >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
