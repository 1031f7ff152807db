"""Reading and writing artifacts: atomic writes, human-readable JSON, numpy sidecars, schema checks.

Every artifact is a JSON file (sorted keys, so the same content gives the same bytes) whose top level holds
`artifact` (its kind) and `schema_version`; large arrays sit beside it as `.npy` files, read with
`allow_pickle=False`. Writes go to a temporary file in the target directory, fsynced, then renamed, so an
interrupted run never leaves a half-written artifact.

Sidecars are named by their content (`stats.counts.<sha256[:16]>.npy`) and written before the file that names
them, so a run killed between the two writes leaves the previous artifact whole: its JSON still names its own
sidecar, which is only removed once the new JSON is in place.

Single-file form: a path ending in `.npz` gets one file instead, a zip holding `header.json` (the same JSON, its
array `file` names now member names) and one `<name>.npy` member per array. `.npz` rather than a suffix of our own
because it is numpy's own container: `np.load(path, allow_pickle=False)` opens it, any zip tool lists it, and
`unzip -p plan.npz header.json` shows the header. Members are stored uncompressed (as `np.savez` does: no zip-bomb
amplification) with fixed timestamps, so the same content gives the same bytes. The header records each array's
sha256, checked on load like a sidecar's; the zip's CRC-32 catches a flipped byte in the header as well. Loaders
tell the forms apart by content (`is_zip`: a zip starts with `PK\x03\x04`) or by the `.npz` suffix, and refuse a
compressed member or members larger than the archive itself (a crafted file cannot expand to GBs in memory).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tempfile
import zipfile
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
    return check_header(path, obj, artifact, max_schema)


def check_header(path: Path, obj: Any, artifact: str, max_schema: int) -> dict:
    """`obj` if it is a `artifact` JSON of a schema this vocabopt reads; ArtifactError naming `path` otherwise."""
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


def read_npy(path: Path, expected_sha256: str | None, what: str, owner: Path | None = None) -> np.ndarray:
    """Load a `.npy` sidecar without pickle, checking its hash against the JSON (`owner`) that names it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        named = f" (named by {owner.name})" if owner is not None else ""
        single = f"{owner.stem if owner is not None else 'artifact'}{SINGLE_SUFFIX}"
        raise ArtifactError(
            f"{path}: sidecar missing{named}; keep it beside the JSON file or regenerate both, "
            f"or save to a single file ({single}) that holds the arrays"
        ) from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror})") from None
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise ArtifactError(f"{path}: does not match its JSON ({what} hash differs); regenerate both files")
    return _load_npy(data, str(path))


def _load_npy(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)  # an object array raises here: never unpickled
    except Exception as e:  # noqa: BLE001 - a corrupt header raises SyntaxError, ValueError, ... from numpy
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ArtifactError(f"{where}: not a valid .npy file ({reason}); regenerate it") from None


# --- the single-file form (.npz: header.json + one .npy member per array) ----------------------------------------

SINGLE_SUFFIX = ".npz"
HEADER = "header.json"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_MEMBERS = 64  # artifacts hold a handful of arrays; more members means it is not one of ours

ArrayReader = Callable[[str, str | None, str], np.ndarray]  # (file name, sha256, what) -> array


def is_single_file(path: str | os.PathLike) -> bool:
    """Whether `save(path)` writes the single-file form (the path ends in `.npz`)."""
    return Path(path).suffix.lower() == SINGLE_SUFFIX


def is_zip(path: str | os.PathLike) -> bool:
    """Whether the file at `path` starts with the zip magic (a single-file artifact saved under any name)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == _ZIP_MAGIC
    except OSError:  # missing, a directory, unreadable: the JSON reader words the error
        return False


def write_single_file(path: str | os.PathLike, header: dict[str, Any], members: dict[str, bytes]) -> None:
    """Write `header` (as header.json) and `members` (name -> .npy bytes) into one zip at `path`, atomically.

    The zip is built in memory and then written like any artifact (temp file, fsync, rename): a failure leaves the
    previous file at `path` whole. The header must already name each member and its sha256.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in {HEADER: dumps_json(header).encode("ascii"), **members}.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same content, same bytes
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    atomic_write_bytes(path, buf.getvalue())


