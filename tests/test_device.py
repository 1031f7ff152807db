"""Device helpers: resolving and naming the device, timing with interleaved samples, activation and peak memory."""

from __future__ import annotations

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
