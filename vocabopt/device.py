"""Device helpers every measuring stage shares (profile, bench, validate, the benchmarks).

Inputs: a device name ("auto", "cpu", "cuda", "mps") and callables that run one step on it. Outputs: the resolved
device, its person-readable name and environment record, and measurements of a step: milliseconds (synchronised
around the timed region, samples interleaved across steps), bytes autograd keeps for backward, the peak memory of
a whole step (CUDA: max_memory_allocated; CPU: the process's resident-set high-water mark), the memory a module keeps
between steps, and the memory available to allocate. torch is imported lazily, so `import vocabopt` stays light.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .version import __version__

DTYPES = ("float32", "bfloat16", "float16")  # the dtypes a profile, bench or validation runs in


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda", then "mps", then "cpu"; a named device is checked to be available."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not one of auto, cpu, cuda, mps")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' asked for but it is not available; use --device cpu or auto")
    return device


def device_name(device_type: str) -> str:
    """A person-readable name of the device, e.g. "cpu: Intel(R) Xeon(R) Processor (2 threads)"."""
    import torch

    if device_type == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    if device_type == "mps":
        return f"mps: {platform.machine()}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu: {model} ({torch.get_num_threads()} threads)"


def environment(device_type: str) -> dict[str, Any]:
    """What a measurement depends on besides the device: torch, python and vocabopt versions, threads, matmul
    precision (and on CUDA the TF32 switches)."""
    import torch

    env = {
        "vocabopt": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device_type == "cuda":
        env["cuda"] = torch.version.cuda
        env["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        env["allow_bf16_reduced_precision"] = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    return env


def sync(device: Any) -> None:
    """Wait for the work queued on `device` (a name or torch.device); a no-op on CPU."""
    import torch

    device_type = getattr(device, "type", device)
    if device_type == "cuda":
        torch.cuda.synchronize()
    elif device_type == "mps":
        torch.mps.synchronize()


def time_ms(step: Callable[[], Any], device: Any, *, reps: int = 1, flush: Any = None) -> float:
    """Milliseconds per call of `step`, over `reps` calls, with the device synchronised around the timed region.

    `flush`: a device buffer zeroed before EVERY call, outside the timed region (e.g. 256 MB on a GPU, to evict L2
    so each call starts cold, as a kernel does inside a model step); None (CPU): the calls run back to back. On
    CUDA each flushed call is timed with a pair of CUDA events and the device is synchronised once at the end.
    """
    if flush is None:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        sync(device)
        return (time.perf_counter() - t0) * 1e3 / reps
    if getattr(device, "type", device) == "cuda":
        import torch

        events = []
        for _ in range(reps):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        return sum(start.elapsed_time(end) for start, end in events) / reps
    total = 0.0
    for _ in range(reps):
        flush.zero_()
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        total += time.perf_counter() - t0
    return total * 1e3 / reps


def interleaved_ms(
    steps: Sequence[Callable[[], Any]],
    device: Any,
    *,
    rounds: int,
    warmup_rounds: int = 0,
    reps: Sequence[int] | None = None,
    shuffle: np.random.Generator | None = None,
    flush: Any = None,
    give_up_ms: float | None = None,
    on_sample: Callable[[int, int, float], None] | None = None,
) -> list[list[float]]:
    """Samples (ms per call, see `time_ms`) of every step, taken in rounds that each visit every step once.

    Interleaving spreads a machine's slow drift over all steps instead of biasing the few that ran while it was
    busy; take the median of each list. Rounds visit steps in order, or in a fresh order drawn from `shuffle` each
    round. The first `warmup_rounds` rounds are run and dropped. A step whose 3 or more samples all exceed
    `give_up_ms` is not sampled again. `on_sample(step_index, round, seconds_spent)` follows every sample.
    """
    samples: list[list[float]] = [[] for _ in steps]
    for rnd in range(warmup_rounds + rounds):
        order = shuffle.permutation(len(steps)) if shuffle is not None else range(len(steps))
        for i in order:
            kept = samples[i]
            if give_up_ms is not None and len(kept) >= 3 and min(kept) > give_up_ms:
                continue
            t0 = time.perf_counter()
            ms = time_ms(steps[i], device, reps=1 if reps is None else reps[i], flush=flush)
            if rnd >= warmup_rounds:
                kept.append(ms)
            if on_sample:
                on_sample(int(i), rnd, time.perf_counter() - t0)
    return samples


def saved_bytes(forward: Callable[[], Any]) -> int:
    """Bytes of tensors autograd keeps for backward (the activation memory) during one call of `forward`.

    Counts what `save_for_backward` packs and the tensors a custom autograd function stashes as attributes of its
    context instead (torch 2.13's chunked `F.linear_cross_entropy` keeps its precomputed gradients that way: the
    saved-tensor hooks never see them). Each storage is counted once.
    """
    import torch

    seen: dict[int, int] = {}  # storage data_ptr -> bytes

    def count(t: torch.Tensor) -> None:
        s = t.untyped_storage()
        seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())

    def pack(t: torch.Tensor) -> torch.Tensor:
        count(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    nodes, stack = set(), [getattr(loss, "grad_fn", None)]
    while stack:  # every node of the graph; Python-function contexts may hold tensors as plain attributes
        node = stack.pop()
        if node is None or node in nodes:
            continue
        nodes.add(node)
        for v in getattr(node, "__dict__", {}).values():
            if isinstance(v, torch.Tensor):
                count(v)
        stack.extend(f for f, _ in node.next_functions)
    del loss, nodes
    return sum(seen.values())


def cuda_peak_bytes(step: Callable[[], Any]) -> int:
    """Peak bytes allocated on the current CUDA device during one call of `step`, above what was allocated before."""
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def step_peak_bytes(step: Callable[[], Any], device_type: str) -> int | None:
    """Peak memory of one call of `step` above what was in use before it: CUDA `cuda_peak_bytes`, CPU
    `rss_peak_bytes`; None where neither can be read (MPS, a system without /proc)."""
    if device_type == "cuda":
        return cuda_peak_bytes(step)
    if device_type == "cpu":
        return rss_peak_bytes(step)
    return None


def rss_peak_bytes(step: Callable[[], Any]) -> int | None:
    """Bytes by which one call of `step` raised the process's resident set at its peak (Linux; None elsewhere).

    Free heap memory is first handed back to the OS (glibc `malloc_trim`), then the high-water mark is reset
    (writing "5" to /proc/self/clear_refs) and the figure is VmHWM after the step minus VmRSS before it. What it
    means: the physical memory the step had to obtain on top of the steady state. Tensors above glibc's mmap
    threshold (at most 32 MiB) always come fresh from the OS, so the large (N, V) buffers are counted in full;
    memory the process already holds and reuses (a layer's scratch kept between steps, small freed chunks
    malloc_trim cannot return) is not, and neither are pages allocated but never touched. Other threads of the
    process allocating at the same time would add to it.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: freed memory may stay resident and the figure is a lower bound
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status_bytes("VmRSS")
    except OSError:
        return None
    step()
    return max(0, _proc_status_bytes("VmHWM") - base)


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(key + ":"))
    return int(line.split()[1]) * 1024  # the kernel reports kB


