"""The word vocabulary of `--tokenizer word`: built from the corpus's own counts, after all parts are summed.

Job: turn string-keyed word counts into a vocabulary with ids. Inputs: word counts (a Counter, or the tokens and
counts of word-level CorpusStats being merged). Outputs: the id order (<unk> first, then by decreasing count), the
pruned counts and token strings (`--min-count`, `--max-vocab`; pruned words count as <unk>), and a WordLevel
tokenizer.json whose ids match (`--save-tokenizer`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

WORD_UNK = "<unk>"


def word_vocab_order(counts: dict[str, int]) -> list[str]:
    """Word ids: <unk> first, then words by decreasing count, ties by string (deterministic)."""
    words = sorted((w for w in counts if w != WORD_UNK), key=lambda w: (-counts[w], w))
    return [WORD_UNK] + words


def build_word_vocab(words: Counter, min_count: int, max_vocab: int | None) -> tuple[np.ndarray, list[str]]:
    """Counts and strings of the word vocabulary; pruned words' counts go to <unk> (id 0)."""
    order = word_vocab_order(dict(words))
    kept = [w for w in order[1:] if words[w] >= min_count]
    if max_vocab is not None:
        kept = kept[: max_vocab - 1]
    unk = sum(words.values()) - sum(words[w] for w in kept)
    return np.array([unk] + [words[w] for w in kept], dtype=np.int64), [WORD_UNK] + kept


def word_tokenizer_json(tokens: list[str]) -> str:
    """A Hugging Face WordLevel tokenizer.json whose ids match `tokens` (for `--save-tokenizer`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=WORD_UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()
