"""Every source format gives the same counts as the plain text; bad inputs give one-line errors."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vocabopt import analyze
from vocabopt.errors import InputError, TokenizerError

ROOT = Path(__file__).resolve().parents[1]

LINES = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void;",
    "and darkness was upon the face of the deep.",
]


@pytest.fixture
def plain(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


def counts(*args, **kw) -> np.ndarray:
    return analyze(*args, **kw).counts


@pytest.mark.parametrize("opener, ext", [(gzip.open, ".gz"), (bz2.open, ".bz2"), (lzma.open, ".xz")])
def test_compressed_equals_plain(tmp_path, plain, opener, ext):
    path = tmp_path / f"c.txt{ext}"
    with opener(path, "wb") as f:
        f.write(plain.read_bytes())
    np.testing.assert_array_equal(counts([str(path)], "bytes"), counts([str(plain)], "bytes"))


def test_jsonl_dotted_field_and_sequences(tmp_path, plain):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"meta": {"body": line}, "id": i}) + "\n" for i, line in enumerate(LINES)))
    stats = analyze([str(path)], "bytes", field="meta.body")
    np.testing.assert_array_equal(stats.counts, counts([str(plain)], "bytes"))
    assert stats.n_sequences == 3


def test_parquet_arrow_and_datasets(tmp_path, plain):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": LINES, "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "c.parquet")
    with pa.ipc.new_file(str(tmp_path / "c.arrow"), table.schema) as w:
        w.write_table(table)
    ref = counts([str(plain)], "bytes")
    np.testing.assert_array_equal(counts([str(tmp_path / "c.parquet")], "bytes"), ref)
    np.testing.assert_array_equal(counts([str(tmp_path / "c.arrow")], "bytes"), ref)

    ds = datasets.Dataset.from_dict({"text": LINES})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    np.testing.assert_array_equal(counts([], "bytes", dataset=str(tmp_path / "saved")), ref)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in LINES))
    np.testing.assert_array_equal(counts([], "bytes", dataset=str(tmp_path / "folder")), ref)


def test_directory_glob_and_empty_file_warning(tmp_path, plain):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.txt").write_text(LINES[0] + "\n")
    (d / "b.txt").write_text("\n".join(LINES[1:]) + "\n")
    (d / "empty.txt").write_text("")
    warnings: list[str] = []
    ref = counts([str(plain)], "bytes")
    np.testing.assert_array_equal(counts([str(d)], "bytes", on_warning=warnings.append), ref)
    assert any("empty.txt" in w for w in warnings)
    np.testing.assert_array_equal(counts([str(d / "*.txt")], "bytes", on_warning=lambda w: None), ref)


def test_invalid_utf8_is_replaced_and_reported(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"caf\xe9 ok\nfine\xff\xfe line\n")
    stats = analyze([str(path)], "bytes", on_warning=lambda w: None)
    assert stats.sources[0].replaced_bytes == 3
    assert stats.counts[0xEF] == 3  # U+FFFD is EF BF BD in UTF-8


def test_lone_surrogates_in_json_are_replaced_and_reported(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "abc \\ud800 def \\udfff"}\n{"text": "pair \\ud83d\\ude00 ok"}\n')
    from tokenizers import Tokenizer

    bpe = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
    stats = analyze([str(path)], str(bpe), field="text", on_warning=lambda w: None)
    assert stats.sources[0].replaced_bytes == 2  # the valid pair is one character, kept
    encs = Tokenizer.from_file(str(bpe)).encode_batch(["abc \ufffd def \ufffd", "pair \U0001f600 ok"])
    ref = np.bincount([i for e in encs for i in e.ids], minlength=stats.counts.size)
    np.testing.assert_array_equal(stats.counts, ref)


def test_limits(tmp_path, plain):
    full = analyze([str(plain)], "bytes")
    part = analyze([str(plain)], "bytes", limit_bytes=60)
    assert 0 < part.total < full.total


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.txt", "no such file"),
        (lambda d: (d / "empty_dir").mkdir() or d / "empty_dir", "holds no text"),
        (lambda d: (d / "bin.txt").write_bytes(b"abc\x00def") and d / "bin.txt", "binary"),
        (lambda d: (d / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n') and d / "bad.jsonl", "bad.jsonl:2"),
        (lambda d: (d / "nofield.jsonl").write_text('{"body": "x"}\n') and d / "nofield.jsonl", "--field"),
        (lambda d: (d / "blank.txt").write_text("\n\n  \n") and d / "blank.txt", "empty corpus"),
        (lambda d: (d / "x.txt.gz").write_bytes(b"not gzip at all") and d / "x.txt.gz", "gz"),
    ],
)
def test_bad_inputs(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as err:
        analyze([str(path)], "bytes", on_warning=lambda w: None)
    assert "\n" not in str(err.value)


def test_skip_bad_lines_counts_them(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n{"other": 1}\n{"text": "fine"}\n')
    stats = analyze([str(path)], "bytes", skip_bad_lines=True)
    assert stats.sources[0].skipped_lines == 2 and stats.n_sequences == 2


@pytest.mark.parametrize("spec, message", [("nope/tokenizer.json", "no tokenizer.json"), ("bad", "not a valid")])
def test_bad_tokenizer(tmp_path, plain, spec, message):
    if spec == "bad":
        (tmp_path / "bad.json").write_text("{not json")
        spec = str(tmp_path / "bad.json")
    with pytest.raises(TokenizerError, match=message):
        analyze([str(plain)], spec)


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
    from vocabopt import sources
    from vocabopt.counting import unpack

    max_chars = 20
    monkeypatch.setattr(sources, "BLOCK_CHARS", block)
    path = tmp_path / f"long{block}.txt"
    path.write_text("\n".join(lines) + "\n")
    got = []
    for item in sources.Reader([str(path)], sources.SourceOptions(max_chars=max_chars)):
        if isinstance(item, sources.Block):
            got += unpack(item.text, max_chars)[0]
        else:
            got.append(item.text)
    want = [piece for line in lines if line.strip() for piece in sources.cut_long(line, max_chars)]
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
    from vocabopt import sources

    path = tmp_path / "docs.txt"
    path.write_text("\n".join(lines) + "\n")
    docs: list[str] = []
    for item in sources.Reader([str(path)], sources.SourceOptions(sequence="document", max_chars=20)):
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
