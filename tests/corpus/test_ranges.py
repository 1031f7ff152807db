"""vocabopt.corpus.ranges: the byte ranges of a file read exactly what the whole file reads (the Dask engine's
parts)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocabopt.corpus import ranges, reader

FRAGMENTS = ["a", "bc", " ", "  ", "\n", "\r\n", "\r", "\n\n", "\n\r\n", "\t", "\xff", "\xe9", "é", "\u3000"]


def _items(source_reader: reader.Reader) -> list[tuple[str, bool]]:
    """What the counters see: each non-blank line of a block, and each sequence with its continuation flag."""
    out = []
    for item in source_reader:
        if isinstance(item, reader.Block):
            out += [(line, False) for line in item.text.split("\n") if line and not line.isspace()]
        else:
            out.append((item.text, item.continuation))
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(FRAGMENTS), max_size=60),
    st.lists(st.integers(0, 200), max_size=6),
    st.booleans(),
    st.sampled_from([1, 2, 3, 1 << 20]),
)
def test_ranges_of_a_file_read_what_the_whole_file_reads(tmp_path_factory, fragments, cuts, document, scan):
    data = "".join(fragments).encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff")  # some invalid UTF-8
    path = tmp_path_factory.mktemp("r") / "t.txt"
    path.write_bytes(data)
    cuts = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    opts = reader.SourceOptions(sequence="document" if document else "line", max_chars=4)
    whole = reader.Reader([str(path)], opts)
    expected = _items(whole)
    got, replaced = [], 0
    old = ranges._SCAN
    ranges._SCAN = scan  # small reads: marks straddle them
    try:
        for a, b in zip(cuts, cuts[1:]):
            part = reader.Reader([str(path)], opts, byte_range=(a, b))
            got += _items(part)
            replaced += part.infos[0].replaced_bytes
            with open(path, "rb") as f:
                p0, p1 = ranges.range_bounds(f, len(data), a, b, document)
            assert (p0, p1) == (_brute_boundary(data, a, document), _brute_boundary(data, b, document))
    finally:
        ranges._SCAN = old
    assert got == expected
    assert replaced == whole.infos[0].replaced_bytes


def _brute_boundary(data: bytes, pos: int, document: bool) -> int:
    for p in range(max(pos, 0), len(data) + 1):
        before = b"\n" + data[:p]  # byte 0 starts a line: as if a newline came before the file
        if p in (0, len(data)) or (before.endswith((b"\n\n", b"\n\r\n")) if document else before.endswith(b"\n")):
            return p
    return len(data)


def test_byte_range_is_for_uncompressed_text_and_json_lines_only(tmp_path):
    for name in ("a.jsonl.gz", "a.parquet", "a.txt.bz2"):
        with pytest.raises(ValueError):
            reader.Reader([str(tmp_path / name)], reader.SourceOptions(), byte_range=(0, 1))
