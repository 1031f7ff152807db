"""Corpus sources for the analyzer: turn paths into a stream of text sequences, never the whole corpus in memory.

Inputs: files, directories, globs, `-` (stdin), fsspec URLs (s3://, gs://, hdfs://, file://, ... with the
filesystem's package installed); plain text and .gz/.bz2/.xz; JSON lines (`field`, dotted paths);
parquet and arrow files; a `datasets` dataset saved with `save_to_disk`, or local files read by
`datasets.load_dataset(..., streaming=True)`.
Outputs: `Sequence` items (text, source index, whether it continues the previous piece of one long sequence) and
per-source bookkeeping (`SourceInfo`: bytes, sequences, replaced bytes, skipped lines). A reader may also read one
byte range of a plain-text file (`byte_range`, for the Dask engine): the lines that start inside it, or with
`sequence="document"` the documents, so that the ranges of a file together read exactly what the whole file reads.

What one sequence is: with `sequence="line"`, each non-empty line; with `"document"`, a blank-line-separated block of
a text file, or one record of a JSON-lines/parquet/arrow/dataset source (the default for records).
Sequences longer than `max_chars` are cut at a space that follows a non-space character (so that
pre-tokenization is unchanged for the tokenizers the fast path accepts); the pieces are marked as continuations so
per-sequence special tokens are still counted once.
"""

from __future__ import annotations

import bz2
import codecs
import glob as globlib
import gzip
import io
import itertools
import json
import lzma
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import InputError
from .stats import SourceInfo

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ""}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
DEFAULT_MAX_CHARS = 1 << 20  # 1 Mi characters: longer sequences are cut at whitespace
BINARY_SNIFF = 1 << 16  # bytes inspected for NUL bytes


@dataclass
class Sequence:
    text: str
    source: int  # index into the source list
    continuation: bool = False  # a later piece of a sequence that was cut because it was too long


@dataclass
class Block:
    """Whole lines of a text file read in line mode (one sequence per non-blank line), passed on unsplit so the
    main process does no per-line work."""

    text: str
    source: int


BLOCK_CHARS = 1 << 20  # characters read at once in line mode (~1 MB: bounds per-worker memory)


@dataclass
class SourceOptions:
    field: str | None = None  # JSON/parquet/arrow/dataset field, dotted for nested structs
    sequence: str | None = None  # "line" | "document"; None: line for text, document for records
    skip_bad_lines: bool = False
    max_chars: int = DEFAULT_MAX_CHARS
    dataset_split: str = "train"
    limit_chars: int | None = None  # stop after about this much text


# --- resolving the user's source arguments ------------------------------------------------------------------------


def is_url(path: str) -> bool:
    """An fsspec URL (protocol://...), read through fsspec rather than the local filesystem."""
    return "://" in path


