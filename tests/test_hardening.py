"""Hardening: bad input, faults and hostile data across the pipeline (issue 6).

- a table of bad inputs through the CLI: each exits 1 with one `Error: ...` line naming the input and the fix, no
  traceback, and leaves the output directory exactly as it was (no file created, the existing one untouched);
- faults: a full disk, an unwritable directory, SIGINT during a long analyze, SIGKILL during saves;
- determinism: the same inputs give byte-identical artifacts;
- hostile token strings through analyze -> optimize -> export -> import, with no way into the generated code;
- fuzzing: random and mutated JSON (and .npy sidecars) fed to every artifact loader.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocabopt import artifacts
from vocabopt.cli import main
from vocabopt.errors import ArtifactError, VocabOptError
from vocabopt.optimize import optimize
from vocabopt.plan import Plan
from vocabopt.profile import DeviceProfile, synthetic_profile
from vocabopt.stats import CorpusStats

ABSENT_DEVICE = "mps" if torch.cuda.is_available() else "cuda"

ROOT = Path(__file__).resolve().parents[1]
BPE = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
PY = sys.executable
SENTINEL = b"previous artifact: must survive\n"


def affine(kernel, *c):  # ms; a cheap synthetic device
    return 0.01 + 1e-9 * np.prod(c, axis=0)


# --- shared inputs: good artifacts and broken variants of them ----------------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory, corpus_slice) -> dict[str, Path]:
    """Good artifacts from a 60 KB slice, and one broken variant per failure the loaders must name."""
    d = tmp_path_factory.mktemp("good")
    text = corpus_slice.read_text(encoding="utf-8")[:60_000]
    (d / "corpus.txt").write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    r = CliRunner().invoke(main, ["analyze", str(d / "corpus.txt"), "-t", str(BPE), "-q", "-o", str(d / "stats.json")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["analyze", str(d / "corpus.txt"), "-t", "word", "-q", "-o", str(d / "word.json")])
    assert r.exit_code == 0, r.output
    synthetic_profile(affine).save(d / "prof.json")
    stats = CorpusStats.load(d / "stats.json")
    plan = optimize(stats, hidden=64, profile=DeviceProfile.load(d / "prof.json"), batch_tokens=512)
    plan.save(d / "plan.json")
    Plan.from_cutoffs(CorpusStats.load(d / "word.json"), hidden=16, cutoffs=[50, 500]).save(d / "wordplan.json")
    (d / "afile").write_text("a file, not a directory")
    (d / "bad.jsonl").write_text('{"text": "a b"}\n{oops\n')
    (d / "nofield.jsonl").write_text('{"body": "a b"}\n')
    _broken(d, stats)
    return {p.stem: p for p in d.iterdir()} | {"dir": d}


def _broken(d: Path, stats: CorpusStats) -> None:
    def edit(src: str, dst: str, fn) -> None:
        obj = json.loads((d / src).read_text())
        fn(obj)
        (d / dst).write_text(json.dumps(obj))

    for kind in ("stats", "plan", "prof"):
        (d / f"{kind}_trunc.json").write_bytes((d / f"{kind}.json").read_bytes()[:700])
        edit(f"{kind}.json", f"{kind}_future.json", lambda o: o.update(schema_version=99))
    (d / "empty.json").write_bytes(b"")
    (d / "binary.json").write_bytes(bytes(range(256)) * 4)
    (d / "list.json").write_text("[1, 2, 3]")
    # Sidecars: copy the JSON next to a corrupted, truncated, pickled or missing array.
    counts_file = json.loads((d / "stats.json").read_text())["counts_file"]
    npy = (d / counts_file).read_bytes()
    sub = d / "sidecars"
    for name, data, fix_hash in (
        ("flipped", npy[:-8] + b"\xff" * 8, False),  # hash no longer matches
        ("truncated", npy[: len(npy) // 2], True),  # hash matches, array does not parse
        ("pickled", _pickled_npy(), True),  # loading it would need pickle
        ("float", artifacts.npy_bytes(stats.counts.astype(np.float64)), True),
        ("missing", None, False),
    ):
        (sub / name).mkdir(parents=True)
        obj = json.loads((d / "stats.json").read_text())
        if data is not None:
            (sub / name / counts_file).write_bytes(data)
            if fix_hash:
                obj["counts_sha256"] = artifacts.sha256_bytes(data)
        (sub / name / "stats.json").write_text(json.dumps(obj))
    edit("stats.json", "stats_escape.json", lambda o: o.update(counts_file="../stats.counts.npy"))
    edit("stats.json", "stats_tokens.json", lambda o: o.update(tokens={"not": "a list"}))
    edit("stats.json", "stats_nokey.json", lambda o: o.pop("tokenizer"))
    edit("prof.json", "prof_nokernel.json", lambda o: o["kernels"].pop("linear_fwd"))
    edit("prof.json", "prof_nan.json", lambda o: o["kernels"]["nll_fwd"]["median_ms"][0].__setitem__(0, -1.0))
    edit("plan.json", "plan_cutoffs.json", lambda o: o.update(cutoffs=[10, 10**9]))
    edit("plan.json", "plan_proj.json", lambda o: o.update(proj_dims=[0] * len(o["proj_dims"])))
    edit("word.json", "word_hash.json", lambda o: o["tokenizer"].update(sha256="0" * 64))


def _pickled_npy() -> bytes:
    """A .npy file holding an object array: loading it needs pickle, which the loaders must refuse."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"payload": "code"}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


