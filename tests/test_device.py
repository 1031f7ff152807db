"""Device helpers: resolving and naming the device, timing with interleaved samples, activation and peak memory."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from vocabopt import device
from vocabopt.errors import InputError


def test_resolve_device():
    assert device.resolve_device("cpu") == "cpu"
    assert device.resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="auto, cpu, cuda, mps"):
        device.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device cpu"):
            device.resolve_device("cuda")


def test_device_name_and_environment():
    assert device.device_name("cpu").startswith("cpu: ") and "threads)" in device.device_name("cpu")
    env = device.environment("cpu")
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert "float32_matmul_precision" in env and "cuda" not in env


def test_time_ms_is_per_call():
    calls = []
    ms = device.time_ms(lambda: calls.append(1), "cpu", reps=5)
    assert len(calls) == 5 and 0 <= ms < 50


class _SlowFlush:
    """Stands in for the GPU's L2-flush buffer: counts its zero_() calls, each taking 20 ms."""

    def __init__(self, log):
        self.log = log

    def zero_(self):
        self.log.append("flush")
        time.sleep(0.02)


def test_time_ms_flushes_before_every_call_outside_the_timed_region():
    log: list[str] = []
    ms = device.time_ms(lambda: log.append("step"), "cpu", reps=4, flush=_SlowFlush(log))
    assert log == ["flush", "step"] * 4  # cold cache for every call, not once per sample
    assert 0 <= ms < 10  # the 20 ms flushes are not timed


def test_interleaved_ms_rounds_warmup_and_order():
    visits: list[int] = []
    steps = [lambda i=i: visits.append(i) for i in range(3)]
    seen = []
    samples = device.interleaved_ms(
        steps,
        "cpu",
        rounds=4,
        warmup_rounds=1,
        shuffle=np.random.default_rng(0),
        on_sample=lambda i, rnd, s: seen.append((i, rnd)),
    )
    assert [len(s) for s in samples] == [4, 4, 4]  # the warm-up round is run, not kept
    assert len(visits) == 15 and len(seen) == 15
    rounds = [visits[k : k + 3] for k in range(0, 15, 3)]
    assert all(sorted(r) == [0, 1, 2] for r in rounds)  # every round visits every step once
    assert len({tuple(r) for r in rounds}) > 1  # in a fresh order


def test_interleaved_ms_gives_up_on_slow_steps():
    samples = device.interleaved_ms([lambda: None, lambda: None], "cpu", rounds=6, give_up_ms=-1.0)
    assert [len(s) for s in samples] == [3, 3]  # 3 samples, all above the limit: no more


def test_saved_bytes_counts_what_autograd_keeps():
    x = torch.randn(100, 10, requires_grad=True)
    assert device.saved_bytes(lambda: x.exp().sum()) == 100 * 10 * 4  # exp saves its result
    assert device.saved_bytes(lambda: (x + 1).sum()) == 0


@pytest.mark.gpu
def test_cuda_peak_bytes():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.zeros(1 << 20, device="cuda")
    assert device.cuda_peak_bytes(lambda: x * 2) >= 4 << 20  # one (1M,) fp32 result


@pytest.mark.gpu
def test_cuda_time_ms_with_flush_times_each_call_cold():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    flush = torch.empty(64 * 2**20, dtype=torch.int32, device="cuda")  # 256 MB
    x = torch.randn(4096, 4096, device="cuda")
    cold = device.time_ms(lambda: x.sum(), torch.device("cuda"), reps=20, flush=flush)
    flush_only = device.time_ms(lambda: flush.zero_(), torch.device("cuda"), reps=5)
    assert 0 < cold < flush_only  # a 64 MB read timed without the 256 MB write before it


