"""Cached device profiles: measure a device once, reuse the DeviceProfile until something it depends on changes.

Inputs: a device ("auto", "cpu", "cuda", "mps"), a dtype and the grid (quick or full) that `profiler.profile_device`
takes. Output: a `DeviceProfile`, read from the user cache or measured now and stored there. An entry is keyed by
what a measurement depends on: the device's name (on a CPU it includes the thread count), the dtype, the torch
version, the float32 matmul precision and TF32 switch (`device.environment`), the vocabopt version (a new profiler
measures differently) and the grid (quick or full, and its settings); any change is a miss. The cache lives in
$VOCABOPT_CACHE_DIR, else $XDG_CACHE_HOME/vocabopt, else ~/.cache/vocabopt (entries under profiles/, one JSON per
key, written atomically). A corrupt entry is measured again with a one-line warning; `refresh=True` measures even
when an entry exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .artifacts import check_writable
from .device import DTYPES, device_name, environment, resolve_device
from .errors import ArtifactError, InputError
from .profile import GRIDS, DeviceProfile, grid_name
from .profiler import profile_device

CACHE_ENV = "VOCABOPT_CACHE_DIR"


@dataclass(frozen=True)
class CacheKey:
    """What a measured profile depends on; two runs with equal keys would measure the same thing."""

    device: str  # device_name(), e.g. "cpu: Intel(R) Xeon(R) Processor (2 threads)"
    dtype: str
    torch: str  # torch.__version__
    grid: str  # "quick" | "full"
    settings: str  # sha256[:12] of the grid's settings (profile.GRIDS): a changed grid or budget is a miss
    precision: str = ""  # torch.get_float32_matmul_precision(): "highest" | "high" | "medium" (TF32/bf16 matmuls)
    tf32: str = ""  # torch.backends.cuda.matmul.allow_tf32 on CUDA ("True"/"False"); "" where not recorded
    vocabopt: str = ""  # the vocabopt version that measured (the profiler's kernels change between versions)

    def filename(self) -> str:
        """A readable, file-system-safe name with a hash of the whole key (names alone could collide)."""
        digest = hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode("utf-8")).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{self.device}-{self.dtype}-torch{self.torch}-{self.grid}")
        return f"{slug.strip('-')[:100]}-{digest}.json"


def cache_dir() -> Path:
    """The cache root: $VOCABOPT_CACHE_DIR, else $XDG_CACHE_HOME/vocabopt, else ~/.cache/vocabopt."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vocabopt"


def cache_key(device: str = "auto", dtype: str = "float32", *, quick: bool = True) -> CacheKey:
    """The key of a profile measured now on `device` (resolved: "auto" -> cuda, mps or cpu) in `dtype`."""
    import torch

    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {DTYPES}")
    dev = resolve_device(device)
    settings = hashlib.sha256(json.dumps(GRIDS[grid_name(dev, quick)], sort_keys=True).encode()).hexdigest()[:12]
    env = environment(dev)  # what profile_device records in the profile it measures
    return CacheKey(
        device_name(dev),
        dtype,
        str(torch.__version__),
        "quick" if quick else "full",
        settings,
        *_env_fields(env),
    )


def _env_fields(env: dict) -> tuple[str, str, str]:
    """(precision, tf32, vocabopt) of an environment record (`device.environment`), as strings ("" if absent)."""
    tf32 = env.get("allow_tf32")
    return str(env.get("float32_matmul_precision", "")), "" if tf32 is None else str(tf32), str(env.get("vocabopt", ""))


def cache_path(key: CacheKey) -> Path:
    return cache_dir() / "profiles" / key.filename()


def cached_profile(
    device: str = "auto",
    dtype: str = "float32",
    *,
    quick: bool = True,
    refresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_measure: Callable[[CacheKey], None] | None = None,
) -> tuple[DeviceProfile, Path, bool]:
    """The profile of `device` in `dtype`: from the cache when an entry for this key exists, else measured and stored.

    Args:
        device, dtype, quick: as `profiler.profile_device` takes them.
        refresh: measure (and overwrite the entry) even when one exists.
        progress: passed to `profile_device` (samples done, samples total).
        on_warning: called with a one-line message when an entry is corrupt (it is then measured again).
        on_measure: called with the key just before a measurement starts (a CLI announces the wait).

    Returns:
        (profile, path of the cache entry, True if it came from the cache).

    Example:
        >>> prof, path, hit = cached_profile("cpu", quick=True)   # ~80 s the first time, instant after
    """
    key = cache_key(device, dtype, quick=quick)
    path = cache_path(key)
    if not refresh and path.exists():
        prof, problem = _read_entry(path, key)
        if prof is not None:
            return prof, path, True
        if on_warning:
            on_warning(f"cached profile {path} is unusable ({problem}); measuring again")
    _prepare(path)  # before the measurement, so an unwritable cache fails in a second, not after minutes
    if on_measure:
        on_measure(key)
    prof = profile_device(device, dtype, quick=quick, progress=progress)
    prof.save(path)  # atomic: a temporary file beside it, then a rename
    return prof, path, False


def lookup(device: str = "auto", dtype: str = "float32", *, quick: bool = True) -> tuple[DeviceProfile, Path] | None:
    """The cached entry for this key and its path, or None when there is none or it is unusable (never measures)."""
    key = cache_key(device, dtype, quick=quick)
    path = cache_path(key)
    prof = _read_entry(path, key)[0] if path.exists() else None
    return None if prof is None else (prof, path)


def _read_entry(path: Path, key: CacheKey) -> tuple[DeviceProfile | None, str]:
    """(the entry at `path` if it loads and agrees with `key`, else None; why not, in words)."""
    try:
        prof = DeviceProfile.load(path)
    except ArtifactError as e:
        return None, str(e).removeprefix(f"{path}: ")
    have, want = _identity(prof), _identity(key)
    if have == want:
        return prof, ""
    differ = ", ".join(f"{n} {a!r} not {b!r}" for n, a, b in zip(IDENTITY, have, want, strict=True) if a != b)
    return None, f"it holds a profile of {prof.describe()}: {differ}"


def _prepare(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtifactError(
            f"{path.parent}: cannot create the profile cache ({e.strerror}); set {CACHE_ENV} to a writable directory"
        ) from None
    check_writable(path)


IDENTITY = ("device", "dtype", "torch", "grid", "matmul precision", "allow_tf32", "vocabopt")


def _identity(item: DeviceProfile | CacheKey) -> tuple[str, ...]:
    """(device, dtype, torch, grid, precision, tf32, vocabopt): what a loaded entry must agree on with its key (the
    file name's hash holds the grid settings too)."""
    if isinstance(item, CacheKey):
        return item.device, item.dtype, item.torch, item.grid, item.precision, item.tf32, item.vocabopt
    grid = "quick" if item.settings.get("quick") else "full"
    env = item.environment
    return item.device, item.dtype, str(env.get("torch", "")), grid, *_env_fields(env)