# --- the table of bad inputs ----------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    args: list[str]  # {d}: the good-artifacts folder; {o}: the output path (holds a previous artifact)
    names: str  # the input the message must name
    fix: str  # words of the fix the message must give


def _opt(stats: str = "{d}/stats.json", prof: str = "{d}/prof.json", *extra: str) -> list[str]:
    return ["optimize", stats, "--hidden", "64", "--batch-tokens", "512", "--profile", prof, "-o", "{o}", *extra]


CASES = [
    # analyze: sources, tokenizers, options
    Case("analyze-missing-source", ["analyze", "{d}/nope.txt", "-o", "{o}"], "nope.txt", "check the path"),
    Case("analyze-empty-source", ["analyze", "{d}/empty.json", "-o", "{o}"], "empty.json", "check the sources"),
    Case("analyze-bad-jsonl", ["analyze", "{d}/bad.jsonl", "-o", "{o}"], "bad.jsonl:2", "--skip-bad-lines"),
    Case("analyze-missing-field", ["analyze", "{d}/nofield.jsonl", "-o", "{o}"], "no field 'text'", "--field"),
    Case(
        "analyze-corrupt-tokenizer",
        ["analyze", "{d}/corpus.txt", "-t", "{d}/stats_trunc.json", "-o", "{o}"],
        "stats_trunc.json",
        "regenerate",
    ),
    Case(
        "analyze-missing-tokenizer",
        ["analyze", "{d}/corpus.txt", "-t", "{d}/nope.json", "-o", "{o}"],
        "nope.json",
        "pass a tokenizer.json",
    ),
    Case(
        "analyze-workers-0", ["analyze", "{d}/corpus.txt", "--workers", "0", "-o", "{o}"], "--workers 0", "at least 1"
    ),
    Case(
        "analyze-limit-negative",
        ["analyze", "{d}/corpus.txt", "--limit-bytes", "-5", "-o", "{o}"],
        "--limit-bytes -5",
        "at least 1",
    ),
    Case(
        "analyze-max-vocab-1",
        ["analyze", "{d}/corpus.txt", "-t", "word", "--max-vocab", "1", "-o", "{o}"],
        "--max-vocab 1",
        "at least 2",
    ),
    Case(
        "analyze-save-tokenizer-not-word",
        ["analyze", "{d}/corpus.txt", "-o", "{o}", "--save-tokenizer", "{o}.tok.json"],
        "--save-tokenizer",
        "only for --tokenizer word",
    ),
    Case(
        "analyze-output-dev-full", ["analyze", "{d}/corpus.txt", "-o", "/dev/full"], "/dev/full", "choose a file path"
    ),
    Case(
        "analyze-output-under-a-file",
        ["analyze", "{d}/corpus.txt", "-o", "{d}/afile/stats.json"],
        "afile/stats.json",
        "choose a writable output path",
    ),
    Case(
        "analyze-output-in-sys",
        ["analyze", "{d}/corpus.txt", "-o", "/sys/stats.json"],
        "/sys/stats.json",
        "choose a writable output path",
    ),
    Case(
        "analyze-output-missing-dir",
        ["analyze", "{d}/corpus.txt", "-o", "{d}/no/such/dir/s.json"],
        "no/such/dir/s.json",
        "choose a writable output path",
    ),
    Case(
        "analyze-plot-unwritable",
        ["analyze", "{d}/corpus.txt", "-o", "{o}", "--plot", "{d}/afile/p.png"],
        "afile/p.png",
        "choose a writable output path",
    ),
    Case(
        "analyze-dataset-missing",
        ["analyze", "--dataset", "{d}/nope", "-o", "{o}"],
        "nope",
        "reads local datasets only",
    ),
    # merge: corrupt, future, mismatched shards
    Case(
        "merge-truncated-json",
        ["merge", "{d}/stats_trunc.json", "{d}/stats.json", "-o", "{o}"],
        "stats_trunc.json",
        "regenerate",
    ),
    Case(
        "merge-future-schema", ["merge", "{d}/stats_future.json", "-o", "{o}"], "schema_version 99", "upgrade vocabopt"
    ),
    Case("merge-empty-file", ["merge", "{d}/empty.json", "-o", "{o}"], "empty.json", "regenerate"),
    Case("merge-binary-file", ["merge", "{d}/binary.json", "-o", "{o}"], "binary.json", "expected a"),
    Case("merge-json-list", ["merge", "{d}/list.json", "-o", "{o}"], "list.json", "pass a file written by vocabopt"),
    Case(
        "merge-plan-not-stats",
        ["merge", "{d}/plan.json", "-o", "{o}"],
        "not a vocabopt.CorpusStats",
        "pass a file written by vocabopt",
    ),
    Case(
        "merge-tokenizer-hash-mismatch",
        ["merge", "{d}/word.json", "{d}/word_hash.json", "-o", "{o}"],
        "000000000000",
        "same tokenizer",
    ),
    Case(
        "merge-vocab-mismatch",
        ["merge", "{d}/stats.json", "{d}/word.json", "-o", "{o}"],
        "tokenizer 'word'",
        "same tokenizer",
    ),
    Case(
        "merge-sidecar-flipped", ["merge", "{d}/sidecars/flipped/stats.json", "-o", "{o}"], "flipped", "regenerate both"
    ),
    Case(
        "merge-sidecar-truncated",
        ["merge", "{d}/sidecars/truncated/stats.json", "-o", "{o}"],
        "truncated",
        "regenerate it",
    ),
    Case(
        "merge-sidecar-pickled", ["merge", "{d}/sidecars/pickled/stats.json", "-o", "{o}"], "pickled", "regenerate it"
    ),
    Case("merge-sidecar-float", ["merge", "{d}/sidecars/float/stats.json", "-o", "{o}"], "float64", "1-D int64"),
    Case(
        "merge-sidecar-missing",
        ["merge", "{d}/sidecars/missing/stats.json", "-o", "{o}"],
        "sidecar missing",
        "regenerate both",
    ),
    Case(
        "merge-sidecar-path-escape",
        ["merge", "{d}/stats_escape.json", "-o", "{o}"],
        "../stats.counts.npy",
        "regenerate",
    ),
    Case("merge-tokens-not-list", ["merge", "{d}/stats_tokens.json", "-o", "{o}"], "'tokens'", "regenerate"),
    Case("merge-missing-key", ["merge", "{d}/stats_nokey.json", "-o", "{o}"], "'tokenizer'", "regenerate"),
    # optimize: artifacts, another device, infeasible constraints
    Case("optimize-truncated-stats", _opt("{d}/stats_trunc.json"), "stats_trunc.json", "regenerate"),
    Case("optimize-future-profile", _opt(prof="{d}/prof_future.json"), "prof_future.json", "upgrade vocabopt"),
    Case("optimize-truncated-profile", _opt(prof="{d}/prof_trunc.json"), "prof_trunc.json", "regenerate"),
    Case(
        "optimize-profile-missing-kernel",
        _opt(prof="{d}/prof_nokernel.json"),
        "linear_fwd",
        "re-run `vocabopt profile`",
    ),
    Case("optimize-profile-negative-time", _opt(prof="{d}/prof_nan.json"), "nll_fwd", "re-run `vocabopt profile`"),
    Case(
        "optimize-stats-as-profile",
        _opt(prof="{d}/stats.json"),
        "not a vocabopt.DeviceProfile",
        "pass a file written by vocabopt",
    ),
    Case(
        "optimize-profile-other-device",
        _opt("{d}/stats.json", "{d}/prof.json", "--device", "cpu"),
        "'synthetic'",
        "Drop --device/--dtype",
    ),
    Case(
        "optimize-profile-other-dtype",
        _opt("{d}/stats.json", "{d}/prof.json", "--dtype", "bfloat16"),
        "bfloat16",
        "Drop --device/--dtype",
    ),
    Case(
        "optimize-min-head-above-vocab",
        _opt("{d}/stats.json", "{d}/prof.json", "--min-head", "9000"),
        "min_head=9000",
        "pass --min-head below",
    ),
    Case(
        "optimize-head-range-empty",
        _opt("{d}/stats.json", "{d}/prof.json", "--min-head", "500", "--max-head", "100"),
        "max_head=100",
        "raise --max-head",
    ),
    Case(
        "optimize-no-clusters",
        _opt("{d}/stats.json", "{d}/prof.json", "--max-clusters", "0"),
        "max_clusters=0",
        "pass --max-clusters 1 or more",
    ),
    Case(
        "optimize-cutoffs-beyond-vocab",
        _opt("{d}/stats.json", "{d}/prof.json", "--cutoffs", "100,9000"),
        "vocabulary of 8,000",
        "drop the ones >= 8000",
    ),
    Case(
        "optimize-div-value-0",
        _opt("{d}/stats.json", "{d}/prof.json", "--div-value", "0"),
        "div_value=0",
        "positive number",
    ),
    Case(
        "optimize-tolerance-negative",
        _opt("{d}/stats.json", "{d}/prof.json", "--tolerance", "-1"),
        "tolerance=-1",
        "share >= 0",
    ),
    Case("optimize-output-dev-full", [*_opt()[:-1], "/dev/full"], "/dev/full", "choose a file path"),
    Case(
        "optimize-plot-unwritable",
        _opt("{d}/stats.json", "{d}/prof.json", "--plot", "{d}/afile/p.png"),
        "afile/p.png",
        "choose a writable output path",
    ),
    # export
    Case(
        "export-stats-not-plan",
        ["export", "{d}/stats.json", "-o", "{o}"],
        "not a vocabopt.Plan",
        "pass a file written by vocabopt",
    ),
    Case("export-truncated-plan", ["export", "{d}/plan_trunc.json", "-o", "{o}"], "plan_trunc.json", "regenerate"),
    Case(
        "export-future-plan", ["export", "{d}/plan_future.json", "-o", "{o}"], "schema_version 99", "upgrade vocabopt"
    ),
    Case(
        "export-plan-cutoffs-beyond-vocab",
        ["export", "{d}/plan_cutoffs.json", "-o", "{o}"],
        "plan_cutoffs.json",
        "regenerate it",
    ),
    Case("export-plan-proj-zero", ["export", "{d}/plan_proj.json", "-o", "{o}"], "proj_dims", "regenerate it"),
    Case("export-output-dev-full", ["export", "{d}/plan.json", "-o", "/dev/full"], "/dev/full", "choose a file path"),
    Case(
        "export-output-under-a-file",
        ["export", "{d}/plan.json", "-o", "{d}/afile/h.py"],
        "afile/h.py",
        "choose a writable output path",
    ),
    # bench and validate
    Case(
        "bench-truncated-plan",
        ["bench", "{d}/plan_trunc.json", "--device", "cpu", "--no-full", "-o", "{o}"],
        "plan_trunc.json",
        "regenerate",
    ),
    Case(
        "bench-future-plan",
        ["bench", "{d}/plan_future.json", "--device", "cpu", "--no-full", "-o", "{o}"],
        "schema_version 99",
        "upgrade vocabopt",
    ),
    Case(
        "bench-stats-not-plan",
        ["bench", "{d}/stats.json", "--device", "cpu", "--no-full", "-o", "{o}"],
        "not a vocabopt.Plan",
        "pass a file written by vocabopt",
    ),
    Case(
        "bench-stats-as-profile",
        ["bench", "{d}/plan.json", "--device", "cpu", "--profile", "{d}/stats.json", "--no-full", "-o", "{o}"],
        "not a vocabopt.DeviceProfile",
        "pass a file",
    ),
    Case(
        "bench-output-dev-full",
        ["bench", "{d}/plan.json", "--device", "cpu", "--no-full", "-o", "/dev/full"],
        "/dev/full",
        "choose a file path",
    ),
    Case(
        "validate-tokenizer-mismatch",
        [
            "validate",
            "{d}/wordplan.json",
            "--corpus",
            "{d}/corpus.txt",
            "-t",
            str(BPE),
            "--steps",
            "1",
            "-q",
            "-o",
            "{o}",
        ],
        "is not the plan's",
        "pass the tokenizer the plan's stats were counted with",
    ),
    Case(
        "validate-truncated-plan",
        [
            "validate",
            "{d}/plan_trunc.json",
            "--corpus",
            "{d}/corpus.txt",
            "-t",
            str(BPE),
            "--steps",
            "1",
            "-q",
            "-o",
            "{o}",
        ],
        "plan_trunc.json",
        "regenerate",
    ),
    Case(
        "validate-missing-corpus",
        ["validate", "{d}/plan.json", "--corpus", "{d}/nope.txt", "-t", str(BPE), "--steps", "1", "-q", "-o", "{o}"],
        "nope.txt",
        "check the path",
    ),
    Case(
        "validate-output-dev-full",
        [
            "validate",
            "{d}/plan.json",
            "--corpus",
            "{d}/corpus.txt",
            "-t",
            str(BPE),
            "--steps",
            "1",
            "-q",
            "-o",
            "/dev/full",
        ],
        "/dev/full",
        "choose a file path",
    ),
    # profile
    Case(  # a device this machine lacks: cuda where torch sees no GPU, else mps (never on a CUDA machine)
        "profile-absent-device",
        ["profile", "--device", ABSENT_DEVICE, "-o", "{o}"],
        f"'{ABSENT_DEVICE}'",
        "use --device cpu",
    ),
    Case(
        "profile-output-dev-full",
        ["profile", "--device", "cpu", "--quick", "-o", "/dev/full"],
        "/dev/full",
        "choose a file path",
    ),
]


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


