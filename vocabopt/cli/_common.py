"""Helpers shared by the CLI verbs: error reporting, JSON output, the -q/--json options, progress on stderr.

Every verb has `-q/--quiet` (no progress, warnings or "wrote" lines; the result itself is still printed) and
`--json` (the result, or the paths written, as JSON on stdout); tests/test_cli_consistency.py checks it.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from ..errors import VocabOptError

QUIET_HELP = "No progress, warnings or 'wrote' lines on stderr/stdout; the result itself is still printed."
quiet_option = click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result (or the paths written) as JSON.")


def handle_errors(fn: Callable) -> Callable:
    """Turn vocabopt's errors into one-line `Error: ...` messages (exit 1) and Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VocabOptError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted; no output written.", err=True)
            sys.exit(128 + signal.SIGINT)

    return wrapper


def int_list(ctx: Any, param: Any, value: str | None) -> list[int] | None:
    """click callback: "2000,10000" -> [2000, 10000] (None stays None)."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 2000,10000, got {value!r}") from None


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class ProgressBar:
    """A one-line progress display on stderr: bytes, tokens/s, ETA when the total size is known."""

    def __init__(self, label: str, enabled: bool = True, min_interval: float = 0.2) -> None:
        self.label, self.enabled, self.min_interval = label, enabled and sys.stderr.isatty(), min_interval
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done_bytes: int, total_bytes: int | None, tokens: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < self.min_interval:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        parts = [f"{self.label}: {human_bytes(done_bytes)}"]
        if total_bytes:
            frac = min(done_bytes / total_bytes, 1.0)
            filled = int(frac * 24)
            parts[0] = f"{self.label} [{'#' * filled}{'.' * (24 - filled)}] {frac:5.1%} {human_bytes(done_bytes)}"
            if 0 < frac < 1:
                parts.append(f"ETA {elapsed * (1 - frac) / frac:4.0f}s")
        parts.append(f"{human_bytes(done_bytes / elapsed)}/s")
        parts.append(f"{tokens / elapsed / 1e6:.2f}M tok/s")
        sys.stderr.write("\r" + "  ".join(parts) + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


class StepProgress:
    """Progress of a counted job (done / total) on stderr: a live line on a terminal, else a line every few seconds.

    Logs (CI, `nohup`, a pipe) then still show that a long measurement is alive and how far it is.
    """

    def __init__(self, label: str, enabled: bool = True, every_s: float = 5.0) -> None:
        self.label, self.enabled, self.every_s = label, enabled, every_s
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        line = f"{self.label}: {done}/{total} ({done / max(total, 1):.0%}, {now - self.start:.0f} s)"
        if self.tty:
            sys.stderr.write(f"\r{line}\x1b[K")
            self.shown = True
        elif now - self.last >= self.every_s or done >= total:
            sys.stderr.write(line + "\n")
            self.last = now
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False
