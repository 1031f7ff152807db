"""vocabopt.corpus.locate: distinct chunks encoded laid end to end, each token placed back in its chunk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from vocabopt.corpus import locate
from vocabopt.corpus.chunks import Chunks
from vocabopt.corpus.counters import HFCounter
from vocabopt.corpus.locate import JOINED_TEXTS, ChunkEncoder
from vocabopt.corpus.tokenizer import config_of, load_spec, shared_tokenizer
from vocabopt.corpus.vocab import metaspace_sizes


def test_sizes_that_hold_for_ascii_only_are_not_used_on_other_text(tokenizer_files):
    """NFKC changes lengths both ways ("ﬃ" -> "ffi", "e" + combining acute -> "é"): in one joined text they can
    cancel, so sizes in characters would add up and still shift a chunk's tokens into the next. Such texts are
    placed by offsets; every chunk gets the ids the tokenizer gives it alone."""
    spec = load_spec(str(tokenizer_files["unigram"]))
    tok = shared_tokenizer(spec)
    sizes = metaspace_sizes(tok, config_of(spec.json))
    assert sizes is not None and sizes[2]  # sizes in characters, for ASCII texts only (NFKC)
    # one leader, then glue i in text i % JOINED_TEXTS: " x" and the last glue chunk share the leader's text
    texts = ["\ufb03", " x", *[f" w{i}" for i in range(JOINED_TEXTS - 1)], " e\u0301e\u0301"]
    encoder = ChunkEncoder(tok, None, sizes, None)
    ids, starts, lengths = encoder.encode(Chunks.of_strings(texts))
    alone = Tokenizer.from_str(spec.json)
    for j, text in enumerate(texts):
        want = alone.encode(text, add_special_tokens=False).ids
        assert ids[starts[j] : starts[j] + lengths[j]].tolist() == want, text
    assert encoder.token_chars is not None  # kept for the ASCII batches to come


def test_wordpiece_tokens_are_placed_by_their_non_whitespace_characters(tokenizer_files, monkeypatch):
    """BERT's pre-tokenizer drops whitespace and its normalizer keeps ASCII text's length (control characters
    aside, which it drops): an ASCII batch is placed by sizes ("##" not counted), one holding a control character
    or non-ASCII text by offsets, and every chunk gets the ids the tokenizer gives it alone."""
    from vocabopt.corpus import locate
    from vocabopt.corpus.vocab import wordpiece_sizes

    spec = load_spec(str(tokenizer_files["wordpiece"]))
    tok = shared_tokenizer(spec)
    sizes = wordpiece_sizes(tok, config_of(spec.json))
    assert sizes is not None and sizes.nonspace and sizes.ascii_only
    offsets = []
    real = locate.by_offsets
    monkeypatch.setattr(locate, "by_offsets", lambda *a: offsets.append(1) or real(*a))
    alone = Tokenizer.from_str(spec.json)
    batches = [
        ["In", " the", " beginning,", " God\n", "\ncreated", " unbelievable", " HEAVEN.", " x\ty"],
        ["In", " the\x01", " earth"],  # a control character: BERT's normalizer drops it
        ["In", " b\x1cb", " earth"],  # whitespace to Python, a word's character to the tokenizers
        ["In", " the", " caf\u00e9", " \ufb03"],  # non-ASCII
    ]
    encoder = ChunkEncoder(tok, None, sizes, None)
    for k, texts in enumerate(batches):
        ids, starts, lengths = encoder.encode(Chunks.of_strings(texts))
        for j, text in enumerate(texts):
            assert ids[starts[j] : starts[j] + lengths[j]].tolist() == alone.encode(text, add_special_tokens=False).ids
        assert len(offsets) == k  # the first by sizes, each later one by offsets
    assert encoder.token_chars is not None


def test_a_text_without_tokens_keeps_the_sizes(tokenizer_files):
    """A chunk of whitespace alone (a line ending in a space) has no WordPiece token and no non-whitespace
    character: placed by sizes all the same, which stay on for later batches."""
    from vocabopt.corpus.vocab import wordpiece_sizes

    spec = load_spec(str(tokenizer_files["wordpiece"]))
    tok = shared_tokenizer(spec)
    encoder = ChunkEncoder(tok, None, wordpiece_sizes(tok, config_of(spec.json)), None)
    texts = ["b", " b", " ", " the"]
    ids, starts, lengths = encoder.encode(Chunks.of_strings(texts))
    alone = Tokenizer.from_str(spec.json)
    for j, text in enumerate(texts):
        assert ids[starts[j] : starts[j] + lengths[j]].tolist() == alone.encode(text, add_special_tokens=False).ids
    assert encoder.token_chars is not None


def test_a_model_that_drops_characters_is_placed_chunk_by_chunk(tokenizer_files, tmp_path):
    """A SentencePiece-style BPE without unk token or byte fallback drops "@", and the tokenizer's offsets after it
    are wrong ("@@ n": "▁n" at (0, 3)): once sizes fail, each chunk is a text of its own, and a chunk cached in one
    batch counts right in the next."""
    import json

    import numpy as np

    config = json.loads(tokenizer_files["spm_bpe"].read_text())
    config["model"]["byte_fallback"], config["model"]["unk_token"] = False, None
    path = tmp_path / "no_unk.json"
    path.write_text(json.dumps(config))
    counter = HFCounter(load_spec(str(path)), add_special_tokens=True, force_path="chunks")
    reference = Tokenizer.from_file(str(path))
    for batch in (["@@", "en n"], ["@@"], ["n @@ n", "@@"]):
        want = np.bincount([i for e in reference.encode_batch(batch) for i in e.ids], minlength=counter.vocab_size)
        np.testing.assert_array_equal(counter.count([(t, False) for t in batch]).counts, want)
    assert counter.encoder.alone


def test_text_already_in_the_normalizers_form_keeps_its_length():
    from vocabopt.corpus.locate import _in_form

    assert _in_form("NFKC", ["caf\u00e9", "\u4e2d\u6587 text"])  # precomposed, CJK: NFKC leaves them
    assert not _in_form("NFKC", ["\ufb01"]) and not _in_form("NFKC", ["e\u0301"]) and not _in_form(None, ["a"])
    assert _in_form("NFD", ["e\u0301"]) and not _in_form("NFD", ["\u00e9"])


def _chunk_lists(prefixes: list[str], words: list[str], suffixes: list[str]):
    """Lists of distinct chunks: a prefix, one to four words run together, a suffix."""
    chunk = st.tuples(
        st.sampled_from(prefixes), st.lists(st.sampled_from(words), min_size=1, max_size=4), st.sampled_from(suffixes)
    )
    return st.lists(chunk.map(lambda t: t[0] + "".join(t[1]) + t[2]), min_size=1, max_size=40).map(
        lambda cs: sorted(set(cs))
    )


def _assert_each_chunk_gets_its_own_ids(counter: HFCounter, alone: Tokenizer, chunks: list[str]) -> None:
    """Each chunk gets from the counter's encoder the ids `alone` gives it, placed by sizes, then by offsets."""
    want = [alone.encode(c, add_special_tokens=False).ids for c in chunks]
    encoder = counter.encoder
    for placed_by_sizes in (True, False):
        if not placed_by_sizes:
            encoder.token_bytes = encoder.token_chars = None
        ids, starts, lengths = encoder.encode(Chunks.of_strings(chunks))
        assert [ids[a : a + n].tolist() for a, n in zip(starts, lengths)] == want


