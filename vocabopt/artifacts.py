"""Reading and writing artifacts: atomic writes, human-readable JSON, numpy sidecars, schema checks.

Every artifact is a JSON file (sorted keys, so the same content gives the same bytes) whose top level holds
`artifact` (its kind) and `schema_version`; large arrays sit beside it as `.npy` files, read with
`allow_pickle=False`. Writes go to a temporary file in the target directory, fsynced, then renamed, so an
interrupted run never leaves a half-written artifact.

Sidecars are named by their content (`stats.counts.<sha256[:16]>.npy`) and written before the file that names
them, so a run killed between the two writes leaves the previous artifact whole: its JSON still names its own
sidecar, which is only removed once the new JSON is in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError


def check_writable(path: str | os.PathLike) -> None:
    """Raise ArtifactError unless `path` can be written atomically: call it before work whose result goes there.

    The target must be absent or a regular file (an atomic rename would replace a device such as /dev/full, or a
    pipe, with a plain file), and its directory must accept a new file (checked by creating and removing one).
    """
    path = Path(path)
    _check_regular(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    _unlink_quietly(tmp)


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in `path`'s directory (so the final rename stays on one file system)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot write here ({e.strerror}); choose a writable output path") from None


def _check_regular(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ArtifactError(f"{path}: cannot write here ({e.strerror}); choose a writable output path") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
        raise ArtifactError(f"{path}: is {kind}; artifacts are written as files, choose a file path")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    _check_regular(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; artifacts are shared like any file
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise ArtifactError(f"{path}: write failed ({e.strerror}); check free space and permissions") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def sidecar_path(path: str | os.PathLike, name: str, data: bytes, suffix: str = ".npy") -> Path:
    """`<stem>.<name>.<sha256[:16]><suffix>` beside `path` (stem = its name without `.json`/`.py`)."""
    path = Path(path)
    stem = path.name
    for ext in (".json", ".py"):
        if stem.endswith(ext) and len(stem) > len(ext):
            stem = stem[: -len(ext)]
            break
    return path.with_name(f"{stem}.{name}.{sha256_bytes(data)[:16]}{suffix}")


def write_with_sidecars(path: str | os.PathLike, sidecars: dict[Path, bytes], render: Callable[[], bytes]) -> None:
    """Write content-named `sidecars`, then `render()` to `path`, each atomically; then drop the old sidecars.

    A failure (or a kill) at any point leaves the previous artifact at `path` readable: its sidecars are removed
    only after the new file replaced it, and only those the old file names that match the content-named pattern.
    Sidecars this call created are removed again if writing `path` fails.
    """
    path = Path(path)
    check_writable(path)
    old = _read_quietly(path)
    created = []
    try:
        for side, data in sidecars.items():
            existing = _read_quietly(side)
            if existing != data:
                atomic_write_bytes(side, data)
                if existing is None:
                    created.append(side)
        atomic_write_bytes(path, render())
    except BaseException:
        for side in created:
            _unlink_quietly(str(side))
        raise
    if old:
        stem = sidecar_path(path, "x", b"").name.rsplit(".x.", 1)[0]
        pattern = re.compile(re.escape(stem) + r"\.[a-z_]+\.[0-9a-f]{16}\.(?:npy|pt)\b")
        named = {m.group(0) for m in pattern.finditer(old.decode("utf-8", "replace"))}
        for name in named - {side.name for side in sidecars}:
            _unlink_quietly(str(path.with_name(name)))


def _read_quietly(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, ASCII only (lone surrogates and control characters stay escaped)."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, dumps_json(obj).encode("ascii"))


def read_json(path: str | os.PathLike, artifact: str, max_schema: int) -> dict:
    """Load an artifact's JSON and check its kind and schema version; raise ArtifactError otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, expected a {artifact} JSON file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: cannot read ({e}); expected a {artifact} JSON file") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}); the file is corrupt, regenerate it"
        ) from None
    if not isinstance(obj, dict) or obj.get("artifact") != artifact:
        found = obj.get("artifact") if isinstance(obj, dict) else type(obj).__name__
        raise ArtifactError(f"{path}: not a {artifact} (found {found!r}); pass a file written by vocabopt")
    version = obj.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path}: missing or invalid schema_version; regenerate the file")
    if version > max_schema:
        raise ArtifactError(
            f"{path}: schema_version {version} is newer than this vocabopt supports ({max_schema}); upgrade vocabopt"
        )
    return obj


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_npy(path: Path, expected_sha256: str | None, what: str) -> np.ndarray:
    """Load a `.npy` sidecar without pickle, checking its hash against the JSON that names it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: sidecar missing; keep it beside the JSON file or regenerate both") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror})") from None
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise ArtifactError(f"{path}: does not match its JSON ({what} hash differs); regenerate both files")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - a corrupt header raises SyntaxError, ValueError, ... from numpy
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ArtifactError(f"{path}: not a valid .npy file ({reason}); regenerate it") from None