def test_saved_bytes_sees_tensors_a_custom_function_stashes_on_its_context():
    class Stash(torch.autograd.Function):  # keeps its gradient as a ctx attribute, as torch's chunked CE does
        @staticmethod
        def forward(ctx, x):
            ctx.grad = torch.full_like(x, 2.0)  # (1000,) fp32: 4000 bytes
            return (x * x).sum()

        @staticmethod
        def backward(ctx, g):
            return ctx.grad * g

    x = torch.randn(1000, requires_grad=True)
    assert device.saved_bytes(lambda: Stash.apply(x)) == 4000
    assert device.saved_bytes(lambda: (x * x).sum()) == 4000  # `x` saved twice, one storage: counted once


def test_rss_peak_counts_a_step_that_allocates_200_mb():
    big = device.rss_peak_bytes(lambda: torch.ones(50_000_000))  # 200 MB, touched
    if big is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert 0.95 * 200e6 <= big <= 260e6
    small = device.rss_peak_bytes(lambda: torch.ones(1000).sum())
    assert small < 20e6


def test_module_bytes_counts_parameters_gradients_buffers_and_scratch():
    import numpy as np

    from vocabopt.layer import build_layer
    from vocabopt.plan import Plan

    counts = np.round(1e6 / np.arange(1, 2001)).astype(np.int64)
    layer = build_layer(Plan.from_cutoffs(counts, hidden=32, cutoffs=[400, 1000]))
    params = sum(p.nbytes for p in layer.parameters())
    buffers = sum(b.nbytes for b in layer.buffers())
    assert device.module_bytes(layer) == (params + buffers, 0)
    layer(torch.randn(1024, 32), torch.randint(0, 2000, (1024,))).backward()  # (1024, 402) head: 1.6 MB scratch
    pool = sum(b.untyped_storage().nbytes() for b, _ in layer._scratch.bases)  # the layer's CPU scratch pool
    assert pool > 1 << 20
    assert device.module_bytes(layer) == (2 * params + buffers + pool, pool)
    layer.release_scratch()
    assert device.module_bytes(layer) == (2 * params + buffers, 0)


def test_available_bytes_and_out_of_memory():
    avail = device.available_bytes("cpu")
    assert avail is None or 0 < avail <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert device.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert device.is_out_of_memory(MemoryError())
    assert not device.is_out_of_memory(RuntimeError("expected scalar type Float but found BFloat16"))
    with pytest.raises(RuntimeError) as e:
        torch.empty(1 << 62, dtype=torch.uint8)  # 4 EiB: torch's own allocation failure
    assert device.is_out_of_memory(e.value)


def _cgroup(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_available_bytes_respects_a_containers_cgroup_limit(tmp_path, monkeypatch):
    """MemAvailable is the host's; a container's cgroup limit caps what an allocation can get (v2 and v1)."""
    mib = 1 << 20
    v2 = _cgroup(
        tmp_path / "v2",
        {
            "memory.max": f"{1024 * mib}\n",
            "memory.current": f"{600 * mib}\n",
            "memory.stat": f"anon 1\ninactive_file {100 * mib}\n",
        },
    )
    assert device.cgroup_free_bytes(str(v2)) == (1024 - 600 + 100) * mib  # reclaimable page cache added back
    monkeypatch.setattr(device, "CGROUP_ROOT", str(v2))
    assert device.available_bytes("cpu") == (1024 - 600 + 100) * mib  # this machine has far more than 524 MiB
    (v2 / "memory.max").write_text("max\n")
    assert device.cgroup_free_bytes(str(v2)) is None
    host = device.available_bytes("cpu")
    assert host is None or host > 1024 * mib
    v1 = _cgroup(
        tmp_path / "v1",
        {
            "memory/memory.limit_in_bytes": f"{2048 * mib}\n",
            "memory/memory.usage_in_bytes": f"{2000 * mib}\n",
            "memory/memory.stat": f"inactive_file 7\ntotal_inactive_file {8 * mib}\n",
        },
    )
    monkeypatch.setattr(device, "CGROUP_ROOT", str(v1))
    assert device.available_bytes("cpu") == (2048 - 2000 + 8) * mib
    (v1 / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1 without a limit
    assert device.cgroup_free_bytes(str(v1)) is None
    assert device.cgroup_free_bytes(str(tmp_path / "none")) is None  # no cgroup files: no limit known