def assert_clean_failure(result, case: Case) -> None:
    out = result.output
    assert result.exit_code == 1, f"{case.name}: exit {result.exit_code}\n{out}"
    assert isinstance(result.exception, SystemExit), f"{case.name}: {result.exception!r}"
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"{case.name}: not one line:\n{out}"
    assert case.names in lines[0], f"{case.name}: input {case.names!r} not named: {lines[0]}"
    assert case.fix in lines[0], f"{case.name}: fix {case.fix!r} not given: {lines[0]}"


def test_the_table_has_enough_cases():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    verbs = {c.args[0] for c in CASES}
    assert {"analyze", "merge", "optimize", "export", "profile", "bench", "validate"} <= verbs


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_fails_cleanly_and_writes_nothing(case, good, tmp_path):
    d = good["dir"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "o.json").write_bytes(SENTINEL)
    os.utime(out / "o.json", ns=(1_000_000_000, 1_000_000_000))
    before, good_before = _snapshot(out), _snapshot(d)
    dev_full = os.stat("/dev/full")
    args = [a.replace("{d}", str(d)).replace("{o}", str(out / "o.json")) for a in case.args]
    result = CliRunner().invoke(main, args)
    assert_clean_failure(result, case)
    assert _snapshot(out) == before  # nothing created, the previous artifact untouched (bytes and mtime)
    assert _snapshot(d) == good_before  # inputs untouched, no stray temp files beside them
    assert os.stat("/dev/full").st_rdev == dev_full.st_rdev and not Path("/dev/full").is_file()
    assert not list(Path("/dev").glob("full.*"))


