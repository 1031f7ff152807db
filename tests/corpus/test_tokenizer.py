"""vocabopt.corpus.tokenizer: the counting path each tokenizer's config allows."""

from __future__ import annotations

import json

import pytest

from vocabopt.corpus.tokenizer import choose_path


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
    ],
)
def test_path_choice(tokenizer_files, kind, expected):
    config = json.loads(tokenizer_files[kind].read_text())
    assert choose_path(config)[0] == expected