_NEWLINE_CHUNKS = _chunk_lists(
    ["", " ", "\n", "\n\n", "\n "], ["a", "b", "the", ".", ",", "'s", "9", "\u00e9", "\x1c"], ["", "", "", "\n", " "]
)


@pytest.mark.parametrize("kind", ["bpe", "split_regex", "wordpiece"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=_NEWLINE_CHUNKS)
@example(chunks=[" the.", "\nthe"])  # cl100k joins "." and the newline after it: never glued there
@example(chunks=[" the", " the.", "\nthe", "\nthe."])  # one host for two guests
def test_newline_chunks_are_glued_only_where_newlines_are_cut(tokenizer_files, kind, chunks, monkeypatch):
    """Where the counter cuts before any lone newline (GPT-2's byte-level BPE, WordPiece), a chunk that starts with
    a newline then a non-whitespace character is laid after others in one text, not a text of its own; where it
    cuts only after ASCII letters and digits (cl100k's Split regex), such a chunk follows a chunk ending in one, or
    leads a text. Every chunk still gets the ids the tokenizer gives it alone, placed by sizes or by offsets."""
    monkeypatch.setattr(locate, "JOINED_TEXTS", 1)  # glue chunks side by side (64 texts would keep them apart)
    counter = HFCounter(load_spec(str(tokenizer_files[kind])), add_special_tokens=False)
    assert counter.newline_cuts == ("alnum" if kind == "split_regex" else "any")
    _assert_each_chunk_gets_its_own_ids(counter, Tokenizer.from_file(str(tokenizer_files[kind])), chunks)


_ASCII_CHUNKS = _chunk_lists(
    ["", " ", "\t", "\n"],
    ["a", "The", "LORD", "Hello", "x", ".", "'s", "9", "\x0b", "[CLS]"],
    ["", "", " ", "\n", "\f"],
)


@pytest.mark.parametrize("kind", ["wordpiece", "unigram", "wordpiece_lower_added"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=_ASCII_CHUNKS)
@example(chunks=["Hello", " HELLO there"])  # "hello" is an added token the raw text never holds
@example(chunks=["Hello", " HELLO\x0bthere"])  # BertNormalizer deletes \v
def test_ascii_chunks_encoded_without_the_normalizer_get_its_tokens(tokenizer_files, kind, chunks, tmp_path_factory):
    """Plain-ASCII chunks go to the tokenizer without its NFKC or BertNormalizer (lowercased first for BERT's):
    every chunk gets the ids the tokenizer itself gives it alone, whether placed by sizes or by offsets; an added
    token the tokenizer matches in the raw text only ("hello", normalized false) is not matched in the lowercased
    text."""
    import json

    if kind == "wordpiece_lower_added":
        config = json.loads(tokenizer_files["wordpiece"].read_text())
        extra = {"id": 5000, "content": "hello", "single_word": False, "lstrip": False, "rstrip": False}
        config["added_tokens"].append({**extra, "normalized": False, "special": False})
        path = tmp_path_factory.mktemp("lower") / "wordpiece_added.json"
        path.write_text(json.dumps(config))
    else:
        path = tokenizer_files[kind]
    counter = HFCounter(load_spec(str(path)), add_special_tokens=False)
    assert counter.encoder.ascii_tok is not None and counter.encoder.ascii_tok[1] is (kind != "unigram")
    alone = Tokenizer.from_file(str(path))
    raw_ok = [c for c in chunks if not counter._whole([c])]  # the counter encodes the others whole
    if not raw_ok:
        return
    _assert_each_chunk_gets_its_own_ids(counter, alone, raw_ok)


def test_which_normalizers_ascii_text_may_skip():
    """Unicode forms and lowercasing (alone, in a Sequence, or BERT's before a whitespace-dropping pre-tokenizer)
    may be skipped on plain ASCII; anything else may not (a Replace, BERT's ahead of a Metaspace, none at all)."""
    from vocabopt.corpus.tokenizer import ascii_normalizer

    bert = {"type": "BertNormalizer", "clean_text": True, "lowercase": False}
    cases = [
        ({"type": "NFKC"}, None, False),
        ({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]}, None, True),
        (bert, {"type": "BertPreTokenizer"}, False),
        ({**bert, "lowercase": True}, {"type": "WhitespaceSplit"}, True),
        (bert, {"type": "Metaspace"}, None),
        ({"type": "Replace", "pattern": {"String": "a"}, "content": "b"}, None, None),
        ({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Strip"}]}, None, None),
        ({**bert, "clean_text": False, "lowercase": True}, {"type": "Metaspace"}, True),  # lowercases ASCII only
        ({"type": "Sequence", "normalizers": [{"type": "Sequence", "normalizers": [{"type": "NFC"}]}]}, None, None),
        (None, None, None),
    ]
    for norm, pre, lower in cases:
        found = ascii_normalizer({"normalizer": norm, "pre_tokenizer": pre, "added_tokens": [{"content": "x"}]})
        assert (found and found[1]) == lower if lower is not None else found is None, (norm, pre)
        if found:
            assert found[0]["normalizer"] is None and found[0]["added_tokens"] == []


_LAYOUT_CHUNKS = st.lists(
    st.tuples(
        st.sampled_from(["", " ", " ", "\n", "\n\n", "\n "]),
        st.sampled_from(["a", "b.", ",", "9", "\u00e9", "x\u00e9", ".c", ",9"]),
        st.sampled_from(["", "", "", " ", "\n"]),
    ).map("".join),
    min_size=1,
    max_size=120,
)


@pytest.mark.parametrize("mode", [None, "any", "alnum"])
@pytest.mark.parametrize("punctuation", ["", ",."])
@pytest.mark.parametrize("joined_texts", [1, 3, 64])
@settings(max_examples=80, deadline=None)
@given(chunks=_LAYOUT_CHUNKS)
@example(chunks=["a.", " b,"] + [f"\nw{i}" for i in range(300)])  # more newline chunks than chunks they may follow
@example(chunks=["a", " b", ",", ".c", "\nd", ",\n"])  # guests of both kinds compete for two hosts
def test_layout_joins_chunks_only_where_a_cut_was_allowed(mode, punctuation, joined_texts, chunks):
    """Every chunk is laid out once; inside a text, a chunk after the first starts with a space, or (newline cuts)
    with a newline then a non-whitespace ASCII character, or (punctuation cuts) with a character of `punctuation`,
    after a chunk ending in an ASCII letter or digit where the cuts are "alnum" or punctuation; a chunk ending in
    whitespace is a text of its own."""
    table = np.zeros(256, bool)
    table[list(punctuation.encode())] = True
    old = locate.JOINED_TEXTS
    locate.JOINED_TEXTS = joined_texts
    try:
        order, firsts = locate._layout(Chunks.of_strings(chunks), mode, table if punctuation else None)
    finally:
        locate.JOINED_TEXTS = old
    assert sorted(order.tolist()) == list(range(len(chunks))) and firsts[0] == 0
    bounds = [*firsts.tolist(), len(chunks)]
    for a, b in zip(bounds, bounds[1:]):
        text = [chunks[j] for j in order[a:b].tolist()]
        assert b > a and all(not c[-1].isspace() for c in text[:-1])
        for before, chunk in zip(text, text[1:]):
            alnum_host = before[-1].isascii() and before[-1].isalnum()
            newline = mode is not None and chunk[:1] == "\n" and chunk[1:2].isascii() and not chunk[1:2].isspace()
            mark = chunk[:1] != "" and chunk[:1] in punctuation
            assert chunk[:1] == " " or (newline and (mode == "any" or alnum_host)) or (mark and alnum_host), (
                before,
                chunk,
            )