# --- unwritable directory and full disk -------------------------------------------------------------------------


@pytest.fixture()
def readonly_dir(tmp_path):
    """A directory nobody may write to: chmod for users; for root (whom chmod does not stop) a read-only bind."""
    d = tmp_path / "ro"
    d.mkdir()
    (d / "o.json").write_bytes(SENTINEL)
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True).returncode != 0:
        pytest.skip("running as root and cannot bind-mount read-only here (chmod does not stop root)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(d)], capture_output=True).returncode != 0:
            pytest.skip("running as root and cannot remount read-only here (chmod does not stop root)")
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


@pytest.mark.parametrize("verb", ["analyze", "merge", "optimize", "export"])
def test_read_only_output_directory(verb, good, readonly_dir):
    d, o = good["dir"], str(readonly_dir / "o.json")
    args = {
        "analyze": ["analyze", str(d / "corpus.txt"), "-o", o],
        "merge": ["merge", str(d / "stats.json"), "-o", o],
        "optimize": [a.replace("{d}", str(d)).replace("{o}", o) for a in _opt()],
        "export": ["export", str(d / "plan.json"), "-o", o],
    }[verb]
    before = _snapshot(readonly_dir)
    result = CliRunner().invoke(main, args)
    assert_clean_failure(result, Case(verb, args, str(readonly_dir), "choose a writable output path"))
    assert _snapshot(readonly_dir) == before


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 128 KiB tmpfs: a stats artifact (~130 KB of JSON) does not fit. Needs root and mount; else skipped."""
    d = tmp_path / "disk"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the ENOSPC path is covered by the next test")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


def test_full_disk_leaves_previous_artifact(good, tiny_disk):
    (tiny_disk / "o.json").write_bytes(SENTINEL)
    before = _snapshot(tiny_disk)
    args = ["merge", str(good["dir"] / "stats.json"), "-o", str(tiny_disk / "o.json")]
    result = CliRunner().invoke(main, args)
    assert_clean_failure(result, Case("enospc", args, "o.json", "check free space"))
    assert "No space left on device" in result.output
    assert _snapshot(tiny_disk) == before  # temp files and the new sidecar removed, previous artifact intact


def test_enospc_mid_write_cleans_up(good, tmp_path, monkeypatch):
    """The same without a mount: the disk fills while the JSON is written, after its sidecar."""
    stats = CorpusStats.load(good["stats"])
    stats.save(tmp_path / "s.json")
    before = _snapshot(tmp_path)
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the sidecar went through; the JSON does not fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    other = CorpusStats.from_counts(stats.counts[::-1].copy())
    with pytest.raises(ArtifactError, match=r"write failed \(No space left on device\); check free space"):
        other.save(tmp_path / "s.json")
    assert _snapshot(tmp_path) == before
    assert CorpusStats.load(tmp_path / "s.json").counts.tolist() == stats.counts.tolist()


# --- signals ----------------------------------------------------------------------------------------------------


def _big_corpus(path: Path, n_bytes: int) -> None:
    lines = (ROOT / "corpora" / "kjv.txt").read_text(encoding="utf-8").splitlines()
    with path.open("w", encoding="utf-8") as f:
        written, copy = 0, 0
        while written < n_bytes:
            block = "".join(f"{copy} {line}\n" for line in lines)
            f.write(block)
            written += len(block)
            copy += 1


def _guarded_out(tmp_path: Path, n_bytes: int) -> tuple[Path, Path, dict[str, tuple[bytes, int]]]:
    """(a generated corpus of n_bytes, an output folder holding a previous artifact, the folder's snapshot)."""
    corpus = tmp_path / "big.txt"
    _big_corpus(corpus, n_bytes)
    out = tmp_path / "out"
    out.mkdir()
    (out / "o.json").write_bytes(SENTINEL)
    return corpus, out, _snapshot(out)


def _start_analyze(corpus: Path, out: Path, *options: str) -> subprocess.Popen:
    """`python -m vocabopt analyze` into out/o.json, in a process group of its own."""
    args = [PY, "-m", "vocabopt", "analyze", str(corpus), "-t", str(BPE), "-o", str(out / "o.json"), *options]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT)


def test_sigint_during_analyze_exits_130_and_writes_nothing(tmp_path):
    corpus, out, before = _guarded_out(tmp_path, 120_000_000)
    inherited = signal.getsignal(signal.SIGINT)
    if inherited == signal.SIG_IGN:  # run as a background job (no job control): children would inherit the ignore
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler is reset to the default by exec
    try:
        proc = _start_analyze(corpus, out, "--plot", str(out / "p.png"))
    finally:
        signal.signal(signal.SIGINT, inherited)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not children.read_text().strip():
        time.sleep(0.05)  # wait until the count runs in worker processes (past start-up, on a busy machine too)
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C: the whole process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr and b"Interrupted; no output written." in stderr
    assert _snapshot(out) == before
    assert _group_gone(proc.pid), "worker processes outlived the interrupted analyze"


_CHILDREN = Path(f"/proc/self/task/{os.getpid()}/children")  # a process's children (CONFIG_PROC_CHILDREN)


@pytest.mark.skipif(not _CHILDREN.exists(), reason="finds the workers through /proc/PID/task/PID/children")
def test_a_killed_worker_is_a_one_line_error_and_writes_nothing(tmp_path):
    """A worker killed mid-count (the kernel's out-of-memory killer, say) ends analyze with one line naming what
    happened and what to do, not the pool's traceback; the previous artifact stays."""
    corpus, out, before = _guarded_out(tmp_path, 40_000_000)
    proc = _start_analyze(corpus, out, "--workers", "2", "-q")

    def children(pid: int) -> list[int]:
        try:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def spawned(pid: int) -> bool:  # a worker started by spawn, not the resource tracker or the fork server
        try:
            return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    try:
        deadline, killed = time.monotonic() + 60, False
        while proc.poll() is None and time.monotonic() < deadline and not killed:
            workers = [w for c in children(proc.pid) for w in children(c)]  # forked by the fork server
            workers += [c for c in children(proc.pid) if spawned(c)]
            for pid in workers[:1]:
                os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed, "no worker process seen"
    assert proc.returncode == 1, stderr.decode()
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: a worker process died"), stderr.decode()
    assert _snapshot(out) == before


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """Whether every process of the group has exited within `timeout` s (workers may take a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


SAVER = textwrap.dedent("""
    import sys, numpy as np
    from vocabopt.stats import CorpusStats
    from vocabopt.plan import Plan
    from vocabopt.export import export_layer
    d = sys.argv[1]
    V = 200_000  # 1.6 MB sidecars: a save takes long enough to be killed inside one
    a = np.arange(V, dtype=np.int64)
    versions = [a, a[::-1].copy()]
    stats = [CorpusStats(counts=c, tokens=[""] * V, tokenizer=CorpusStats.from_counts([1, 2]).tokenizer)
             for c in versions]
    for s in stats:
        s.tokenizer.vocab_size = V
    plans = [Plan.from_cutoffs(c, hidden=16, cutoffs=[1000, 100000]) for c in versions]
    i = 0
    while True:
        stats[i % 2].save(d + "/s.json")
        plans[i % 2].save(d + "/p.json")
        export_layer(plans[i % 2], d + "/h.py")
        if i == 1:
            print("ready", flush=True)
        i += 1
""")


def test_sigkill_mid_save_leaves_a_whole_artifact(tmp_path):
    rng = np.random.default_rng(0)
    V = 200_000
    for _ in range(3):
        proc = subprocess.Popen([PY, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(float(rng.uniform(0.02, 0.3)))
        proc.kill()
        proc.wait()
        stats = CorpusStats.load(tmp_path / "s.json")
        assert stats.counts[0] in (0, V - 1) and np.all(np.diff(stats.counts) == (1 if stats.counts[0] == 0 else -1))
        plan = Plan.load(tmp_path / "p.json")
        assert plan.vocab_size == V
        _import_exported(tmp_path / "h.py", V)
    # at most the sidecars of the last artifact and of one interrupted save remain
    assert len(list(tmp_path.glob("s.counts.*.npy"))) <= 2


def _import_exported(path: Path, vocab: int, check: str = "") -> str:
    code = (
        textwrap.dedent(f"""
        import importlib, sys, torch
        sys.path.insert(0, {str(path.parent)!r})
        mod = importlib.import_module({path.stem!r})
        assert "vocabopt" not in sys.modules, "the exported module imported vocabopt"
        head = mod.build_head()
        assert head.config.vocab_size == {vocab}
        h = torch.randn(5, head.config.hidden)
        t = torch.randint(0, {vocab}, (5,))
        loss = head(h, t)
        assert torch.isfinite(loss).all()
    """)
        + check
    )
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=path.parent)
    assert r.returncode == 0, r.stderr
    return r.stdout


# --- determinism ------------------------------------------------------------------------------------------------


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_inputs_give_byte_identical_artifacts(good, tmp_path):
    d = good["dir"]
    runs = []
    for k in range(2):
        o = tmp_path / f"run{k}"
        o.mkdir()
        for args in (
            ["analyze", str(d / "corpus.txt"), "-t", str(BPE), "-q", "-o", str(o / "stats.json")],
            [
                "analyze",
                str(d / "corpus.txt"),
                "-t",
                "word",
                "-q",
                "-o",
                str(o / "word.json"),
                "--save-tokenizer",
                str(o / "word-tokenizer.json"),
            ],
            ["merge", str(o / "stats.json"), str(o / "stats.json"), "-o", str(o / "merged.json")],
            [
                "optimize",
                str(o / "stats.json"),
                "--hidden",
                "64",
                "--batch-tokens",
                "512",
                "--profile",
                str(d / "prof.json"),
                "-o",
                str(o / "plan.json"),
            ],
            ["export", str(o / "plan.json"), "-o", str(o / "head.py")],
            ["export", str(o / "plan.json"), "-o", str(o / "head.json"), "--format", "config"],
        ):
            r = _in_dir(o, args)  # same relative paths in both runs (paths are recorded in provenance)
            assert r.exit_code == 0, r.output
        runs.append(_files(o))
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == 13
    for name in runs[0]:
        assert runs[0][name] == runs[1][name], f"{name} differs between two runs on the same inputs"
    # a profile's body is deterministic given its measurements; `created` (a timestamp) is the one field to ignore
    a, b = (synthetic_profile(affine).to_json() for _ in range(2))
    a.pop("created"), b.pop("created")
    assert artifacts.dumps_json(a) == artifacts.dumps_json(b)


def _in_dir(o: Path, args: list[str]):
    cwd = os.getcwd()
    os.chdir(o)
    try:
        return CliRunner().invoke(main, [a.replace(str(o) + "/", "") for a in args])
    finally:
        os.chdir(cwd)


def test_resave_replaces_sidecars_and_keeps_one_set(tmp_path):
    s1, s2 = CorpusStats.from_counts([3, 2, 1]), CorpusStats.from_counts([1, 2, 3, 4])
    s1.save(tmp_path / "s.json")
    s2.save(tmp_path / "s.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["s.json", json.loads((tmp_path / "s.json").read_text())["counts_file"]]
    )
    (tmp_path / "keep.counts.0123456789abcdef.npy").write_bytes(b"not ours to delete")
    s1.save(tmp_path / "s.json")
    assert (tmp_path / "keep.counts.0123456789abcdef.npy").exists()


# --- hostile token strings --------------------------------------------------------------------------------------

HOSTILE = [
    '"',
    "'",
    "\\",
    "\\n",
    "\n",
    "\r\n",
    "\x00",
    '"""',
    "'''",
    '"""; import os; os.system("touch PWNED") #',
    "'''; __import__('os').system('touch PWNED') #",
    "__import__('os').system('touch PWNED')",
    "\u202e",
    "\u2066evil\u2069",
    "\u2028",
    "</script>",
    "${HOME}",
    "{0}",
    "%s",
    "é",
    " lead",
    "tab\there",
    "-- PLAN_CONFIG",
]


