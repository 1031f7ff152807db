"""The counters: count the tokens of a batch of text exactly, as the tokenizer's `encode_batch` would.

Job: the counting step of the analyze stage, run in worker processes (or Dask tasks), one counter per worker.
Inputs: `CountOptions` (a `TokenizerSpec`, whether to count special tokens) and batches (`Payload`: a block of whole
lines, or (text, continuation) sequences). Outputs: `BatchCounts` per batch: counts (an int64 array indexed by token
id; string-keyed for the word tokenizer), sequences, bytes, words, and the counting path taken and why.

Why this is fast and still exact. A Hugging Face tokenizer normalizes a sequence, splits it into pre-tokens and
runs its model on each pre-token independently, so counts only depend on how often each distinct pre-token occurs:
count those, tokenize each distinct one once, multiply. `HFCounter` takes one of three paths, chosen per tokenizer by
`tokenizer.choose_path` and reported in the stats:
- "chunks": sequences are cut before every run of spaces that follows a non-space character (and before a newline
  between two non-whitespace characters: for GPT-2's byte-level and whitespace-dropping pre-tokenizers, and after
  an ASCII letter or digit for Split regexes that allow it: `cuts.newline_cuts`; and before ASCII punctuation after
  an ASCII letter or digit, "earth," -> "earth" + ",", where the pre-tokenizer allows it: `cuts.punctuation_cuts`);
  the distinct chunks are counted by sorting integer keys of their UTF-8 bytes (`chunks`: numpy, no Python object
  per chunk), and each distinct chunk is encoded once, many chunks laid end to end per tokenizer call (for
  byte-level BPE the tokens are placed by their sizes in bytes, else by their offsets).
- "pretokens": each sequence goes through the tokenizer's own normalizer and pre-tokenizer (Rust), distinct
  pre-tokens are counted, and the model runs once per distinct pre-token.
- "encode": plain `encode_batch`, when the model is not deterministic (BPE dropout); sequences that contain the text
  of an added token (split out before pre-tokenization) always take this path, whatever the tokenizer's.
Special tokens a post-processor adds ([CLS], <s>, ...) are counted once per sequence when asked. `BytesCounter`
counts UTF-8 bytes; `WordCounter` counts words (HF `Whitespace` pre-tokenizer) by string.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import spm
from .chunks import Chunks, chunk_groups, count_words, split_lone_newlines, utf8
from .cuts import byte_table, holds_cut, newline_cuts, punctuation_cuts
from .locate import ChunkEncoder
from .reader import DEFAULT_MAX_CHARS, cut_long
from .store import CACHE_LIMIT, IdStore, add_distinct
from .tokenizer import (
    TokenizerSpec,
    ascii_tokenizer,
    choose_path,
    config_of,
    leading_space_whole,
    metaspace_replacement,
    shared_tokenizer,
)
from .vocab import byte_level_sizes, hf_vocab_size, metaspace_sizes, wordpiece_sizes

# Meant to be no slower than the tokenizer (benchmarks/analyze_throughput.py measures every family's whole run):
# before its first batch, each counter counts the batch's first PROBE_CHARS characters both ways (a trial, its
# counts thrown away); on batches 0..PROBE_BATCHES the chosen path's time is compared with `encode_batch_fast` +
# bincount timed on the batch's first PROBE_CHARS characters (the first TIMED_PROBES probes: the trial and batch 0)
# or QUICK_PROBE_CHARS (later batches: a full probe cost ~20% of a batch's counting on the shipped corpus), scaled to
# the batch. The comparison is cumulative over the probed batches so far: one batch that a pause on a shared machine
# made slow does not send the rest of a run that was winning to encoding (seen on the Heaps corpus: ~20% margins
# per batch, and a lost probe doubled the run). Batches timed on a cold cache (the trial and batch 0) are excused up
# to TRIAL_MARGIN and COLD_MARGIN times encoding, each for itself. When the path has lost, the counter counts the
# rest by encoding (exact either way).
PROBE_BATCHES = 3
PROBE_CHARS = 1 << 16
TIMED_PROBES = 2
QUICK_PROBE_CHARS = PROBE_CHARS // 4
COLD_MARGIN = 1.5
# The trial's timed half is ~10 ms of text: excused up to TRIAL_MARGIN. Ad hoc, six runs each on the head of
# analyze_throughput.py's Heaps corpus: the timed half took 1.3-2.0x encoding's time for Unigram (NFKC) and 0.9-2.1x
# for WordPiece, whose whole runs count faster by chunks, and at 1.5 three Unigram runs of six and two WordPiece ones
# went to encoding (that benchmark's Unigram row: 1.19x in such a run against 1.25x); cl100k-style: 0.5-1.3x.
TRIAL_MARGIN = 3.0
EXACT_BY_CONSTRUCTION = "exact by construction"  # the reason the bytes and word counters give


@dataclass(frozen=True)
class CountOptions:
    """How batches are counted: what every worker needs to build the same counter (picklable)."""

    spec: TokenizerSpec
    add_special_tokens: bool = True  # count the post-processor's special tokens once per sequence
    force_path: str | None = None  # "chunks" | "pretokens" | "encode": compare the counting paths (tests)


@dataclass
class BatchCounts:
    counts: np.ndarray | None = None  # (V,) int64 for hf/bytes
    words: Counter | None = None  # word tokenizer: string-keyed counts
    n_sequences: int = 0
    n_bytes: int = 0  # UTF-8 bytes of the counted text (line terminators excluded)
    n_words: int = 0  # whitespace-separated words
    paths: Counter = field(default_factory=Counter)  # sequences per counting path (the tokenizer's, not timing's)
    path_reason: str = ""  # why the counter counts as it does (the reason for its path)
    switched: int = 0  # of those, sequences counted by encoding after the path measured slower (not recorded)


Payload = str | list[tuple[str, bool]]  # a block of whole lines (one sequence per non-blank line), or sequences


def unpack(payload: Payload, max_chars: int) -> tuple[list[str], int, list[int]]:
    """(texts, number of sequence starts, indices of the texts that continue a sequence cut before them) of a batch;
    block lines longer than max_chars are cut at whitespace."""
    if isinstance(payload, str):
        texts = [line for line in payload.split("\n") if line and not line.isspace()]
        n_starts = len(texts)
        continued: list[int] = []
        if texts and max(map(len, texts)) > max_chars:
            lines, texts = texts, []
            for line in lines:
                for j, piece in enumerate(cut_long(line, max_chars)):
                    if j:
                        continued.append(len(texts))
                    texts.append(piece)
        return texts, n_starts, continued
    return [t for t, _ in payload], sum(not c for _, c in payload), [k for k, (_, c) in enumerate(payload) if c]


def _totals(out: BatchCounts, texts: list[str], n_starts: int, words: bool = True) -> None:
    """Sequences, bytes and (unless the caller counts them another way) whitespace-separated words of a batch."""
    out.n_sequences = n_starts
    out.n_bytes = len(utf8("".join(texts)))
    if words:
        out.n_words = count_words(texts)


@dataclass
class _Prepared:
    """A batch after the pure Python part of counting (`HFCounter.prepare`), before tokenizing (`finish`)."""

    out: BatchCounts  # totals and special tokens filled in
    plain: list[str]  # texts to encode whole
    groups: list[tuple[str, Any, np.ndarray]]  # (kind, distinct keys, counts): see `IdStore`
    path: str = "encode"  # the path the batch was cut for
    seconds: float = 0.0  # spent preparing, s
    first: bool = False  # the counter's first batch (its cache was cold)
    trial: bool = False  # the trial's timed half (see `_trial`)
    probe: list[str] | None = None  # texts to time encode_batch_fast on (see PROBE_BATCHES)
    probe_scale: float = 0.0  # characters of the batch's fast texts / characters of the probe


class HFCounter:
    """Counts a batch of sequences with a Hugging Face tokenizer, exactly as `encode_batch` would.

    `count(payload)` = `finish(prepare(payload))`: `prepare` (cutting and counting distinct pieces, pure Python and
    numpy) may run in another thread than `finish` (tokenizing new pieces, which releases the GIL, and weighting
    their ids), so that one batch is tokenized while the next is cut. `finish` calls must not overlap.
    """

    def __init__(
        self,
        spec: TokenizerSpec,
        add_special_tokens: bool,
        force_path: str | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        tok = shared_tokenizer(spec)
        self.tok, self.max_chars = tok, max_chars
        config = config_of(spec.json)
        self.path, self.reason = choose_path(config)
        if force_path is not None:  # tests compare the paths against each other
            self.path, self.reason = force_path, f"forced ({self.reason})"
        self.vocab_size = hf_vocab_size(tok)
        self.special_ids = self._special_ids() if add_special_tokens else np.zeros(0, np.int64)
        added = [t for t in config.get("added_tokens") or [] if t.get("content")]
        # matched in the raw text (a superset: see below); with them, an unsplit Metaspace's replacement character
        # (texts holding it are encoded whole: `tokenizer.metaspace_replacement`), and texts that start with a space
        # where a Prepend normalizer gives them one more "▁" than the chunk path's tokenizer (`leading_space_whole`)
        replacement = metaspace_replacement(config) if self.path == "chunks" else None
        contents = [*(t["content"] for t in added), *([replacement] if replacement else [])]
        self.added = _alternation(contents)
        # no match without one of their first characters, found by a C scan each: the regex alternation of a
        # byte-fallback vocabulary's 259 added tokens took ~7 ms per MB of text that holds none (ad hoc, kjv.txt)
        self.added_firsts = sorted({c[0] for c in contents})
        self.leading_space = self.path == "chunks" and leading_space_whole(config)
        self.newline_cuts = newline_cuts(config) if self.path == "chunks" else None  # also cut before lone newlines
        # and before these ASCII punctuation characters after an ASCII letter or digit: a (256,) bool byte table
        marks = punctuation_cuts(config) if self.path == "chunks" else ""
        self.punctuation = byte_table(marks)
        # the tokenizer matches a token with "normalized": true by its normalized content in the *normalized* text
        # only; normalizing a batch is costly (it was most of a WordPiece or NFKC Unigram count), so only for those
        self.normalizer = tok.normalizer
        normalize = self.normalizer.normalize_str if self.normalizer is not None else str
        normalized = [normalize(t["content"]) for t in added if t.get("normalized", True)]
        self.added_normalized = _alternation(c for c in normalized if c)
        # an added token can form where chunks are laid end to end if its text (raw, or normalized) holds a place
        # the chunk path cuts: whitespace after its first character, or such punctuation after a letter or digit
        # ("C" + "++" -> "C++"); `ChunkEncoder` then encodes those chunks one per text
        self.join_risk = any(holds_cut(c, marks) for c in [*(t["content"] for t in added), *normalized])
        # chunks are encoded by the tokenizer restated without its Replace normalizer (`restated_metaspace`), the
        # same tokens on every text the chunk path takes; tokens located by their bytes (byte-level BPE) or
        # characters (SentencePiece layouts), else by the tokenizer's offsets
        chunked = self.path == "chunks"
        self.encoder = ChunkEncoder(
            shared_tokenizer(spec, restated=True),
            byte_level_sizes(tok, config) if chunked else None,
            (metaspace_sizes(tok, config) or wordpiece_sizes(tok, config)) if chunked else None,
            (lambda text: self._any_added([text])) if self.join_risk else None,
            _drops_characters(config),
            self.newline_cuts,
            ascii_tokenizer(spec) if chunked else None,
            self.punctuation,
        )
        self.store = IdStore()  # distinct piece -> ids, remembered across batches
        self.configured = self.path  # what the stats record; self.path may become "encode" (see PROBE_BATCHES)
        self.probe_batches = PROBE_BATCHES if force_path is None else 0
        self.n_batches, self.tried = 0, False
        self.encode_rates: list[float] = []  # s per character of `encode_batch_fast` + bincount, timed by probes
        self.probed = [0.0, 0.0]  # over the probed batches: (s the path took, s allowed: encoding's, see `_probe`)
        self._encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # ids only, where available

    def _special_ids(self) -> np.ndarray:
        """Ids the post-processor adds to one sequence (their multiset does not depend on the text)."""
        enc = self.tok.encode("", add_special_tokens=False)
        with_special = self.tok.post_process(enc, add_special_tokens=True)
        ids = [i for i, m in zip(with_special.ids, with_special.special_tokens_mask) if m]
        return np.asarray(ids, dtype=np.int64)

    def count(self, payload: Payload) -> BatchCounts:
        return self.finish(self.prepare(payload))

    def prepare(self, payload: Payload) -> _Prepared:
        texts, n_starts, continued = unpack(payload, self.max_chars)
        if not self.tried and self.path != "encode" and self.probe_batches:
            self._trial(texts)
        start, path = time.perf_counter(), self.path
        out = BatchCounts(counts=np.zeros(self.vocab_size, np.int64), path_reason=self.reason)
        _totals(out, texts, n_starts, words=path != "chunks")
        if continued and self.leading_space:  # a piece cut before a space: its own "▁" comes from the Prepend, as
            texts = list(texts)  # in the uncut sequence, where no token crosses the cut
            for k in continued:
                texts[k] = texts[k][1:] if texts[k][:1] == " " else texts[k]
        if self.special_ids.size and n_starts:
            np.add.at(out.counts, self.special_ids, n_starts)
        if path == "encode":
            plain, fast = texts, []
        elif self._whole(texts):
            plain, fast = [], []
            for t in texts:
                (plain if self._whole([t]) else fast).append(t)
        else:
            plain, fast = [], texts
        if plain:
            self._record_plain(out, plain, path)
        groups: list[tuple[str, Any, np.ndarray]] = []
        if fast:
            out.paths[path] += len(fast)
            if path == "chunks":
                cut = split_lone_newlines(fast, self.newline_cuts) if self.newline_cuts else fast
                groups, n_words = chunk_groups(cut, self.punctuation)
                out.n_words += n_words
            else:
                pretokens = self._pretoken_counts(fast)
                groups = [("piece", list(pretokens), _values(pretokens))]
        prepared = _Prepared(out, plain, groups, path, first=self.n_batches == 0)
        self.n_batches += 1
        if fast and path != "encode" and 0 < self.probe_batches and self.n_batches <= 1 + self.probe_batches:
            prepared.probe = _head(fast, PROBE_CHARS)
            prepared.probe_scale = sum(map(len, fast)) / max(1, sum(map(len, prepared.probe)))
        prepared.seconds = time.perf_counter() - start
        return prepared

    def _record_plain(self, out: BatchCounts, plain: list[str], path: str) -> None:
        """Sequences per path of the texts encoded whole: the added tokens' and, once switched to encoding (see
        PROBE_BATCHES), the others under the tokenizer's own path, so that timing never changes the stats."""
        n_added = len(plain)
        if path != self.configured:
            n_added = sum(self._whole([t]) for t in plain) if self._whole(plain) else 0
            out.switched = len(plain) - n_added
            if out.switched:
                out.paths[self.configured] += out.switched
        if n_added:
            out.paths["encode"] += n_added
        if path == "chunks":
            out.n_words += len(" ".join(plain).split())

    def finish(self, prepared: _Prepared) -> BatchCounts:
        start, out = time.perf_counter(), prepared.out
        if prepared.plain:
            out.counts += self._encode_counts(prepared.plain)
        if prepared.groups:
            add_distinct(self.store, prepared.groups, out.counts, lambda texts: self._tokenize(texts, prepared.path))
        if prepared.probe:
            self._probe(prepared, prepared.seconds + time.perf_counter() - start)
        return out

    def _encode_counts(self, texts: list[str]) -> np.ndarray:
        """(V,) int64 counts of plain encoding (the peer the fast paths must beat)."""
        encs = self._encode_batch(texts, add_special_tokens=False)
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64)
        return np.bincount(ids, minlength=self.vocab_size)

    def _trial(self, texts: list[str]) -> None:
        """Count the head of the first batch with the chosen path, so that a path that loses switches before the
        first real batch; the counts are thrown away. Its first half only fills the cache (untimed); the second is
        a probed batch of its own (see PROBE_BATCHES). Timed on a cold cache, every piece is new, and the chunk path
        lost to encoding by 1.1-1.7x on the head of the Heaps corpus (benchmarks/analyze_throughput.py), where it
        counts the whole corpus ~2x faster: a coin toss at COLD_MARGIN sent such runs to encoding."""
        self.tried = True
        sample = _head(texts, PROBE_CHARS) if texts else []
        chars = sum(map(len, sample))
        if chars >= PROBE_CHARS // 2:  # small corpora: nothing to gain
            warm = _head(sample, chars // 2)
            if len(warm) < len(sample):
                probed, self.probe_batches = self.probe_batches, -1  # no probe on this half
                self.finish(self.prepare([(t, False) for t in warm]))
                self.probe_batches, self.n_batches = probed, 0
            else:  # one text holds the half-way mark (long documents): timed whole, on a cold cache
                warm = []
            timed = self.prepare([(t, False) for t in sample[len(warm) :]])
            timed.trial = True
            self.finish(timed)
        self.n_batches = 0  # the real first batch is probed as the first, too

    def _probe(self, prepared: _Prepared, seconds: float) -> None:
        """Switch to plain encoding when it would have counted the probed batches so far faster than the path did."""
        probe = prepared.probe or []
        timed = probe if len(self.encode_rates) < TIMED_PROBES else _head(probe, QUICK_PROBE_CHARS)
        start = time.perf_counter()
        self._encode_counts(timed)
        self.encode_rates.append((time.perf_counter() - start) / max(1, sum(map(len, timed))))
        encoding = self.encode_rates[-1] * sum(map(len, probe)) * prepared.probe_scale  # s, scaled to the batch
        # the trial is excused up to TRIAL_MARGIN, batch 0 up to COLD_MARGIN, each for itself: their slack never pays
        # for later batches
        margin = TRIAL_MARGIN if prepared.trial else COLD_MARGIN
        allowed = max(encoding, min(seconds, margin * encoding)) if prepared.first else encoding
        self.probed[0] += seconds
        self.probed[1] += allowed
        if self.probed[1] < self.probed[0]:
            self.path, self.probe_batches = "encode", 0

    def _tokenize(self, texts: Chunks, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, starts, lengths): text j's token ids are ids[starts[j]:starts[j] + lengths[j]]."""
        if path == "chunks":
            return self.encoder.encode(texts)
        pieces = [[t.id for t in self.tok.model.tokenize(piece)] for piece in texts.strings()]
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        ids = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=int(lengths.sum()))
        return ids, np.cumsum(lengths) - lengths, lengths

    def _whole(self, texts: list[str]) -> bool:
        """Whether any text is to be encoded whole: it holds an added token's content (`_any_added`) or, with
        `leading_space`, starts with a space."""
        return (self.leading_space and any(t[:1] == " " for t in texts)) or self._any_added(texts)

    def _any_added(self, texts: list[str]) -> bool:
        """Whether any text contains an added token's content: any added token's in the raw text, or a
        `normalized` one's normalized content in the normalized text (checked on the whole batch; a raw match of a
        token the tokenizer would only match after normalizing just sends the text to plain encoding, which is
        exact anyway)."""
        if self.added is None:
            return False
        joined = "\n".join(texts)
        if any(c in joined for c in self.added_firsts) and self.added.search(joined):
            return True
        if self.added_normalized is None or self.normalizer is None:
            return False
        return self.added_normalized.search(self.normalizer.normalize_str(joined)) is not None

    def _pretoken_counts(self, texts: list[str]) -> Counter:
        counts: Counter = Counter()
        pre = self.tok.pre_tokenizer
        for text in texts:
            if self.normalizer is not None:
                text = self.normalizer.normalize_str(text)
            counts.update([p for p, _ in pre.pre_tokenize_str(text)] if pre is not None else [text])
        return counts


