"""The Dask engine of the analyze stage: count a corpus on a Dask cluster, exactly as the local engine does.

Job: count a corpus on many machines. Inputs: resolved sources (paths every worker reads at the same place), a
dataset, `SourceOptions`, `CountOptions`, the scheduler (or a local cluster's size) and the part size. Outputs: one
`Tally` (counts and totals), which `vocabopt.analyze` turns into CorpusStats, as it does the local engine's.

The client plans parts (`plan_parts`): whole files; byte ranges of large plain-text and JSON-lines files (a range
owns the lines that start inside it, or with --sequence document the documents of a text file, see
`ranges.range_bounds`); the arrow shards of a `save_to_disk` dataset. Each task reads its part where it lives and
returns a Tally; tallies are summed pairwise on the workers as they finish (a tree), and only the final one reaches
the client. Text never travels; the count options (with the tokenizer) are scattered to the workers once. Sums of
integers do not depend on the order, so the result is the local engine's exactly; the word vocabulary is pruned
only after the merge, on the global counts. Dask is imported only here, and only when used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ClusterError, VocabOptError
from ..version import __version__
from .counters import CountOptions, make_counter
from .files import file_kind, is_url, size_of
from .ranges import RANGED
from .reader import Reader, SourceOptions
from .tally import Progress, Tally, batches

log = logging.getLogger(__name__)

MAX_PART_BYTES = 64 << 20  # largest byte range of a plain-text file
MIN_PART_BYTES = 1 << 20  # smallest one (a task's fixed cost is ~ms; its reads are ~1 MB)
PARTS_PER_THREAD = 4  # ranges per worker thread, so a slow worker does not hold up the end
INSTALL_HINT = "pip install 'vocabopt[dask]'"


@dataclass(frozen=True)
class Part:
    """One task's share of the corpus."""

    source: int  # index into the sources (the dataset is the last)
    path: str  # the file it reads (an arrow shard, for a dataset), or the dataset folder
    size: int  # bytes on disk it covers (0 if unknown): the progress bar's unit
    byte_range: tuple[int, int] | None = None  # [start, end) of a plain-text file
    dataset: bool = False  # read `path` as a whole `datasets` dataset


def count_on_cluster(
    paths: list[str],
    dataset: str | None,
    *,
    source_options: SourceOptions,
    count_options: CountOptions,
    scheduler: str | None = None,
    workers: int | None = None,
    partition_bytes: int | None = None,
    progress: Progress | None = None,
) -> Tally:
    """Count the sources on a Dask cluster (the one at `scheduler`, or a local one with `workers` processes).

    Example:
        >>> options = CountOptions(load_spec("bytes"))  # vocabopt.corpus.tokenizer.load_spec
        >>> tally = count_on_cluster(
        ...     ["corpora/kjv.txt"], None, source_options=SourceOptions(), count_options=options, workers=2
        ... )
    """
    with _client(scheduler, workers) as client:
        threads = sum(client.nthreads().values())
        parts = plan_parts(paths, dataset, source_options, partition_bytes or _part_bytes(paths, threads))
        _check_workers(client, parts)
        log.info("counting %d parts on %d worker threads", len(parts), threads)
        job = f"vocabopt-{os.urandom(6).hex()}"
        # The options hold the tokenizer's JSON (MBs): sent once per worker, not once per task.
        options_future = client.scatter(count_options, broadcast=True, hash=False)
        futures = [
            client.submit(_count_part, job, part, options_future, source_options, key=f"{job}-part-{k}")
            for k, part in enumerate(parts)
        ]
        try:
            return _tree_sum(client, futures, [p.size for p in parts], progress)
        finally:
            with contextlib.suppress(Exception):  # a worker that died has nothing left to drop
                client.run(_release, job)


