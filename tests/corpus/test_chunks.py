"""vocabopt.corpus.chunks: integer keys of pieces count what str.split counts; the Unicode space table is complete."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vocabopt.corpus import chunks


# Independent decoders of the keys (Python int arithmetic, one string per key): the reference for the numpy paths.
def key_strings(keys) -> list[str]:
    """The raw pieces of `_short_keys` keys (under 8 bytes)."""
    return [k.to_bytes(8, "little")[: k >> 56].decode("utf-8", "surrogatepass") for k in keys.tolist()]


def pair_strings(pairs) -> list[str]:
    """The raw pieces of `_Pieces.pairs` keys (8-15 bytes)."""
    return [
        (a.to_bytes(8, "little") + b.to_bytes(8, "little")[: b >> 56]).decode("utf-8", "surrogatepass")
        for a, b in pairs.tolist()
    ]


@settings(max_examples=200, deadline=None)
@given(
    sequences=st.lists(
        st.lists(st.sampled_from(list("ab é中\x00\n\t9,.;") + ["Lord", "righteousness"]), max_size=30).map("".join),
        max_size=8,
    ),
    punctuation=st.sampled_from(["", ",", ",.;"]),
)
def test_piece_keys_count_what_str_split_counts(sequences, punctuation):
    """Pieces between spaces, where each text is first cut before `punctuation` that follows an ASCII letter or digit
    (a regex's cut: the parts as texts of their own)."""
    import re

    table = np.zeros(256, bool)
    table[list(punctuation.encode())] = True
    pieces = chunks._piece_counts(sequences, table if punctuation else None)
    got = Counter(dict(zip(key_strings(pieces.keys), pieces.key_counts.tolist())))
    got.update(dict(zip(pair_strings(pieces.pairs), pieces.pair_counts.tolist())))
    got.update(pieces.strings)
    cut = (
        [p for s in sequences for p in re.split(f"(?<=[A-Za-z0-9])(?=[{punctuation}])", s)]
        if punctuation
        else sequences
    )
    assert got == Counter(("\n" + " \n".join(cut)).split(" "))
    assert len(pieces.pairs) == len(set(map(tuple, pieces.pairs.tolist())))
    assert len(pieces.keys) == len(set(pieces.keys.tolist()))
    # the texts the tokenizer sees, built from the keys' bytes, are the raw pieces' chunks
    for kind, keys, strings in (
        ("key", pieces.keys, key_strings(pieces.keys)),
        ("pair", pieces.pairs, pair_strings(pieces.pairs)),
    ):
        assert chunks.CHUNKS_OF[kind](keys).strings() == chunks._raw_to_chunks(strings)


def test_unicode_spaces_are_all_non_ascii_whitespace():
    assert chunks._UNICODE_SPACES == "".join(chr(c) for c in range(0x80, 0x110000) if chr(c).isspace())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=list("ab é中\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000"), max_size=30), max_size=8))
def test_count_words_is_str_split(texts):
    assert chunks.count_words(texts) == len(" ".join(texts).split())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet=list("ab9 \n\t.\x1c中\u3000"), max_size=30), max_size=6),
    st.sampled_from(["any", "alnum"]),
)
def test_split_lone_newlines_cuts_exactly_before_newlines_between_non_whitespace(texts, after):
    """The parts of each text join back to it, and a part starts at exactly the newlines that sit between two
    non-whitespace characters, the first an ASCII letter or digit for "alnum" (a brute-force scan of the text)."""
    parts = chunks.split_lone_newlines(texts, after)
    rebuilt, k = [], 0
    for text in texts:
        cuts = [
            i
            for i in range(1, len(text) - 1)
            if text[i] == "\n"
            and not text[i + 1].isspace()
            and (text[i - 1] in "ab9" if after == "alnum" else not text[i - 1].isspace())
        ]
        bounds = [0, *cuts, len(text)]
        expected = [text[a:b] for a, b in zip(bounds, bounds[1:])] or [text]
        assert parts[k : k + len(expected)] == expected
        rebuilt.append("".join(parts[k : k + len(expected)]))
        k += len(expected)
    assert k == len(parts) and rebuilt == texts