def _drops_characters(config: dict) -> bool:
    """Whether the model drops characters it has no token for: BPE without an unk token or byte fallback."""
    model = config.get("model") or {}
    return model.get("type") == "BPE" and model.get("unk_token") is None and not model.get("byte_fallback")


def _alternation(contents: Any) -> re.Pattern | None:
    """A regex matching any of `contents` (longest first), None for none."""
    ordered = sorted(set(contents), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _head(texts: list[str], chars: int) -> list[str]:
    """The first texts holding about `chars` characters (at least one)."""
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    return texts[: int(np.searchsorted(ends, chars)) + 1]


def _values(counter: Counter) -> np.ndarray:
    return np.fromiter(counter.values(), dtype=np.int64, count=len(counter))


class SPCounter:
    """Counts with a SentencePiece model exactly as its own `encode` would: distinct words, each encoded once
    (see vocabopt.corpus.spm), or whole sequences where the model's options do not allow that. A bare .model has no
    post-processor: no special tokens are added per sequence."""

    def __init__(self, spec: TokenizerSpec, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.sp = spm.processor(spec.blob, spec.name)
        self.path, self.reason = spm.word_path(self.sp)
        self.vocab_size = self.sp.get_piece_size()
        self.store = IdStore()
        self.max_chars = max_chars

    def count(self, payload: Payload) -> BatchCounts:
        texts, n_starts, _ = unpack(payload, self.max_chars)
        out = BatchCounts(counts=np.zeros(self.vocab_size, np.int64), path_reason=self.reason)
        _totals(out, texts, n_starts)
        out.paths[self.path] += len(texts)
        if self.path == "encode":
            ids = np.fromiter(itertools.chain.from_iterable(self.sp.encode(texts)), dtype=np.int64)
            out.counts += np.bincount(ids, minlength=self.vocab_size)
            return out
        # Normalized, a text's words are "▁"-prefixed; as spaces, they are the chunks of the chunk machinery, and
        # encoding " w" alone gives the word's pieces.
        words = [t.replace("▁", " ") for t in self.sp.normalize(texts)]
        groups, _ = chunk_groups([w for w in words if w])
        if groups:
            add_distinct(self.store, groups, out.counts, self._tokenize)
        return out

    def _tokenize(self, texts: Chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pieces = self.sp.encode(texts.strings())
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        ids = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=int(lengths.sum()))
        return ids, np.cumsum(lengths) - lengths, lengths


class BytesCounter:
    """UTF-8 bytes, counted with one bincount per batch."""

    vocab_size = 256
    reason = EXACT_BY_CONSTRUCTION

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.max_chars = max_chars

    def count(self, payload: Payload) -> BatchCounts:
        texts, n_starts, _ = unpack(payload, self.max_chars)
        out = BatchCounts(path_reason=self.reason)
        _totals(out, texts, n_starts)
        data = utf8("".join(texts))
        out.counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(np.int64)
        out.paths["bytes"] += len(texts)
        return out


class WordCounter:
    """Unicode words (HF `Whitespace` pre-tokenizer: \\w+ | [^\\w\\s]+), counted by string."""

    reason = EXACT_BY_CONSTRUCTION

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        from tokenizers import pre_tokenizers

        self.pre = pre_tokenizers.Whitespace()
        self.cache: dict[str, list[str]] = {}
        self.max_chars = max_chars

    def count(self, payload: Payload) -> BatchCounts:
        texts, n_starts, _ = unpack(payload, self.max_chars)
        out = BatchCounts(words=Counter(), path_reason=self.reason)
        _totals(out, texts, n_starts)
        # Whitespace never sits inside a word, so splitting at whitespace first is exact.
        chunks = Counter(" ".join(texts).split())
        if len(self.cache) > CACHE_LIMIT:
            self.cache.clear()
        for chunk, n in chunks.items():
            pieces = self.cache.get(chunk)
            if pieces is None:
                pieces = self.cache[chunk] = [p for p, _ in self.pre.pre_tokenize_str(chunk)]
            for p in pieces:
                out.words[p] += n
        out.paths["words"] += len(texts)
        return out


def make_counter(options: CountOptions, max_chars: int = DEFAULT_MAX_CHARS) -> AnyCounter:
    """The counter of `options.spec`'s kind (built once per worker: it caches the ids of distinct pieces)."""
    spec = options.spec
    if spec.kind == "hf":
        return HFCounter(spec, options.add_special_tokens, options.force_path, max_chars)
    if spec.kind == "spm":
        return SPCounter(spec, max_chars)
    if spec.kind == "bytes":
        return BytesCounter(max_chars)
    return WordCounter(max_chars)


AnyCounter = HFCounter | SPCounter | BytesCounter | WordCounter
