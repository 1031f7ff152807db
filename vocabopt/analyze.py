"""The `analyze` stage: a corpus and a tokenizer in, CorpusStats out.

Inputs: sources (see vocabopt.sources) and a tokenizer spec (see vocabopt.counting).
Outputs: `CorpusStats` with exact counts indexed by the tokenizer's ids, totals, summary statistics and Zipf fits.
The main process reads and batches text; worker processes (spawned: tokenizer threads do not survive fork) count
batches; counts are summed. Memory is bounded by the vocabulary, the distinct chunks per worker and the batches in
flight, not by corpus size.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import counting, sources
from .errors import InputError
from .stats import CorpusStats, TokenizerInfo

log = logging.getLogger(__name__)

BATCH_BYTES = 1 << 20  # text per batch sent to a worker
PARALLEL_MIN_BYTES = 24 << 20  # below this, spawning workers costs more than it saves
Progress = Callable[[int, "int | None", int], None]  # (bytes done, bytes total or None, tokens so far)


@dataclass
class _Batch:
    source: int  # every batch holds text of one source
    payload: counting.Payload  # a block of lines, or (text, continuation) sequences
    chars: int = 0


def analyze(
    sources_: list[str] | str = (),
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
    progress: Progress | None = None,
    on_warning: Callable[[str], None] | None = None,
    force_path: str | None = None,
) -> CorpusStats:
    """Count the tokens of a corpus exactly, with the tokenizer's own ids.

    Args:
        sources_: files, directories, globs or "-" (stdin).
        tokenizer: a tokenizer.json path (or directory holding one), "word", or "bytes".
        dataset: a local `datasets` folder (save_to_disk, or data files load_dataset can stream).
        split: the dataset split to read.
        field: text field of JSON-lines/parquet/arrow/dataset records (dotted for nested fields).
        sequence: "line" or "document" (default: line for text files, document for records).
        add_special_tokens: count the post-processor's special tokens once per sequence.
        min_count, max_vocab: prune the word vocabulary (`tokenizer="word"`); pruned words count as <unk>.
        skip_bad_lines: skip malformed JSON lines (counted in the stats) instead of failing.
        limit_bytes, limit_tokens: stop after about this much text / these many tokens (at a batch boundary).
        workers: processes to count with (default: all cores; small corpora are counted in-process).
        progress: called as progress(bytes_done, bytes_total_or_None, tokens_so_far).
        on_warning: called with one-line warnings (empty sources, replaced bytes).
        force_path: "chunks" | "pretokens" | "encode", to compare the counting paths (tests).

    Example:
        >>> stats = analyze(["corpora/kjv.txt"], tokenizer="corpora/kjv-bpe-8k/tokenizer.json")
        >>> stats.summary()["k_for_coverage"]["0.9"]  # ids needed to cover 90% of tokens
    """
    if sequence not in (None, "line", "document"):
        raise InputError(f"--sequence {sequence!r}: use 'line' or 'document'")
    for flag, limit in (("--limit-bytes", limit_bytes), ("--limit-tokens", limit_tokens)):
        if limit is not None and limit < 1:
            raise InputError(f"{flag} {limit}: must be at least 1 (or leave it out to count everything)")
    paths = sources.resolve([sources_] if isinstance(sources_, str) else list(sources_))
    if not paths and dataset is None:
        raise InputError("no sources given; pass files, directories, globs, '-' or --dataset PATH")
    spec = counting.load_spec(tokenizer, min_count=min_count, max_vocab=max_vocab)
    options = sources.SourceOptions(field=field, sequence=sequence, skip_bad_lines=skip_bad_lines,
                                    dataset_split=split, limit_chars=limit_bytes)
    warn = on_warning or (lambda msg: log.warning(msg))
    reader = sources.Reader(paths, options, on_warning=warn, dataset=dataset)
    total_disk = sources.total_size(paths) if dataset is None else None
    n_workers = _n_workers(workers, total_disk, limit_bytes)

    counts: np.ndarray | None = None
    words: Counter = Counter()
    paths_used: Counter = Counter()
    per_source: dict[int, list[int]] = {}
    n_sequences = n_words = n_bytes = n_tokens = 0
    for batch, result in _count_batches(_batches(reader), spec, add_special_tokens, force_path, n_workers):
        if result.counts is not None:
            counts = result.counts if counts is None else counts + result.counts
            n_tokens += int(result.counts.sum())
        else:
            words.update(result.words)
            n_tokens += sum(result.words.values())
        paths_used.update(result.paths)
        n_sequences += result.n_sequences
        n_words += result.n_words
        n_bytes += result.n_bytes
        acc = per_source.setdefault(batch.source, [0, 0])
        acc[0] += result.n_bytes
        acc[1] += result.n_sequences
        if progress:
            progress(reader.progress_bytes if total_disk else n_bytes, total_disk, n_tokens)
        if limit_tokens is not None and n_tokens >= limit_tokens:
            break

    if n_tokens == 0:
        names = ", ".join(paths + ([dataset] if dataset else []))
        raise InputError(f"{names}: no text found (empty corpus); check the sources"
                         + (" and --field" if field or dataset else ""))
    infos = reader.infos
    for i, info in enumerate(infos):
        info.bytes, info.sequences = per_source.get(i, [0, 0])
        if info.replaced_bytes:
            warn(f"{info.path}: {info.replaced_bytes} bytes of invalid UTF-8 decoded as U+FFFD")

    if spec.kind == "word":
        counts, tokens = counting.build_word_vocab(words, min_count, max_vocab)
    elif spec.kind == "bytes":
        tokens = counting.byte_token_strings()
    else:
        tokens = counting.hf_token_strings(spec)
    assert counts is not None
    path_name, reason = _path_report(spec, paths_used, force_path)
    stats = CorpusStats(
        counts=counts,
        tokens=tokens,
        tokenizer=TokenizerInfo(kind=spec.kind, name=spec.name, sha256=spec.sha256, vocab_size=int(counts.size)),
        sources=infos,
        options=_options(spec, sequence, field, dataset, split, add_special_tokens, limit_bytes, limit_tokens,
                         skip_bad_lines, path_name, reason, paths_used),
        n_sequences=n_sequences,
        n_bytes=n_bytes,
        n_words=n_words,
    )
    stats.refit()
    return stats


def _n_workers(workers: int | None, total_disk: int | None, limit_bytes: int | None) -> int:
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers {workers}: must be at least 1")
        return workers
    size = total_disk if total_disk is not None else PARALLEL_MIN_BYTES  # unknown size: assume large
    if limit_bytes is not None:
        size = min(size, limit_bytes)
    return (os.cpu_count() or 1) if size >= PARALLEL_MIN_BYTES else 1


def _batches(reader: sources.Reader) -> Iterator[_Batch]:
    """Blocks pass through as they are; sequences are grouped into batches of about BATCH_BYTES of one source."""
    batch: _Batch | None = None
    for item in reader:
        if isinstance(item, sources.Block):
            if batch is not None:
                yield batch
                batch = None
            yield _Batch(item.source, item.text, len(item.text))
            continue
        if batch is not None and (batch.source != item.source or batch.chars >= BATCH_BYTES):
            yield batch
            batch = None
        if batch is None:
            batch = _Batch(item.source, [])
        batch.payload.append((item.text, item.continuation))
        batch.chars += len(item.text)
    if batch is not None:
        yield batch


# --- worker processes ---------------------------------------------------------------------------------------------

_COUNTER: Any = None


def _init_worker(spec: counting.TokenizerSpec, add_special_tokens: bool, force_path: str | None) -> None:
    global _COUNTER
    os.environ["RAYON_NUM_THREADS"] = "1"  # one process per core already; no nested thread pools
    _COUNTER = counting.make_counter(spec, add_special_tokens, force_path)


def _count_in_worker(payload: counting.Payload) -> counting.BatchCounts:
    return _COUNTER.count(payload)


def _count_batches(batches: Iterator[_Batch], spec: counting.TokenizerSpec, add_special_tokens: bool,
                   force_path: str | None, n_workers: int) -> Iterator[tuple[_Batch, counting.BatchCounts]]:
    """(batch, counts) in input order; with several workers, at most 2 batches per worker in flight."""
    if n_workers == 1:
        counter = counting.make_counter(spec, add_special_tokens, force_path)
        for batch in batches:
            yield batch, counter.count(batch.payload)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(spec, add_special_tokens, force_path)) as pool:
        pending: list[tuple[_Batch, Future]] = []
        try:
            for batch in batches:
                pending.append((batch, pool.submit(_count_in_worker, batch.payload)))
                if len(pending) >= 2 * n_workers:
                    done, fut = pending.pop(0)
                    yield done, fut.result()
            while pending:
                done, fut = pending.pop(0)
                yield done, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def _path_report(spec: counting.TokenizerSpec, used: Counter, force_path: str | None) -> tuple[str, str]:
    if spec.kind != "hf":
        return spec.kind, "exact by construction"
    main = max(used, key=lambda k: used[k]) if used else "chunks"
    _, reason = counting.choose_path(json.loads(spec.json))
    if force_path:
        reason = f"forced ({reason})"
    name = main if len(used) <= 1 else "+".join(sorted(used))
    return name, reason


def _options(spec, sequence, field, dataset, split, add_special_tokens, limit_bytes, limit_tokens,
             skip_bad_lines, path_name, reason, paths_used) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "sequence": sequence or "auto",
        "add_special_tokens": add_special_tokens,
        "count_path": path_name,
        "count_path_reason": reason,
        "sequences_per_path": dict(sorted(paths_used.items())),
    }
    if field:
        opts["field"] = field
    if dataset:
        opts["dataset"] = dataset
        opts["split"] = split
    if limit_bytes is not None:
        opts["limit_bytes"] = limit_bytes
    if limit_tokens is not None:
        opts["limit_tokens"] = limit_tokens
    if skip_bad_lines:
        opts["skip_bad_lines"] = True
    opts.update(spec.options)
    return opts


def compare(stats: list[CorpusStats]) -> list[dict[str, Any]]:
    """One row per tokenizer: bytes per token, share of the vocabulary never used, k for 90% coverage, entropy.

    Example:
        >>> rows = compare([analyze("corpora/kjv.txt", t) for t in ("bytes", "word")])
    """
    rows = []
    for s in stats:
        summ = s.summary()
        rows.append({
            "tokenizer": s.tokenizer.name,
            "vocab_size": s.vocab_size,
            "tokens": summ["total_tokens"],
            "bytes_per_token": summ["bytes_per_token"],
            "never_used_share": summ["never_seen_ids"] / max(s.vocab_size, 1),
            "k_90": summ["k_for_coverage"].get("0.9"),
            "entropy_bits": summ["entropy_bits"],
            "zipf_s": (s.fits.get("zipf_mandelbrot") or {}).get("s"),
        })
    return rows
