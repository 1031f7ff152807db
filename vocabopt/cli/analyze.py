"""`vocabopt analyze`, `vocabopt merge` and `vocabopt compare`: corpus statistics."""

from __future__ import annotations

import click

from .. import analyze as analyze_corpus
from .. import compare as compare_stats
from ..artifacts import atomic_write_bytes, check_writable
from ..corpus.words import word_tokenizer_json
from ..errors import InputError
from ..plots import rank_frequency_png
from ..report import compare_text, summary_text
from ..stats import CorpusStats, merge
from ._common import ProgressBar, echo_json, handle_errors, quiet_option
from .group import main


def _corpus_options(fn):
    """Options shared by analyze and compare."""
    options = [
        click.option("--dataset", metavar="PATH", help="A local datasets folder (save_to_disk, or data files)."),
        click.option("--split", default="train", show_default=True, help="Split of --dataset."),
        click.option("--field", metavar="NAME", help="Text field of records (dotted for nested). [default: text]"),
        click.option(
            "--sequence",
            type=click.Choice(["line", "document"]),
            help="What one sequence is: document = a blank-line-separated block with its newlines, or a record (as "
            "a model trains on it); line = each line without its newline. [default: document]",
        ),
        click.option(
            "--add-special-tokens/--no-add-special-tokens",
            default=True,
            show_default=True,
            help="Count post-processor tokens ([CLS], <s>, ...) once per sequence.",
        ),
        click.option("--min-count", type=int, default=1, show_default=True, help="Word tokenizer: prune rarer."),
        click.option("--max-vocab", type=int, help="Word tokenizer: keep at most this many ids (with <unk>)."),
        click.option("--skip-bad-lines", is_flag=True, help="Skip (and count) malformed JSON lines."),
        click.option("--limit-bytes", type=int, metavar="N", help="Stop after about N bytes of text."),
        click.option("--limit-tokens", type=int, metavar="N", help="Stop after about N tokens (batch boundary)."),
        click.option(
            "--engine",
            type=click.Choice(["local", "dask"]),
            default="local",
            show_default=True,
            help="Count on this machine, or on a Dask cluster (pip install 'vocabopt[dask]'); same result.",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="--engine dask: the scheduler (tcp://HOST:8786) [default: a local cluster].",
        ),
        click.option(
            "--workers",
            type=int,
            help="Processes, or the local Dask cluster's workers [default: all cores; local engine: over 24 MB].",
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar, warnings or 'wrote' lines."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run_analyze(sources, tokenizer, quiet, **kw) -> CorpusStats:
    bar = ProgressBar("analyze", enabled=not quiet)
    warnings: list[str] = []
    try:
        stats = analyze_corpus(list(sources), tokenizer, progress=bar, on_warning=warnings.append, **kw)
    finally:
        bar.close()
    if not quiet:
        for w in warnings:
            click.echo(f"Warning: {w}", err=True)
    return stats


@main.command()
@click.argument("sources", nargs=-1)
@click.option(
    "-t",
    "--tokenizer",
    default="bytes",
    show_default=True,
    help="A tokenizer.json, a transformers folder, a SentencePiece .model, a tiktoken rank file (a known name "
    "such as cl100k_base.tiktoken, or FILE.regex beside it), a tekken .json, 'word', or 'bytes'.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write CorpusStats here (JSON + .npy).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the rank-frequency plot (PNG) here.")
@click.option(
    "--save-tokenizer",
    type=click.Path(dir_okay=False),
    help="Word tokenizer: write the tokenizer.json whose ids match the stats.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_corpus_options
@handle_errors
def analyze(sources, tokenizer, output, plot, save_tokenizer, as_json, quiet, **kw):
    """Count a corpus's tokens exactly and fit Zipf's law.

    SOURCES: files, directories, globs, fsspec URLs (s3://...), or - for stdin (.gz/.bz2/.xz, .jsonl, .parquet,
    .arrow understood).

    Example: vocabopt analyze corpora/kjv.txt -t corpora/kjv-bpe-8k/tokenizer.json -o stats.json --plot rank.png
    """
    if save_tokenizer and tokenizer != "word":
        raise InputError("--save-tokenizer: only for --tokenizer word (other tokenizers already have a file)")
    for path in (output, plot, save_tokenizer):
        if path:
            check_writable(path)  # before the run, so a bad output path fails fast and nothing is written
    stats = _run_analyze(sources, tokenizer, quiet, **kw)
    # Everything is rendered before the first write, so a failure leaves no partial set of outputs behind.
    png = rank_frequency_png(stats) if plot else None
    tok_json = _word_tokenizer_json(stats) if save_tokenizer else None
    if output:
        stats.save(output)
    if plot:
        atomic_write_bytes(plot, png)
    if save_tokenizer:
        atomic_write_bytes(save_tokenizer, tok_json)
    if as_json:
        echo_json(
            {
                "summary": stats.summary(),
                "under_trained": stats.under_trained(),
                "fits": stats.fits,
                "tokenizer": stats.tokenizer.__dict__,
                "options": stats.options,
                "output": output,
                "plot": plot,
            }
        )
        return
    click.echo(summary_text(stats))
    for what, path in () if quiet else (("stats", output), ("plot", plot), ("tokenizer", save_tokenizer)):
        if path:
            click.echo(f"wrote {what}: {path}")


def _word_tokenizer_json(stats: CorpusStats) -> bytes:
    if stats.tokenizer.kind != "word":
        raise InputError("--save-tokenizer: only for --tokenizer word (other tokenizers already have a file)")
    return word_tokenizer_json(stats.tokens).encode("utf-8")


@main.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Merged CorpusStats.")
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def merge_cmd(inputs, output, quiet, as_json):
    """Sum the stats of shards counted with the same tokenizer.

    Example: vocabopt merge shard1.json shard2.json -o all.json
    """
    check_writable(output)
    merged = merge([CorpusStats.load(p) for p in inputs])
    merged.save(output)
    if as_json:
        echo_json({"summary": merged.summary(), "fits": merged.fits, "output": output})
        return
    click.echo(summary_text(merged))
    if not quiet:
        click.echo(f"wrote stats: {output}")


@main.command("compare")
@click.argument("sources", nargs=-1)
@click.option(
    "-t",
    "--tokenizer",
    "tokenizers",
    multiple=True,
    required=True,
    help="Repeat for each tokenizer (any format -t of analyze takes); or saved stats (*.json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@_corpus_options
@handle_errors
def compare_cmd(sources, tokenizers, as_json, quiet, **kw):
    """Compare tokenizers on the same corpus: bytes/token, unused ids, k for 90% coverage, entropy.

    Example: vocabopt compare corpora/kjv.txt -t corpora/kjv-bpe-8k/tokenizer.json -t word -t bytes
    """
    stats = [_run_analyze(sources, t, quiet, **kw) for t in tokenizers]
    rows = compare_stats(stats)
    if as_json:
        echo_json(rows)
    else:
        click.echo(compare_text(rows))
