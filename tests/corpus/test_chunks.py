"""vocabopt.corpus.chunks: integer keys of pieces count what str.split counts; the Unicode space table is complete."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from vocabopt.corpus import chunks


@settings(max_examples=200, deadline=None)
@given(
    sequences=st.lists(
        st.lists(st.sampled_from(list("ab é中\x00\n\t") + ["Lord", "righteousness"]), max_size=30).map("".join),
        max_size=8,
    )
)
def test_piece_keys_count_what_str_split_counts(sequences):
    pieces = chunks._piece_counts(sequences)
    got = Counter(dict(zip(chunks._key_strings(pieces.keys), pieces.key_counts.tolist())))
    got.update(dict(zip(chunks._pair_strings(pieces.pairs), pieces.pair_counts.tolist())))
    got.update(pieces.strings)
    assert got == Counter(("\n" + " \n".join(sequences)).split(" "))
    assert len(pieces.pairs) == len(set(pieces.pairs)) and len(pieces.keys) == len(set(pieces.keys.tolist()))


def test_unicode_spaces_are_all_non_ascii_whitespace():
    assert chunks._UNICODE_SPACES == "".join(chr(c) for c in range(0x80, 0x110000) if chr(c).isspace())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=list("ab é中\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000"), max_size=30), max_size=8))
def test_count_words_is_str_split(texts):
    assert chunks.count_words(texts) == len(" ".join(texts).split())