# --- the cluster ----------------------------------------------------------------------------------------------------


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ClusterError(
            f"--engine dask needs Dask, which is not installed here ({e}); install it with {INSTALL_HINT}"
        ) from None
    return distributed


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of the cluster at `scheduler`, or of a local cluster of `workers` processes (1 thread each)."""
    distributed = _import_distributed()
    if scheduler is None:
        n = workers or os.cpu_count() or 1
        # One single-threaded process per core, like the local engine; RAYON_NUM_THREADS=1: no nested thread pools.
        with _environ_kept(), contextlib.ExitStack() as stack:
            with _sigint_ignored():
                cluster = stack.enter_context(
                    distributed.LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",
                        silence_logs=logging.ERROR,
                        env={"RAYON_NUM_THREADS": "1"},
                    )
                )
            yield stack.enter_context(distributed.Client(cluster, set_as_default=False))
        return
    try:
        client = distributed.Client(scheduler, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        timeout = _connect_timeout()
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler} within {timeout} ({type(e).__name__}: {e}); start one "
            "with `dask scheduler` and pass the address it prints (tcp://HOST:8786), check the host, port and "
            "firewall, or leave out --scheduler to count on a local cluster"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=_seconds(_connect_timeout()))
        except (TimeoutError, OSError):
            raise ClusterError(
                f"the Dask scheduler at {scheduler} has no workers; start some with `dask worker {scheduler}`"
            ) from None
        yield client


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while a LocalCluster starts its processes: they inherit "ignored" (through fork and exec, and
    Python then leaves it so), so a Ctrl-C, which reaches the whole process group, stops only this process, which
    closes the cluster, instead of printing a traceback from every worker. (Blocking it is not enough: Dask starts
    the processes from its own threads.) A Ctrl-C during the start-up itself (under a second) is lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _environ_kept() -> Iterator[None]:
    """Give this process its environment back after a LocalCluster: its nannies set OMP_NUM_THREADS=1 and the like
    here for their workers, and a notebook that trains next would run torch on one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def _connect_timeout() -> str:
    import dask

    return str(dask.config.get("distributed.comm.timeouts.connect"))


def _seconds(value: str) -> float:
    from dask.utils import parse_timedelta

    return float(parse_timedelta(value))


def _check_workers(client: Any, parts: list[Part]) -> None:
    """Fail early, with the fix, when a worker cannot import vocabopt or cannot read a source."""
    paths = sorted({p.path for p in parts if not is_url(p.path)})  # URLs: a task's error names them
    answers = client.run(_worker_probe(paths))
    for worker, (version, unreadable) in sorted(answers.items()):
        if version is None:
            raise ClusterError(
                f"worker {worker} cannot import vocabopt; install vocabopt (pip install "
                "'vocabopt[dask]') in the Python environment every worker runs"
            )
        if version != __version__:
            raise ClusterError(
                f"worker {worker} has vocabopt {version}, this machine {__version__}; install the "
                "same version everywhere (counts must be made by the same code)"
            )
        if unreadable:
            more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
            raise ClusterError(
                f"worker {worker} cannot read {unreadable[0]}{more}; workers read the sources where "
                "they live: put them on a filesystem that every worker mounts at the same path "
                "(a shared filesystem), and pass that path"
            )


def _worker_probe(paths: list[str]) -> Callable[[], tuple[str | None, list[str]]]:
    """A function for `client.run` that needs nothing but the standard library on the worker (a closure is pickled
    by value), so it can report a worker that lacks vocabopt instead of failing to unpickle there."""

    def probe() -> tuple[str | None, list[str]]:
        import importlib
        import os

        try:
            version = importlib.import_module("vocabopt").__version__
        except ImportError:
            version = None
        return version, [p for p in paths if not os.access(p, os.R_OK)]

    return probe


# --- planning -------------------------------------------------------------------------------------------------------


