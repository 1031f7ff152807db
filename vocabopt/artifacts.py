"""Reading and writing artifacts: atomic writes, human-readable JSON, numpy sidecars, schema checks.

Every artifact is a JSON file (sorted keys, so the same content gives the same bytes) whose top level holds
`artifact` (its kind) and `schema_version`; large arrays sit beside it as `.npy` files, read with
`allow_pickle=False`. Writes go to a temporary file in the target directory, fsynced, then renamed, so an
interrupted run never leaves a half-written artifact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot write here ({e.strerror}); choose a writable output path") from None
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
            f"{path}: schema_version {version} is newer than this vocabopt supports ({max_schema}); "
            "upgrade vocabopt"
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
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(f"{path}: not a valid .npy file ({e}); regenerate it") from None
