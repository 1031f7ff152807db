"""vocabopt.corpus.pool: the local engine gives the same counts with any number of worker processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from vocabopt import analyze


def test_parallel_workers_give_identical_counts(tokenizer_files, corpus_slice):
    one = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]), workers=1)
    two = analyze([str(corpus_slice)] * 3, str(tokenizer_files["bpe"]), workers=2)
    np.testing.assert_array_equal(two.counts, 3 * one.counts)


@pytest.mark.skipif(
    sys.platform == "darwin" or "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="workers are spawned here (Windows, macOS)",
)
def test_workers_fork_from_a_server_that_imported_the_counter():
    """Workers start with the counter's modules (numpy, tokenizers, vocabopt) imported: a spawned one would import
    them first (~0.3 s of CPU each). The check runs in a worker before anything there imports them."""
    from concurrent.futures import ProcessPoolExecutor

    from vocabopt.corpus import pool

    with ProcessPoolExecutor(1, mp_context=pool._context()) as workers:
        check = "[m in __import__('sys').modules for m in ('numpy', 'tokenizers', 'vocabopt.corpus.counters')]"
        assert workers.submit(eval, check).result() == [True, True, True]
        assert workers.submit(os.getppid).result() != os.getpid()  # forked by the server, not by this process


_SIGINT_BLOCKED = "(lambda s: s.SIGINT in s.pthread_sigmask(s.SIG_BLOCK, []))(__import__('signal'))"  # in a worker


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks (Windows)")
def test_workers_block_sigint_whoever_started_the_fork_server():
    """A Ctrl-C reaches the whole process group; the main process stops the pool, and a worker that saw it would die
    printing a traceback. Forked workers inherit the fork server's mask, which this module leaves alone (another
    user of the server keeps its own SIGINT): `_init_worker` blocks it."""
    from concurrent.futures import ProcessPoolExecutor

    from vocabopt.corpus import pool
    from vocabopt.corpus.counters import CountOptions
    from vocabopt.corpus.tokenizer import load_spec

    options = CountOptions(load_spec("word"))
    with ProcessPoolExecutor(1, mp_context=pool._context()) as plain:  # not ours: SIGINT as Python leaves it
        assert plain.submit(eval, _SIGINT_BLOCKED).result() is False
    ctx = pool._context()
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=pool._init_worker, initargs=(options,)) as workers:
        assert workers.submit(eval, _SIGINT_BLOCKED).result() is True


def _pool_in_fork_child() -> None:
    """Run in a child forked from a process that started the fork server: a pool must still work."""
    from concurrent.futures import ProcessPoolExecutor

    from vocabopt.corpus import pool

    ctx = pool._context()
    with ProcessPoolExecutor(1, mp_context=ctx) as workers:
        ok = workers.submit(abs, -3).result() == 3
    os._exit(0 if ok and ctx.get_start_method() == "spawn" else 3)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_spawns_its_workers():
    """The fork server answers to the process that started it: a child forked from that process (the fork start
    method) gets ChildProcessError from it, so its pools spawn."""
    from vocabopt.corpus import pool

    pool._context()  # this process's server is running
    child = multiprocessing.get_context("fork").Process(target=_pool_in_fork_child)
    child.start()
    child.join(60)
    assert child.exitcode == 0


def test_a_long_tmpdir_falls_back_to_spawn(tmp_path):
    """The fork server listens on a Unix socket under TMPDIR, whose path is limited (~107 bytes): spawn instead."""
    long_dir = tmp_path / ("x" * 100)
    long_dir.mkdir()
    script = (
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from vocabopt.corpus import pool\n"
        "if __name__ == '__main__':\n"
        "    ctx = pool._context()\n"
        "    with ProcessPoolExecutor(1, mp_context=ctx) as w:\n"
        "        print(ctx.get_start_method(), w.submit(abs, -3).result())\n"
    )
    env = {**os.environ, "TMPDIR": str(long_dir)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["spawn", "3"]


def test_an_abstract_socket_server_is_not_used(monkeypatch):
    """Where the fork server would listen on a Linux abstract socket (CVE-2022-42919: any local user could send it
    pickles), workers are spawned."""
    from multiprocessing import connection

    from vocabopt.corpus import pool

    monkeypatch.setattr(connection, "arbitrary_address", lambda family: "\0listener-1-1")
    assert pool._context().get_start_method() == "spawn"


def test_a_script_without_a_main_guard_is_told_the_fix(tmp_path, corpus_slice, tokenizer_files):
    """Each worker imports the main script (spawn, and the fork server's workers too), so a script that calls analyze
    at import time would start workers in its workers: with the fork server it fails with the fix named. (Under
    spawn it still hangs: the parent blocks writing a dead worker's start-up arguments.)"""
    script = tmp_path / "no_guard.py"
    script.write_text(
        f"import vocabopt\nvocabopt.analyze([{str(corpus_slice)!r}], {str(tokenizer_files['bpe'])!r}, workers=2)\n",
        encoding="utf-8",
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "VocabOptError: a worker process died" in last and "if __name__ == '__main__':" in last, r.stderr
