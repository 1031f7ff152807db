"""vocabopt.corpus.cuts: where each tokenizer's config lets the chunk path cut a text besides before its spaces
(before lone newlines, before punctuation after a letter or digit), against the tokenizer's own tokens."""

from __future__ import annotations

import json
import string

import pytest
from tokenizers import Tokenizer, pre_tokenizers

from vocabopt.corpus.cuts import GPT2_PATTERN, PUNCTUATION, newline_cuts, punctuation_cuts
from vocabopt.corpus.tokenizer import choose_path


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("bpe", "any"),
        ("bpe_gaps", "any"),
        ("wordpiece", "any"),
        ("split_regex", "alnum"),
        ("split_qwen", "alnum"),
        ("bpe_spaces", None),
        ("split_custom", None),
        ("unigram", None),
        ("spm_bpe", None),
    ],
)
def test_newline_cuts_for_gpt2_byte_level_split_regexes_and_whitespace_dropping_pre_tokenizers(
    tokenizer_files, kind, expected
):
    """GPT-2's own regex (ByteLevel, no prefix space, no normalizer) and BERT's whitespace-dropping pre-tokenizer
    may be cut before any lone newline, cl100k's and Qwen2's Split regexes after an ASCII letter or digit; a prefix
    space (bpe_spaces, or on the ByteLevel after a Split), a normalizer, an unsafe Split or Metaspace may not."""
    config = json.loads(tokenizer_files[kind].read_text())
    assert newline_cuts(config) == expected
    if kind in ("bpe", "split_regex"):
        assert newline_cuts({**config, "normalizer": {"type": "NFC"}}) is None
    if kind == "split_regex":
        members = config["pre_tokenizer"]["pretokenizers"]
        swapped = {**config, "pre_tokenizer": {"type": "Sequence", "pretokenizers": members[::-1]}}
        # a Split after the byte-level mapping sees "Ġ" and "Ċ", letters to it: neither cut is proven
        assert newline_cuts(swapped) is None and choose_path(swapped)[0] == "pretokens"
        members[1]["add_prefix_space"] = True
        assert newline_cuts(config) is None


def test_cl100k_style_regex_joins_punctuation_to_the_newline_after_it(tokenizer_files):
    """Why the Split regexes cut after letters and digits only: cut before the newline, "earth." + "\\nAnd"
    tokenizes differently from the text (the regex's `[^\\s\\p{L}\\p{N}]+[\\r\\n]*` takes ".\\n" as one piece),
    and "earth" + "\\nAnd" the same; GPT-2's regex gives the same tokens both ways."""
    from tokenizers import Tokenizer

    for text, parts, split_same in (
        ("the earth.\nAnd God", ["the earth.", "\nAnd God"], False),
        ("the earth\nAnd God", ["the earth", "\nAnd God"], True),
    ):
        for kind, same in (("split_regex", split_same), ("bpe", True)):
            tok = Tokenizer.from_file(str(tokenizer_files[kind]))
            whole = tok.encode(text, add_special_tokens=False).ids
            cut = [i for p in parts for i in tok.encode(p, add_special_tokens=False).ids]
            assert (whole == cut) is same, kind


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("bpe", PUNCTUATION),
        ("bpe_gaps", PUNCTUATION),
        ("wordpiece", PUNCTUATION),
        ("split_regex", PUNCTUATION),
        ("split_qwen", PUNCTUATION),
        ("bpe_spaces", ""),
        ("split_custom", ""),
        ("unigram", ""),
        ("spm_bpe", ""),
        ("spm_llama", ""),
    ],
)
def test_punctuation_cuts_for_gpt2_byte_level_split_regexes_and_bert(tokenizer_files, kind, expected):
    """Every ASCII punctuation character for GPT-2's own regex, cl100k's and Qwen2's Split regexes and BERT's
    pre-tokenizer (it isolates punctuation); none where a prefix space, a normalizer (on a regex), an unsafe Split or
    Metaspace (pieces run from space to space, and the model sees "earth," whole) forbid it."""
    config = json.loads(tokenizer_files[kind].read_text())
    assert punctuation_cuts(config) == expected
    if kind in ("bpe", "split_regex"):
        assert punctuation_cuts({**config, "normalizer": {"type": "NFC"}}) == ""
    if kind == "split_regex":
        members = config["pre_tokenizer"]["pretokenizers"]
        assert punctuation_cuts({**config, "pre_tokenizer": {"type": "Sequence", "pretokenizers": members[::-1]}}) == ""
        members[0]["pattern"]["Regex"] = members[0]["pattern"]["Regex"].replace("'s|", "")  # no contraction "'s"...
        members[0]["pattern"]["Regex"] = r"\p{L}+(?i:'s|'t)?|" + members[0]["pattern"]["Regex"]  # ...but after letters
        assert punctuation_cuts(config) == PUNCTUATION.replace("'", "")  # o200k's way: no cut before "'"
    if kind == "wordpiece":
        for pre in ("Whitespace", "WhitespaceSplit"):  # "a_b" is one \w+ piece; WhitespaceSplit keeps "a," whole
            assert punctuation_cuts({**config, "pre_tokenizer": {"type": pre}}) == ""


