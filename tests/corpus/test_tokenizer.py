"""vocabopt.corpus.tokenizer: the counting path each tokenizer's config allows."""

from __future__ import annotations

import json

import pytest

from vocabopt.corpus.tokenizer import choose_path, restated_metaspace


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("bpe", "chunks"),
        ("bpe_spaces", "chunks"),
        ("wordpiece", "chunks"),
        ("unigram", "chunks"),
        ("split_regex", "chunks"),
        ("split_qwen", "chunks"),
        ("split_custom", "pretokens"),
        ("spm_bpe", "chunks"),
        ("spm_bpe_joined", "encode"),
        ("spm_unigram", "encode"),
        ("spm_bpe_runs", "chunks"),
        ("spm_llama", "chunks"),
        ("spm_replace", "chunks"),
    ],
)
def test_path_choice(tokenizer_files, kind, expected):
    config = json.loads(tokenizer_files[kind].read_text())
    assert choose_path(config)[0] == expected


def test_unsplit_metaspace_needs_tokens_that_never_cross_a_space(tokenizer_files):
    """Metaspace(split=False): chunks only while no token joins a character to a following "▁", "▁" is a token and
    the model is BPE or Unigram; any one of them broken sends it to plain encoding."""
    config = json.loads(tokenizer_files["spm_bpe"].read_text())
    assert choose_path(config)[0] == "chunks"
    joined = json.loads(json.dumps(config))
    joined["model"]["vocab"]["e\u2581"] = len(joined["model"]["vocab"])  # one token crossing a space is enough
    assert choose_path(joined)[0] == "encode"
    no_space = json.loads(json.dumps(config))
    del no_space["model"]["vocab"]["\u2581"]
    assert choose_path(no_space)[0] == "encode"
    ignore_merges = json.loads(json.dumps(config))
    ignore_merges["model"]["ignore_merges"] = True  # a whole piece in the vocabulary is one token: pieces differ
    assert choose_path(ignore_merges)[0] == "encode"
    normalized = json.loads(json.dumps(config))
    normalized["normalizer"] = {"type": "NFKC"}  # a normalizer could make spaces the cut does not see
    assert choose_path(normalized)[0] == "encode"
    wordpiece = json.loads(json.dumps(config))
    wordpiece["model"]["type"] = "WordPiece"
    assert choose_path(wordpiece)[0] == "encode"
    assert choose_path(json.loads(tokenizer_files["spm_bpe_joined"].read_text()))[1].startswith("Metaspace keeps")


def test_replace_normalizer_layout_is_restated_as_an_unsplit_metaspace(tokenizer_files):
    """Llama 2's layout (Prepend("▁"), Replace(" ", "▁"), no pre-tokenizer) is an unsplit Metaspace that always
    prepends; the Replace alone one that never does; anything else is not restated."""
    llama = json.loads(tokenizer_files["spm_llama"].read_text())
    restated = restated_metaspace(llama)
    assert restated["normalizer"] is None and restated["model"] == llama["model"]
    assert restated["pre_tokenizer"] == {
        "type": "Metaspace",
        "replacement": "\u2581",
        "prepend_scheme": "always",
        "split": False,
    }
    replace = json.loads(tokenizer_files["spm_replace"].read_text())
    assert restated_metaspace(replace)["pre_tokenizer"]["prepend_scheme"] == "never"
    prepend, rep = llama["normalizer"]["normalizers"]
    others = [
        {**llama, "pre_tokenizer": {"type": "Whitespace"}},  # a pre-tokenizer decides the pieces itself
        {**llama, "normalizer": {"type": "Sequence", "normalizers": [rep, prepend]}},  # other order: not recognised
        {**llama, "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, prepend, rep]}},
        {**llama, "normalizer": {"type": "Sequence", "normalizers": [{**prepend, "prepend": "_"}, rep]}},
        {**llama, "normalizer": {**rep, "pattern": {"Regex": " "}}},
        {**llama, "normalizer": {**rep, "pattern": {"String": "\t"}}},
        {**llama, "normalizer": {**rep, "content": "__"}},
        {**llama, "normalizer": None},
    ]
    for config in others:
        assert restated_metaspace(config) is None
    joined = json.loads(json.dumps(llama))
    joined["model"]["vocab"]["e\u2581"] = len(joined["model"]["vocab"])  # a token crossing a space: plain encoding
    assert choose_path(joined)[0] == "encode"


def test_replace_layout_is_not_restated_where_tokenizers_cannot_build_an_unsplit_metaspace(
    tokenizer_files, monkeypatch
):
    """tokenizers < 0.19 has no Metaspace `split` option: the layout then keeps plain encoding."""
    from vocabopt.corpus import tokenizer

    llama = json.loads(tokenizer_files["spm_llama"].read_text())
    assert choose_path(llama)[0] == "chunks"
    monkeypatch.setattr(tokenizer, "unsplit_metaspace_builds", lambda: False)
    assert restated_metaspace(llama) is None and choose_path(llama)[0] == "encode"


def test_an_unsplit_unigram_is_counted_by_plain_encoding(tmp_path):
    """A Unigram model scores a whole unsplit sequence: where two segmentations of a piece tie, rounding decides by
    what came before it (" abc" tokenizes as "ab" "c" after "x", as "a" "bc" after "y"), so no piece can be
    tokenized once for all: the counter encodes, and its counts are encode_batch's."""
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    from vocabopt.corpus.counters import HFCounter
    from vocabopt.corpus.tokenizer import load_spec

    u, v = -3.3000000000000003, -7.1  # "a" and "c" score u, "ab" and "bc" score v: "ab c" and "a bc" tie
    vocab = [("<unk>", -100.0), ("\u2581", -2.0), ("\u2581x", -8.927490402631673), ("\u2581y", -20.0)]
    vocab += [("a", u), ("b", -9.0), ("c", u), ("ab", v), ("bc", v)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    path = tmp_path / "unigram_ties.json"
    tok.save(str(path))
    texts = ["x abc", "y abc"]
    assert [tok.encode(t).tokens[2:] for t in texts] == [["ab", "c"], ["a", "bc"]]
    counter = HFCounter(load_spec(str(path)), add_special_tokens=False)
    assert counter.path == "encode" and "Unigram" in counter.reason
    ids = [i for e in tok.encode_batch(texts) for i in e.ids]
    got = counter.count([(t, False) for t in texts]).counts
    np.testing.assert_array_equal(got, np.bincount(ids, minlength=got.size))
