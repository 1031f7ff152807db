"""Cuts: where the chunk path may cut a text besides before its spaces, judged from a tokenizer's config.

Job: the other places where cutting a text leaves its tokens unchanged, for the counters (vocabopt.corpus.counters)
and the layout of chunks end to end (vocabopt.corpus.locate). Inputs: a tokenizer's JSON config. Outputs:
`newline_cuts` (before a lone newline: after any non-whitespace character, after an ASCII letter or digit, or
nowhere) and `punctuation_cuts` (the ASCII punctuation characters before which a text may be cut where an ASCII
letter or digit comes before them). The regexes themselves are judged by `regex_safety`.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import numpy as np

from .regex_safety import newline_safety, punctuation_safety
from .tokenizer import WS_DROPPING, after_byte_level, members_of, normalizer_local, splitter_kind, steps_of

# GPT-2's byte-level pre-tokenizer (use_regex) splits with this regex (tests check it against the tokenizers library)
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PUNCTUATION = string.punctuation  # the ASCII punctuation characters: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~


def newline_cuts(config: dict) -> str | None:
    """Where the chunk path may also cut a text before a lone newline, one between two non-whitespace characters
    ("x\\ny" -> "x", "\\ny"): after any non-whitespace character ("any"), after an ASCII letter or digit only
    ("alnum"), or nowhere (None).

    "any": pre-tokenizers that drop whitespace (BERT's, Whitespace: the newline is a separator, as a space is), and
    GPT-2's byte-level one alone (its own regex, no prefix space, no normalizer). GPT-2's regex (GPT2_PATTERN) has
    no match holding a non-whitespace character followed by whitespace, no lookbehind or anchor, and its one
    lookahead sits after whitespace: so a match ends at x, the next one starts at the newline, and every match is
    the same in the text and in its two parts. A prefix space would be added to "\\ny".
    "alnum": Split regexes (cl100k, o200k, tekken ...: they join punctuation to a newline after it, "." + "\\n")
    that `regex_safety.newline_safety` proves cut there, in a Sequence of such Splits and byte-level mapping
    without prefix space, and no normalizer. ASCII letters and digits only: Python's Unicode tables and the
    tokenizer's may class a rare character differently.
    """
    pre, norm = config.get("pre_tokenizer") or {}, config.get("normalizer")
    if pre.get("type") in WS_DROPPING:
        return "any" if normalizer_local(norm, allow_deleting=True) else None
    if _gpt2_byte_level(config):
        return "any"
    regexes = _split_regexes(config)
    return "alnum" if regexes and _all_cut(regexes, newline_safety) else None


def punctuation_cuts(config: dict) -> str:
    """The ASCII punctuation characters before which the chunk path may also cut a text where an ASCII letter or
    digit comes before them ("earth," -> "earth", ","); "" for none.

    BERT's pre-tokenizer makes each punctuation character a piece of its own: all of them, behind normalizers that
    leave an ASCII punctuation character as it is (`_bert_punctuation`). GPT-2's byte-level pre-tokenizer (as for
    `newline_cuts`, its regex GPT2_PATTERN) and Split regexes (as for `newline_cuts`'s "alnum"): those for which
    `regex_safety.punctuation_safety` proves the cut (o200k's contractions join "'" to the letters before it: not
    "'"). Where it holds, a chunk that starts with the character tokenizes after any chunk ending in an ASCII
    letter or digit as it does in the text, so "earth," "earth." and "earth;" are one chunk " earth" and a few
    short ones (kjv.txt's distinct whitespace words: 29K words of 213K characters; cut before every ASCII
    punctuation character after a letter or digit, 14K pieces of 96K).
    """
    pre = config.get("pre_tokenizer") or {}
    if pre.get("type") == "BertPreTokenizer":
        return _bert_punctuation(config.get("normalizer"))
    regexes = [GPT2_PATTERN] if _gpt2_byte_level(config) else _split_regexes(config)
    return "".join(
        c for c in PUNCTUATION if regexes and _all_cut(regexes, lambda regex, c=c: punctuation_safety(regex, c))
    )


# Normalizers that leave ASCII punctuation as it is, whatever follows it: BERT's own (cleaning control characters,
# spacing CJK, stripping accents after NFD, lowercasing), and decompositions. NFC and NFKC compose "=" + U+0338 into
# "≠", a math symbol BERT does not split off ("a=\u0338": one piece): behind them, not before COMPOSED (the ASCII
# punctuation a combining character composes with: tests check it against every one; Unicode's composition
# stability keeps it so).
_BERT_SAFE_NORMALIZERS = {"BertNormalizer", "Lowercase", "StripAccents", "NFD", "NFKD"}
_COMPOSING = {"NFC", "NFKC"}
COMPOSED = "<=>"


def _bert_punctuation(norm: dict | None) -> str:
    """The ASCII punctuation characters that BERT's pre-tokenizer still isolates after the normalizer `norm`."""
    kinds = {step.get("type") for step in steps_of(norm)}
    if not kinds <= _BERT_SAFE_NORMALIZERS | _COMPOSING:
        return ""  # Replace, Precompiled, Nmt ... may map a punctuation character to another one
    return "".join(c for c in PUNCTUATION if c not in COMPOSED) if kinds & _COMPOSING else PUNCTUATION


def _gpt2_byte_level(config: dict) -> bool:
    """GPT-2's byte-level BPE as it ships: its regex, no prefix space, no normalizer."""
    pre = config.get("pre_tokenizer") or {}
    return (
        config.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True) is True
        and pre.get("add_prefix_space", True) is False
        and (config.get("model") or {}).get("type") == "BPE"
    )


def _split_regexes(config: dict) -> list[str] | None:
    """The regexes of a pre-tokenizer of Split regexes (alone, or in a Sequence with byte-level mapping without
    prefix space, none after it), with no normalizer, where the chunk path's own cut before spaces holds; else None."""
    pre = config.get("pre_tokenizer") or {}
    members = members_of(pre)
    regexes = []
    for k, m in enumerate(members):
        if m.get("type") == "Split":
            regex = (m.get("pattern") or {}).get("Regex")
            if regex is None or m.get("behavior") != "Isolated" or m.get("invert") or after_byte_level(members, k):
                return None
            regexes.append(regex)
        elif m.get("type") != "ByteLevel" or m.get("use_regex", True) or m.get("add_prefix_space", True):
            return None
    return regexes if config.get("normalizer") is None and splitter_kind(pre) is not None else None


def _all_cut(regexes: list[str], safety: Callable[[str], tuple[bool, bool, str]]) -> bool:
    """Whether every regex respects the cut `safety` judges and one makes it."""
    verdicts = [safety(regex)[:2] for regex in regexes]
    return all(respects for respects, _ in verdicts) and any(cuts for _, cuts in verdicts)


def holds_cut(text: str, marks: str) -> bool:
    """Whether `text` holds a place where the chunk path may cut: whitespace after its first character, or one of
    `marks` (`punctuation_cuts`) after an ASCII letter or digit. (An added token's content that does may form
    where chunks are laid end to end.)"""
    return any(c.isspace() for c in text[1:]) or any(
        b in marks and a.isascii() and a.isalnum() for a, b in zip(text, text[1:])
    )


def byte_table(chars: str) -> np.ndarray | None:
    """(256,) bool: the bytes of these ASCII characters (`punctuation_cuts`); None for none."""
    if not chars:
        return None
    table = np.zeros(256, bool)
    table[list(chars.encode("ascii"))] = True
    return table