def test_hostile_tokens_through_the_pipeline(tmp_path):
    """A WordLevel tokenizer made of hostile strings: analyze -> optimize -> export -> import in a fresh process.

    Lone surrogates cannot be in a Hugging Face tokenizer (its Rust core holds UTF-8 only: WordLevel({'\\ud800': 1})
    raises), so they are checked where they can occur: token strings of CorpusStats and the plan's name.
    """
    from tokenizers import Tokenizer, models

    vocab = {"[UNK]": 0, **{t: i + 1 for i, t in enumerate(HOSTILE)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))  # no pre-tokenizer: a document is one token
    weird = tmp_path / "tok'\"\n''' name"
    weird.mkdir()
    tok.save(str(weird / "tokenizer.json"))
    records = [t for i, t in enumerate(HOSTILE) for _ in range(3 * (i + 1))]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in records), encoding="utf-8")
    expect = np.zeros(len(vocab), np.int64)
    for t in records:
        if t.strip():  # whitespace-only sequences are blank, and blank sequences are not counted
            expect[tok.encode(t, add_special_tokens=False).ids] += 1
    r = _in_dir(tmp_path, ["analyze", "c.jsonl", "-t", str(weird), "--field", "text", "-q", "-o", "s.json"])
    assert r.exit_code == 0, r.output
    stats = CorpusStats.load(tmp_path / "s.json")
    assert stats.tokens == ["[UNK]", *HOSTILE]  # every string back unchanged
    assert stats.counts.tolist() == expect.tolist()
    synthetic_profile(affine).save(tmp_path / "prof.json")
    r = _in_dir(
        tmp_path,
        ["optimize", "s.json", "--hidden", "16", "--batch-tokens", "64", "--profile", "prof.json", "-o", "plan.json"],
    )
    assert r.exit_code == 0, r.output
    plan = Plan.load(tmp_path / "plan.json")
    # A plan is data from anywhere: give it a hostile name too (it reaches the module's config and docstring).
    name = "'''\"\"\"\n__import__('os').system('touch PWNED')\n\\\x00\u202e\ud800"
    plan.provenance["name"] = name
    plan.save(tmp_path / "plan.json")
    r = _in_dir(tmp_path, ["export", "plan.json", "-o", "head.py"])
    assert r.exit_code == 0, r.output
    out = _import_exported(tmp_path / "head.py", len(vocab), "print(ascii(mod.PLAN_CONFIG['plan']))")
    assert out.strip() == ascii(name)
    assert not list(tmp_path.rglob("PWNED")) and not (ROOT / "PWNED").exists()
    _assert_only_the_plan_block_changed(tmp_path / "head.py")


