"""vocabopt.analyze: the counting path is reported, limits stop early, bad tokenizers fail with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocabopt import analyze
from vocabopt.errors import TokenizerError

ROOT = Path(__file__).resolve().parents[1]


def test_fast_path_reported(tokenizer_files, corpus_slice):
    stats = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]))
    assert stats.options["count_path"] == "chunks"
    stats = analyze([str(corpus_slice)], str(tokenizer_files["split_custom"]))
    assert stats.options["count_path"] == "pretokens"


def test_paths_may_be_pathlib_objects(tokenizer_files, corpus_slice):
    """The Python API takes os.PathLike sources and tokenizers, one or a list, as it takes strings."""
    want = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]))
    for sources in (corpus_slice, [corpus_slice]):
        got = analyze(sources, Path(tokenizer_files["bpe"]))
        assert (got.counts == want.counts).all() and got.tokenizer == want.tokenizer


def test_limits(tmp_path, plain):
    full = analyze([str(plain)], "bytes", sequence="line")
    part = analyze([str(plain)], "bytes", sequence="line", limit_bytes=60)
    assert 0 < part.total < full.total


@pytest.mark.parametrize("spec, message", [("nope/tokenizer.json", "no tokenizer.json"), ("bad", "not a valid")])
def test_bad_tokenizer(tmp_path, plain, spec, message):
    if spec == "bad":
        (tmp_path / "bad.json").write_text("{not json")
        spec = str(tmp_path / "bad.json")
    with pytest.raises(TokenizerError, match=message):
        analyze([str(plain)], spec)


def test_count_path_reason_is_the_counters(tokenizer_files, corpus_slice):
    """The recorded reason is the one the counters gave (forced paths say so), not a second choice made here."""
    import json

    from vocabopt.corpus.tokenizer import choose_path

    _, reason = choose_path(json.loads(tokenizer_files["bpe"].read_text()))
    stats = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]), force_path="pretokens")
    assert stats.options["count_path"] == "pretokens"
    assert stats.options["count_path_reason"] == f"forced ({reason})"
    for kind in ("bytes", "word"):
        stats = analyze([str(corpus_slice)], kind)
        assert (stats.options["count_path"], stats.options["count_path_reason"]) == (kind, "exact by construction")


def test_whitespace_tokens_a_mode_leaves_out_are_warned(tmp_path, tokenizer_files):
    """Line mode drops newlines: the newline token occurs in the raw text yet gets count 0, and analyze says so;
    the default (documents, newlines kept) counts it and does not warn."""
    path = tmp_path / "c.txt"
    path.write_text("In the beginning\nGod created\nthe heaven and the earth.\n")
    warnings: list[str] = []
    line = analyze([str(path)], str(tokenizer_files["bpe"]), sequence="line", on_warning=warnings.append)
    newline = line.tokens.index("Ċ")
    assert line.counts[newline] == 0
    assert len(warnings) == 1 and "'Ċ'" in warnings[0] and "--sequence document" in warnings[0]
    warnings.clear()
    document = analyze([str(path)], str(tokenizer_files["bpe"]), on_warning=warnings.append)
    assert document.counts[newline] == 2 and document.options["sequence"] == "document" and not warnings


def test_whitespace_check_encodes_only_when_an_unseen_whitespace_token_occurs(tmp_path, tokenizer_files, monkeypatch):
    """The check encodes a file's head only when some zero-count whitespace token's text occurs in it (raw or
    normalized): a file of one word leaves every whitespace token unseen and holds none, so it is not encoded."""
    import importlib

    analyze_module = importlib.import_module("vocabopt.analyze")  # the module (the package exports the function)
    encoded: list[int] = []

    class Counting:
        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def encode(self, *args, **kwargs):
            encoded.append(1)
            return self.tok.encode(*args, **kwargs)

    real = analyze_module.shared_tokenizer
    monkeypatch.setattr(analyze_module, "shared_tokenizer", lambda spec: Counting(real(spec)))
    path = tmp_path / "one.txt"
    path.write_text("Inthebeginning.")
    stats = analyze([str(path)], str(tokenizer_files["bpe"]))
    assert stats.counts[stats.tokens.index("Ċ")] == 0  # whitespace tokens unseen, yet absent from the text
    assert encoded == []
    warnings: list[str] = []
    path.write_text("In the beginning\nGod created\n")
    analyze([str(path)], str(tokenizer_files["bpe"]), sequence="line", on_warning=warnings.append)
    assert encoded == [1] and len(warnings) == 1


@pytest.mark.parametrize("kind", ["bpe", "bpe_spaces", "wordpiece", "unigram", "spm_bpe", "spm_llama", "split_regex"])
def test_whitespace_candidates_keep_every_whitespace_token(tokenizer_files, kind):
    """The check decodes only tokens whose string may stand for whitespace: against decoding every id, no token
    that decodes to whitespace is left out, and most of the vocabulary is."""
    import importlib

    from tokenizers import Tokenizer

    from vocabopt.corpus.tokenizer import load_spec
    from vocabopt.corpus.vocab import token_strings

    may = importlib.import_module("vocabopt.analyze")._may_decode_to_space
    tok = Tokenizer.from_file(str(tokenizer_files[kind]))
    strings = token_strings(load_spec(str(tokenizer_files[kind])))
    spaces = [i for i, s in enumerate(strings) if s and tok.decode([i], skip_special_tokens=False).isspace()]
    assert all(may(strings[i]) for i in spaces)
    assert spaces or kind not in ("bpe", "unigram")  # both decode some token to whitespace ("Ċ", "▁")
    assert may("<0x0A>") and may("<0x09><0x0A>") and not may("<0x41>x")
    letters_stay = importlib.import_module("vocabopt.analyze")._letters_stay
    assert letters_stay({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    assert not letters_stay({"type": "Strip", "content": "x", "start": 1, "stop": 0})  # "x\n" -> "\n"


def test_whitespace_warning_decodes_every_token_behind_a_decoder_that_makes_letters_whitespace(tmp_path):
    """A Replace decoder of "<n>" by a newline (the partner of a normalizer that writes newlines as "<n>"): the token
    holds letters and decodes to whitespace, so every unseen id is decoded and line mode still warns."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    words = "in the beginning god created heaven and earth".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", "<n>", *words])}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Replace("\n", " <n> ")
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.Replace("<n>", "\n")
    tok.save(str(tmp_path / "tagged.json"))
    path = tmp_path / "c.txt"
    path.write_text("in the beginning\ngod created\nthe heaven and the earth\n")
    warnings: list[str] = []
    analyze([str(path)], str(tmp_path / "tagged.json"), sequence="line", on_warning=warnings.append)
    assert len(warnings) == 1 and "'<n>'" in warnings[0]