PUNCTUATION_TEXTS = [
    "the earth, and. U.S.A. don't x's",
    "in 1:2 a/b (c) [d] {e} a_b a-b a+b",
    'x!? y;: z"q" 5% #t @u',
]


@pytest.mark.parametrize("kind", ["bpe", "split_regex", "split_qwen", "wordpiece"])
def test_punctuation_cut_after_a_letter_or_digit_gives_the_tokenizers_own_tokens(tokenizer_files, kind):
    """Each text cut before every allowed punctuation character that follows an ASCII letter or digit tokenizes,
    part by part, as the text does (the parts encoded alone: a cut part leads its text as it follows a host)."""
    import re

    config = json.loads(tokenizer_files[kind].read_text())
    cut = re.compile(f"(?<=[A-Za-z0-9])(?=[{re.escape(punctuation_cuts(config))}])")
    tok = Tokenizer.from_file(str(tokenizer_files[kind]))
    for text in PUNCTUATION_TEXTS:
        parts = cut.split(text)
        assert len(parts) > 3
        whole = tok.encode(text, add_special_tokens=False).ids
        assert [i for p in parts for i in tok.encode(p, add_special_tokens=False).ids] == whole, parts


def test_gpt2_pattern_is_the_byte_level_pre_tokenizers_own():
    """GPT2_PATTERN splits as ByteLevel(use_regex=True) does (the same pieces, by offsets)."""
    from tokenizers import Regex

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    split = pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated")
    texts = [*PUNCTUATION_TEXTS, "a  b\n\n c\t\td 12345 \u00e9t\u00e9 \u4e2d\u6587 'S 'LL", string.printable]
    for text in texts:
        assert [o for _, o in byte_level.pre_tokenize_str(text)] == [o for _, o in split.pre_tokenize_str(text)]


def test_bert_cuts_before_punctuation_only_behind_normalizers_that_leave_it_as_it_is(tokenizer_files):
    """BERT's own normalizer, Lowercase, StripAccents and decompositions: every character; NFC and NFKC: not the
    ones a combining character composes with; Replace (or anything else): none."""
    config = json.loads(tokenizer_files["wordpiece"].read_text())
    no_composed = "".join(c for c in PUNCTUATION if c not in "<=>")
    for norm, expected in (
        (None, PUNCTUATION),
        ({"type": "BertNormalizer"}, PUNCTUATION),
        ({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]}, PUNCTUATION),
        ({"type": "NFKC"}, no_composed),
        ({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "StripAccents"}]}, no_composed),
        ({"type": "Replace", "pattern": {"String": ","}, "content": "x"}, ""),
    ):
        assert punctuation_cuts({**config, "normalizer": norm}) == expected, norm


def test_composed_is_every_ascii_punctuation_character_a_combining_character_composes_with():
    import sys
    import unicodedata

    from vocabopt.corpus.cuts import COMPOSED

    marks = [chr(c) for c in range(0x300, sys.maxunicode + 1) if unicodedata.combining(chr(c))]
    for form in ("NFC", "NFKC"):
        composed = [c for c in PUNCTUATION if any(unicodedata.normalize(form, c + m)[0] != c for m in marks)]
        assert "".join(composed) == COMPOSED
