"""vocabopt.corpus.tally: tallies of disjoint parts add up to the tally of the whole, in any order; batches keep
one source each."""

from __future__ import annotations

import numpy as np

from vocabopt.corpus.counters import CountOptions, make_counter
from vocabopt.corpus.reader import Reader, SourceOptions
from vocabopt.corpus.tally import Batch, Tally, batches
from vocabopt.corpus.tokenizer import load_spec


def _tally(counter, items: list[Batch]) -> Tally:
    tally = Tally()
    for batch in items:
        tally.add_batch(batch.source, counter.count(batch.payload))
    return tally


def test_parts_add_up_to_the_whole(tmp_path, corpus_slice, tokenizer_files):
    (tmp_path / "b.txt").write_text("a second source\n\nwith a blank line\n")
    reader = Reader([str(corpus_slice), str(tmp_path / "b.txt")], SourceOptions())
    items = list(batches(reader))
    assert len({b.source for b in items}) == 2
    for spec in (load_spec(str(tokenizer_files["bpe"])), load_spec("word")):
        counter = make_counter(CountOptions(spec))
        whole = _tally(counter, items)
        half = len(items) // 2
        summed = _tally(counter, items[half:]).add(_tally(counter, items[:half]))  # any order
        assert summed.sources == whole.sources and summed.paths == whole.paths
        assert summed.words == whole.words and summed.path_reason == whole.path_reason != ""
        assert (summed.n_tokens, summed.n_bytes, summed.n_words, summed.n_sequences) == (
            whole.n_tokens,
            whole.n_bytes,
            whole.n_words,
            whole.n_sequences,
        )
        if whole.counts is not None:
            np.testing.assert_array_equal(summed.counts, whole.counts)
        assert whole.source(1)[1] == 2  # the second source's two lines


def test_an_empty_tally_adds_nothing():
    tally = Tally()
    tally.add(Tally())
    assert tally.counts is None and tally.n_tokens == 0 and tally.path_reason == ""


def test_batches_keep_the_sequences_in_order_and_the_first_is_smaller(tmp_path):
    """Sequences come out whole and in order; the first batch stops at FIRST_BATCH_BYTES, the others at
    BATCH_BYTES (each passes its limit by less than one sequence)."""
    from vocabopt.corpus.tally import BATCH_BYTES, FIRST_BATCH_BYTES

    docs = [f"document {i} " + "word " * (i % 97) for i in range(12_000)]
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(docs) + "\n")
    items = list(batches(Reader([str(path)], SourceOptions())))
    assert [t for b in items for t, _ in b.payload] == docs
    longest = max(map(len, docs))
    assert FIRST_BATCH_BYTES <= items[0].chars < FIRST_BATCH_BYTES + longest
    assert len(items) > 2 and all(BATCH_BYTES <= b.chars < BATCH_BYTES + longest for b in items[1:-1])
