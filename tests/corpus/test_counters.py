"""vocabopt.corpus.counters: counts equal an independent count (plain `encode_batch` + `bincount`), for every
tokenizer kind and path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from vocabopt import analyze
from vocabopt.corpus.chunks import Chunks
from vocabopt.corpus.counters import BatchCounts, HFCounter
from vocabopt.corpus.tokenizer import load_spec


def reference_counts(tokenizer_path, sequences, add_special_tokens=True) -> np.ndarray:
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    vocab = max(tok.get_vocab(with_added_tokens=True).values()) + 1
    ids = [i for e in tok.encode_batch(sequences, add_special_tokens=add_special_tokens) for i in e.ids]
    return np.bincount(np.asarray(ids, dtype=np.int64), minlength=vocab)


def lines_of(path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def documents_of(path) -> list[str]:
    docs, block = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            block.append(line)
        elif block:
            docs.append("\n".join(block))
            block = []
    return docs + (["\n".join(block)] if block else [])


@pytest.mark.parametrize(
    "kind",
    [
        "bpe",
        "wordpiece",
        "unigram",
        "split_regex",
        "split_custom",
        "spm_bpe",
        "spm_bpe_joined",
        "spm_unigram",
        "spm_llama",
    ],
)
@pytest.mark.parametrize("path", [None, "pretokens", "encode"])
@pytest.mark.parametrize("sequence", [None, "line"])
def test_counts_equal_encode_batch(tokenizer_files, corpus_slice, kind, path, sequence):
    """The default (documents: newlines counted, as training sees the text) and line mode, on every path."""
    stats = analyze([str(corpus_slice)], str(tokenizer_files[kind]), force_path=path, sequence=sequence)
    sequences = lines_of(corpus_slice) if sequence == "line" else documents_of(corpus_slice)
    ref = reference_counts(tokenizer_files[kind], sequences)
    np.testing.assert_array_equal(stats.counts, ref)
    assert stats.n_sequences == len(sequences)
    assert stats.n_words == sum(len(line.split()) for line in lines_of(corpus_slice))


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_document_sequences_and_specials(tokenizer_files, corpus_slice, kind):
    for special in (True, False):
        stats = analyze(
            [str(corpus_slice)], str(tokenizer_files[kind]), sequence="document", add_special_tokens=special
        )
        ref = reference_counts(tokenizer_files[kind], documents_of(corpus_slice), add_special_tokens=special)
        np.testing.assert_array_equal(stats.counts, ref)


def test_added_token_text_takes_the_encode_path(tmp_path, tokenizer_files):
    path = tmp_path / "c.txt"
    lines = ["In the beginning<|endoftext|>God created", "plain line here", "x <|endoftext|> y"]
    path.write_text("\n".join(lines) + "\n")
    stats = analyze([str(path)], str(tokenizer_files["bpe"]), sequence="line")
    np.testing.assert_array_equal(stats.counts, reference_counts(tokenizer_files["bpe"], lines))
    assert stats.options["sequences_per_path"] == {"chunks": 1, "encode": 2}


# Text that stresses the chunk cut: runs of spaces, tabs, NBSP and other Unicode spaces, combining marks,
# compatibility characters NFKC rewrites, CJK, digits, punctuation, leading/trailing spaces.
ALPHABET = list("ab Zé \t\n\u00a0\u3000\u2003\u0301\u00b4\u00a8\ufb01\u4e2d\u6587'.,!?-0123456789") + ["  ", "’s"]


ASCII = list("abZ \t\n\r\x0b\x1c'.,!?-09") + ["  ", "'s", "'LL", "12345", "Lord"]  # all-ASCII: the numpy scan


# Non-ASCII text without Unicode spaces also takes the byte scan; long words make pieces of 8-15 and 16+ bytes.
UTF8 = list("aé中’\u0301 \t\n.") + ["  ", "Jerusalem", "righteousness", "évangélisation", "中文中文"]


def _texts(alphabet):
    return st.lists(
        st.lists(st.sampled_from(alphabet), min_size=1, max_size=40).map("".join).filter(str.strip),
        min_size=1,
        max_size=12,
    )


texts = st.one_of(_texts(ALPHABET), _texts(ASCII), _texts(UTF8))


@pytest.mark.parametrize(
    "kind",
    [
        "bpe",
        "bpe_spaces",
        "wordpiece",
        "unigram",
        "bpe_gaps",
        "bpe_unk",
        "bpe_fuse_unk",
        "split_regex",
        "split_qwen",
        "spm_bpe",
        "spm_bpe_runs",
    ],
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences=texts)
@example(sequences=["a  ", "a ", "a  "])  # lone whitespace chunks whose offsets a trimming post-processor moves
@example(sequences=["ЖЖЖЖ Ж Ж"])  # fused unk tokens whose sizes in bytes cancel out in the text's sum
@example(sequences=["earth.\nAnd 1:2\n's\n'\ns x\n\ny", "\na\nb\n", "a\n b\t\nc"])  # cuts before lone newlines
def test_chunk_path_is_exact_on_adversarial_text(tokenizer_files, kind, sequences):
    counter = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=True)
    assert counter.path == "chunks"
    ref = reference_counts(tokenizer_files[kind], sequences)
    for _ in range(2):  # the second time every chunk comes from the cache
        got = counter.count([(s, False) for s in sequences])
        np.testing.assert_array_equal(got.counts, ref)
        assert got.n_words == sum(len(s.split()) for s in sequences)


def test_tokens_that_do_not_add_up_to_the_bytes_fall_back_to_offsets(tokenizer_files):
    kind = "bpe_gaps"
    assert HFCounter(load_spec(str(tokenizer_files["bpe_unk"])), add_special_tokens=False).encoder.token_bytes is None
    counter = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=False)
    assert counter.encoder.token_bytes is not None  # byte-level: chunks are located by token sizes ...
    counter.encoder.encode(Chunks.of_strings(["In", " the"]))
    assert counter.encoder.token_bytes is not None
    counter.encoder.encode(Chunks.of_strings(["Ésaïe", " 中"]))  # ... unless bytes went missing
    assert counter.encoder.token_bytes is None  # and then no longer tried
    counter = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=False)
    sequences = ["Ésaïe and the 中文 text", "plain words", "naïve café"]
    got = counter.count([(s, False) for s in sequences])
    np.testing.assert_array_equal(got.counts, reference_counts(tokenizer_files[kind], sequences, False))


def test_store_forgetting_pieces_stays_exact(tokenizer_files, corpus_slice):
    lines = lines_of(corpus_slice)
    for path in ("chunks", "pretokens"):
        counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=True, force_path=path)
        counter.store.limit = 300  # cleared again and again
        total = sum(counter.count([(s, False) for s in lines[i : i + 40]]).counts for i in range(0, len(lines), 40))
        np.testing.assert_array_equal(total, reference_counts(tokenizer_files["bpe"], lines))


def test_long_lines_are_cut_at_whitespace(tmp_path, tokenizer_files):
    words = " ".join(f"word{i % 97}" for i in range(5000))
    path = tmp_path / "long.txt"
    path.write_text(words + "\nshort line\n")
    from vocabopt.corpus import reader

    old = reader.DEFAULT_MAX_CHARS
    reader.DEFAULT_MAX_CHARS = 1000
    try:
        opts = reader.SourceOptions(sequence="line", max_chars=1000)
        pieces = list(reader.Reader([str(path)], opts))
    finally:
        reader.DEFAULT_MAX_CHARS = old
    assert all(len(p.text) <= 1000 for p in pieces if isinstance(p, reader.Text))
    # The pieces reassemble the line, and the chunk path counts them exactly (one sequence, not one per piece).
    stats = analyze([str(path)], str(tokenizer_files["bpe"]), sequence="line")
    np.testing.assert_array_equal(stats.counts, reference_counts(tokenizer_files["bpe"], [words, "short line"]))


def test_word_and_bytes_tokenizers(corpus_slice):
    lines = lines_of(corpus_slice)
    stats = analyze([str(corpus_slice)], "bytes", sequence="line")
    ref = np.bincount(np.frombuffer("".join(lines).encode(), dtype=np.uint8), minlength=256)
    np.testing.assert_array_equal(stats.counts, ref)

    import re
    from collections import Counter

    words = Counter(w for line in lines for w in re.findall(r"\w+|[^\w\s]+", line))
    stats = analyze([str(corpus_slice)], "word", sequence="line")
    assert stats.tokens[0] == "<unk>" and stats.counts[0] == 0
    assert dict(zip(stats.tokens[1:], stats.counts[1:].tolist())) == dict(words)
    assert list(stats.counts[1:]) == sorted(stats.counts[1:], reverse=True)

    pruned = analyze([str(corpus_slice)], "word", sequence="line", min_count=3, max_vocab=500)
    assert pruned.vocab_size == 500 and pruned.total == stats.total
    assert pruned.counts[0] == stats.total - pruned.counts[1:].sum()


def test_a_path_slower_than_encoding_switches_to_encode_and_stays_exact(tokenizer_files, corpus_slice, monkeypatch):
    """Never slower than the tokenizer: a chunk path made slow (a sleep per batch) loses to encode_batch_fast in the
    trial on the first batch's head; the counter encodes from then on, the counts stay exact, and the stats still
    record the tokenizer's path (timing never reaches the artifact)."""
    import time

    from vocabopt.corpus import counters

    real = counters.chunk_groups

    def slow(texts, *args):
        time.sleep(0.5)
        return real(texts, *args)

    monkeypatch.setattr(counters, "chunk_groups", slow)
    lines = lines_of(corpus_slice)
    counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=True)
    results = [counter.count([(s, False) for s in lines[i : i + 300]]) for i in range(0, 1500, 300)]
    assert counter.path == "encode" and counter.configured == "chunks"
    assert all(r.switched == 300 for r in results)  # the trial on batch 0's head lost: every batch is encoded
    assert [dict(r.paths) for r in results] == [{"chunks": 300}] * 5
    np.testing.assert_array_equal(
        sum(r.counts for r in results), reference_counts(tokenizer_files["bpe"], lines[:1500])
    )


