"""vocabopt.corpus.pool: the local engine gives the same counts with any number of worker processes."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from vocabopt import analyze


def test_parallel_workers_give_identical_counts(tokenizer_files, corpus_slice):
    one = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]), workers=1)
    two = analyze([str(corpus_slice)] * 3, str(tokenizer_files["bpe"]), workers=2)
    np.testing.assert_array_equal(two.counts, 3 * one.counts)


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server (Windows)")
def test_workers_fork_from_a_server_that_imported_the_counter():
    """Workers start with the counter's modules (numpy, tokenizers, vocabopt) imported: a spawned one would import
    them first (~0.3 s of CPU each). The check runs in a worker before anything there imports them."""
    from concurrent.futures import ProcessPoolExecutor

    from vocabopt.corpus import pool

    with ProcessPoolExecutor(1, mp_context=pool._context()) as workers:
        check = "[m in __import__('sys').modules for m in ('numpy', 'tokenizers', 'vocabopt.corpus.counters')]"
        assert workers.submit(eval, check).result() == [True, True, True]
        assert workers.submit(os.getppid).result() != os.getpid()  # forked by the server, not by this process
