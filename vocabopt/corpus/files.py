"""Corpus files: resolve the user's source arguments into files, tell their kind, size them, open them.

Job: the first step of the analyze stage. Inputs: files, directories, globs, `-` (stdin), fsspec URLs (s3://,
gs://, hdfs://, file://, ... with the filesystem's package installed). Outputs: sorted file lists, (format,
compression) kinds, sizes in bytes on disk, opened and decompressed byte streams, and `SourceInfo`, the per-source
bookkeeping the CorpusStats artifact records (defined here so that the readers need not import vocabopt.stats).
"""

from __future__ import annotations

import bz2
import glob as globlib
import gzip
import lzma
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ""}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
BINARY_SNIFF = 1 << 16  # bytes inspected for NUL bytes


@dataclass
class SourceInfo:
    path: str
    bytes: int  # UTF-8 bytes of text read (after decompression)
    sequences: int = 0
    replaced_bytes: int = 0  # invalid UTF-8 bytes decoded as U+FFFD (and lone surrogates of JSON escapes, 1 each)
    skipped_lines: int = 0  # malformed records skipped under --skip-bad-lines


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


def source_list(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """The API's `sources` as strings: one source (a str or os.PathLike) or an iterable of them."""
    return [os.fspath(s) for s in ([sources] if isinstance(sources, str | os.PathLike) else sources)]


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
    fmt, compression = file_kind(str(p))
    stem = p.name.lower()[: -len(compression)] if compression else p.name.lower()
    suffix = os.path.splitext(stem)[1]
    if fmt == "text":
        return suffix in TEXT_SUFFIXES
    return suffix != ".json"


def file_kind(path: str) -> tuple[str, str | None]:
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


# --- opening --------------------------------------------------------------------------------------------------


class _Stdin:
    """Stands in for the on-disk file of stdin: no position, nothing to close."""

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


def open_file(path: str) -> BinaryIO:
    try:
        if is_url(path):
            fs, root = _url_fs(path)
            return fs.open(root, "rb")
        return open(path, "rb")
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; pass the files in it or the directory itself") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror or e}); check the path and permissions") from None


def open_stream(path: str, compression: str | None) -> tuple[BinaryIO, Any]:
    """The decompressed byte stream of a source, and the file under it (its tell() is the progress on disk)."""
    if path == "-":
        return sys.stdin.buffer, _Stdin()
    f = open_file(path)
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