def test_one_slow_batch_does_not_switch_a_path_that_was_winning(tokenizer_files, corpus_slice, monkeypatch):
    """The comparison is cumulative: a path that beat encoding by far on the trial and batch 0 keeps going after
    one batch a little slower than encoding (a pause on a shared machine), and switches once it keeps losing."""
    from vocabopt.corpus import counters

    counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=False)
    counter.encode_rates = [1.0, 1.0]  # s per character: later probes time quick probes of their own
    counter.probed = [1.0, 10.0]  # the path took 1 s where encoding would have taken 10 s
    monkeypatch.setattr(counter, "_encode_counts", lambda texts: None)  # encoding "takes" ~0 s from here on
    prepared = counters._Prepared(BatchCounts(), [], [], probe=["x" * 100], probe_scale=1.0)
    counter._probe(prepared, 5.0)  # this batch: 5 s against ~0 s
    assert counter.path == "chunks"
    counter._probe(prepared, 5.0)  # and again: 11 s in all against 10
    assert counter.path == "encode"


def test_cold_slack_does_not_carry_over_to_warm_batches(tokenizer_files, monkeypatch):
    """A path 12% slower than encoding everywhere: the cold trial and batch 0 are excused (COLD_MARGIN), but their
    slack must not pay for warm batches, so the first warm probe switches it (a fake clock: encoding "takes" 1 s)."""
    import types

    from vocabopt.corpus import counters

    clock = [0.0]
    monkeypatch.setattr(counters, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=False)
    monkeypatch.setattr(counter, "_encode_counts", lambda texts: clock.__setitem__(0, clock[0] + 1.0))
    for first in (True, True, False):
        prepared = counters._Prepared(BatchCounts(), [], [], first=first, probe=["x" * 1000], probe_scale=1.0)
        assert counter.path == "chunks"
        counter._probe(prepared, 1.12)
    assert counter.path == "encode"