def test_whitespace_candidates_are_few_on_the_shipped_tokenizer():
    import importlib

    from vocabopt.corpus.tokenizer import load_spec
    from vocabopt.corpus.vocab import token_strings

    may = importlib.import_module("vocabopt.analyze")._may_decode_to_space
    strings = token_strings(load_spec("corpora/kjv-bpe-8k/tokenizer.json"))
    assert 0 < sum(map(may, strings)) < len(strings) / 10


def test_whitespace_warning_names_the_token_a_normalizer_makes_of_a_dropped_newline(tmp_path, tokenizer_files):
    """A normalizer that rewrites the newlines line mode drops ("\\n" -> "\\t"): the tab token is what the tokenizer
    emits for them on the raw text, it gets count 0, and the warning names it."""
    from tokenizers import Tokenizer, normalizers

    tok = Tokenizer.from_file(str(tokenizer_files["bpe"]))
    tok.normalizer = normalizers.Replace("\n", "\t")
    tokenizer = tmp_path / "tabs.json"
    tok.save(str(tokenizer))
    path = tmp_path / "c.txt"
    path.write_text("In the beginning\nGod created\n")
    warnings: list[str] = []
    stats = analyze([str(path)], str(tokenizer), sequence="line", on_warning=warnings.append)
    assert stats.counts[stats.tokens.index("ĉ")] == 0
    assert len(warnings) == 1 and "'ĉ'" in warnings[0]
