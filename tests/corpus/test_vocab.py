"""vocabopt.corpus.vocab: a tokenizer's vocabulary tables, read once per tokenizer."""

from __future__ import annotations

import json

from vocabopt.corpus import tokenizer, vocab
from vocabopt.corpus.tokenizer import load_spec, shared_tokenizer
from vocabopt.corpus.vocab import hf_token_strings, hf_vocab_size, vocab_of


class _Counting:
    """A tokenizer stand-in that counts how often its vocabulary is built."""

    def __init__(self, tokens: dict[str, int]) -> None:
        self.tokens, self.calls = tokens, 0

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]:
        self.calls += 1
        return dict(self.tokens) if with_added_tokens else {k: v for k, v in self.tokens.items() if k != "<add>"}


def test_a_shared_vocabulary_is_read_once(monkeypatch):
    a, b = _Counting({"x": 0, "<add>": 5}), _Counting({"y": 0, "z": 1})
    monkeypatch.setattr(tokenizer, "_SHARED", {"a": a, "b": b})
    monkeypatch.setattr(vocab, "_VOCABS", {})
    for _ in range(3):
        assert vocab_of(a) == {"x": 0, "<add>": 5}
        assert vocab_of(a, with_added_tokens=False) == {"x": 0}
        assert vocab_of(b) == {"y": 0, "z": 1}  # another tokenizer: its own vocabulary, never a's
    assert (a.calls, b.calls) == (2, 1)  # once with added tokens, once without
    assert hf_vocab_size(a) == 6  # the largest id + 1: counts are indexed by any id the tokenizer emits


def test_an_unshared_tokenizer_is_read_each_time(tokenizer_files):
    """A caller's own tokenizer may change: its vocabulary is never kept."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_files["bpe"]))
    before = hf_vocab_size(tok)
    tok.add_tokens(["zzqqxx"])
    assert hf_vocab_size(tok) == before + 1


def test_the_cache_is_bounded(monkeypatch):
    toks = [_Counting({f"t{k}": k}) for k in range(20)]
    monkeypatch.setattr(tokenizer, "_SHARED", {str(k): t for k, t in enumerate(toks)})
    monkeypatch.setattr(vocab, "_VOCABS", {})
    for k, tok in enumerate(toks):
        assert vocab_of(tok) == {f"t{k}": k}
    assert len(vocab._VOCABS) <= 8


def test_token_strings_match_the_tokenizer(tokenizer_files):
    spec = load_spec(str(tokenizer_files["bpe"]))
    tok = shared_tokenizer(spec)
    strings = hf_token_strings(spec)
    assert len(strings) == hf_vocab_size(tok)
    assert all(tok.id_to_token(i) == s for i, s in enumerate(strings) if s)
    assert sum(map(bool, strings)) == tok.get_vocab_size(with_added_tokens=True)


def test_byte_fallback_merges_keep_offsets(tokenizer_files):
    """A vocabulary that merges byte-fallback tokens ("<0xE4><0xB8>": its string is longer than the one character
    it helps spell) is not located by characters."""
    from tokenizers import Tokenizer

    from vocabopt.corpus.vocab import metaspace_sizes

    config = json.loads(tokenizer_files["spm_bpe"].read_text())
    assert metaspace_sizes(Tokenizer.from_str(json.dumps(config)), config) is not None
    config["model"]["vocab"]["<0xE4><0xB8>"] = len(config["model"]["vocab"])
    config["model"]["merges"].append(["<0xE4>", "<0xB8>"])
    assert metaspace_sizes(Tokenizer.from_str(json.dumps(config)), config) is None