def _part_bytes(paths: list[str], threads: int) -> int:
    total = sum(size_of(p) for p in paths)
    return int(min(MAX_PART_BYTES, max(MIN_PART_BYTES, total // max(PARTS_PER_THREAD * threads, 1))))


def plan_parts(paths: list[str], dataset: str | None, options: SourceOptions, part_bytes: int) -> list[Part]:
    """The parts of a corpus: byte ranges of uncompressed text and JSON-lines files larger than `part_bytes`, whole
    other files, a dataset's arrow shards (or the whole dataset as one part when it is not a plain `save_to_disk`
    folder)."""
    parts = []
    for i, path in enumerate(paths):
        size = size_of(path)
        if file_kind(path) in RANGED and size > part_bytes:
            n = -(-size // part_bytes)
            cuts = [size * k // n for k in range(n + 1)]
            parts += [Part(i, path, b - a, byte_range=(a, b)) for a, b in zip(cuts, cuts[1:])]
        else:
            parts.append(Part(i, path, size))
    if dataset is not None:
        shards = _dataset_shards(dataset, options)
        if shards is None:
            parts.append(Part(len(paths), dataset, 0, dataset=True))
        else:
            parts += [Part(len(paths), shard, os.path.getsize(shard)) for shard in shards]
    return parts


def _dataset_shards(path: str, options: SourceOptions) -> list[str] | None:
    """The arrow files of a `save_to_disk` dataset's split, when reading them gives what `datasets` gives: a
    top-level text field (nested fields go through `datasets`' own formatting). None: read it whole."""
    if options.field and "." in options.field:
        return None
    folder = Path(path)
    if (folder / "dataset_dict.json").exists():
        folder = folder / options.dataset_split
    try:
        files = json.loads((folder / "state.json").read_text())["_data_files"]
        shards = [str(folder / f["filename"]) for f in files]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return shards if shards and all(Path(s).is_file() for s in shards) else None


# --- tasks (run on the workers) -------------------------------------------------------------------------------------

_COUNTERS: dict[tuple[str, int], Any] = {}  # (job, thread) -> counter, on each worker; `_release` drops a job's


def _counter(job: str, count_options: CountOptions) -> Any:
    """This job's counter for this thread, built once (a counter's cache of distinct chunks is not thread-safe, and
    it may hold hundreds of MB: it lives only as long as the job)."""
    key = (job, threading.get_ident())
    if key not in _COUNTERS:
        _COUNTERS[key] = make_counter(count_options)
    return _COUNTERS[key]


def _release(job: str) -> None:
    """Drop a finished job's counters (run on every worker by the client)."""
    for key in [k for k in _COUNTERS if k[0] == job]:
        _COUNTERS.pop(key, None)


def _count_part(job: str, part: Part, count_options: CountOptions, source_options: SourceOptions) -> Tally:
    """Read one part where it lives and count it (a task)."""
    counter = _counter(job, count_options)
    if part.dataset:
        reader = Reader([], source_options, dataset=part.path)
    else:
        reader = Reader([part.path], source_options, byte_range=part.byte_range)
    tally = Tally()
    for batch in batches(reader):
        tally.add_batch(part.source, counter.count(batch.payload))
    totals, info = tally.source(part.source), reader.infos[0]
    totals[2] += info.replaced_bytes
    totals[3] += info.skipped_lines
    return tally


def _add(a: Tally, b: Tally) -> Tally:
    """The sum of two tallies, as a new one (a task: its inputs stay as they were, in case Dask recomputes)."""
    return Tally().add(a).add(b)


def _n_tokens(t: Tally) -> int:
    return t.n_tokens


# --- the tree sum -----------------------------------------------------------------------------------------------


def _tree_sum(client: Any, futures: list[Any], sizes: list[int], progress: Progress | None) -> Tally:
    """Sum the parts' tallies pairwise, as they finish, on the workers; fetch only the total.

    Progress comes from small tasks that return each part's token count (a few bytes each): a part counts as done
    when its count arrives. A worker lost mid-run loses its tallies; Dask recomputes them from the parts."""
    distributed = _import_distributed()
    total = sum(sizes) or None
    tokens = {client.submit(_n_tokens, f, pure=False): size for f, size in zip(futures, sizes)}
    pending = distributed.as_completed([*futures, *tokens], loop=client.loop)
    done_bytes = n_tokens = 0
    carry = None
    try:
        for fut in pending:
            if fut.status == "error":
                _raise(fut)
            if fut in tokens:
                done_bytes += tokens.pop(fut)
                n_tokens += fut.result()
                if progress:
                    progress(done_bytes, total, n_tokens)
                continue
            if carry is None:
                carry = fut
            else:
                pending.add(client.submit(_add, carry, fut, pure=False))
                carry = None
        assert carry is not None
        result = carry.result()
    except BaseException:
        client.cancel(futures + list(tokens))
        raise
    return result


def _raise(fut: Any) -> None:
    """Re-raise a failed task's error: vocabopt's own errors as they are (a bad line, a missing column), a worker
    that kept dying as a ClusterError."""
    exc = fut.exception()
    if isinstance(exc, VocabOptError):
        raise exc
    if type(exc).__name__ == "KilledWorker":
        raise ClusterError(
            f"a task killed the Dask workers that ran it ({exc}); they may have run out of memory: "
            "give workers more memory (`dask worker --memory-limit`) or use smaller parts"
        ) from None
    fut.result()  # anything else is a bug: show its traceback
