"""The local engine of the analyze stage: this process reads, worker processes count, in input order.

Job: count a corpus on this machine. Inputs: resolved source paths (and a dataset), `SourceOptions`, `CountOptions`,
the number of workers and a token limit. Outputs: one `Tally`. Worker processes are forked from Python's fork server
(a clean process that has imported this module and tokenizers, and never tokenized: tokenizer threads do not
survive fork), or spawned where it cannot serve (`_context`); one single-threaded counter each, with at most 2
batches per worker in flight. Small corpora (under PARALLEL_MIN_BYTES) are counted in this process, the next batch
cut while this one is tokenized. Memory is bounded by the vocabulary, the distinct chunks per worker and the batches
in flight, not by corpus size.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import InputError, VocabOptError
from .counters import BatchCounts, CountOptions, HFCounter, Payload, make_counter
from .files import total_size
from .reader import Reader, SourceOptions
from .tally import Batch, Progress, Tally, batches

PARALLEL_MIN_BYTES = 24 << 20  # below this, spawning workers costs more than it saves
# how a dead worker shows in this process: the pool's own error, or the pipe to the fork server or a worker closed
_WORKER_DIED = (BrokenProcessPool, BrokenPipeError, EOFError)
STOP_GRACE_S = 5.0  # after Ctrl-C or an early stop, workers get this long to finish their batch before terminate


def count_local(
    paths: list[str],
    dataset: str | None,
    *,
    source_options: SourceOptions,
    count_options: CountOptions,
    workers: int | None = None,
    limit_tokens: int | None = None,
    progress: Progress | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Tally:
    """The local engine: this process reads, `workers` processes count (in input order).

    `workers` None: all cores when the corpus is at least PARALLEL_MIN_BYTES on disk (or of unknown size), else
    this process. Counting stops at the first batch boundary after `limit_tokens` tokens.
    """
    reader = Reader(paths, source_options, on_warning=on_warning, dataset=dataset)
    total_disk = total_size(paths) if dataset is None else None
    n_workers = _n_workers(workers, total_disk, source_options.limit_chars)
    tally = Tally()
    counted = count_batches(batches(reader), count_options, n_workers, read_ahead=limit_tokens is None)
    for batch, result in counted:
        tally.add_batch(batch.source, result)
        if progress:
            progress(reader.progress_bytes if total_disk else tally.n_bytes, total_disk, tally.n_tokens)
        if limit_tokens is not None and tally.n_tokens >= limit_tokens:
            break
    for i, info in enumerate(reader.infos):
        totals = tally.source(i)
        totals[2], totals[3] = info.replaced_bytes, info.skipped_lines
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


# --- worker processes ---------------------------------------------------------------------------------------------

_COUNTER: Any = None  # this worker process's counter


_SERVER_OWNER: int | None = None  # the process that started (or found) the fork server this module's pools use


def _context() -> Any:
    """The fork server, started now and preloading this module and tokenizers, else spawn.

    A spawned worker imports numpy, tokenizers and vocabopt before it counts (~0.3 s of CPU each, and the second
    starts later); one forked from the fork server has them already. The server starts with the first pool of the
    process (a clean interpreter: no tokenizer threads to fork) and serves the later ones, so a process's first
    `analyze` pays for those imports once, the later ones not again (a console script's `__main__` is still
    imported again in each worker, as under spawn). Spawn where the fork server is missing (Windows), unsafe to fork
    from (macOS, which spawns by default: system libraries numpy may load do not survive fork) or to listen on
    (`_abstract_socket`), not this process's own (a child forked from a process that used it: the server answers to
    the parent) or cannot start (its socket path too long under a long TMPDIR). The server is the process's own: it
    starts with SIGINT blocked until its imports are done, then its SIGINT is what Python gives it (`server`), so
    the processes it forks for anyone else are as they would be; the workers block SIGINT themselves
    (`_init_worker`). A preload list a caller set before the server started is replaced."""
    global _SERVER_OWNER
    spawn = multiprocessing.get_context("spawn")
    if sys.platform == "darwin" or "forkserver" not in multiprocessing.get_all_start_methods() or _abstract_socket():
        return spawn
    if _SERVER_OWNER not in (None, os.getpid()):
        return spawn
    from multiprocessing import forkserver, resource_tracker

    ctx = multiprocessing.get_context("forkserver")
    if _SERVER_OWNER is None:  # tokenizers: vocabopt imports it lazily; `server`: SIGINT unblocked, last
        ctx.set_forkserver_preload([__name__, "tokenizers", f"{__package__}.server"])
    try:
        resource_tracker.ensure_running()  # first: starting it unblocks SIGINT in this thread
        with _sigint_blocked():  # until the server's preload is imported (see vocabopt.corpus.server)
            forkserver.ensure_running()
    except OSError:  # AF_UNIX path too long; ChildProcessError: a server inherited through fork
        return spawn
    _SERVER_OWNER = os.getpid()
    return ctx


def _abstract_socket() -> bool:
    """Whether the fork server would listen on a Linux abstract socket, which any local user can connect to and
    send it pickles (CVE-2022-42919: Python 3.9.x before 3.9.16 and 3.10.x before 3.10.9, unless patched)."""
    from multiprocessing import connection

    return connection.arbitrary_address("AF_UNIX").startswith("\0")


def _init_worker(count_options: CountOptions) -> None:
    global _COUNTER
    if hasattr(signal, "pthread_sigmask"):  # forked from the fork server: the mask is the server's (see _context)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.environ["RAYON_NUM_THREADS"] = "1"  # one process per core already; no nested thread pools
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    _COUNTER = make_counter(count_options)


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    """Exit when the parent does. A Ctrl-C that lands while the pool starts a worker could leave that worker
    waiting for work forever (seen on a loaded machine), holding the terminal's pipes; so could a killed parent."""
    parent.join()
    os._exit(1)