def read_artifact(path: str | os.PathLike, artifact: str, max_schema: int) -> tuple[dict, ArrayReader]:
    """Either form: the checked header, and a reader of the arrays it names (`reader(file, sha256, what)`).

    JSON form: the file names are sidecars beside `path` (read with `read_npy`). Single-file form: they are
    members of the zip. Either way each array's sha256 is checked and nothing is unpickled.
    """
    path = Path(path)
    if not _looks_single(path):
        obj = read_json(path, artifact, max_schema)
        return obj, lambda name, sha, what: read_npy(path.parent / name, sha, what, owner=path)
    files = _read_zip(path)
    if HEADER not in files:
        raise ArtifactError(f"{path}: zip without {HEADER}; not a {artifact} written by vocabopt, regenerate it")
    try:
        obj = json.loads(files[HEADER].decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: {HEADER} is not valid JSON ({e}); the file is corrupt, regenerate it") from None
    return check_header(path, obj, artifact, max_schema), lambda name, sha, what: _member(path, files, name, sha, what)


def read_header(path: str | os.PathLike) -> Any:
    """The parsed JSON of either form, unchecked (to tell an artifact's kind); ArtifactError if unreadable."""
    path = Path(path)
    if _looks_single(path):
        files = _read_zip(path)
        try:
            return json.loads(files[HEADER].decode("ascii"))
        except (KeyError, UnicodeDecodeError, json.JSONDecodeError):
            raise ArtifactError(f"{path}: no valid {HEADER} inside; not written by vocabopt, regenerate it") from None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: not a vocabopt artifact ({type(e).__name__}); pass a file it wrote") from None


def _looks_single(path: Path) -> bool:
    """The zip magic, or a `.npz` file (a missing path or a directory goes to the JSON reader, which words it)."""
    return is_zip(path) or (is_single_file(path) and path.is_file())


def _read_zip(path: Path) -> dict[str, bytes]:
    """Every member of the zip at `path` (CRC-32 checked by zipfile); ArtifactError if truncated or corrupt."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if len(names) > _MAX_MEMBERS or len(set(names)) != len(names):
                raise ArtifactError(f"{path}: {len(names)} zip members (duplicates or too many); regenerate it")
            _check_sizes(path, infos)
            return {i.filename: z.read(i) for i in infos}
    except ArtifactError:
        raise
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file; check the path") from None
    except Exception as e:  # noqa: BLE001 - zipfile raises BadZipFile, EOFError, zlib.error, ... on damage
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ArtifactError(
            f"{path}: not a valid single-file artifact ({reason}); truncated or corrupt, regenerate it"
        ) from None


def _check_sizes(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse what vocabopt never writes and a crafted file would use to blow up memory: a compressed member, or
    members whose stated sizes add up to more than the archive (stored members cannot)."""
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise ArtifactError(
                f"{path}: member {info.filename!r} is compressed (zip method {info.compress_type}); vocabopt writes "
                "uncompressed members, regenerate the file with vocabopt (or np.savez, not savez_compressed)"
            )
    archive = os.path.getsize(path)
    if sum(i.file_size for i in infos) > archive:
        raise ArtifactError(
            f"{path}: its members claim {sum(i.file_size for i in infos)} bytes in a {archive}-byte archive; "
            "corrupt or crafted, regenerate it"
        )


def _member(path: Path, files: dict[str, bytes], name: str, expected_sha256: str | None, what: str) -> np.ndarray:
    if not isinstance(name, str) or name == HEADER or name not in files:
        raise ArtifactError(f"{path}: {what} array {name!r} is not in the file; it is incomplete, regenerate it")
    data = files[name]
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise ArtifactError(f"{path}: {name} does not match its header ({what} hash differs); regenerate the file")
    return _load_npy(data, f"{path}[{name}]")
