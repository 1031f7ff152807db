"""vocabopt.corpus.files (and the reader's decoding): compressed files, directories and globs read like the plain
text; bad inputs give one-line errors."""

from __future__ import annotations

import bz2
import gzip
import lzma

import numpy as np
import pytest

from tests.shared import LINES, counts
from vocabopt import analyze
from vocabopt.errors import InputError


@pytest.mark.parametrize("opener, ext", [(gzip.open, ".gz"), (bz2.open, ".bz2"), (lzma.open, ".xz")])
def test_compressed_equals_plain(tmp_path, plain, opener, ext):
    path = tmp_path / f"c.txt{ext}"
    with opener(path, "wb") as f:
        f.write(plain.read_bytes())
    np.testing.assert_array_equal(counts([str(path)], "bytes"), counts([str(plain)], "bytes"))


def test_directory_glob_and_empty_file_warning(tmp_path, plain):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.txt").write_text(LINES[0] + "\n")
    (d / "b.txt").write_text("\n".join(LINES[1:]) + "\n")
    (d / "empty.txt").write_text("")
    warnings: list[str] = []
    ref = counts([str(plain)], "bytes", sequence="line")  # line mode: where the files split the lines is moot
    np.testing.assert_array_equal(counts([str(d)], "bytes", sequence="line", on_warning=warnings.append), ref)
    assert any("empty.txt" in w for w in warnings)
    glob = counts([str(d / "*.txt")], "bytes", sequence="line", on_warning=lambda w: None)
    np.testing.assert_array_equal(glob, ref)


def test_invalid_utf8_is_replaced_and_reported(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"caf\xe9 ok\nfine\xff\xfe line\n")
    stats = analyze([str(path)], "bytes", on_warning=lambda w: None)
    assert stats.sources[0].replaced_bytes == 3
    assert stats.counts[0xEF] == 3  # U+FFFD is EF BF BD in UTF-8


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
