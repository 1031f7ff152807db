"""The click group every verb registers on (its own module, so the verbs need not import the package)."""

from __future__ import annotations

import click

from ..version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vocabopt")
def main() -> None:
    """Design the output layer of a large-vocabulary language model.

    Pipeline: analyze (corpus -> stats) -> profile (device -> profile) -> optimize (-> plan) -> export (-> layer).
    """