def _url_fs(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) of a URL."""
    try:
        import fsspec
    except ImportError:
        raise InputError(
            f"{url}: URLs are read with fsspec; pip install fsspec (and the filesystem's package, e.g. s3fs, gcsfs)"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise InputError(
            f"{url}: cannot open this URL ({e}); install the package fsspec names for its protocol or pass a local path"
        ) from None


def _resolve_url(url: str) -> list[str]:
    fs, root = _url_fs(url)
    try:
        if any(ch in root for ch in "*?["):
            files = [f for f in fs.glob(root) if fs.isfile(f)]
            if not files:
                raise InputError(f"{url}: glob matches no files; check the pattern")
        elif fs.isdir(root):
            files = [f for f in fs.find(root) if _is_corpus_file(Path(f))]
            if not files:
                raise InputError(
                    f"{url}: directory holds no text, JSON-lines, parquet or arrow files; pass the files themselves"
                )
        elif fs.exists(root):
            files = [root]
        else:
            raise InputError(f"{url}: no such file or directory; check the URL")
    except OSError as e:
        raise InputError(f"{url}: cannot list ({e}); check the URL and your credentials") from None
    return sorted(fs.unstrip_protocol(f) for f in files)


def size_of(path: str) -> int:
    """Bytes on disk of a source file (local path or URL)."""
    if is_url(path):
        fs, root = _url_fs(path)
        return int(fs.size(root))
    return os.path.getsize(path)


def resolve(sources: list[str]) -> list[str]:
    """Expand directories and globs (local or fsspec URLs) into a sorted list of files; keep `-` for stdin. Raise
    InputError if empty."""
    out: list[str] = []
    for s in sources:
        if s == "-":
            out.append(s)
            continue
        if is_url(s):
            out.extend(_resolve_url(s))
            continue
        p = Path(s)
        if p.is_dir():
            files = sorted(str(f) for f in p.rglob("*") if f.is_file() and _is_corpus_file(f))
            if not files:
                raise InputError(
                    f"{s}: directory holds no text, JSON-lines, parquet or arrow files; pass the files themselves"
                )
            out.extend(files)
        elif p.exists():
            out.append(str(p))
        elif any(ch in s for ch in "*?["):
            files = sorted(f for f in globlib.glob(s, recursive=True) if Path(f).is_file())
            if not files:
                raise InputError(f"{s}: glob matches no files; check the pattern")
            out.extend(files)
        else:
            raise InputError(f"{s}: no such file or directory; check the path")
    return out


def _is_corpus_file(p: Path) -> bool:
    """Files a directory source contributes: text, JSON lines, parquet, arrow (hidden files and .json skipped)."""
    if p.name.startswith("."):
        return False
    fmt, compression = _kind(str(p))
    stem = p.name.lower()[: -len(compression)] if compression else p.name.lower()
    suffix = os.path.splitext(stem)[1]
    if fmt == "text":
        return suffix in TEXT_SUFFIXES
    return suffix != ".json"


def _kind(path: str) -> tuple[str, str | None]:
    """(format, compression) from the file name."""
    name = path.lower()
    compression = None
    for ext in COMPRESSED:
        if name.endswith(ext):
            compression, name = ext, name[: -len(ext)]
            break
    suffix = os.path.splitext(name)[1]
    if suffix in JSONL_SUFFIXES:
        return "jsonl", compression
    if suffix == ".parquet":
        return "parquet", compression
    if suffix == ".arrow":
        return "arrow", compression
    return "text", compression


def total_size(paths: list[str]) -> int | None:
    """Bytes on disk of all sources (None if any is stdin): the denominator of the progress bar."""
    if "-" in paths:
        return None
    return sum(size_of(p) for p in paths)


# --- reading ------------------------------------------------------------------------------------------------------


class _ReplacementCounter:
    """A codec error handler that decodes invalid UTF-8 as U+FFFD and counts the bytes it replaced (per thread: a
    Dask worker may run several readers at once)."""

    name = "vocabopt-count-replace"

    def __init__(self) -> None:
        self._local = threading.local()
        codecs.register_error(self.name, self)

    @property
    def replaced(self) -> int:
        return getattr(self._local, "n", 0)

    def __call__(self, err: UnicodeDecodeError) -> tuple[str, int]:
        self._local.n = self.replaced + err.end - err.start
        return "\ufffd", err.end


_REPLACED = _ReplacementCounter()


class Reader:
    """Iterates the sequences of a list of sources (then the dataset, if any); `infos` holds one SourceInfo per
    source, with the replaced bytes, skipped lines and sequences seen (bytes are counted by the analyzer).

    `progress_bytes` is how many bytes of the inputs (on disk, compressed where compressed) have been consumed.
    `byte_range` (start, end): read only that range of the one plain-text or JSON-lines file in `paths` (see
    `range_bounds`; a JSON-lines range owns the records that start in it).
    """

    def __init__(
        self,
        paths: list[str],
        options: SourceOptions,
        on_warning: Callable[[str], None] | None = None,
        dataset: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ):
        if byte_range is not None and (len(paths) != 1 or dataset is not None or _kind(paths[0]) not in RANGED):
            raise ValueError("byte_range reads one uncompressed text or JSON-lines file")
        self.paths, self.options, self.dataset, self.byte_range = paths, options, dataset, byte_range
        self.infos = [SourceInfo(path=p, bytes=0) for p in paths]
        if dataset is not None:
            self.infos.append(SourceInfo(path=dataset, bytes=0))
        self.on_warning = on_warning or (lambda msg: None)
        self._done_bytes = 0  # bytes of finished sources
        self._chars = 0  # characters yielded, for limit_chars
        self._current: Callable[[], int] = lambda: 0

    @property
    def progress_bytes(self) -> int:
        return self._done_bytes + self._current()

    def __iter__(self) -> Iterator[Sequence | Block]:
        for i, path in enumerate(self.paths):
            if self._limit_reached():
                return
            fmt, compression = _kind(path) if path != "-" else ("text", None)
            if fmt == "jsonl":
                yield from self._jsonl(i, path, compression)
            elif fmt == "parquet":
                yield from self._records(i, path, _parquet_texts(path, self._field(path)))
            elif fmt == "arrow":
                yield from self._records(i, path, _arrow_texts(path, self._field(path)))
            else:
                yield from self._text(i, path, compression)
            if self.byte_range is not None:
                self._done_bytes += self.byte_range[1] - self.byte_range[0]
            elif path != "-":
                self._done_bytes += size_of(path)
            self._current = lambda: 0
            if self.infos[i].sequences == 0:
                self.on_warning(f"{path}: no text (empty source)")
        if self.dataset is not None:
            i = len(self.paths)
            texts = dataset_texts(self.dataset, self.options)
            for value, _frac in texts:
                if self._limit_reached():
                    return
                yield from self._record_sequences(i, value)

    def _field(self, path: str) -> str:
        return self.options.field or "text"

    # text files: one sequence per line, or per blank-line-separated block
    def _text(self, i: int, path: str, compression: str | None) -> Iterator[Sequence | Block]:
        if self.byte_range is None:
            raw, base = _open_binary(path, compression)
        else:
            raw, base = _open_range(path, *self.byte_range, document=self.options.sequence == "document")
        self._current = base.tell
        try:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors=_REPLACED.name, newline=None)
            before = _REPLACED.replaced
            if (self.options.sequence or "line") == "line":
                yield from self._line_blocks(i, path, text)
            else:
                yield from self._documents(i, path, text)
            self.infos[i].replaced_bytes += _REPLACED.replaced - before
        except OSError as e:
            raise InputError(f"{path}: read failed ({e}); the file may be truncated or corrupt") from None
        except EOFError:
            raise InputError(f"{path}: compressed stream ends early; the file is truncated") from None
        finally:
            self._current = lambda: 0
            if raw is not sys.stdin.buffer:
                raw.close()
            base.close()

    def _line_blocks(self, i: int, path: str, text: io.TextIOWrapper) -> Iterator[Sequence | Block]:
        max_chars = self.options.max_chars
        while not self._limit_reached():
            block = text.read(self._block_size())
            if not block:
                return
            if not block.endswith("\n"):
                tail = text.readline(max_chars)
                if tail.endswith("\n") or len(tail) < max_chars:
                    block += tail
                else:  # a line longer than max_chars straddles the block's end: read it in pieces
                    head, _, partial = block.rpartition("\n")
                    if head:
                        yield from self._block(i, head)
                    for k, piece in enumerate(_long_line(partial + tail, text, max_chars, path)):
                        self._count_chars(i, piece)
                        yield Sequence(piece.rstrip("\n"), i, continuation=k > 0)
                    continue
            yield from self._block(i, block)

    def _block(self, i: int, block: str) -> Iterator[Block]:
        if block.strip():
            self._count_chars(i, block)
            yield Block(block, i)

    def _documents(self, i: int, path: str, text: io.TextIOWrapper) -> Iterator[Sequence]:
        lines: list[str] = []
        pieces: list[str] = []  # of a line longer than max_chars, which _lines reads in pieces
        for piece in itertools.chain(_lines(text, self.options.max_chars, path), ["\n"]):
            if self._limit_reached():
                return
            pieces.append(piece)
            if not piece.endswith("\n"):
                continue
            line = "".join(pieces)[:-1]  # a whole line again: its pieces join with nothing between
            pieces = []
            if line.strip():
                lines.append(line)
            elif lines:
                yield from self._cut(i, "\n".join(lines))
                lines = []
        if lines:
            yield from self._cut(i, "\n".join(lines))

    def _block_size(self) -> int:
        if self.options.limit_chars is None:
            return BLOCK_CHARS
        return max(1, min(BLOCK_CHARS, self.options.limit_chars - self._chars))

    def _limit_reached(self) -> bool:
        return self.options.limit_chars is not None and self._chars >= self.options.limit_chars

    def _count_chars(self, i: int, text: str) -> None:
        self._chars += len(text)
        self.infos[i].sequences += 1  # here: pieces seen, for the empty-source warning

    def _cut(self, i: int, text: str) -> Iterator[Sequence]:
        self._count_chars(i, text)
        for k, piece in enumerate(cut_long(text, self.options.max_chars)):
            yield Sequence(piece, i, continuation=k > 0)

    def _jsonl(self, i: int, path: str, compression: str | None) -> Iterator[Sequence]:
        if self.byte_range is None:
            raw, base = _open_binary(path, compression)
        else:
            raw, base = _open_range(path, *self.byte_range, document=False)
        self._current = base.tell
        try:
            field = self._field(path)
            info = self.infos[i]
            text = io.TextIOWrapper(raw, encoding="utf-8", errors=_REPLACED.name, newline=None)
            before = _REPLACED.replaced
            for lineno, line in enumerate(text, start=1):
                if self._limit_reached():
                    break
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    if self.options.skip_bad_lines:
                        info.skipped_lines += 1
                        continue
                    raise InputError(
                        f"{path}:{self._line_number(path, base, lineno)}: invalid JSON ({e.msg}); "
                        "fix the line or pass --skip-bad-lines"
                    ) from None
                value = _get_field(record, field)
                if not isinstance(value, str):
                    if self.options.skip_bad_lines:
                        info.skipped_lines += 1
                        continue
                    raise InputError(_field_error(path, self._line_number(path, base, lineno), field, record, value))
                if _SURROGATE.search(value):  # "\ud800" escapes: no tokenizer can take a lone surrogate
                    value, n = _SURROGATE.subn("\ufffd", value)
                    info.replaced_bytes += n
                yield from self._record_sequences(i, value)
            info.replaced_bytes += _REPLACED.replaced - before
        finally:
            self._current = lambda: 0
            if raw is not sys.stdin.buffer:
                raw.close()
            base.close()

    def _line_number(self, path: str, base: Any, lineno: int) -> int:
        """The line number in the file of line `lineno` of what this reader reads (a byte range starts mid-file:
        its lines before are counted only here, when an error names a line)."""
        if self.byte_range is None:
            return lineno
        with _open_file(path) as f:  # lines as this reader splits them (a lone \r ends one too)
            before = io.TextIOWrapper(
                io.BufferedReader(_Slice(f, 0, base.start)), encoding="utf-8", errors="replace", newline=None
            )
            return lineno + sum(1 for _ in before)

    def _records(self, i: int, path: str, texts: Iterator[tuple[str, int, float]]) -> Iterator[Sequence]:
        size = size_of(path)
        for value, _row, frac in texts:
            if self._limit_reached():
                return
            self._current = lambda frac=frac: int(frac * size)
            yield from self._record_sequences(i, value)

    def _record_sequences(self, i: int, value: str) -> Iterator[Sequence]:
        if (self.options.sequence or "document") == "document":
            if value.strip():
                yield from self._cut(i, value)
            return
        for line in value.replace("\r\n", "\n").split("\n"):
            if line.strip():
                yield from self._cut(i, line)


class _Stdin:
    """Stands in for the on-disk file of stdin: no position, nothing to close."""

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _open_file(path: str) -> BinaryIO:
    try:
        if is_url(path):
            fs, root = _url_fs(path)
            return fs.open(root, "rb")
        return open(path, "rb")
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; pass the files in it or the directory itself") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror or e}); check the path and permissions") from None


def _open_binary(path: str, compression: str | None) -> tuple[BinaryIO, Any]:
    """The decompressed byte stream of a source, and the file under it (its tell() is the progress on disk)."""
    if path == "-":
        return sys.stdin.buffer, _Stdin()
    f = _open_file(path)
    head = f.read(BINARY_SNIFF)
    f.seek(0)
    if compression:
        try:
            stream = COMPRESSED[compression](f)
            head = stream.read(BINARY_SNIFF)
            f.seek(0)
            stream = COMPRESSED[compression](f)
        except (OSError, EOFError, lzma.LZMAError) as e:
            f.close()
            raise InputError(f"{path}: not a valid {compression} file ({e}); check the file or its extension") from None
    else:
        stream = f
    if b"\0" in head:
        f.close()
        raise InputError(f"{path}: looks binary (contains NUL bytes); pass text, JSON lines, parquet or arrow")
    return stream, f


# --- byte ranges of plain-text files (the Dask engine's parts) ----------------------------------------------------

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


class _Slice(io.RawIOBase):
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


def _open_range(path: str, start: int, end: int, document: bool) -> tuple[BinaryIO, Any]:
    """The bytes a range owns (see `range_bounds`) as a stream, and the stream under it. The file's head is checked
    for NUL bytes as when the whole file is read, so every range of a binary file fails alike."""
    f = _open_file(path)
    if b"\0" in f.read(BINARY_SNIFF):
        f.close()
        raise InputError(f"{path}: looks binary (contains NUL bytes); pass text, JSON lines, parquet or arrow")
    p0, p1 = range_bounds(f, size_of(path), start, end, document)
    part = _Slice(f, p0, p1)
    return io.BufferedReader(part), part


def _lines(text: io.TextIOWrapper, max_chars: int, path: str) -> Iterator[str]:
    """Lines of a text stream, reading at most `max_chars` characters at a time (a huge line is yielded in pieces,
    each ending at a cut point; the last piece carries the newline)."""
    pending = ""
    try:
        while True:
            chunk = text.readline(max_chars)
            if not chunk:
                break
            if chunk.endswith("\n") or len(chunk) < max_chars:
                yield pending + chunk
                pending = ""
                continue
            # A line longer than max_chars: emit up to its last cut point, keep the rest.
            pending += chunk
            cut = _last_cut(pending)
            if cut > 0:
                yield pending[:cut]
                pending = pending[cut:]
            if len(pending) > 4 * max_chars:  # no whitespace at all for a long stretch: hard cut
                yield pending
                pending = ""
        if pending:
            yield pending
    except OSError as e:
        raise InputError(f"{path}: read failed ({e}); the file may be truncated or corrupt") from None
    except EOFError:
        raise InputError(f"{path}: compressed stream ends early; the file is truncated") from None


def _long_line(start: str, text: io.TextIOWrapper, max_chars: int, path: str) -> Iterator[str]:
    """Pieces of one line longer than max_chars that starts with `start`, read at most max_chars at a time.

    The pieces are exactly `cut_long(line)` (the line without its newline): cut_long only cuts while more than
    max_chars remain and looks at the first max_chars + 1 of them, so a cut can be made as soon as that much is
    read. Where the line began in a read block therefore does not change the pieces (both engines agree). A line of
    nothing but whitespace yields nothing, like a blank line in a block (up to _MAX_HELD pieces are held to know).
    """
    pending, held, blank = start, [], True  # held: the pieces so far while all of them are whitespace
    while True:
        ended = pending.endswith("\n")
        if ended:
            pending = pending[:-1]
        while len(pending) > max_chars:
            cut = _last_cut(pending[: max_chars + 1]) or max_chars
            piece, pending = pending[:cut], pending[cut:]
            if blank and piece.isspace() and len(held) < _MAX_HELD:
                held.append(piece)
                continue
            blank = False
            yield from held
            held = []
            yield piece
        if ended:
            break
        chunk = text.readline(max_chars)
        if not chunk:
            break
        pending += chunk
    if not blank or (pending and not pending.isspace()):
        yield from held
        if pending:
            yield pending


_MAX_HELD = 64  # pieces of max_chars held while a long line is all whitespace (bounds memory)


def _last_cut(text: str) -> int:
    """Index of the last space that follows a non-whitespace character (0 if none)."""
    i = text.rfind(" ")
    while i > 0:
        if not text[i - 1].isspace():
            return i
        i = text.rfind(" ", 0, i)
    return 0


def cut_long(text: str, max_chars: int) -> list[str]:
    """Cut `text` into pieces of at most ~max_chars at spaces that follow a non-space character."""
    if len(text) <= max_chars:
        return [text]
    pieces = []
    while len(text) > max_chars:
        cut = _last_cut(text[: max_chars + 1]) or max_chars
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


# --- records ------------------------------------------------------------------------------------------------------


def _get_field(record: Any, field: str) -> Any:
    value = record
    for part in field.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _Missing
    return value


class _Missing:
    pass


_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate (a valid pair is decoded to one character)


def _field_error(path: str, lineno: int | None, field: str, record: Any, value: Any) -> str:
    where = f"{path}:{lineno}" if lineno else path
    if value is _Missing:
        keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        return f"{where}: no field {field!r} (available: {keys}); pass --field NAME (dotted for nested fields)"
    return (
        f"{where}: field {field!r} holds {type(value).__name__}, not text; pass --field with a text field "
        "or --skip-bad-lines"
    )


def _field_texts(values: Iterable[Any], field: str, path: str) -> Iterator[str]:
    """The texts in a column's values: `field`'s part after the first dot navigates nested structs; None is skipped."""
    top, _, rest = field.partition(".")
    for value in values:
        if rest:
            value = _get_field(value, rest)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(_field_error(path, None, field, {top: value}, value))
        yield value


def _arrow_column_texts(table_batches: Iterator[Any], field: str, path: str, total_rows: int) -> Iterator:
    top = field.partition(".")[0]
    done = 0
    for batch in table_batches:
        if top not in batch.schema.names:
            raise InputError(f"{path}: no column {top!r} (columns: {', '.join(batch.schema.names)}); pass --field")
        done += batch.num_rows
        for value in _field_texts(batch.column(top).to_pylist(), field, path):
            yield value, done, done / max(total_rows, 1)


def _parquet_texts(path: str, field: str) -> Iterator[tuple[str, int, float]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(_open_file(path) if is_url(path) else path)
    except InputError:
        raise
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: not a valid parquet file ({e})") from None
    top = field.partition(".")[0]
    if top not in pf.schema_arrow.names:
        raise InputError(f"{path}: no column {top!r} (columns: {', '.join(pf.schema_arrow.names)}); pass --field")
    yield from _arrow_column_texts(pf.iter_batches(batch_size=1024, columns=[top]), field, path, pf.metadata.num_rows)


def _arrow_texts(path: str, field: str) -> Iterator[tuple[str, int, float]]:
    import pyarrow as pa

    source = _open_file(path) if is_url(path) else pa.memory_map(path)
    try:
        reader = pa.ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        try:  # `datasets` writes the streaming format
            source = _open_file(path) if is_url(path) else pa.memory_map(path)
            reader = pa.ipc.open_stream(source)
            batches, rows = iter(reader), 0
        except pa.ArrowInvalid as e:
            raise InputError(f"{path}: not a valid arrow file ({e})") from None
    yield from _arrow_column_texts(batches, field, path, rows)


def dataset_texts(path: str, options: SourceOptions) -> Iterator[tuple[str, float]]:
    """Texts of a local `datasets` dataset: a `save_to_disk` folder, or files `load_dataset` can read (streamed).

    Never contacts the Hugging Face Hub: the path must exist locally.
    """
    if not Path(path).exists():
        raise InputError(
            f"{path}: no such dataset folder; vocabopt reads local datasets only "
            "(save one with Dataset.save_to_disk, or pass its data files)"
        )
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    field = options.field or "text"
    p = Path(path)
    if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if options.dataset_split not in ds:
                raise InputError(f"{path}: no split {options.dataset_split!r} (splits: {', '.join(ds)}); pass --split")
            ds = ds[options.dataset_split]
        total = len(ds)
    else:
        try:
            ds = datasets.load_dataset(path, split=options.dataset_split, streaming=True)
        except Exception as e:  # datasets raises many types for unreadable folders
            raise InputError(
                f"{path}: datasets.load_dataset could not read it ({e}); pass a save_to_disk folder "
                "or a folder of text/json/csv/parquet files"
            ) from None
        total = 0
    top = field.partition(".")[0]
    names = ds.column_names or []
    if names and top not in names:
        raise InputError(f"{path}: no field {top!r} (columns: {', '.join(names)}); pass --field")

    def texts() -> Iterator[tuple[str, float]]:
        done = 0
        for batch in ds.select_columns([top]).iter(batch_size=1000):
            done += len(batch[top])
            for value in _field_texts(batch[top], field, path):
                yield value, (done / total if total else 0.0)

    return texts()