def _assert_only_the_plan_block_changed(path: Path) -> None:
    """The module's syntax tree is the template's, except the literal values of PLAN_CONFIG and SIDECAR."""
    import ast

    template = ast.parse((ROOT / "vocabopt" / "adaptive_head.py").read_text(encoding="utf-8"))
    exported = ast.parse(path.read_text(encoding="utf-8"))

    def shape(tree):
        out = []
        for node in tree.body:
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") in ("PLAN_CONFIG", "SIDECAR"):
                value = node.value
                assert isinstance(value, (ast.Dict, ast.Constant)), ast.dump(value)
                if isinstance(value, ast.Dict):  # a dict of literals, nothing else
                    assert all(isinstance(k, ast.Constant) for k in value.keys)
                    for v in value.values:
                        assert all(
                            isinstance(n, (ast.Constant, ast.List, ast.Load, ast.UnaryOp, ast.USub))
                            for n in ast.walk(v)
                        ), ast.dump(v)
                out.append(node.target.id)
            elif isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
                out.append("docstring")
            else:
                out.append(ast.dump(node))
        return out

    assert shape(exported) == shape(template)


def test_lone_surrogates_and_controls_round_trip_in_stats(tmp_path):
    tokens = [*HOSTILE, "\ud800", "\udfff", "a\ud83dz"]
    stats = CorpusStats.from_counts(np.arange(len(tokens))[::-1] + 1, tokens=tokens)
    stats.save(tmp_path / "s.json")
    assert (tmp_path / "s.json").read_bytes().isascii()  # escaped, so any reader sees the same code points
    assert CorpusStats.load(tmp_path / "s.json").tokens == tokens


