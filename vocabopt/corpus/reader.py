"""The corpus reader: a stream of text sequences from a list of sources, never the whole corpus in memory.

Job: read what `files` resolved (plain text and .gz/.bz2/.xz; JSON lines; parquet and arrow; a local `datasets`
dataset through `records`), decode it (invalid UTF-8 becomes U+FFFD, counted), and cut it into sequences. Inputs:
file paths, `SourceOptions`, optionally one byte range of one uncompressed file (the Dask engine's part, see
`ranges`). Outputs: `Text` items (one sequence, or a piece of a long one) and `Block` items (whole lines of a text
file in line mode), plus one `SourceInfo` per source (sequences seen, replaced bytes, skipped lines).

What one sequence is: with `sequence="document"` (the default), a blank-line-separated block of a text file with its
newlines, or one record of a JSON-lines/parquet/arrow/dataset source; with `"line"`, each non-empty line without its
newline (what `datasets.load_dataset("text")` yields: the newline token is then never counted).
Sequences longer than `max_chars` are cut at a space that follows a non-space character (`cut_long`, so that
the tokens are unchanged for the tokenizers the fast path accepts; in Llama 2's Prepend + Replace layout the counter
drops a piece's leading space, whose "▁" the Prepend gives back); the pieces are marked as continuations so
per-sequence special tokens are still counted once.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .files import SourceInfo, file_kind, open_file, open_stream, size_of
from .ranges import RANGED, ByteSlice, open_range
from .records import LONE_SURROGATE, arrow_texts, dataset_texts, field_error, get_field, parquet_texts

DEFAULT_MAX_CHARS = 1 << 20  # 1 Mi characters: longer sequences are cut at whitespace
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")  # a line end, then one or more lines of whitespace only
BLOCK_CHARS = 1 << 20  # characters read at once in line mode (~1 MB: bounds per-worker memory)


@dataclass
class Text:
    """One sequence, or one piece of a sequence cut because it was too long."""

    text: str
    source: int  # index into the source list
    continuation: bool = False  # a later piece of a sequence that was cut because it was too long


@dataclass
class Block:
    """Whole lines of a text file read in line mode (one sequence per non-blank line), passed on unsplit so the
    main process does no per-line work."""

    text: str
    source: int


@dataclass
class SourceOptions:
    """How sources are read into sequences: the same for every source of a run (picklable, sent to Dask tasks)."""

    field: str | None = None  # JSON/parquet/arrow/dataset field, dotted for nested structs
    sequence: str | None = None  # "line" | "document"; None: document (text files and records alike)
    skip_bad_lines: bool = False
    max_chars: int = DEFAULT_MAX_CHARS
    dataset_split: str = "train"
    limit_chars: int | None = None  # stop after about this much text


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
        if byte_range is not None and (len(paths) != 1 or dataset is not None or file_kind(paths[0]) not in RANGED):
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

    def __iter__(self) -> Iterator[Text | Block]:
        for i, path in enumerate(self.paths):
            if self._limit_reached():
                return
            fmt, compression = file_kind(path) if path != "-" else ("text", None)
            if fmt == "jsonl":
                yield from self._jsonl(i, path, compression)
            elif fmt == "parquet":
                yield from self._records(i, path, parquet_texts(path, self._field(path)))
            elif fmt == "arrow":
                yield from self._records(i, path, arrow_texts(path, self._field(path)))
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
            texts = dataset_texts(self.dataset, field=self.options.field, split=self.options.dataset_split)
            for value, _frac in texts:
                if self._limit_reached():
                    return
                yield from self._record_sequences(i, value)

    def _field(self, path: str) -> str:
        return self.options.field or "text"

    # text files: one sequence per line, or per blank-line-separated block
    def _text(self, i: int, path: str, compression: str | None) -> Iterator[Text | Block]:
        if self.byte_range is None:
            raw, base = open_stream(path, compression)
        else:
            raw, base = open_range(path, *self.byte_range, document=self.options.sequence != "line")
        self._current = base.tell
        try:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors=_REPLACED.name, newline=None)
            before = _REPLACED.replaced
            if self.options.sequence == "line":
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

    def _line_blocks(self, i: int, path: str, text: io.TextIOWrapper) -> Iterator[Text | Block]:
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
                        yield Text(piece.rstrip("\n"), i, continuation=k > 0)
                    continue
            yield from self._block(i, block)

    def _block(self, i: int, block: str) -> Iterator[Block]:
        if block.strip():
            self._count_chars(i, block)
            yield Block(block, i)

    def _documents(self, i: int, path: str, text: io.TextIOWrapper) -> Iterator[Text]:
        """Blank-line-separated documents (their lines joined by "\n"), read a block at a time and cut with one regex
        (a line of whitespace only is blank, as str.strip() sees it). A document longer than a few max_chars is
        passed on in the pieces `cut_long` would cut it into, as it is read, so memory stays bounded."""
        carry, started = "\n", False  # started: pieces of the document in `carry` were passed on already
        while True:
            block = text.read(self._block_size()) if not self._limit_reached() else ""
            parts = _BLANK_LINES.split(carry + (block or "\n\n"))  # at the end, "\n\n" closes the last document
            for k, part in enumerate(parts[:-1] if block else parts):
                if self._limit_reached():
                    return
                going = started and k == 0  # the rest of a document begun before
                doc = part[1:] if part[:1] == "\n" and not going else part  # part may start at the carry's "\n"
                if going or doc.strip():
                    yield from self._cut(i, doc, continuing=going)
            if not block:
                return
            carry, started = ("\n" + parts[-1], False) if len(parts) > 1 else (parts[-1], started)
            if len(carry) > 4 * self.options.max_chars and not self._limit_reached():
                doc = carry if started else carry[1:]
                # The document is sure up to its last line end while the line after it may still become blank.
                end = doc.rfind("\n")
                sure, tail = (doc[:end], doc[end:]) if end >= 0 and doc[end:].isspace() else (doc, "")
                pieces = cut_long(sure, self.options.max_chars)
                self._count_chars(i, sure[: len(sure) - len(pieces[-1])])
                for k, piece in enumerate(pieces[:-1]):
                    yield Text(piece, i, continuation=started or k > 0)
                carry, started = pieces[-1] + tail, started or len(pieces) > 1

    def _block_size(self) -> int:
        if self.options.limit_chars is None:
            return BLOCK_CHARS
        return max(1, min(BLOCK_CHARS, self.options.limit_chars - self._chars))

    def _limit_reached(self) -> bool:
        return self.options.limit_chars is not None and self._chars >= self.options.limit_chars

    def _count_chars(self, i: int, text: str) -> None:
        self._chars += len(text)
        self.infos[i].sequences += 1  # here: pieces seen, for the empty-source warning

    def _cut(self, i: int, text: str, continuing: bool = False) -> Iterator[Text]:
        self._count_chars(i, text)
        for k, piece in enumerate(cut_long(text, self.options.max_chars)):
            yield Text(piece, i, continuation=continuing or k > 0)

    def _jsonl(self, i: int, path: str, compression: str | None) -> Iterator[Text]:
        if self.byte_range is None:
            raw, base = open_stream(path, compression)
        else:
            raw, base = open_range(path, *self.byte_range, document=False)
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
                value = get_field(record, field)
                if not isinstance(value, str):
                    if self.options.skip_bad_lines:
                        info.skipped_lines += 1
                        continue
                    raise InputError(field_error(path, self._line_number(path, base, lineno), field, record, value))
                if LONE_SURROGATE.search(value):  # "\ud800" escapes: no tokenizer can take a lone surrogate
                    value, n = LONE_SURROGATE.subn("\ufffd", value)
                    info.replaced_bytes += n
                yield from self._record_sequences(i, value)
            info.replaced_bytes += _REPLACED.replaced - before
        except OSError as e:
            raise InputError(f"{path}: read failed ({e}); the file may be truncated or corrupt") from None
        except EOFError:
            raise InputError(f"{path}: compressed stream ends early; the file is truncated") from None
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
        with open_file(path) as f:  # lines as this reader splits them (a lone \r ends one too)
            before = io.TextIOWrapper(
                io.BufferedReader(ByteSlice(f, 0, base.start)), encoding="utf-8", errors="replace", newline=None
            )
            return lineno + sum(1 for _ in before)

    def _records(self, i: int, path: str, texts: Iterator[tuple[str, int, float]]) -> Iterator[Text]:
        size = size_of(path)
        for value, _row, frac in texts:
            if self._limit_reached():
                return
            self._current = lambda frac=frac: int(frac * size)
            yield from self._record_sequences(i, value)

    def _record_sequences(self, i: int, value: str) -> Iterator[Text]:
        if (self.options.sequence or "document") == "document":
            if value.strip():
                yield from self._cut(i, value)
            return
        for line in value.replace("\r\n", "\n").split("\n"):
            if line.strip():
                yield from self._cut(i, line)


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