@pytest.mark.parametrize("ratio, path", [(2.5, "chunks"), (3.5, "encode")])
def test_the_trial_is_excused_up_to_its_own_margin(tokenizer_files, monkeypatch, ratio, path):
    """The trial times ~10 ms of cold text, where the chunk path took up to ~2x encoding's time on runs it wins:
    it keeps the path up to TRIAL_MARGIN times encoding (a fake clock: encoding "takes" 1 s), batch 0 up to
    COLD_MARGIN only."""
    import types

    from vocabopt.corpus import counters

    clock = [0.0]
    monkeypatch.setattr(counters, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=False)
    monkeypatch.setattr(counter, "_encode_counts", lambda texts: clock.__setitem__(0, clock[0] + 1.0))
    trial = counters._Prepared(BatchCounts(), [], [], first=True, trial=True, probe=["x" * 1000], probe_scale=1.0)
    counter._probe(trial, ratio)
    assert counter.path == path
    if path == "chunks":
        batch_0 = counters._Prepared(BatchCounts(), [], [], first=True, probe=["x" * 1000], probe_scale=1.0)
        counter._probe(batch_0, 2.0)  # cold too, but 2x is past COLD_MARGIN
        assert counter.path == "encode"


def test_only_the_trial_gets_its_margin_and_forced_paths_are_never_probed(tokenizer_files, corpus_slice):
    """A first batch too small for a trial is batch 0 (COLD_MARGIN), not a trial; a forced path is never timed."""
    from vocabopt.corpus import counters

    seen: list[bool] = []
    counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=False)
    real = counter._probe
    counter._probe = lambda prepared, seconds: seen.append(prepared.trial) or real(prepared, seconds)
    lines = lines_of(corpus_slice)
    counter.count([(s, False) for s in lines[:20]])  # under PROBE_CHARS // 2 characters: no trial
    assert seen == [False]
    forced = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=False, force_path="chunks")
    for i in range(0, 1200, 300):
        forced.count([(s, False) for s in lines[i : i + 300]])
    assert forced.encode_rates == [] and forced.path == "chunks"
    assert counters.TRIAL_MARGIN > counters.COLD_MARGIN