def _count_in_worker(payload: Payload) -> BatchCounts:
    return _COUNTER.count(payload)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread; processes started meanwhile inherit the mask (through fork and exec).

    Ctrl-C reaches the whole process group: a worker still importing numpy would die printing a traceback. With
    SIGINT blocked, workers never see it; the main process gets it (a Ctrl-C that came while blocked is delivered
    on unblocking) and stops the pool. Workers forked from the fork server inherit the server's mask instead and
    block SIGINT first thing in `_init_worker`: a Ctrl-C in the moment before (after the fork, or while a console
    script's `__main__` is imported again there) can still print a worker's traceback."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to worry about
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def count_batches(
    batches: Iterator[Batch],
    count_options: CountOptions,
    n_workers: int,
    read_ahead: bool = True,
) -> Iterator[tuple[Batch, BatchCounts]]:
    """(batch, counts) in input order; with several workers, at most 2 batches per worker in flight. In-process,
    the next batch is read and cut while this one is tokenized, unless `read_ahead` is off (a token limit: what is
    read is then what is counted)."""
    if n_workers == 1:
        counter = make_counter(count_options)
        if not isinstance(counter, HFCounter) or not read_ahead:
            for batch in batches:
                yield batch, counter.count(batch.payload)
            return
        # This thread reads and cuts batch k + 1 while a second one tokenizes batch k (the tokenizer releases the GIL).
        with ThreadPoolExecutor(1, thread_name_prefix="vocabopt-count") as pool:
            queued: collections.deque[tuple[Batch, Future]] = collections.deque()
            for batch in batches:
                queued.append((batch, pool.submit(counter.finish, counter.prepare(batch.payload))))
                if len(queued) > 1:
                    done, fut = queued.popleft()
                    yield done, fut.result()
            while queued:
                done, fut = queued.popleft()
                yield done, fut.result()
        return
    ctx = _context()
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker, initargs=(count_options,))
    pending: collections.deque[tuple[Batch, Future]] = collections.deque()
    try:
        for batch in batches:
            with _sigint_blocked():  # workers start during submit
                pending.append((batch, _pooled(pool.submit, _count_in_worker, batch.payload)))
            if len(pending) >= 2 * n_workers:
                done, fut = pending.popleft()
                yield done, _pooled(fut.result)
        while pending:
            done, fut = pending.popleft()
            yield done, _pooled(fut.result)
    except BaseException:  # Ctrl-C, an error, or the caller stopped early (--limit-tokens): nothing more is needed
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers(set(multiprocessing.active_children()) - before)
        raise
    pool.shutdown(wait=True)


def _pooled(call: Callable, *args: Any) -> Any:
    """call(*args), a call to the pool: a worker that died shows as a VocabOptError naming the likely causes."""
    try:
        return call(*args)
    except _WORKER_DIED as e:
        raise VocabOptError(
            f"a worker process died ({type(e).__name__}: killed, out of memory say, or it failed to start); "
            "--workers 1 (workers=1) counts without worker processes, and a script that calls analyze with workers "
            "needs an `if __name__ == '__main__':` guard (each worker imports the main script)"
        ) from e


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
