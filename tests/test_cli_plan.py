"""`vocabopt plan`: corpus -> stats, profile, plan, exported layer and report in one directory, each artifact the one
its own verb would have written (checked by re-running every stage alone on the files plan left behind)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import vocabopt.profile_cache as pc
from tests.test_profile_cache import fake_profile
from vocabopt import CorpusStats, DeviceProfile
from vocabopt.cli import main
from vocabopt.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
BPE = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
SHIPPED = ROOT / "configs" / "devices" / "cpu-xeon-2core-float32.json"
NAMES = ["stats.json", "device.json", "plan.json", "adaptive_head.py", "report.html"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory, corpus_slice) -> tuple[Path, object]:
    """One `vocabopt plan` run on the corpus slice with the shipped profile."""
    out = tmp_path_factory.mktemp("plan") / "out"
    args = [str(corpus_slice), "-t", str(BPE), "--hidden", "256", "--profile", str(SHIPPED), "-o", str(out)]
    return out, CliRunner().invoke(main, ["plan", *args])


def test_plan_writes_every_stage_under_its_fixed_name(planned, corpus_slice):
    out, r = planned
    assert r.exit_code == 0, r.output
    assert all((out / name).is_file() for name in NAMES)
    for name in NAMES:  # stdout names what it wrote
        assert f"{out / name}" in r.stdout
    for n, stage in enumerate(["analyze", "profile", "optimize", "export", "report"], 1):
        assert f"[{n}/5] {stage}" in r.stderr  # progress on stderr
    stats, plan = CorpusStats.load(out / "stats.json"), Plan.load(out / "plan.json")
    assert DeviceProfile.load(out / "device.json").to_json() == DeviceProfile.load(SHIPPED).to_json()
    assert plan.vocab_size == stats.vocab_size == 8000 and plan.hidden == 256 and plan.batch_tokens == 2048
    assert plan.provenance["stats"]["path"] == str(out / "stats.json")
    assert plan.provenance["profile"]["path"] == str(out / "device.json")
    page = (out / "report.html").read_text()
    assert "<html" in page and str(plan.cutoffs[0]) in page


def test_each_stage_rerun_alone_gives_the_same_artifact(planned, corpus_slice, tmp_path):
    """The reference: the single verbs on the same inputs (analyze on the corpus, optimize/export on plan's files)."""
    out, r = planned
    assert r.exit_code == 0, r.output
    runner = CliRunner()
    alone = runner.invoke(main, ["analyze", str(corpus_slice), "-t", str(BPE), "-o", str(tmp_path / "s.json"), "-q"])
    assert alone.exit_code == 0, alone.output
    assert (CorpusStats.load(tmp_path / "s.json").counts == CorpusStats.load(out / "stats.json").counts).all()
    args = [str(out / "stats.json"), "--hidden", "256", "--profile", str(out / "device.json")]
    alone = runner.invoke(main, ["optimize", *args, "-o", str(tmp_path / "plan.json"), "-q"])
    assert alone.exit_code == 0, alone.output
    mine, theirs = Plan.load(tmp_path / "plan.json"), Plan.load(out / "plan.json")
    assert (mine.cutoffs, mine.proj_dims, mine.predicted) == (theirs.cutoffs, theirs.proj_dims, theirs.predicted)
    (tmp_path / "x").mkdir()
    alone = runner.invoke(main, ["export", str(out / "plan.json"), "-o", str(tmp_path / "x" / "adaptive_head.py")])
    assert alone.exit_code == 0, alone.output
    assert (tmp_path / "x" / "adaptive_head.py").read_bytes() == (out / "adaptive_head.py").read_bytes()


def test_plan_json_and_quiet(corpus_slice, tmp_path):
    args = [str(corpus_slice), "-t", str(BPE), "--hidden", "128", "--profile", str(SHIPPED), "--limit-bytes", "60000"]
    r = CliRunner().invoke(main, ["plan", *args, "-o", str(tmp_path / "j"), "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["written"]["optimize"] == str(tmp_path / "j" / "plan.json")
    assert obj["cutoffs"] == Plan.load(tmp_path / "j" / "plan.json").cutoffs and r.stderr == ""
    r = CliRunner().invoke(main, ["plan", *args, "-o", str(tmp_path / "q"), "-q"])
    assert r.exit_code == 0 and r.stderr == "" and r.stdout.count("\n") == 1 and "cutoffs" in r.stdout


def test_plan_without_profile_uses_the_cached_one_and_measure_measures(corpus_slice, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv(pc.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(pc, "profile_device", lambda *a, **k: calls.append(1) or fake_profile(*a, **k))
    args = ["plan", str(corpus_slice), "-t", str(BPE), "--hidden", "64", "--limit-bytes", "60000", "--device", "cpu"]
    runner = CliRunner()
    assert runner.invoke(main, [*args, "-o", str(tmp_path / "a")]).exit_code == 0 and len(calls) == 1
    r = runner.invoke(main, [*args, "-o", str(tmp_path / "b")])
    assert r.exit_code == 0 and len(calls) == 1 and "using the cached profile" in r.stderr
    entry = next((tmp_path / "cache" / "profiles").iterdir())
    assert DeviceProfile.load(tmp_path / "b" / "device.json").to_json() == DeviceProfile.load(entry).to_json()
    assert runner.invoke(main, [*args, "-o", str(tmp_path / "c"), "--measure"]).exit_code == 0 and len(calls) == 2


def test_plan_bad_input_is_one_line(corpus_slice, tmp_path):
    (tmp_path / "file").write_text("x")
    base = ["plan", str(corpus_slice), "-t", str(BPE), "--hidden", "64", "--profile", str(SHIPPED)]
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "file")])
    assert r.exit_code == 2 and "Traceback" not in r.output and "is a file" in r.output  # click's Path check
    r = CliRunner().invoke(main, [*base, "--measure", "-o", str(tmp_path / "m")])
    assert r.exit_code == 2 and "exclude each other" in r.output and not (tmp_path / "m").exists()