def test_the_trial_times_long_documents_whole(tokenizer_files):
    """A text holding the half-way mark of the trial's sample (a long document) leaves no second half to time:
    the trial then times the whole sample on a cold cache, as before it had a warm half."""
    counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=False)
    words = "In the beginning God created the heaven and the earth. "
    counter._trial([words * 180, words * 1300])  # ~10K and ~72K characters: the last holds the mark
    assert len(counter.encode_rates) == 1 and counter.n_batches == 0


def test_a_path_that_turns_slow_after_the_timed_probes_still_switches(tokenizer_files, corpus_slice, monkeypatch):
    """Encoding is timed in full on the trial and batch 0 (`TIMED_PROBES`), on a quick probe of later batches; a
    path that turns slow on batch 1 switches after it (its time over the probed batches so far exceeds encoding's),
    counts exact."""
    import time

    from vocabopt.corpus import counters

    real = counters.chunk_groups

    def slow_from_batch_1(texts, *args):
        if counter.n_batches >= 1:  # batches counted so far (the trial's halves reset it)
            time.sleep(0.5)
        return real(texts, *args)

    monkeypatch.setattr(counters, "chunk_groups", slow_from_batch_1)
    monkeypatch.setattr(counters, "COLD_MARGIN", 3.0)  # the trial and batch 0 keep the path, whatever the noise
    lines = lines_of(corpus_slice)
    counter = HFCounter(load_spec(str(tokenizer_files["bpe"])), add_special_tokens=True)
    results = [counter.count([(s, False) for s in lines[i : i + 300]]) for i in range(0, 1500, 300)]
    assert len(counter.encode_rates) == 3  # the trial, batch 0, batch 1 (then encoded: no more probes)
    assert [r.switched for r in results] == [0, 0, 300, 300, 300]
    np.testing.assert_array_equal(
        sum(r.counts for r in results), reference_counts(tokenizer_files["bpe"], lines[:1500])
    )


