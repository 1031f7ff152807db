"""The `analyze` stage: a corpus and a tokenizer in, CorpusStats out.

Inputs: sources (files, directories, globs, fsspec URLs, stdin; see vocabopt.corpus.files) and a tokenizer spec
(a tokenizer.json, transformers folder, SentencePiece .model, tiktoken rank file, tekken JSON, `word` or `bytes`;
see vocabopt.corpus.tokenizer).
Outputs: `CorpusStats` with exact counts indexed by the tokenizer's ids, totals, summary statistics and Zipf fits.
The machinery lives in vocabopt.corpus. Two engines fill one `Tally` (counts and totals that add up across parts of
a corpus): local (corpus.pool: the main process reads and batches text, worker processes count batches) and Dask
(corpus.cluster: tasks on a cluster each read and count one part of the corpus; their tallies are summed in a tree).
Memory is bounded by the vocabulary, the distinct chunks per worker and the batches in flight, not by corpus size.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .corpus.cluster import count_on_cluster
from .corpus.counters import CountOptions
from .corpus.files import SourceInfo, file_kind, resolve, source_list
from .corpus.pool import count_local
from .corpus.reader import SourceOptions
from .corpus.tally import Progress, Tally
from .corpus.tokenizer import TokenizerSpec, config_of, load_spec, shared_tokenizer
from .corpus.vocab import byte_token_strings, token_strings
from .corpus.words import build_word_vocab
from .errors import InputError
from .stats import CorpusStats, TokenizerInfo

log = logging.getLogger(__name__)


def analyze(
    sources: list[str] | str = (),
    tokenizer: str = "bytes",
    *,
    dataset: str | None = None,
    split: str = "train",
    field: str | None = None,
    sequence: str | None = None,
    add_special_tokens: bool = True,
    min_count: int = 1,
    max_vocab: int | None = None,
    skip_bad_lines: bool = False,
    limit_bytes: int | None = None,
    limit_tokens: int | None = None,
    workers: int | None = None,
    engine: str = "local",
    scheduler: str | None = None,
    partition_bytes: int | None = None,
    progress: Progress | None = None,
    on_warning: Callable[[str], None] | None = None,
    force_path: str | None = None,
) -> CorpusStats:
    """Count the tokens of a corpus exactly, with the tokenizer's own ids.

    Args:
        sources: files, directories, globs, fsspec URLs (s3://..., file://...) or "-" (stdin).
        tokenizer: a tokenizer.json, a transformers folder, a SentencePiece .model, a tiktoken rank file (with its
            regex), a tekken JSON (see vocabopt.corpus.formats), "word", or "bytes".
        dataset: a local `datasets` folder (save_to_disk, or data files load_dataset can stream).
        split: the dataset split to read.
        field: text field of JSON-lines/parquet/arrow/dataset records (dotted for nested fields).
        sequence: "document" (the default: a blank-line-separated block of a text file with its newlines, or one
            record, as a language model is trained on it) or "line" (each line without its newline).
        add_special_tokens: count the post-processor's special tokens once per sequence.
        min_count, max_vocab: prune the word vocabulary (`tokenizer="word"`); pruned words count as <unk>.
        skip_bad_lines: skip malformed JSON lines (counted in the stats) instead of failing.
        limit_bytes, limit_tokens: stop after about this much text / these many tokens (at a batch boundary).
        workers: processes to count with (default: all cores; small corpora are counted in-process); with
            `engine="dask"` and no scheduler, the workers of the local Dask cluster (default: all cores).
        engine: "local" (this machine) or "dask" (a Dask cluster; see docs/distributed.md). Both give the same stats.
        scheduler: the Dask scheduler's address (tcp://HOST:8786); None starts a local cluster.
        partition_bytes: Dask engine: plain-text files larger than this are split into byte ranges of about this
            size (default: about 4 ranges per worker thread, 1-64 MiB each).
        progress: called as progress(bytes_done, bytes_total_or_None, tokens_so_far).
        on_warning: called with one-line warnings (empty sources, replaced bytes).
        force_path: "chunks" | "pretokens" | "encode", to compare the counting paths (tests).

    Example:
        >>> stats = analyze(["corpora/kjv.txt"], tokenizer="corpora/kjv-bpe-8k/tokenizer.json")
        >>> stats.summary()["k_for_coverage"]["0.9"]  # ids needed to cover 90% of tokens
    """
    engine_options = _Engine(engine, scheduler=scheduler, workers=workers, partition_bytes=partition_bytes)
    _check_arguments(sequence, engine_options, limit_bytes=limit_bytes, limit_tokens=limit_tokens)
    paths = _resolve_sources(sources, dataset, engine)
    spec = load_spec(tokenizer, min_count=min_count, max_vocab=max_vocab)
    count_options = CountOptions(spec, add_special_tokens=add_special_tokens, force_path=force_path)
    source_options = SourceOptions(
        field=field, sequence=sequence, skip_bad_lines=skip_bad_lines, dataset_split=split, limit_chars=limit_bytes
    )
    warn = on_warning or (lambda msg: log.warning(msg))
    tally = _count(
        engine_options,
        paths,
        dataset,
        source_options,
        count_options,
        limit_tokens=limit_tokens,
        progress=progress,
        warn=warn,
    )
    if tally.n_tokens == 0:
        names = ", ".join(paths + ([dataset] if dataset else []))
        raise InputError(
            f"{names}: no text found (empty corpus); check the sources" + (" and --field" if field or dataset else "")
        )
    infos = _source_infos(tally, paths + ([dataset] if dataset is not None else []), warn)
    options = _recorded_options(source_options, count_options, tally, dataset=dataset, limit_tokens=limit_tokens)
    if engine == "dask":
        options["engine"] = "dask"
    stats = _corpus_stats(tally, spec, infos, options, min_count=min_count, max_vocab=max_vocab)
    _report_counting(stats, tally, spec, paths, source_options.sequence or "document", warn)
    return stats


def _report_counting(
    stats: CorpusStats, tally: Tally, spec: TokenizerSpec, paths: list[str], sequence: str, warn: Callable[[str], None]
) -> None:
    """Log a switch to plain encoding (timing: kept out of the stats); warn of whitespace tokens left uncounted."""
    if tally.switched:
        log.info(
            "%d of %d sequences counted by encode_batch_fast: the %s path measured slower on this corpus",
            tally.switched,
            tally.n_sequences,
            stats.options["count_path"],
        )
    if spec.kind == "hf":
        _warn_uncounted_whitespace(stats, spec, paths, sequence, warn)


@dataclass(frozen=True)
class _Engine:
    """Where the counting runs: "local" (this machine's worker processes) or "dask" (a Dask cluster)."""

    name: str = "local"
    scheduler: str | None = None  # dask: the scheduler's address; None: a local cluster
    workers: int | None = None  # processes (local), or the local Dask cluster's workers
    partition_bytes: int | None = None  # dask: the size of a file's byte ranges


def _count(
    engine: _Engine,
    paths: list[str],
    dataset: str | None,
    source_options: SourceOptions,
    count_options: CountOptions,
    *,
    limit_tokens: int | None,
    progress: Progress | None,
    warn: Callable[[str], None],
) -> Tally:
    """The tally of the whole corpus, by the engine asked for; both warn of empty sources in the same order."""
    if engine.name == "local":
        return count_local(
            paths,
            dataset,
            source_options=source_options,
            count_options=count_options,
            workers=engine.workers,
            limit_tokens=limit_tokens,
            progress=progress,
            on_warning=warn,
        )
    tally = count_on_cluster(
        paths,
        dataset,
        source_options=source_options,
        count_options=count_options,
        scheduler=engine.scheduler,
        workers=engine.workers,
        partition_bytes=engine.partition_bytes,
        progress=progress,
    )
    for i, path in enumerate(paths):  # what the local reader warns while reading, in the same order
        if tally.source(i)[1] == 0:
            warn(f"{path}: no text (empty source)")
    return tally


def _resolve_sources(sources: list[str] | str, dataset: str | None, engine: str) -> list[str]:
    """The files to read, in order; InputError when there is nothing to read or the engine cannot read it."""
    paths = resolve(source_list(sources))
    if not paths and dataset is None:
        raise InputError("no sources given; pass files, directories, globs, '-' or --dataset PATH")
    if engine == "dask" and "-" in paths:
        raise InputError(
            "'-' (stdin) with --engine dask: cluster workers cannot read this process's stdin; "
            "save the text to a file the workers can read, or use --engine local"
        )
    return paths


def _check_arguments(
    sequence: str | None, engine: _Engine, *, limit_bytes: int | None, limit_tokens: int | None
) -> None:
    """InputError, naming the flag and the fix, for a value or combination no engine can count exactly."""
    if sequence not in (None, "line", "document"):
        raise InputError(f"--sequence {sequence!r}: use 'line' or 'document'")
    for flag, limit in (("--limit-bytes", limit_bytes), ("--limit-tokens", limit_tokens)):
        if limit is not None and limit < 1:
            raise InputError(f"{flag} {limit}: must be at least 1 (or leave it out to count everything)")
    if engine.name not in ("local", "dask"):
        raise InputError(f"--engine {engine.name!r}: use 'local' or 'dask'")
    if engine.name == "local":
        if engine.scheduler is not None:
            raise InputError("--scheduler is for --engine dask; add --engine dask or leave out --scheduler")
        return
    for flag, limit in (("--limit-bytes", limit_bytes), ("--limit-tokens", limit_tokens)):
        if limit is not None:
            raise InputError(
                f"{flag} with --engine dask: a limit stops at a point of a sequential read, which "
                "parts counted in parallel do not have, so the result would not be exact; "
                "use --engine local with a limit"
            )
    if engine.scheduler is not None and engine.workers is not None:
        raise InputError(
            "--workers with --scheduler: the cluster's size is set where its workers start "
            "(`dask worker ... --nworkers N`); leave out --workers"
        )
    if engine.workers is not None and engine.workers < 1:
        raise InputError(f"--workers {engine.workers}: must be at least 1")
    if engine.partition_bytes is not None and engine.partition_bytes < 1:
        raise InputError(f"partition_bytes {engine.partition_bytes}: must be at least 1")


def _source_infos(tally: Tally, names: list[str], warn: Callable[[str], None]) -> list[SourceInfo]:
    """One SourceInfo per source (the dataset last) from the tally, warning of replaced bytes."""
    infos = [SourceInfo(path=name, bytes=0) for name in names]
    for i, info in enumerate(infos):
        info.bytes, info.sequences, info.replaced_bytes, info.skipped_lines = tally.source(i)
        if info.replaced_bytes:
            warn(f"{info.path}: {info.replaced_bytes} bytes of invalid UTF-8 decoded as U+FFFD")
    return infos


def _corpus_stats(
    tally: Tally,
    spec: TokenizerSpec,
    infos: list[SourceInfo],
    options: dict[str, Any],
    *,
    min_count: int,
    max_vocab: int | None,
) -> CorpusStats:
    """The artifact: the tally's counts by id (the word vocabulary built and pruned now, on the global counts)."""
    counts: np.ndarray | None
    if spec.kind == "word":
        counts, tokens = build_word_vocab(tally.words, min_count, max_vocab)
    elif spec.kind == "bytes":
        counts, tokens = tally.counts, byte_token_strings()
    else:
        counts, tokens = tally.counts, token_strings(spec)
    assert counts is not None
    stats = CorpusStats(
        counts=counts,
        tokens=tokens,
        tokenizer=TokenizerInfo(kind=spec.kind, name=spec.name, sha256=spec.sha256, vocab_size=int(counts.size)),
        sources=infos,
        options=options,
        n_sequences=tally.n_sequences,
        n_bytes=tally.n_bytes,
        n_words=tally.n_words,
    )
    stats.refit()
    return stats


SAMPLE_CHARS = 1 << 16  # characters of each text file encoded whole to find whitespace tokens a mode leaves out


def _warn_uncounted_whitespace(
    stats: CorpusStats, spec: TokenizerSpec, paths: list[str], sequence: str, warn: Callable[[str], None]
) -> None:
    """Warn when a whitespace token (a newline, a tab, a run of spaces) that the tokenizer emits on the raw text of a
    source (its first SAMPLE_CHARS characters, encoded whole as a model trained on the file would see them) got a
    zero count: the sequence mode left its text out (line mode drops newlines; document mode the blank lines
    between documents). Local plain-text files only: they can be read again cheaply."""
    tok = shared_tokenizer(spec)
    unseen = np.flatnonzero(stats.counts == 0).tolist()
    if _letters_stay(config_of(spec.json).get("decoder")):
        unseen = [i for i in unseen if _may_decode_to_space(stats.tokens[i])]
    # what each unseen whitespace token decodes to: no longer than the text it stands for (a decoder may strip)
    spaces = {t for t in (tok.decode([i], skip_special_tokens=False) for i in unseen) if t and t.isspace()}
    if not spaces:
        return  # no whitespace token to miss: nothing to encode
    for path in paths:
        if path == "-" or "://" in path or file_kind(path) != ("text", None) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace", newline=None) as f:
            sample = f.read(SAMPLE_CHARS)
        normalized = tok.normalizer.normalize_str(sample) if tok.normalizer is not None else sample
        if not any(t in sample or t in normalized for t in spaces):
            continue  # none of them can come out of this text: encoding it (~35 ms) would find nothing
        seen = np.unique(np.asarray(tok.encode(sample, add_special_tokens=False).ids, dtype=np.int64))
        seen = seen[seen < stats.counts.size]
        zero = [i for i in seen[stats.counts[seen] == 0].tolist() if _is_whitespace_token(tok, i)]
        if not zero:
            continue
        names = ", ".join(f"{stats.tokens[i]!r} (id {i}, {tok.decode([i])!r})" for i in zero[:4])
        more = f" and {len(zero) - 4} more" if len(zero) > 4 else ""
        why = (
            "--sequence line drops every newline; count with --sequence document (the default) to see the text "
            "as a model trained on it does"
            if sequence == "line"
            else "blank lines are document boundaries in --sequence document; if training reads each file as "
            "one stream, blank lines included, give each file's text as one JSON-lines record (--field text)"
        )
        warn(f"{path}: whitespace token(s) {names}{more} occur in the raw text but got count 0: {why}")
        return


# Behind decoders that keep a token's ASCII letters and digits (`_letters_stay`), a token whose string holds one
# decodes to text holding it, byte-fallback tokens "<0x0A>" aside: only the others are decoded, ~1.2 us each (ad
# hoc: 4,310 unseen ids of the benchmarks' 32K SentencePiece BPE on kjv.txt, ~5 ms; a 200K vocabulary leaves ~10x
# more unseen). Not so behind a Replace of "<n>" by "\n", CTC's word delimiter "<space>", BPEDecoder's "</w>".
_ALNUM_ASCII = re.compile("[A-Za-z0-9]")
_BYTE_TOKENS = re.compile("(?:<0x[0-9A-Fa-f]{2}>)+")
_KEEPING_DECODERS = {"ByteLevel", "Metaspace", "WordPiece", "ByteFallback", "Fuse", "Strip"}


def _letters_stay(decoder: dict | None) -> bool:
    """Whether a decoder config keeps every ASCII letter and digit of a token (no decoder: the token's string)."""
    if decoder is None:
        return True
    kind = decoder.get("type")
    if kind == "Sequence":
        return all(_letters_stay(d) for d in decoder.get("decoders") or [])
    if kind == "Replace":
        pattern = (decoder.get("pattern") or {}).get("String")
        return isinstance(pattern, str) and not _ALNUM_ASCII.search(pattern)
    if kind == "Strip":  # it removes `content` characters from a token's ends
        return not _ALNUM_ASCII.search(str(decoder.get("content", " ")))
    return kind in _KEEPING_DECODERS


def _may_decode_to_space(token: str) -> bool:
    return not _ALNUM_ASCII.search(token) or _BYTE_TOKENS.fullmatch(token) is not None


def _is_whitespace_token(tok: Any, i: int) -> bool:
    text = tok.decode([i], skip_special_tokens=False)
    return bool(text) and text.isspace()


def _path_report(spec: TokenizerSpec, tally: Tally) -> tuple[str, str]:
    """(counting path, reason) as the counters took and explained it: "+"-joined when sequences took several."""
    if spec.kind not in ("hf", "spm"):
        return spec.kind, tally.path_reason
    used = tally.paths
    main = max(used, key=lambda k: used[k]) if used else "chunks"
    return (main if len(used) <= 1 else "+".join(sorted(used))), tally.path_reason


def _recorded_options(
    source_options: SourceOptions,
    count_options: CountOptions,
    tally: Tally,
    *,
    dataset: str | None,
    limit_tokens: int | None,
) -> dict[str, Any]:
    """How the counts were made, as CorpusStats.options records it (keys in this order; absent when default)."""
    path_name, reason = _path_report(count_options.spec, tally)
    options: dict[str, Any] = {
        "sequence": source_options.sequence or "document",
        "add_special_tokens": count_options.add_special_tokens,
        "count_path": path_name,
        "count_path_reason": reason,
        "sequences_per_path": dict(sorted(tally.paths.items())),
    }
    if source_options.field:
        options["field"] = source_options.field
    if dataset:
        options["dataset"] = dataset
        options["split"] = source_options.dataset_split
    if source_options.limit_chars is not None:
        options["limit_bytes"] = source_options.limit_chars
    if limit_tokens is not None:
        options["limit_tokens"] = limit_tokens
    if source_options.skip_bad_lines:
        options["skip_bad_lines"] = True
    options.update(count_options.spec.options)
    return options


def compare(stats: list[CorpusStats]) -> list[dict[str, Any]]:
    """One row per tokenizer: bytes per token, share of the vocabulary never used, k for 90% coverage, entropy.

    Example:
        >>> rows = compare([analyze("corpora/kjv.txt", t) for t in ("bytes", "word")])
    """
    rows = []
    for one in stats:
        summary = one.summary()
        rows.append(
            {
                "tokenizer": one.tokenizer.name,
                "vocab_size": one.vocab_size,
                "tokens": summary["total_tokens"],
                "bytes_per_token": summary["bytes_per_token"],
                "never_used_share": summary["never_seen_ids"] / max(one.vocab_size, 1),
                "k_90": summary["k_for_coverage"].get("0.9"),
                "entropy_bits": summary["entropy_bits"],
                "zipf_s": (one.fits.get("zipf_mandelbrot") or {}).get("s"),
            }
        )
    return rows
