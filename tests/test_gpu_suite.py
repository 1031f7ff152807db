"""benchmarks/gpu_suite.py: its CPU dry run (tiny shapes, float32) runs every step end to end and writes its files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from vocabopt.profile import DeviceProfile

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_end_to_end(suite, tmp_path):
    assert suite.main([str(tmp_path), "--dry-run"]) == 0
    res = json.loads((tmp_path / "suite.json").read_text())
    assert list(res["wall_s"]) == list(suite.STEPS)
    assert res["pytest"]["returncode"] == 0 and "tests collected" in (tmp_path / "pytest-gpu.txt").read_text()
    prof = DeviceProfile.load(tmp_path / "profile.json")
    assert prof.device_type == "cpu" and len(list(tmp_path.glob("*-float32.json"))) == 1
    rows = res["layer"]["rows"]
    names = {r["method"] for r in rows}
    assert {"adaptive (plan, exact)", "ALSWL", "full softmax (eager)", "full softmax (compiled)"} <= names
    for r in rows:  # every row measured, or skipped with the reason
        assert ("ms" in r and r["ms"] > 0 and 0 < r["peak_fraction"]) or r["note"].startswith("skipped")
    assert [c["V"] for c in res["layer"]["checks"]] == suite.SHAPES["dry"]["V"]
    fid = res["fidelity"]
    errors = [r["predicted_ms"] / r["measured_ms"] - 1 for r in fid["rows"]]
    assert len(fid["rows"]) == 12 and fid["median_abs_error"] == pytest.approx(float(np.median(np.abs(errors))))
    assert [r["batch"] for r in res["decode"]["rows"]] == suite.SHAPES["dry"]["batches"]
    md = (tmp_path / "suite.md").read_text()
    assert "| V | method | ms |" in md and "median |error|" in md


def test_flops_of_the_full_softmax_and_the_plan(suite):
    from vocabopt.plan import Plan

    counts = suite.zipf_mandelbrot(1000)
    assert np.all(np.diff(counts) <= 0)
    plan = Plan.from_cutoffs(counts, hidden=32, cutoffs=[100, 400], proj_dims=[8, 2])
    assert suite.flops(plan, 64, "full softmax (eager)") == 6.0 * 64 * 32 * 1000
    share = counts / counts.sum()
    want = 6 * 64 * 32 * 102 + 6 * 64 * share[100:400].sum() * 8 * (32 + 300) + 6 * 64 * share[400:].sum() * 2 * 632
    assert suite.flops(plan, 64, "adaptive (plan, exact)") == pytest.approx(want)


def test_without_cuda_the_real_run_names_the_dry_run(suite, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        suite.main([str(tmp_path)])
    assert "--dry-run" in capsys.readouterr().err
