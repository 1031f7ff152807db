"""vocabopt.corpus.reader: long lines are cut the same wherever the read blocks fall; documents stay whole."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vocabopt.errors import InputError


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        st.lists(st.sampled_from(list("ab. \t") + ["  ", "word"]), min_size=1, max_size=60).map("".join),
        min_size=1,
        max_size=8,
    ),
    block=st.integers(8, 90),
)
@example(
    lines=[" a.\t  wordword. .\tb\tb.bworda\tword.\t  word\tb.a  aword  . \ta. .\t  b\t  word\t.", "word\taa"], block=30
)
@example(lines=["a" * 30, " " * 70, "b " * 40], block=10)  # a line of only spaces is skipped, as in a block
def test_long_lines_are_cut_the_same_wherever_the_read_blocks_fall(tmp_path, monkeypatch, lines, block):
    """Line mode: a line over max_chars comes out as cut_long(line), whether it sits inside a read block (cut by the
    counter) or straddles a block's end (read in pieces); so both engines cut it alike."""
    from vocabopt.corpus import reader
    from vocabopt.corpus.counters import unpack

    max_chars = 20
    monkeypatch.setattr(reader, "BLOCK_CHARS", block)
    path = tmp_path / f"long{block}.txt"
    path.write_text("\n".join(lines) + "\n")
    got = []
    for item in reader.Reader([str(path)], reader.SourceOptions(sequence="line", max_chars=max_chars)):
        if isinstance(item, reader.Block):
            got += unpack(item.text, max_chars)[0]
        else:
            got.append(item.text)
    want = [piece for line in lines if line.strip() for piece in reader.cut_long(line, max_chars)]
    assert got == want


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        st.lists(st.sampled_from(list("ab. \t") + ["word", ""]), max_size=50).map("".join), min_size=1, max_size=10
    )
)
@example(lines=["word " * 30, "a"])  # a line read in pieces, inside a document
def test_document_mode_keeps_long_lines_whole(tmp_path, lines):
    """Document mode: the sequences of a document, their pieces joined back, are the document, even where a line
    longer than max_chars was read in pieces (those pieces once came back joined by newlines)."""
    from vocabopt.corpus import reader

    path = tmp_path / "docs.txt"
    path.write_text("\n".join(lines) + "\n")
    docs: list[str] = []
    for item in reader.Reader([str(path)], reader.SourceOptions(sequence="document", max_chars=20)):
        if item.continuation:
            docs[-1] += item.text
        else:
            docs.append(item.text)
    want, current = [], []
    for line in lines:
        if line.strip():
            current.append(line)
        elif current:
            want.append("\n".join(current))
            current = []
    assert docs == want + (["\n".join(current)] if current else [])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.lists(
        st.sampled_from(["a", "bc", " ", "  ", "\n", "\n\n", " \n", "\t\n", "\u3000", "word "]), max_size=200
    ).map("".join),
    block=st.sampled_from([1, 3, 7, 64]),
)
def test_documents_read_in_blocks_are_cut_as_whole_documents(tmp_path_factory, monkeypatch, text, block):
    """Document mode reads blocks and passes long documents on as it reads them: the items are exactly
    cut_long(document) for every blank-line-separated document, wherever the blocks fall."""
    from vocabopt.corpus import reader

    monkeypatch.setattr(reader, "BLOCK_CHARS", block)
    path = tmp_path_factory.mktemp("d") / "t.txt"
    path.write_text(text)
    got = [(t.text, t.continuation) for t in reader.Reader([str(path)], reader.SourceOptions(max_chars=5))]
    docs, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current))
            current = []
    docs += ["\n".join(current)] if current else []
    assert got == [(p, k > 0) for d in docs for k, p in enumerate(reader.cut_long(d, 5))]


@pytest.mark.parametrize("name, line", [("t.txt.gz", b"a line of text\n"), ("r.jsonl.gz", b'{"text": "a record"}\n')])
def test_a_truncated_compressed_file_is_an_input_error_naming_it(tmp_path, name, line):
    """Text and JSON-lines alike: a gzip stream cut short is the file's fault, said with its path (the JSON-lines
    reader let EOFError through, which the worker pool then took for a dead worker)."""
    import gzip

    from vocabopt.corpus import reader

    whole = gzip.compress(line * 20_000)
    path = tmp_path / name
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=f"{name}: compressed stream ends early; the file is truncated"):
        list(reader.Reader([str(path)], reader.SourceOptions()))
