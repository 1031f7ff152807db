"""The `vocabopt` command line: one thin module per pipeline verb, registered on one click group.

Each verb parses flags, calls one library function, prints a short summary (or --json), writes the artifact.
Library errors (vocabopt.errors) become one-line messages with exit code 1; anything else is a bug.
"""

from __future__ import annotations

import click

from ..version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vocabopt")
def main() -> None:
    """Design the output layer of a large-vocabulary language model.

    Pipeline: analyze (corpus -> stats) -> profile (device -> profile) -> optimize (-> plan) -> export (-> layer).
    """


# Verbs register themselves on `main` when imported; one module per verb (or family of verbs).
from . import analyze as _analyze  # noqa: E402,F401
from . import bench as _bench  # noqa: E402,F401
from . import export as _export  # noqa: E402,F401
from . import optimize as _optimize  # noqa: E402,F401
from . import profile as _profile  # noqa: E402,F401
from . import validate as _validate  # noqa: E402,F401