@pytest.mark.parametrize("path", [None, "pretokens"])
def test_added_tokens_match_where_the_tokenizer_matches_them(tmp_path, tokenizer_files, path):
    """A `normalized: false` added token matches in the raw text only, a `normalized: true` one in the normalized
    text (NFKC turns a full-width <mask> into one): counts stay exact either way, and a batch is normalized for the
    check only when some added token is a normalized one (normalizing was most of a WordPiece count)."""
    from tokenizers import AddedToken, normalizers

    tok = Tokenizer.from_file(str(tokenizer_files["bpe"]))
    tok.normalizer = normalizers.NFKC()
    tok.add_special_tokens([AddedToken("[CLS]", normalized=False)])
    tok.add_tokens([AddedToken("<mask>", normalized=True)])
    tok.save(str(tmp_path / "tok.json"))
    lines = ["a \uff3b\uff23\uff2c\uff33\uff3d b", "a [CLS] b", "c \uff1cmask\uff1e d", "c <mask> d", "plain words"]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = analyze([str(tmp_path / "c.txt")], str(tmp_path / "tok.json"), sequence="line", force_path=path)
    np.testing.assert_array_equal(stats.counts, reference_counts(tmp_path / "tok.json", lines))
    per_path = stats.options["sequences_per_path"]
    assert per_path.pop("encode") == 3 and sum(per_path.values()) == 2  # [CLS], <mask>, full-width <mask> encoded

    class Refuses:
        def normalize_str(self, text):
            raise AssertionError("normalized a batch although no added token is a normalized one")

    tok = Tokenizer.from_file(str(tokenizer_files["bpe"]))
    tok.add_special_tokens([AddedToken("[CLS]", normalized=False)])
    tok.save(str(tmp_path / "special.json"))
    counter = HFCounter(load_spec(str(tmp_path / "special.json")), add_special_tokens=False)
    counter.normalizer = Refuses()
    assert not counter._any_added(["a \uff3b\uff23\uff2c\uff33\uff3d b", "plain"]) and counter._any_added(["[CLS]"])


# Characters NFKC changes ("ﬁ" -> "fi", full-width "Ａ" -> "A", "①" -> "1", a no-break space -> " ") or keeps.
NFKC_CHANGED = ["\ufb01", "\uff21", "\u2460", "\u00a0", "e\u0301", "\u00e9", "\u2581"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences=_texts(list("ab the.") + [" "] + NFKC_CHANGED))
def test_nfkc_unigram_is_placed_by_characters_on_ascii_only(tokenizer_files, sequences, monkeypatch):
    """A splitting Metaspace behind NFKC: batches of ASCII text (or text NFKC leaves as it is) are placed by the
    tokens' sizes in characters, any other by offsets (NFKC may change a text's length), and the counts are
    encode_batch's either way."""
    import unicodedata

    from vocabopt.corpus import locate

    by_offsets = []
    real = locate.by_offsets
    monkeypatch.setattr(locate, "by_offsets", lambda *a: by_offsets.append(1) or real(*a))
    counter = HFCounter(load_spec(str(tokenizer_files["unigram"])), add_special_tokens=True)
    assert counter.path == "chunks" and counter.encoder.token_chars is not None
    ascii_only = [s.encode("ascii", "ignore").decode() or "a" for s in sequences]
    np.testing.assert_array_equal(
        counter.count([(s, False) for s in ascii_only]).counts, reference_counts(tokenizer_files["unigram"], ascii_only)
    )
    assert not by_offsets  # sizes in characters: no offsets asked for
    in_form = [unicodedata.normalize("NFKC", s) for s in sequences]  # non-ASCII NFKC leaves as it is: by sizes too
    for batch in (in_form, sequences):
        np.testing.assert_array_equal(
            counter.count([(s, False) for s in batch]).counts, reference_counts(tokenizer_files["unigram"], batch)
        )


# Text for the unsplit-Metaspace tokenizers: the replacement character itself, runs of spaces, zero-width and
# no-break spaces (characters a space-making normalizer would turn into spaces), unknown characters.
METASPACE = list("ab \u2581\u200b\u00a0\t\n.中") + ["  ", "\u2581\u2581", "the", " \u2581"]


@pytest.mark.parametrize("kind", ["spm_bpe", "spm_bpe_runs", "spm_llama", "spm_replace"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences=_texts(METASPACE))
@example(sequences=["x a\u2581 b"])  # "▁▁" across the cut before the space: encoded whole
@example(sequences=[" a b", "  the a", "a\n b"])  # a leading space: Prepend gives it one more "▁" (encoded whole)
def test_unsplit_metaspace_chunk_path_is_exact_with_the_replacement_in_the_text(tokenizer_files, kind, sequences):
    counter = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=True)
    assert counter.path == "chunks"
    ref = reference_counts(tokenizer_files[kind], sequences)
    for _ in range(2):
        np.testing.assert_array_equal(counter.count([(s, False) for s in sequences]).counts, ref)


