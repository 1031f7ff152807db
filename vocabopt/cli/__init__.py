"""The `vocabopt` command line: one thin module per pipeline verb, registered on one click group.

Each verb parses flags, calls one library function, prints a short summary (or --json), writes the artifact.
Library errors (vocabopt.errors) become one-line messages with exit code 1; anything else is a bug.
"""

from __future__ import annotations

# Verbs register themselves on `main` (cli/group.py) when imported; one module per verb (or family of verbs).
from . import (  # noqa: F401
    analyze,
    bench,
    convert,
    drift,
    expand,
    export,
    optimize,
    plan,
    profile,
    replan,
    report,
    tune,
    validate,
)
from .group import main

__all__ = ["main"]