def module_bytes(*modules: Any) -> tuple[int, int]:
    """(resident, scratch) bytes the modules keep between steps, each storage counted once.

    resident: parameters, their `.grad`, buffers, and every tensor a module holds outside those (scratch pools,
    caches: found in its attributes, down through lists, tuples, dicts and plain objects); scratch: that last part.
    """
    import torch

    counted: dict[int, int] = {}
    scratch = 0

    def add(t: torch.Tensor) -> int:
        s = t.untyped_storage()
        if s.data_ptr() in counted or s.nbytes() == 0:
            return 0
        counted[s.data_ptr()] = s.nbytes()
        return s.nbytes()

    for mod in modules:
        for p in mod.parameters():
            add(p)
            if p.grad is not None:
                add(p.grad)
        for b in mod.buffers():
            add(b)
    for mod in modules:
        for m in mod.modules():
            skip = ("_parameters", "_buffers", "_modules")
            scratch += sum(add(t) for k, v in vars(m).items() if k not in skip for t in _tensors_in(v, depth=4))
    return sum(counted.values()), scratch


def _tensors_in(v: Any, depth: int) -> list[Any]:
    """Tensors inside `v` (a tensor, list, tuple, dict or plain object), `depth` containers deep."""
    import torch

    if isinstance(v, torch.Tensor):
        return [v]
    if depth == 0 or isinstance(v, (str, bytes, int, float, bool, type(None), torch.nn.Module)) or callable(v):
        return []
    if not isinstance(v, (dict, list, tuple)) and not hasattr(v, "__dict__"):
        return []
    items = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else vars(v).values()
    return [t for item in items for t in _tensors_in(item, depth - 1)]


CGROUP_ROOT = "/sys/fs/cgroup"  # where a container's own memory controller is mounted (its cgroup namespace root)


def available_bytes(device_type: str) -> int | None:
    """Memory a new allocation can get now: CUDA free device memory; CPU the smaller of MemAvailable (Linux; else
    free physical pages) and what the process's cgroup limit leaves (`cgroup_free_bytes`: a container's limit is
    usually far below the host's MemAvailable); None when unknown (MPS)."""
    if device_type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    if device_type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            line = next(ln for ln in f if ln.startswith("MemAvailable:"))
        host: int | None = int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        try:
            host = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            host = None
    limit = cgroup_free_bytes()
    return host if limit is None else limit if host is None else min(host, limit)


def cgroup_free_bytes(root: str | None = None) -> int | None:
    """Bytes the memory cgroup at `root` (default CGROUP_ROOT) can still allocate; None without a limit.

    cgroup v2: memory.max - memory.current; v1: memory/memory.limit_in_bytes - memory/memory.usage_in_bytes. The
    usage counts page cache, which the kernel reclaims before failing an allocation, so the inactive file pages
    (memory.stat's inactive_file; v1 total_inactive_file) are added back, as the kubelet's working set does.
    """
    base = root or CGROUP_ROOT
    for limit_f, usage_f, stat_f, inactive in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),  # v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat", "total_inactive_file"),
    ):
        try:
            with open(os.path.join(base, limit_f)) as f:
                text = f.read().strip()
            if text == "max":
                return None  # v2 without a limit
            with open(os.path.join(base, usage_f)) as f:
                usage = int(f.read().strip())
            limit = int(text)
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # v1 without a limit: a page-rounded 2**63 - 1
            return None
        return max(0, limit - usage + _stat_bytes(os.path.join(base, stat_f), inactive))
    return None


def _stat_bytes(path: str, key: str) -> int:
    """One counter of a cgroup memory.stat file (bytes); 0 when the file or the counter is missing."""
    try:
        with open(path) as f:
            return next((int(ln.split()[1]) for ln in f if ln.split()[:1] == [key]), 0)
    except (OSError, ValueError, IndexError):
        return 0


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` is an allocation failure (torch's CPU allocator, CUDA OOM, Python's MemoryError)."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