def test_prepend_layout_encodes_texts_with_a_leading_space_whole(tmp_path, tokenizer_files):
    """Llama 2's Prepend + Replace normalizer gives a text's leading space one more "▁" than the chunk path's
    tokenizer (an unsplit Metaspace) would: those texts, and only those, are encoded whole."""
    lines = [" In the beginning", "God created the heaven", "  and the earth", "And the earth was\t without form"]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n")
    for kind, whole in (("spm_llama", 2), ("spm_replace", 0)):
        stats = analyze([str(path)], str(tokenizer_files[kind]), sequence="line")
        np.testing.assert_array_equal(stats.counts, reference_counts(tokenizer_files[kind], lines))
        per_path = stats.options["sequences_per_path"]
        assert per_path.get("encode", 0) == whole and per_path["chunks"] == len(lines) - whole


# Chunks for locating tokens by their characters: words the vocabulary has, characters only byte fallback spells
# (CJK, an emoji outside the BMP), accents, tabs; glue chunks start with a space, alone chunks end in whitespace.
_WORDS = st.lists(
    st.sampled_from(["the", "LORD", "中", "文", "\U0001f600", "é", "a", "\t", "ZZ"]), min_size=1, max_size=4
)
_CHUNKS = st.lists(
    st.tuples(st.sampled_from(["", " ", " "]), _WORDS.map("".join), st.sampled_from(["", "", "\t", " \t"])).map(
        "".join
    ),
    min_size=1,
    max_size=30,
).map(lambda cs: sorted(set(c for c in cs if c.strip())))


@pytest.mark.parametrize("kind", ["spm_bpe", "spm_llama", "spm_replace"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=_CHUNKS)
def test_sentencepiece_tokens_located_by_characters_as_by_offsets(tokenizer_files, kind, chunks):
    """The SentencePiece layouts place each token by its characters (byte-fallback bytes of one character add up to
    one; the tokenizer's own leading "▁" is no character of the text): the same ids per chunk as placing them by
    the tokenizer's offsets."""
    if not chunks:
        return
    by_chars = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=False)
    by_offsets = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=False)
    assert by_chars.encoder.token_chars is not None
    by_offsets.encoder.token_chars = None
    ids, starts, lengths = by_chars.encoder.encode(Chunks.of_strings(chunks))
    ref_ids, ref_starts, ref_lengths = by_offsets.encoder.encode(Chunks.of_strings(chunks))
    got = [ids[a : a + n].tolist() for a, n in zip(starts, lengths)]
    ref = [ref_ids[a : a + n].tolist() for a, n in zip(ref_starts, ref_lengths)]
    assert got == ref


def test_byte_fallback_characters_keep_the_character_path(tokenizer_files, tmp_path):
    """Text whose characters only byte fallback spells counts exactly and keeps locating by characters; a
    Unigram's fused unk (several characters, one token) falls back to the offsets, still exact."""
    import json

    config = json.loads(tokenizer_files["unigram"].read_text())
    config["normalizer"] = None  # Metaspace sizes for any text, not only ASCII
    files = {**tokenizer_files, "unigram_plain": tmp_path / "unigram_plain.json"}
    files["unigram_plain"].write_text(json.dumps(config))
    sequences = ["In the beginning 中文 \U0001f600 and é", "  the LORD\t中", "plain words here"]
    for kind, kept in (("spm_bpe", True), ("spm_llama", True), ("unigram_plain", False)):
        counter = HFCounter(load_spec(str(files[kind])), add_special_tokens=False)
        assert counter.path == "chunks" and counter.encoder.token_chars is not None
        got = counter.count([(s, False) for s in sequences])
        np.testing.assert_array_equal(got.counts, reference_counts(files[kind], sequences, False))
        assert (counter.encoder.token_chars is not None) == kept, kind