# --- fuzzing the loaders ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
LOADERS = {"stats": CorpusStats.load, "prof": DeviceProfile.load, "plan": Plan.load}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    d = tmp_path_factory.mktemp("fuzz")
    stats = CorpusStats.from_counts(np.arange(60)[::-1] * 7 + 1, tokens=[f"t{i}" for i in range(60)])
    stats.save(d / "stats.json")
    Plan.from_cutoffs(stats, hidden=8, cutoffs=[5, 20]).save(d / "plan.json")
    synthetic_profile(
        affine, grid={"tokens": [64, 512], "hidden": [64, 256], "out": [64, 4096], "elements": [2**10, 2**16]}
    ).save(d / "prof.json")
    return {k: (d / f"{k}.json", json.loads((d / f"{k}.json").read_text())) for k in LOADERS}


def _load_only_our_errors(kind: str, path: Path) -> None:
    try:
        LOADERS[kind](path)
    except VocabOptError as e:
        assert "\n" not in str(e), f"not one line: {e}"


def _mutate(obj, path: list, value):
    """Replace (or with value=DELETE remove) the node at `path` in a deep copy of `obj`."""
    obj = json.loads(json.dumps(obj))
    node = obj
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


DELETE = object()


def _paths(obj, prefix=(), depth=0):
    yield list(prefix)
    if depth >= 4:
        return
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for i, (k, v) in enumerate(items):
        if i < 6:  # first few children: enough shape without walking 8,000 tokens
            yield from _paths(v, (*prefix, k), depth + 1)


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.mark.parametrize("kind", list(LOADERS))
@FUZZ
@given(value=json_values)
def test_fuzz_random_json(kind, small, tmp_path_factory, value):
    path = tmp_path_factory.mktemp("rand") / "x.json"
    path.write_text(json.dumps(value))
    with pytest.raises(VocabOptError):
        LOADERS[kind](path)
    # ... and the same value dressed as the right artifact kind
    if isinstance(value, dict):
        path.write_text(json.dumps({**value, "artifact": small[kind][1]["artifact"], "schema_version": 1}))
        with pytest.raises(VocabOptError):
            LOADERS[kind](path)


