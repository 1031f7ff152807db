"""Cached device profiles: measure a device once, reuse the DeviceProfile until something it depends on changes.

Inputs: a device ("auto", "cpu", "cuda", "mps"), a dtype and the grid (quick or full) that `profiler.profile_device`
takes. Output: a `DeviceProfile`, read from the user cache or measured now and stored there. An entry is keyed by
what a measurement depends on: the device's name (on a CPU it includes the thread count), the dtype, the torch
version and the grid (quick or full, and its settings); any change is a miss. The cache lives in
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
from .device import DTYPES, device_name, resolve_device
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
    return CacheKey(device_name(dev), dtype, str(torch.__version__), "quick" if quick else "full", settings)


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
        try:
            prof = DeviceProfile.load(path)
            if _identity(prof) == _identity(key):
                return prof, path, True
            problem = f"it holds a profile of {prof.describe()}"
        except ArtifactError as e:
            problem = str(e).removeprefix(f"{path}: ")
        if on_warning:
            on_warning(f"cached profile {path} is unusable ({problem}); measuring again")
    _prepare(path)  # before the measurement, so an unwritable cache fails in a second, not after minutes
    if on_measure:
        on_measure(key)
    prof = profile_device(device, dtype, quick=quick, progress=progress)
    prof.save(path)  # atomic: a temporary file beside it, then a rename
    return prof, path, False


def _prepare(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtifactError(
            f"{path.parent}: cannot create the profile cache ({e.strerror}); set {CACHE_ENV} to a writable directory"
        ) from None
    check_writable(path)


def _identity(item: DeviceProfile | CacheKey) -> tuple[str, str, str, str]:
    """(device, dtype, torch, grid): what a loaded entry must agree on with its key (the name holds the rest)."""
    if isinstance(item, CacheKey):
        return item.device, item.dtype, item.torch, item.grid
    grid = "quick" if item.settings.get("quick") else "full"
    return item.device, item.dtype, str(item.environment.get("torch", "")), grid