@pytest.mark.parametrize("kind", ["bpe", "spm_bpe", "spm_llama", "spm_replace"])
def test_added_token_formed_across_joined_chunks_stays_exact(tmp_path, tokenizer_files, kind):
    """Distinct chunks are encoded laid end to end: an added token whose text holds a space ("a ", "x y") could
    form across two of them although no text holds it; those chunks are then encoded one per text."""
    from tokenizers import AddedToken

    tok = Tokenizer.from_file(str(tokenizer_files[kind]))
    tok.add_tokens([AddedToken("a ", normalized=False), AddedToken("x y", normalized=False)])
    path = tmp_path / "added.json"
    tok.save(str(path))
    # more distinct chunks than the texts they are laid out in (JOINED_TEXTS), so chunks share texts
    sequences = ["q a", "q x", *(f"q {p}{i}" for i in range(150) for p in ("y", "w"))]
    counter = HFCounter(load_spec(str(path)), add_special_tokens=False)
    assert counter.path == "chunks" and counter.join_risk
    got = counter.count([(s, False) for s in sequences]).counts
    np.testing.assert_array_equal(got, reference_counts(path, sequences, False))


@pytest.mark.parametrize("kind", ["bpe", "spm_bpe", "spm_llama", "spm_replace", "spm_unigram"])
@pytest.mark.parametrize("document", [False, True])
def test_pieces_of_a_cut_sequence_count_as_the_whole(tokenizer_files, kind, document):
    """A sequence over max_chars is cut before spaces; its pieces count as the uncut sequence (in Llama 2's Prepend
    layout the piece's own space is dropped: the Prepend gives its "▁" back)."""
    from vocabopt.corpus.reader import cut_long

    text = "In the beginning  God created the heaven and\tthe earth. " * 40 + " And the earth was without form"
    counter = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=True)
    pieces = cut_long(text, 50)
    assert len(pieces) > 10 and all(p[:1] == " " for p in pieces[1:])
    payload = [(p, j > 0) for j, p in enumerate(pieces)] if document else text + "\nshort\n"
    counter.max_chars = 50
    got = counter.count(payload).counts
    ref = reference_counts(tokenizer_files[kind], [text] if document else [text, "short"])
    np.testing.assert_array_equal(got, ref)


