"""The profiler: a tiny real measurement, the artifact's round trip, corrupt files, shipped profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vocabopt import cost
from vocabopt.cli import main
from vocabopt.errors import ArtifactError
from vocabopt.profile import DeviceProfile, mismatch_warnings, profile_device, synthetic_profile

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


@pytest.fixture(scope="module")
def tiny():
    return profile_device("cpu", grid=TINY)


def test_tiny_profile_measures_every_kernel(tiny):
    assert tiny.device.startswith("cpu:") and tiny.device_type == "cpu" and tiny.dtype == "float32"
    assert tiny.environment["torch"] and tiny.environment["threads"] >= 1
    assert tiny.settings["samples"] == 3 and tiny.alignment in (8, 64)
    for name in cost.KERNEL_AXES:
        table = tiny.kernels[name]
        med, lo, hi = (np.asarray(table[k]) for k in ("median_ms", "p20_ms", "p80_ms"))
        assert np.all(med > 0) and np.all(lo <= med + 1e-12) and np.all(med <= hi + 1e-12)
    measured = np.asarray(tiny.kernels["linear_fwd"]["measured"])
    assert measured[0, 0, 0] and not measured[-1, -1, -1]  # 64 x 32 x 256 x 2 FLOPs is over the tiny budget


def test_cost_model_reproduces_measured_points(tiny):
    for name, axes in cost.KERNEL_AXES.items():
        table = tiny.kernels[name]
        grid = [np.asarray(table["axes"][a]) for a in axes]
        mesh = np.meshgrid(*grid, indexing="ij")
        ms, extrap = cost.tables(tiny)[name](*mesh)
        measured = np.asarray(table["measured"])
        np.testing.assert_allclose(ms[measured], np.asarray(table["median_ms"])[measured], rtol=1e-9)
        assert not extrap[measured].any() and extrap[~measured].all()


def test_round_trip(tmp_path, tiny):
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
    p = cost.predict(prof, counts, 512, [2000, 10000], [128, 32], 2048)
    full = cost.predict(prof, counts, 512, [], [], 2048)
    assert 0 < p.time_ms < full.time_ms


def test_cli_profile(tmp_path, monkeypatch):
    import vocabopt.profile as vp

    monkeypatch.setitem(vp.GRIDS, "quick", {**vp.GRIDS["quick"], **TINY})
    r = CliRunner().invoke(main, ["profile", "--device", "cpu", "--quick", "-o", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    assert "GFLOP/s" in r.output and DeviceProfile.load(tmp_path / "d.json").settings["quick"] is True
    r = CliRunner().invoke(main, ["profile", "--device", "cuda", "-o", str(tmp_path / "e.json")])
    if r.exit_code != 0:  # no GPU here: a one-line error that names the fix
        assert "--device cpu" in r.output and "Traceback" not in r.output
