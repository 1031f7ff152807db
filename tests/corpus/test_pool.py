"""vocabopt.corpus.pool: the local engine gives the same counts with any number of worker processes."""

from __future__ import annotations

import numpy as np

from vocabopt import analyze


def test_parallel_workers_give_identical_counts(tokenizer_files, corpus_slice):
    one = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]), workers=1)
    two = analyze([str(corpus_slice)] * 3, str(tokenizer_files["bpe"]), workers=2)
    np.testing.assert_array_equal(two.counts, 3 * one.counts)
