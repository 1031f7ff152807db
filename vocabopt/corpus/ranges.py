"""Byte ranges of plain-text and JSON-lines files: the parts the Dask engine reads, cut at line starts.

Job: decide which bytes a range [start, end) of a file owns, and open them as a stream. Inputs: an uncompressed
text or JSON-lines file (local or URL) and a range of its bytes. Outputs: the owned bytes [p0, p1) (the lines that
start inside the range, or with `document` the blank-line-separated documents), so that the ranges of a file
together read exactly what the whole file reads; a stream of them (`open_range`) whose tell() is the progress.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

from ..errors import InputError
from .files import BINARY_SNIFF, open_file, size_of

RANGED = (("text", None), ("jsonl", None))  # (kind, compression) of the files read in byte ranges

_SCAN = 1 << 20  # bytes read at once while looking for a range's boundary


def range_bounds(f: BinaryIO, size: int, start: int, end: int, document: bool = False) -> tuple[int, int]:
    """The bytes [p0, p1) that the range [start, end) of a file owns: the lines that start inside it (a line starts
    at byte 0 and after each "\\n"); with `document`, only the starts that follow an empty line count, so no
    blank-line-separated document is cut. Adjacent ranges own adjacent bytes, and together the whole file.
    `f` is the open file (seekable), `size` its size in bytes."""
    return _boundary(f, size, start, document), _boundary(f, size, end, document)


def _boundary(f: BinaryIO, size: int, pos: int, document: bool) -> int:
    """The first line start at or after `pos` (following an empty line if `document`); the file size if none."""
    if pos <= 0 or pos >= size:
        return min(max(pos, 0), size)
    marks = (b"\n\n", b"\n\r\n") if document else (b"\n",)
    width = max(map(len, marks))
    base = max(pos - width, 0)  # file offset of buf[0]; a mark ending at or after pos starts at or after this
    f.seek(base)
    buf = f.read(_SCAN)
    if base == 0:  # byte 0 is a line start: as if a "\n" came before the file
        buf, base = b"\n" + buf, -1
    while True:
        ends = [base + i + len(m) for m in marks if (i := buf.find(m, max(pos - base - len(m), 0))) >= 0]
        if ends:
            return min(ends)
        more = f.read(_SCAN)
        if not more:
            return size
        keep = min(width - 1, len(buf))  # a mark may straddle two reads
        base += len(buf) - keep
        buf = buf[len(buf) - keep :] + more


class ByteSlice(io.RawIOBase):
    """Bytes [start, end) of an open file as a stream; tell() is the bytes consumed."""

    def __init__(self, f: BinaryIO, start: int, end: int) -> None:
        self.f, self.start, self.left = f, start, end - start
        f.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        if n <= 0:
            return 0
        got = self.f.readinto(memoryview(b)[:n]) or 0
        self.left -= got
        return got

    def tell(self) -> int:
        return self.f.tell() - self.start

    def close(self) -> None:
        self.f.close()
        super().close()


def open_range(path: str, start: int, end: int, document: bool) -> tuple[BinaryIO, Any]:
    """The bytes a range owns (see `range_bounds`) as a stream, and the stream under it. The file's head is checked
    for NUL bytes as when the whole file is read, so every range of a binary file fails alike."""
    f = open_file(path)
    if b"\0" in f.read(BINARY_SNIFF):
        f.close()
        raise InputError(f"{path}: looks binary (contains NUL bytes); pass text, JSON lines, parquet or arrow")
    p0, p1 = range_bounds(f, size_of(path), start, end, document)
    part = ByteSlice(f, p0, p1)
    return io.BufferedReader(part), part
