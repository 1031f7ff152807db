"""The DeviceProfile artifact: round trip, corrupt files, mismatch warnings, the summary, shipped profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vocabopt import cost
from vocabopt.errors import ArtifactError
from vocabopt.profile import DeviceProfile, mismatch_warnings, synthetic_profile

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "devices").glob("*.json"))
TINY = {
    "rows": [4, 64],
    "in": [8, 32],
    "out": [16, 256],
    "width": [16, 256],
    "tokens": [64, 256],
    "hidden": [8, 32],
    "elements": [256, 4096],
    "samples": 3,
    "min_sample_ms": 0.05,
    "max_flops": 2e5,
}


def test_round_trip_of_a_synthetic_profile(tmp_path):
    tiny = synthetic_profile(lambda k, *c: 0.01 + 1e-9 * np.prod(c, axis=0), grid=TINY)
    tiny.save(tmp_path / "d.json")
    back = DeviceProfile.load(tmp_path / "d.json")
    assert back.to_json() == json.loads((tmp_path / "d.json").read_text())
    assert back.kernels == tiny.kernels and back.device == tiny.device


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda o: o.__setitem__("artifact", "vocabopt.Plan"), "not a vocabopt.DeviceProfile"),
        (lambda o: o["kernels"].pop("nll_fwd"), "nll_fwd"),
        (lambda o: o["kernels"]["linear_fwd"].__setitem__("median_ms", [[-1.0]]), "linear_fwd"),
        (lambda o: o.__setitem__("schema_version", 99), "newer"),
        (lambda o: o.__setitem__("dtype", "float8"), "dtype"),
    ],
)
def test_corrupt_profiles_are_clear_errors(tmp_path, corrupt, match):
    obj = synthetic_profile(lambda k, *c: np.ones_like(c[0]), grid=TINY).to_json()
    corrupt(obj)
    (tmp_path / "d.json").write_text(json.dumps(obj))
    with pytest.raises(ArtifactError, match=match):
        DeviceProfile.load(tmp_path / "d.json")


def test_mismatch_warnings():
    prof = synthetic_profile(lambda k, *c: np.ones_like(c[0]), grid=TINY)
    assert mismatch_warnings(prof, None, "float32") == []
    (w,) = mismatch_warnings(prof, None, "bfloat16")
    assert "float32" in w and "bfloat16" in w
    (w,) = mismatch_warnings(prof, "cuda", None)
    assert "synthetic" in w and "cuda" in w


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_profiles_load(path):
    prof = DeviceProfile.load(path)
    assert prof.environment.get("torch") and prof.created and prof.settings.get("samples", 0) >= 20
    counts = np.maximum((1e7 / np.arange(1, 50001)).astype(np.int64), 1)
    p = cost.predict(prof, counts, hidden=512, cutoffs=[2000, 10000], proj_dims=[128, 32], batch_tokens=2048)
    full = cost.predict(prof, counts, hidden=512, cutoffs=[], proj_dims=[], batch_tokens=2048)
    assert 0 < p.time_ms < full.time_ms


def test_summary_is_plain_data():
    prof = synthetic_profile(lambda k, *c: 0.5 + 1e-9 * np.prod(c, axis=0), grid=TINY)
    s = prof.summary()
    assert list(s) == [
        "device",
        "dtype",
        "torch",
        "threads",
        "wall_s",
        "matmul_peak_gflops",
        "nll_bandwidth_gbs",
        "alignment",
        "cluster_fixed_train_ms_min",
    ]
    assert s["device"] == "synthetic" and s["dtype"] == "float32" and s["alignment"] == 8
    assert s["matmul_peak_gflops"] == prof.kernels["linear_fwd"]["roofline"]["peak_gflops"]
    assert s["cluster_fixed_train_ms_min"] == pytest.approx(0.5 + 1e-9 * 64 * 8)
    json.dumps(s)  # plain data