@pytest.mark.parametrize("kind", list(LOADERS))
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_json(kind, small, data):
    src, obj = small[kind]
    paths = [p for p in _paths(obj) if p]
    target = data.draw(st.sampled_from(paths))
    value = data.draw(st.sampled_from([DELETE]) | json_values)
    mutated = _mutate(obj, target, value)
    dst = src.with_name(f"m-{kind}.json")
    dst.write_text(json.dumps(mutated))
    _load_only_our_errors(kind, dst)


@pytest.mark.parametrize("kind", list(LOADERS))
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_bytes(kind, small, data):
    src, _ = small[kind]
    raw = bytearray(src.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i:]
            if not raw:
                break
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    dst = src.with_name(f"b-{kind}.json")
    dst.write_bytes(bytes(raw))
    _load_only_our_errors(kind, dst)


@FUZZ
@given(data=st.data())
def test_fuzz_sidecars(small, data):
    """Mutated .npy bytes with the JSON's hash updated to match, so they reach the .npy parser."""
    for kind in ("stats", "plan"):
        src, obj = small[kind]
        obj = json.loads(json.dumps(obj))
        if kind == "stats":
            name = obj["counts_file"]
        else:
            name = obj["arrays"]["order"]["file"]
        raw = bytearray((src.parent / name).read_bytes())
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[i] = data.draw(st.integers(0, 255))
        else:
            del raw[i:]
        new = f"fz-{kind}.npy"
        (src.parent / new).write_bytes(bytes(raw))
        digest = artifacts.sha256_bytes(bytes(raw))
        if kind == "stats":
            obj.update(counts_file=new, counts_sha256=digest)
        else:
            obj["arrays"]["order"].update(file=new, sha256=digest)
        dst = src.with_name(f"fz-{kind}.json")
        dst.write_text(json.dumps(obj))
        _load_only_our_errors(kind, dst)


EARLY_STOP = textwrap.dedent("""
    import sys
    from tokenizers import Tokenizer, models, pre_tokenizers
    from vocabopt import analyze as _  # noqa: F401
    import importlib
    from vocabopt.corpus import pool as analyze
    from vocabopt.corpus.counters import CountOptions
    from vocabopt.corpus.tally import Batch
    from vocabopt.corpus.tokenizer import load_spec
    vocab = {f"w{i}": i for i in range(300_000)}  # a 2.4 MB tally per batch: long to send back
    vocab["[UNK]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(sys.argv[1])
    spec = load_spec(sys.argv[1])
    batches = (Batch(0, f"w{k} w{k + 1} hello") for k in range(400))
    if __name__ == "__main__":
        for n, _ in enumerate(analyze.count_batches(batches, CountOptions(spec, True, None), 2), start=1):
            if n == 3:
                break  # as --limit-tokens does, with batches still in flight
        print("stopped", flush=True)
""")


def test_stopping_early_with_batches_in_flight_exits_and_leaves_no_worker(tmp_path):
    """Workers killed while sending a result left the pool's reader waiting for the rest: the exit hung (7 of 12
    runs, before workers got a grace period to finish their batch)."""
    script = tmp_path / "early_stop.py"
    script.write_text(EARLY_STOP)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "tok.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("stopping early hung at exit") from None
    assert proc.returncode == 0 and b"stopped" in stdout, stderr.decode()
    assert _group_gone(proc.pid), "worker processes outlived the early stop"


@pytest.mark.parametrize("kind", list(LOADERS))
def test_infinite_integers_are_our_error(kind, small):
    """Hypothesis found `"n_sequences": Infinity` raising a bare OverflowError from CorpusStats.load: every integer
    field of every artifact, set to infinity, loads or raises vocabopt's own error."""
    src, obj = small[kind]
    dst = src.with_name(f"inf-{kind}.json")
    for key, value in obj.items():
        if isinstance(value, int) and not isinstance(value, bool):
            dst.write_text(json.dumps({**obj, key: float("inf")}))
            _load_only_our_errors(kind, dst)
