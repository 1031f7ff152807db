"""vocabopt.corpus.words: the word vocabulary's order, pruning into <unk>, and a tokenizer.json whose ids match."""

from __future__ import annotations

from collections import Counter

from tokenizers import Tokenizer

from vocabopt.corpus.words import WORD_UNK, build_word_vocab, word_tokenizer_json, word_vocab_order


def test_order_is_unk_then_decreasing_count_ties_by_string():
    assert word_vocab_order({"b": 2, "a": 2, "c": 5, WORD_UNK: 9}) == [WORD_UNK, "c", "a", "b"]


def test_pruned_words_count_as_unk():
    words = Counter({"the": 5, "and": 3, "of": 3, "rare": 1})
    counts, tokens = build_word_vocab(words, min_count=2, max_vocab=None)
    assert tokens == [WORD_UNK, "the", "and", "of"] and counts.tolist() == [1, 5, 3, 3]
    counts, tokens = build_word_vocab(words, min_count=1, max_vocab=3)
    assert tokens == [WORD_UNK, "the", "and"] and counts.tolist() == [4, 5, 3]
    assert counts.sum() == sum(words.values())


def test_tokenizer_json_ids_match_the_vocabulary():
    tokens = [WORD_UNK, "the", "and", ","]
    tok = Tokenizer.from_str(word_tokenizer_json(tokens))
    assert tok.encode("the and, zebra").ids == [1, 2, 3, 0]
