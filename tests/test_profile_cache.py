"""vocabopt.profile_cache: a profile is measured once per (device, dtype, torch, grid) and reused; --refresh, a
changed key and a corrupt entry measure again. The measuring function is replaced by a counting fake (a synthetic
profile carrying the real device name and torch version), so nothing here takes the ~80 s a real quick profile does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vocabopt.device
import vocabopt.profile_cache as pc
from vocabopt.cli import main
from vocabopt.cli._common import StepProgress
from vocabopt.profile import DeviceProfile, synthetic_profile
from vocabopt.stats import CorpusStats


def fake_profile(device: str = "auto", dtype: str = "float32", *, quick: bool = False, progress=None, **_kw):
    """What profile_device would return, minus the measuring: the real key fields, synthetic tables."""
    prof = synthetic_profile(lambda k, *c: 0.01 + 1e-9 * np.prod(c, axis=0), dtype=dtype)
    dev = pc.resolve_device(device)  # profile_cache's own names, so a test can stand in a device for them
    prof.device = pc.device_name(dev)
    prof.device_type = dev
    prof.environment = pc.environment(dev)  # what profile_device records: torch, threads, precision, vocabopt, ...
    prof.settings = {"quick": quick, "samples": 1, "wall_s": 0.0}
    if progress:
        progress(1, 2)
        progress(2, 2)
    return prof


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Counts the measurements (a list of (device, dtype, quick)); the cache lives in tmp_path/cache."""
    calls: list[tuple[str, str, bool]] = []

    def counting(device="auto", dtype="float32", *, quick=False, progress=None, **kw):
        calls.append((device, dtype, quick))
        return fake_profile(device, dtype, quick=quick, progress=progress)

    monkeypatch.setenv(pc.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(pc, "profile_device", counting)
    return calls


def test_second_run_uses_the_cache_refresh_and_another_dtype_measure(measured, tmp_path):
    first, path, hit = pc.cached_profile("cpu", "float32", quick=True)
    assert (len(measured), hit) == (1, False) and path.parent == tmp_path / "cache" / "profiles"
    second, path2, hit2 = pc.cached_profile("cpu", "float32", quick=True)
    assert (len(measured), hit2, path2) == (1, True, path)
    assert second.to_json() == first.to_json()
    pc.cached_profile("cpu", "float32", quick=True, refresh=True)
    assert len(measured) == 2
    _, other, hit3 = pc.cached_profile("cpu", "bfloat16", quick=True)
    assert (len(measured), hit3) == (3, False) and other != path
    _, full, _ = pc.cached_profile("cpu", "float32", quick=False)  # the full grid is another key
    assert len(measured) == 4 and full not in (path, other)
    assert sorted(p.name for p in (tmp_path / "cache" / "profiles").iterdir()) == sorted(
        p.name for p in (path, other, full)
    )  # atomic writes leave no temporary files behind


def test_key_changes_with_torch_version_and_grid_settings(measured, monkeypatch):
    base = pc.cache_key("cpu", "float32", quick=True)
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert pc.cache_key("cpu", "float32", quick=True).filename() != base.filename()
    monkeypatch.undo()
    import vocabopt.profile as vp

    monkeypatch.setitem(vp.GRIDS, "quick", {**vp.GRIDS["quick"], "samples": 3})
    assert pc.cache_key("cpu", "float32", quick=True).filename() != base.filename()


def test_matmul_precision_and_vocabopt_version_are_in_the_key(measured, monkeypatch):
    """Review of issue 16: a changed float32 matmul precision (TF32/bf16 matmuls) or vocabopt version is a miss."""
    _, path, _ = pc.cached_profile("cpu", quick=True)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high" if before == "highest" else "highest")
        prof, other, hit = pc.cached_profile("cpu", quick=True)
        assert (hit, len(measured)) == (False, 2) and other != path
        assert prof.environment["float32_matmul_precision"] != before
    finally:
        torch.set_float32_matmul_precision(before)
    assert pc.cached_profile("cpu", quick=True)[1:] == (path, True) and len(measured) == 2  # back: the first entry
    monkeypatch.setattr(vocabopt.device, "__version__", "99.0.0")  # an upgraded profiler
    _, upgraded, hit = pc.cached_profile("cpu", quick=True)
    assert (hit, len(measured)) == (False, 3) and upgraded not in (path, other)


def test_allow_tf32_is_in_the_key_on_cuda(measured, monkeypatch):
    """On CUDA, environment() records torch.backends.cuda.matmul.allow_tf32: flipping it is a miss."""
    monkeypatch.setattr(pc, "resolve_device", lambda device: "cuda")  # this CPU machine stands in for a GPU
    monkeypatch.setattr(pc, "device_name", lambda dev: "cuda: Test GPU")
    matmul = torch.backends.cuda.matmul  # a module object with properties: monkeypatch cannot undo a setattr
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        _, path, _ = pc.cached_profile("cuda", quick=True)
        assert pc.cached_profile("cuda", quick=True)[1:] == (path, True) and len(measured) == 1
        matmul.allow_tf32 = True
        assert pc.cache_key("cuda", quick=True).tf32 == "True"
        _, other, hit = pc.cached_profile("cuda", quick=True)
        assert (hit, len(measured)) == (False, 2) and other != path
    finally:
        matmul.allow_tf32 = before


def test_an_entry_measured_by_another_vocabopt_is_not_served(measured):
    """The identity check reads the entry's own environment, not only its file name."""
    _, path, _ = pc.cached_profile("cpu", quick=True)
    obj = json.loads(path.read_text())
    obj["environment"]["vocabopt"] = "0.0.1"
    path.write_text(json.dumps(obj))
    warnings: list[str] = []
    _, _, hit = pc.cached_profile("cpu", quick=True, on_warning=warnings.append)
    assert not hit and len(measured) == 2 and "vocabopt '0.0.1' not" in warnings[0]


def test_planning_prefers_the_cached_full_grid_profile(measured, tmp_path):
    """Review of issue 16: after `vocabopt profile` (full grid by default), optimize plans with it, measuring nothing;
    without a full entry it measures (and then reuses) the quick grid."""
    from vocabopt.cli.profile import planning_profile

    _, quick_path, _ = pc.cached_profile("cpu", quick=True)
    runner = CliRunner()
    r = runner.invoke(main, ["profile", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert measured == [("cpu", "float32", True), ("cpu", "float32", False)]
    full_path = pc.cache_path(pc.cache_key("cpu", quick=False))
    prof, source = planning_profile(None, "cpu", None, quiet=True)
    assert source == str(full_path) and prof.settings["quick"] is False and len(measured) == 2
    CorpusStats.from_counts(np.arange(2000, 0, -1)).save(tmp_path / "s.json")
    args = ["optimize", str(tmp_path / "s.json"), "--hidden", "64", "--device", "cpu", "-o", str(tmp_path / "p.json")]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert len(measured) == 2 and str(full_path) in r.stderr and "full grid" in r.stderr
    full_path.unlink()
    prof, source = planning_profile(None, "cpu", None, quiet=True)
    assert source == str(quick_path) and prof.settings["quick"] is True and len(measured) == 2


def test_corrupt_entry_is_measured_again_with_one_warning(measured):
    _, path, _ = pc.cached_profile("cpu", quick=True)
    path.write_text('{"artifact": "vocabopt.DeviceProfile", "schema_')  # a torn file
    warnings: list[str] = []
    prof, _, hit = pc.cached_profile("cpu", quick=True, on_warning=warnings.append)
    assert (hit, len(measured), len(warnings)) == (False, 2, 1)
    assert str(path) in warnings[0] and "measuring again" in warnings[0] and "\n" not in warnings[0]
    assert DeviceProfile.load(path).to_json() == prof.to_json()  # the entry is whole again


def test_an_entry_of_another_device_is_not_served(measured):
    _, path, _ = pc.cached_profile("cpu", quick=True)
    obj = json.loads(path.read_text())
    obj["device"] = "cpu: some other machine (64 threads)"
    path.write_text(json.dumps(obj))
    warnings: list[str] = []
    _, _, hit = pc.cached_profile("cpu", quick=True, on_warning=warnings.append)
    assert not hit and len(measured) == 2 and "some other machine" in warnings[0]


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(pc.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pc.cache_dir() == tmp_path / "xdg" / "vocabopt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pc.cache_dir() == tmp_path / "home" / ".cache" / "vocabopt"
    monkeypatch.setenv(pc.CACHE_ENV, str(tmp_path / "mine"))
    assert pc.cache_dir() == tmp_path / "mine"


def test_unwritable_cache_fails_before_measuring(measured, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(pc.CACHE_ENV, str(blocker))
    r = CliRunner().invoke(main, ["profile", "--device", "cpu", "--quick"])
    assert r.exit_code == 1 and "VOCABOPT_CACHE_DIR" in r.output and "Traceback" not in r.output
    assert measured == []


def test_cli_profile_and_optimize_reuse_the_cache(measured, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["profile", "--device", "cpu", "--quick", "-o", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    assert len(measured) == 1 and "measuring" in r.stderr and DeviceProfile.load(tmp_path / "d.json")
    r = runner.invoke(main, ["profile", "--device", "cpu", "--quick", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["cached"] is True and len(measured) == 1
    CorpusStats.from_counts(np.arange(2000, 0, -1)).save(tmp_path / "s.json")
    args = ["optimize", str(tmp_path / "s.json"), "--hidden", "64", "--device", "cpu", "-o", str(tmp_path / "p.json")]
    r = runner.invoke(main, args)  # no --profile: this device's cached quick profile
    assert r.exit_code == 0, r.output
    assert len(measured) == 1 and "using the cached profile" in r.stderr
    assert runner.invoke(main, [*args, "--refresh", "-q"]).exit_code == 0 and len(measured) == 2
    assert runner.invoke(main, [*args, "--dtype", "bfloat16", "-q"]).exit_code == 0 and len(measured) == 3


def test_progress_without_a_terminal_prints_a_line_every_few_seconds(monkeypatch, capsys):
    clock = iter([0.0, 1.0, 2.0, 6.0, 7.0, 13.0])
    monkeypatch.setattr("vocabopt.cli._common.time.monotonic", lambda: next(clock))
    bar = StepProgress("profiling", every_s=5.0)  # capsys's stderr is not a terminal
    for done in (1, 2, 3, 4, 10):  # at 1, 2, 6, 7, 13 s
        bar(done, 10)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["profiling: 3/10 (30%, 6 s)", "profiling: 10/10 (100%, 13 s)"]
