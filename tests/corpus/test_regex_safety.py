"""vocabopt.corpus.regex_safety: published pre-tokenizer regexes are classified cut-safe, adversarial ones unsafe
(each with a witness text where cutting changes the pieces), and the chunk path is exact on every safe pattern
(hypothesis: whole-sequence `encode_batch` against the chunk path)."""

from __future__ import annotations

import string
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from vocabopt.corpus.counters import HFCounter
from vocabopt.corpus.regex_safety import newline_safety, punctuation_safety, split_safety
from vocabopt.corpus.tokenizer import choose_path, config_of, load_spec

CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
UPPER, LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
# Public pre-tokenizer regexes (as their tokenizer.json / tiktoken files ship them), or their published structure.
SAFE = {
    "cl100k (GPT-4, Llama 3)": CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "Qwen2": CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "o200k (GPT-4o)": "|".join(
        [
            rf"[^\r\n\p{{L}}\p{{N}}]?{UPPER}*{LOWER}+{CONTRACTIONS}?",
            rf"[^\r\n\p{{L}}\p{{N}}]?{UPPER}+{LOWER}*{CONTRACTIONS}?",
            r"\p{N}{1,3}",
            r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
            r"\s*[\r\n]+",
            r"\s+(?!\S)",
            r"\s+",
        ]
    ),
    "tekken-style (Mistral-NeMo)": rf"[^\r\n\p{{L}}\p{{N}}]?{UPPER}*{LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{UPPER}+{LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "DeepSeek-style": r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "Llama-4-style": rf"[^\r\n\p{{L}}\p{{N}}]?{UPPER}*{LOWER}+{CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{UPPER}+{LOWER}*{CONTRACTIONS}?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "GPT-2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
}
# Unsafe regexes, each with a text whose pieces change when cut before a space that follows a non-space.
UNSAFE = {
    r"\w+ ?|\s+|[^\w\s]+": "ab cd",  # a word takes the space after it
    r".+": "ab cd",
    r"\S+(?=\s)|\S|\s+": "ab c",  # a lookahead that sees past the piece
    r"(?<=a) b|\S+|\s+": "a b",  # lookbehind
    r"^ b|\S+|\s+": "a b",  # anchor
    r"[^\r\n]+|\s+": "ab cd",
    r"\p{L}+\s|\s+|\S": "ab cd",
    r"[^\s\p{L}\p{N}]+ ?|\p{L}+|\s+": "a. b",
    r"\p{L}+": "a. b",  # no alternative matches a space: the unmatched run ". " spans the cut
    r"\p{Foo}+|\s+": "ab cd",  # an unknown property: unknown means unsafe
    r"(?x) a b |\s+": "ab cd",  # inline flags that change the syntax
    r"\S*|\s+": "ab cd",  # empty matches
    r"\p{L}\p{L}| *+ |\s\s": "abc d",  # possessive: " *+ " never matches a lone space
    r"[\p{L} ]{1}+|\s+|\S": "ab cd",  # Oniguruma reads "{1}+" as "({1})+", not as possessive
}


def _pieces(pattern: str, text: str) -> list[str]:
    return [p for p, _ in pre_tokenizers.Split(Regex(pattern), behavior="isolated").pre_tokenize_str(text)]


def _cut_pieces(pattern: str, text: str, cut: str = r"(?<=\S)(?= )") -> list[str]:
    """The pieces of `text` cut first at every match of the regex `cut` (before a space after a non-space)."""
    import re

    return [p for chunk in re.split(cut, text) for p in _pieces(pattern, chunk)]


@pytest.mark.parametrize("name", SAFE)
def test_public_patterns_are_cut_safe(name):
    respects, cuts, reason = split_safety(SAFE[name])
    assert respects and cuts, reason


@pytest.mark.parametrize("pattern", UNSAFE)
def test_adversarial_patterns_are_unsafe(pattern):
    respects, cuts, _ = split_safety(pattern)
    assert not (respects and cuts)
    text = UNSAFE[pattern]
    if "Foo" not in pattern and "(?x)" not in pattern and "\\S*" not in pattern:  # not valid for Oniguruma / empty
        assert _pieces(pattern, text) != _cut_pieces(pattern, text)  # the witness: cutting would change the counts


# Unsafe for a cut before a newline that follows a letter or digit, each with a witness text.
NEWLINE_UNSAFE = {
    r"\w+\n?|\s+|[^\w\s]+": "ab\ncd",  # a word takes the newline after it
    r"\p{L}+[\r\n]*|\s+|\S": "ab\ncd",
    r"\p{N}+\s?|\s+|\S": "12\nab",
    r"[^\s]+(?!\n)|\s+|\S": "ab\ncd",  # a lookahead that sees the newline after a piece
    r"[^ ]+| +": "ab\ncd",  # the newline is a word character here
    r"\p{L}\p{L}|\n*+\n|\s\s": "abc\nd",  # possessive: "\n*+\n" never matches a lone newline
    r"\p{L}\p{L}|\s\s": "abc\nd",  # no alternative matches a lone newline: the unmatched run "c\nd" spans the cut
}


def _newline_cut_pieces(pattern: str, text: str) -> list[str]:
    return _cut_pieces(pattern, text, r"(?<=[A-Za-z0-9])(?=\n)")


@pytest.mark.parametrize("name", SAFE)
def test_public_patterns_may_be_cut_before_a_newline_after_a_letter_or_digit(name):
    respects, cuts, reason = newline_safety(SAFE[name])
    assert respects and cuts, reason
    for text in ("the earth\nAnd", "in 1611\n2 Kings", "x's\ny"):
        assert _pieces(SAFE[name], text) == _newline_cut_pieces(SAFE[name], text)


@pytest.mark.parametrize("pattern", NEWLINE_UNSAFE)
def test_adversarial_patterns_are_unsafe_before_a_newline(pattern):
    respects, cuts, _ = newline_safety(pattern)
    assert not (respects and cuts)
    text = NEWLINE_UNSAFE[pattern]
    assert _pieces(pattern, text) != _newline_cut_pieces(pattern, text)  # the witness


# Punctuation a public regex joins to the letters before it (o200k's and Llama 4's contractions): no cut before it.
PUNCTUATION_KEPT = {"o200k (GPT-4o)": "'", "Llama-4-style": "'"}
# Unsafe for a cut before the punctuation character given after a letter or digit, each with a witness text.
PUNCTUATION_UNSAFE = {
    r"\p{L}+,?|\s+|\S": (",", "ab,c"),  # a word takes the comma after it
    r"\p{L}+(?![,])|\s+|\S": (",", "ab,"),  # a lookahead that sees the comma after a piece
    r"\w+|[^\w\s]+": ("_", "a_b"),  # the Whitespace pre-tokenizer's regex: "_" is a word character
    SAFE["o200k (GPT-4o)"]: ("'", "x's"),
    r"\p{L}\p{L}|\s\s": (",", "abc,d"),  # no alternative matches a lone comma: the unmatched run "c,d" spans the cut
    r"[\p{L},]{1}+|\s+|\S": (",", "foo,bar"),  # "{1}+" is "({1})+" to Oniguruma
}


def _punctuation_cut_pieces(pattern: str, text: str, chars: str) -> list[str]:
    import re

    return _cut_pieces(pattern, text, f"(?<=[A-Za-z0-9])(?=[{re.escape(chars)}])")


@pytest.mark.parametrize("name", SAFE)
def test_public_patterns_may_be_cut_before_punctuation_after_a_letter_or_digit(name):
    safe = "".join(c for c in string.punctuation if punctuation_safety(SAFE[name], c)[:2] == (True, True))
    assert safe == string.punctuation.replace(PUNCTUATION_KEPT.get(name, ""), "")
    for text in ("the earth, and. U.S.A. x's", "in 1:2 a/b (c) [d] a_b a-b", 'x!? y;: z"q" 5% #t @u\n.a'):
        assert _pieces(SAFE[name], text) == _punctuation_cut_pieces(SAFE[name], text, safe)


@pytest.mark.parametrize("pattern", PUNCTUATION_UNSAFE)
def test_adversarial_patterns_are_unsafe_before_punctuation(pattern):
    char, text = PUNCTUATION_UNSAFE[pattern]
    respects, cuts, _ = punctuation_safety(pattern, char)
    assert not (respects and cuts)
    assert _pieces(pattern, text) != _punctuation_cut_pieces(pattern, text, char)  # the witness


def test_digit_and_script_splitters_respect_the_cut_without_making_it():
    assert split_safety(r"\p{N}{1,3}")[:2] == (True, False)
    assert split_safety(r"[一-龥぀-ゟ゠-ヿ]+")[:2] == (True, False)


def test_oniguruma_whitespace_is_python_whitespace():
    """The analysis takes \\s to hold no character Python's str.isspace() rejects (the chunk cut's notion)."""
    chars = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    matched = [
        p for p, _ in pre_tokenizers.Split(Regex(r"\s"), behavior="removed", invert=True).pre_tokenize_str(chars)
    ]
    assert matched and all(p.isspace() for p in matched)


def _train(pattern: str, corpus) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    text = corpus.read_text()[:60_000]
    tok.train_from_iterator(
        [text],
        trainers.BpeTrainer(vocab_size=500, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    return tok.to_str()


@pytest.fixture(scope="module")
def safe_tokenizers(tmp_path_factory, corpus_slice) -> dict[str, str]:
    out = tmp_path_factory.mktemp("regex_tokenizers")
    files = {}
    for k, name in enumerate(SAFE):
        files[name] = str(out / f"t{k}.json")
        with open(files[name], "w") as f:
            f.write(_train(SAFE[name], corpus_slice))
    return files


ALPHABET = list("ab Zé \t\n\r\u00a0\u3000\u0301'’.,/!-0123456789中_:(") + ["  ", "'s", "'LL", "\r\n", "Jerusalem"]
texts = st.lists(
    st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=40).map("".join).filter(str.strip),
    min_size=1,
    max_size=10,
)


@pytest.mark.parametrize("name", SAFE)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences=texts)
@example(sequences=["a  b", "x. y", "it'S ok 123456 a/b\r\n c"])
@example(sequences=["the earth.\nAnd God said,\nlet there be light:\nand 12\nthere"])  # newline cuts after a-z, 0-9
@example(sequences=["U.S.A. don't x's, 1:2 a_b (c) a/b!? \"q\".\nAnd"])  # punctuation cuts after a-z, 0-9
def test_chunk_path_is_exact_for_each_safe_pattern(safe_tokenizers, name, sequences):
    spec = load_spec(safe_tokenizers[name])
    assert choose_path(config_of(spec.json))[0] == "chunks"
    tok = Tokenizer.from_str(spec.json)
    ids = [i for e in tok.encode_batch(sequences, add_special_tokens=False) for i in e.ids]
    counter = HFCounter(spec, add_special_tokens=False)
    got = counter.count([(s, False) for s in sequences]).counts
    np.testing.assert_array_equal(got, np.bincount(np.asarray(ids, dtype=np.int64), minlength=got.size))


def test_a_sequence_of_splits_is_safe_when_one_cuts(corpus_slice):
    """DeepSeek's layout: digit and script splitters first (they respect the cut), then a regex that makes it."""
    import json

    config = json.loads(_train(SAFE["DeepSeek-style"], corpus_slice))
    members = config["pre_tokenizer"]["pretokenizers"]
    digits = {"type": "Split", "pattern": {"Regex": r"\p{N}{1,3}"}, "behavior": "Isolated", "invert": False}
    config["pre_tokenizer"]["pretokenizers"] = [digits] + members
    assert choose_path(config)[0] == "chunks"
    config["pre_tokenizer"]["pretokenizers"] = [digits, members[1]]  # digits, then ByteLevel without its regex
    assert choose_path(config)[0] == "pretokens"
    bad = {**digits, "pattern": {"Regex": r"\w+ ?|\s+"}}
    config["pre_tokenizer"]["pretokenizers"] = [bad] + members
    path, reason = choose_path(config)
    assert path == "pretokens" and "non-space followed by a space" in reason
