"""The `analyze` stage: a corpus and a tokenizer in, CorpusStats out.

Inputs: sources (see vocabopt.sources) and a tokenizer spec (see vocabopt.counting).
Outputs: `CorpusStats` with exact counts indexed by the tokenizer's ids, totals, summary statistics and Zipf fits.
Two engines fill one `Tally` (counts and totals that add up across parts of a corpus). Local: the main process reads
and batches text; worker processes (spawned: tokenizer threads do not survive fork) count batches. Dask
(vocabopt.distributed): tasks on a cluster each read and count one part of the corpus; their tallies are summed in a
tree. Memory is bounded by the vocabulary, the distinct chunks per worker and the batches in flight, not by corpus
size.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import counting, sources
from .errors import InputError
from .stats import CorpusStats, SourceInfo, TokenizerInfo

log = logging.getLogger(__name__)

BATCH_BYTES = 1 << 20  # text per batch sent to a worker
PARALLEL_MIN_BYTES = 24 << 20  # below this, spawning workers costs more than it saves
STOP_GRACE_S = 5.0  # after Ctrl-C or an early stop, workers get this long to finish their batch before terminate
Progress = Callable[[int, "int | None", int], None]  # (bytes done, bytes total or None, tokens so far)


@dataclass
class _Batch:
    source: int  # every batch holds text of one source
    payload: counting.Payload  # a block of lines, or (text, continuation) sequences
    chars: int = 0


@dataclass
class Tally:
    """Counts and totals of some of a corpus. Tallies of disjoint parts add up (`add`) to the whole's tally, so the
    engines may count parts anywhere and in any order."""

    counts: np.ndarray | None = None  # (V,) int64 (hf, bytes); None before the first batch
    words: Counter = field(default_factory=Counter)  # word tokenizer: string-keyed counts
    paths: Counter = field(default_factory=Counter)  # sequences per counting path
    sources: dict[int, list[int]] = field(default_factory=dict)  # source -> [bytes, sequences, replaced, skipped]
    n_sequences: int = 0
    n_words: int = 0
    n_bytes: int = 0
    n_tokens: int = 0

    def add_batch(self, source: int, result: counting.BatchCounts) -> None:
        if result.counts is not None:
            if self.counts is None:
                self.counts = result.counts.copy()
            else:
                self.counts += result.counts
            self.n_tokens += int(result.counts.sum())
        else:
            self.words.update(result.words)
            self.n_tokens += sum(result.words.values())
        self.paths.update(result.paths)
        self.n_sequences += result.n_sequences
        self.n_words += result.n_words
        self.n_bytes += result.n_bytes
        acc = self.source(source)
        acc[0] += result.n_bytes
        acc[1] += result.n_sequences

    def source(self, i: int) -> list[int]:
        return self.sources.setdefault(i, [0, 0, 0, 0])

    def add(self, other: Tally) -> Tally:
        """Add `other` into this tally (in place) and return it."""
        if other.counts is not None:
            if self.counts is None:
                self.counts = other.counts.copy()
            else:
                self.counts += other.counts
        self.words.update(other.words)
        self.paths.update(other.paths)
        for i, acc in other.sources.items():
            mine = self.source(i)
            for k, v in enumerate(acc):
                mine[k] += v
        self.n_sequences += other.n_sequences
        self.n_words += other.n_words
        self.n_bytes += other.n_bytes
        self.n_tokens += other.n_tokens
        return self


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
    engine: str = "local",
    scheduler: str | None = None,
    partition_bytes: int | None = None,
    progress: Progress | None = None,
    on_warning: Callable[[str], None] | None = None,
    force_path: str | None = None,
) -> CorpusStats:
    """Count the tokens of a corpus exactly, with the tokenizer's own ids.

    Args:
        sources_: files, directories, globs, fsspec URLs (s3://..., file://...) or "-" (stdin).
        tokenizer: a tokenizer.json path (or directory holding one), "word", or "bytes".
        dataset: a local `datasets` folder (save_to_disk, or data files load_dataset can stream).
        split: the dataset split to read.
        field: text field of JSON-lines/parquet/arrow/dataset records (dotted for nested fields).
        sequence: "line" or "document" (default: line for text files, document for records).
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
    if sequence not in (None, "line", "document"):
        raise InputError(f"--sequence {sequence!r}: use 'line' or 'document'")
    for flag, limit in (("--limit-bytes", limit_bytes), ("--limit-tokens", limit_tokens)):
        if limit is not None and limit < 1:
            raise InputError(f"{flag} {limit}: must be at least 1 (or leave it out to count everything)")
    _check_engine(engine, scheduler, workers, limit_bytes, limit_tokens, partition_bytes)
    paths = sources.resolve([sources_] if isinstance(sources_, str) else list(sources_))
    if not paths and dataset is None:
        raise InputError("no sources given; pass files, directories, globs, '-' or --dataset PATH")
    if engine == "dask" and "-" in paths:
        raise InputError(
            "'-' (stdin) with --engine dask: cluster workers cannot read this process's stdin; "
            "save the text to a file the workers can read, or use --engine local"
        )
    spec = counting.load_spec(tokenizer, min_count=min_count, max_vocab=max_vocab)
    options = sources.SourceOptions(
        field=field, sequence=sequence, skip_bad_lines=skip_bad_lines, dataset_split=split, limit_chars=limit_bytes
    )
    warn = on_warning or (lambda msg: log.warning(msg))
    if engine == "dask":
        from . import distributed

        tally = distributed.count(
            paths,
            dataset,
            spec,
            options,
            add_special_tokens=add_special_tokens,
            force_path=force_path,
            scheduler=scheduler,
            workers=workers,
            partition_bytes=partition_bytes,
            progress=progress,
        )
        for i, path in enumerate(paths):  # what the local reader warns while reading, in the same order
            if tally.source(i)[1] == 0:
                warn(f"{path}: no text (empty source)")
    else:
        tally = _count_local(
            paths,
            dataset,
            spec,
            options,
            add_special_tokens,
            force_path,
            workers,
            limit_bytes,
            limit_tokens,
            progress,
            warn,
        )

    if tally.n_tokens == 0:
        names = ", ".join(paths + ([dataset] if dataset else []))
        raise InputError(
            f"{names}: no text found (empty corpus); check the sources" + (" and --field" if field or dataset else "")
        )
    infos = [SourceInfo(path=p, bytes=0) for p in paths + ([dataset] if dataset is not None else [])]
    for i, info in enumerate(infos):
        info.bytes, info.sequences, info.replaced_bytes, info.skipped_lines = tally.source(i)
        if info.replaced_bytes:
            warn(f"{info.path}: {info.replaced_bytes} bytes of invalid UTF-8 decoded as U+FFFD")

    if spec.kind == "word":
        counts, tokens = counting.build_word_vocab(tally.words, min_count, max_vocab)
    elif spec.kind == "bytes":
        counts, tokens = tally.counts, counting.byte_token_strings()
    else:
        counts, tokens = tally.counts, counting.hf_token_strings(spec)
    assert counts is not None
    path_name, reason = _path_report(spec, tally.paths, force_path)
    opts = _options(
        spec,
        sequence,
        field,
        dataset,
        split,
        add_special_tokens,
        limit_bytes,
        limit_tokens,
        skip_bad_lines,
        path_name,
        reason,
        tally.paths,
    )
    if engine == "dask":
        opts["engine"] = "dask"
    stats = CorpusStats(
        counts=counts,
        tokens=tokens,
        tokenizer=TokenizerInfo(kind=spec.kind, name=spec.name, sha256=spec.sha256, vocab_size=int(counts.size)),
        sources=infos,
        options=opts,
        n_sequences=tally.n_sequences,
        n_bytes=tally.n_bytes,
        n_words=tally.n_words,
    )
    stats.refit()
    return stats


def _check_engine(
    engine: str,
    scheduler: str | None,
    workers: int | None,
    limit_bytes: int | None,
    limit_tokens: int | None,
    partition_bytes: int | None,
) -> None:
    if engine not in ("local", "dask"):
        raise InputError(f"--engine {engine!r}: use 'local' or 'dask'")
    if engine == "local":
        if scheduler is not None:
            raise InputError("--scheduler is for --engine dask; add --engine dask or leave out --scheduler")
        return
    for flag, limit in (("--limit-bytes", limit_bytes), ("--limit-tokens", limit_tokens)):
        if limit is not None:
            raise InputError(
                f"{flag} with --engine dask: a limit stops at a point of a sequential read, which "
                "parts counted in parallel do not have, so the result would not be exact; "
                "use --engine local with a limit"
            )
    if scheduler is not None and workers is not None:
        raise InputError(
            "--workers with --scheduler: the cluster's size is set where its workers start "
            "(`dask worker ... --nworkers N`); leave out --workers"
        )
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    if partition_bytes is not None and partition_bytes < 1:
        raise InputError(f"partition_bytes {partition_bytes}: must be at least 1")


def _count_local(
    paths: list[str],
    dataset: str | None,
    spec: counting.TokenizerSpec,
    options: sources.SourceOptions,
    add_special_tokens: bool,
    force_path: str | None,
    workers: int | None,
    limit_bytes: int | None,
    limit_tokens: int | None,
    progress: Progress | None,
    warn: Callable[[str], None],
) -> Tally:
    """The local engine: this process reads, `workers` processes count (in input order)."""
    reader = sources.Reader(paths, options, on_warning=warn, dataset=dataset)
    total_disk = sources.total_size(paths) if dataset is None else None
    n_workers = _n_workers(workers, total_disk, limit_bytes)
    tally = Tally()
    counted = _count_batches(
        batches(reader), spec, add_special_tokens, force_path, n_workers, read_ahead=limit_tokens is None
    )
    for batch, result in counted:
        tally.add_batch(batch.source, result)
        if progress:
            progress(reader.progress_bytes if total_disk else tally.n_bytes, total_disk, tally.n_tokens)
        if limit_tokens is not None and tally.n_tokens >= limit_tokens:
            break
    for i, info in enumerate(reader.infos):
        acc = tally.source(i)
        acc[2], acc[3] = info.replaced_bytes, info.skipped_lines
    return tally


def _n_workers(workers: int | None, total_disk: int | None, limit_bytes: int | None) -> int:
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers {workers}: must be at least 1")
        return workers
    size = total_disk if total_disk is not None else PARALLEL_MIN_BYTES  # unknown size: assume large
    if limit_bytes is not None:
        size = min(size, limit_bytes)
    return (os.cpu_count() or 1) if size >= PARALLEL_MIN_BYTES else 1


def batches(reader: sources.Reader) -> Iterator[_Batch]:
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
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    _COUNTER = counting.make_counter(spec, add_special_tokens, force_path)


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    """Exit when the parent does. A Ctrl-C that lands while the pool starts a worker could leave that worker
    waiting for work forever (seen on a loaded machine), holding the terminal's pipes; so could a killed parent."""
    parent.join()
    os._exit(1)


def _count_in_worker(payload: counting.Payload) -> counting.BatchCounts:
    return _COUNTER.count(payload)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread; processes started meanwhile inherit the mask (through fork and exec).

    Ctrl-C reaches the whole process group: a worker still importing numpy would die printing a traceback. With
    SIGINT blocked, workers never see it; the main process gets it (a Ctrl-C that came while blocked is delivered
    on unblocking) and stops the pool."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to worry about
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _count_batches(
    batches: Iterator[_Batch],
    spec: counting.TokenizerSpec,
    add_special_tokens: bool,
    force_path: str | None,
    n_workers: int,
    read_ahead: bool = True,
) -> Iterator[tuple[_Batch, counting.BatchCounts]]:
    """(batch, counts) in input order; with several workers, at most 2 batches per worker in flight. In-process,
    the next batch is read and cut while this one is tokenized, unless `read_ahead` is off (a token limit: what is
    read is then what is counted)."""
    if n_workers == 1:
        counter = counting.make_counter(spec, add_special_tokens, force_path)
        if not isinstance(counter, counting.HFCounter) or not read_ahead:
            for batch in batches:
                yield batch, counter.count(batch.payload)
            return
        # This thread reads and cuts batch k + 1 while a second one tokenizes batch k (the tokenizer releases the GIL).
        with ThreadPoolExecutor(1, thread_name_prefix="vocabopt-count") as pool:
            queued: collections.deque[tuple[_Batch, Future]] = collections.deque()
            for batch in batches:
                queued.append((batch, pool.submit(counter.finish, counter.prepare(batch.payload))))
                if len(queued) > 1:
                    done, fut = queued.popleft()
                    yield done, fut.result()
            while queued:
                done, fut = queued.popleft()
                yield done, fut.result()
        return
    ctx = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(
        n_workers, mp_context=ctx, initializer=_init_worker, initargs=(spec, add_special_tokens, force_path)
    )
    pending: collections.deque[tuple[_Batch, Future]] = collections.deque()
    try:
        for batch in batches:
            with _sigint_blocked():  # workers start during submit
                pending.append((batch, pool.submit(_count_in_worker, batch.payload)))
            if len(pending) >= 2 * n_workers:
                done, fut = pending.popleft()
                yield done, fut.result()
        while pending:
            done, fut = pending.popleft()
            yield done, fut.result()
    except BaseException:  # Ctrl-C, an error, or the caller stopped early (--limit-tokens): nothing more is needed
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers(set(multiprocessing.active_children()) - before)
        raise
    pool.shutdown(wait=True)


def _stop_workers(procs: set[multiprocessing.process.BaseProcess], grace: float = STOP_GRACE_S) -> None:
    """Let a shut-down pool's workers finish the batch in hand and exit; terminate those still there after `grace`.

    A worker started just before the pool shut down can miss its stop signal and wait for work forever (seen after
    Ctrl-C on a loaded machine), and the pool would wait for it forever. Terminating at once is no better: a worker
    killed while sending its result leaves the pool's reader thread waiting for the rest, and the exit hangs."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(deadline - time.monotonic(), 0.0))
        if proc.is_alive():
            proc.terminate()


def _path_report(spec: counting.TokenizerSpec, used: Counter, force_path: str | None) -> tuple[str, str]:
    if spec.kind != "hf":
        return spec.kind, "exact by construction"
    main = max(used, key=lambda k: used[k]) if used else "chunks"
    _, reason = counting.choose_path(counting.config_of(spec.json))
    if force_path:
        reason = f"forced ({reason})"
    name = main if len(used) <= 1 else "+".join(sorted(used))
    return name, reason


def _options(
    spec,
    sequence,
    field,
    dataset,
    split,
    add_special_tokens,
    limit_bytes,
    limit_tokens,
    skip_bad_lines,
    path_name,
    reason,
    paths_used,
) -> dict[str, Any]:
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
        rows.append(
            {
                "tokenizer": s.tokenizer.name,
                "vocab_size": s.vocab_size,
                "tokens": summ["total_tokens"],
                "bytes_per_token": summ["bytes_per_token"],
                "never_used_share": summ["never_seen_ids"] / max(s.vocab_size, 1),
                "k_90": summ["k_for_coverage"].get("0.9"),
                "entropy_bits": summ["entropy_bits"],
                "zipf_s": (s.fits.get("zipf_mandelbrot") or {}).get("s"),
            }
        )
    return rows
