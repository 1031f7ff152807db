"""Tallies: counts and totals of part of a corpus, which add up across parts; and the batches they are counted in.

Job: the bookkeeping both engines share. Inputs: the items of a `Reader` (grouped into `Batch`es by `batches`) and
the `BatchCounts` a counter returns for each. Outputs: a `Tally` (counts, totals per source, sequences per counting
path and why), which `vocabopt.analyze` turns into CorpusStats. Tallies of disjoint parts add up (`Tally.add`) to
the whole's, so the engines may count parts anywhere and in any order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .counters import BatchCounts, Payload
from .reader import Block, Reader

BATCH_BYTES = 1 << 20  # text per batch sent to a worker (characters, about bytes)
# The first batch is smaller: in-process, it is cut while nothing else runs (the next batch is cut while one is
# tokenized); ~25 ms less on kjv.txt for tokenizers whose tokenizing is the slower half (Unigram), ad hoc.
FIRST_BATCH_BYTES = BATCH_BYTES // 4
Progress = Callable[[int, "int | None", int], None]  # (bytes done, bytes total or None, tokens so far)


@dataclass
class Batch:
    """Text of one source, counted in one piece by one worker."""

    source: int  # every batch holds text of one source
    payload: Payload  # a block of lines, or (text, continuation) sequences
    chars: int = 0  # characters of text in the payload


@dataclass
class Tally:
    """Counts and totals of some of a corpus. Tallies of disjoint parts add up (`add`) to the whole's tally, so the
    engines may count parts anywhere and in any order."""

    counts: np.ndarray | None = None  # (V,) int64 (hf, bytes); None before the first batch
    words: Counter = field(default_factory=Counter)  # word tokenizer: string-keyed counts
    paths: Counter = field(default_factory=Counter)  # sequences per counting path
    path_reason: str = ""  # the counters' reason for their path ("" before the first batch)
    switched: int = 0  # sequences counted by encoding after the path measured slower (timing: not in the stats)
    sources: dict[int, list[int]] = field(default_factory=dict)  # source -> [bytes, sequences, replaced, skipped]
    n_sequences: int = 0
    n_words: int = 0
    n_bytes: int = 0
    n_tokens: int = 0

    def add_batch(self, source: int, result: BatchCounts) -> None:
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
        self.path_reason = self.path_reason or result.path_reason
        self.switched += result.switched
        self.n_sequences += result.n_sequences
        self.n_words += result.n_words
        self.n_bytes += result.n_bytes
        totals = self.source(source)
        totals[0] += result.n_bytes
        totals[1] += result.n_sequences

    def source(self, i: int) -> list[int]:
        """Source i's [bytes, sequences, replaced bytes, skipped lines] (created as zeros)."""
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
        self.path_reason = self.path_reason or other.path_reason
        self.switched += other.switched
        for i, theirs in other.sources.items():
            mine = self.source(i)
            for k, v in enumerate(theirs):
                mine[k] += v
        self.n_sequences += other.n_sequences
        self.n_words += other.n_words
        self.n_bytes += other.n_bytes
        self.n_tokens += other.n_tokens
        return self


def batches(reader: Reader) -> Iterator[Batch]:
    """Blocks pass through as they are; sequences are grouped into batches of about BATCH_BYTES of one source (the
    first of about FIRST_BATCH_BYTES)."""
    batch: Batch | None = None
    limit = FIRST_BATCH_BYTES
    for item in reader:
        if isinstance(item, Block):
            if batch is not None:
                yield batch
                batch = None
            yield Batch(item.source, item.text, len(item.text))
            continue
        if batch is not None and (batch.source != item.source or batch.chars >= limit):
            yield batch
            batch, limit = None, BATCH_BYTES
        if batch is None:
            batch = Batch(item.source, [])
        batch.payload.append((item.text, item.continuation))
        batch.chars += len(item.text)
    if batch is not None:
        yield batch