def test_chunks_are_cut_before_lone_newlines_where_the_tokenizer_allows(tokenizer_files, monkeypatch):
    """With GPT-2's byte-level pre-tokenizer the chunk path cuts before a newline between two words (a line's last
    word and the next line's first are separate chunks); with cl100k's Split regex only after an ASCII letter or
    digit ("." joins the newline after it). Counts exact."""
    from vocabopt.corpus import counters

    seen: list[list[str]] = []
    real = counters.chunk_groups
    monkeypatch.setattr(counters, "chunk_groups", lambda texts, *a: (seen.append(texts), real(texts, *a))[1])
    text = "the earth.\nAnd God said\nlet\n\nthere"
    for kind, parts in (
        ("bpe", ["the earth.", "\nAnd God said", "\nlet\n\nthere"]),
        ("split_regex", ["the earth.\nAnd God said", "\nlet\n\nthere"]),
    ):
        seen.clear()
        counter = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=False)
        counter.probe_batches = 0  # no trial: the one batch below is all chunk_groups sees
        got = counter.count([(text, False)])
        assert seen == [parts]
        np.testing.assert_array_equal(got.counts, reference_counts(tokenizer_files[kind], [text], False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences=_texts(list("ab the.") + [" ", "\x1c", "\x1f", "\x01", "@@", "\u00e9"]))
@example(sequences=["@@ b\x1cb", "@@", "@@"])  # [UNK] over "\x1c" (a character too many) cancels [UNK] over "@@"
def test_wordpiece_without_a_normalizer_is_exact_by_sizes(tokenizer_files, tmp_path_factory, sequences):
    """WordPiece behind Whitespace, no normalizer: "\x1c" is whitespace to Python but a word's character to the
    tokenizer, and [UNK] stands for a whole word; placed by sizes or by offsets, the counts are encode_batch's."""
    import json

    config = json.loads(tokenizer_files["wordpiece"].read_text())
    config["normalizer"], config["pre_tokenizer"] = None, {"type": "Whitespace"}
    path = tmp_path_factory.mktemp("wp") / "wp_whitespace.json"
    path.write_text(json.dumps(config))
    counter = HFCounter(load_spec(str(path)), add_special_tokens=True)
    assert counter.path == "chunks" and counter.encoder.token_chars is not None
    ref = reference_counts(path, sequences)
    for _ in range(2):
        np.testing.assert_array_equal(counter.count([(s, False) for s in sequences]).counts, ref)


@pytest.mark.parametrize(
    "kind, added, texts",
    [
        ("bpe", "C++", ["I like C", "i++"]),  # a guest "++" laid after the host " C" would make "C++"
        ("bpe", None, ["\u00e9 <|endoftext", "|>"]),  # kjv-bpe-8k's own special token
        ("wordpiece", None, ["\u00e9 [MASK", "]"]),
    ],
)
def test_an_added_token_never_forms_where_a_punctuation_guest_follows_its_host(
    tokenizer_files, tmp_path, kind, added, texts
):
    """An added token whose text holds a cut punctuation character after a letter or digit could form where the
    chunk path lays a chunk starting with that character after one ending in a letter: those chunks are encoded
    one per text, and the counts stay encode_batch's."""
    from tokenizers import Tokenizer

    path = tokenizer_files[kind]
    if added:
        tok = Tokenizer.from_file(str(path))
        tok.add_tokens([added])
        path = tmp_path / "added.json"
        tok.save(str(path))
    counter = HFCounter(load_spec(str(path)), add_special_tokens=False)
    assert counter.join_risk and counter.punctuation is not None
    got = counter.count([(t, False) for t in texts]).counts
    np.testing.assert_array_equal(got, reference_counts(path, texts, False))


@pytest.mark.parametrize("normalizer", ["NFC", "NFKC"])
def test_composing_normalizers_keep_bert_from_cutting_before_what_they_compose(tokenizer_files, tmp_path, normalizer):
    """NFC and NFKC make "=" + U+0338 one character ("≠"), which BERT's pre-tokenizer keeps in its word: no cut
    before "<", "=" or ">" behind them, and the counts stay encode_batch's."""
    import json

    config = json.loads(tokenizer_files["wordpiece"].read_text())
    config["normalizer"] = {"type": normalizer}
    path = tmp_path / "wordpiece_nfc.json"
    path.write_text(json.dumps(config))
    counter = HFCounter(load_spec(str(path)), add_special_tokens=False)
    assert counter.punctuation is not None and not counter.punctuation[list(b"<=>")].any()
    texts = ["a=\u0338", "b<\u0338 c>\u0338 d,e", "a"]
    np.testing.assert_array_equal(
        counter.count([(t, False) for t in texts]).counts, reference_counts(path, texts, False)
    )


@pytest.mark.parametrize("path", [None, "chunks", "pretokens"])
def test_a_normalized_added_token_is_found_by_its_normalized_content(tokenizer_files, tmp_path, path):
    """The tokenizer matches an added token with normalized=True by its normalized content in the normalized text
    ("Hello" behind a lowercasing normalizer matches "hello"); one whose normalized content holds a cut (NFKC
    makes "Ｃ++" "C++") could form where chunks are laid end to end. Counts stay encode_batch's."""
    import json

    from tokenizers import AddedToken, Tokenizer

    config = json.loads(tokenizer_files["wordpiece"].read_text())
    for norm, added, texts in (
        (config["normalizer"], "Hello", ["hello world", "say HELLO", "hell"]),
        ({"type": "NFKC"}, "\uff23++", ["I like C \u00fc", "++", "C++ and C"]),
    ):
        base = tmp_path / "base.json"
        base.write_text(json.dumps({**config, "normalizer": norm}))
        tok = Tokenizer.from_file(str(base))
        tok.add_tokens([AddedToken(added, normalized=True)])
        file = tmp_path / "added.json"
        tok.save(str(file))
        counter = HFCounter(load_spec(str(file)), add_special_tokens=False, force_path=path)
        if path == "chunks" and added != "Hello":
            assert counter.join_risk  # "C++" holds a cut punctuation character after a letter
        got = counter.count([(t, False) for t in texts]).counts
        np.testing.assert_array_equal(got, reference_counts(file, texts, False))
