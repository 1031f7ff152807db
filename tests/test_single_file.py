"""The single-file artifact form (`vocabopt.artifacts`): stats and plans as one `.npz` beside the JSON+sidecar form.

Round trips in both forms against the saved object, one object from both forms, numpy's own reader as an
independent check of the container, tamper / truncation / pickle refusals, atomic replacement, and the CLI verbs
taking `.npz` paths through the loaders.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vocabopt import artifacts
from vocabopt.cli import main
from vocabopt.errors import ArtifactError
from vocabopt.plan import Plan
from vocabopt.profile import synthetic_profile
from vocabopt.stats import CorpusStats

HOSTILE = ['"', "\\", "\n", "\x00", "\u202e", "\ud800", "é", "PK\x03\x04", "header.json"]


def affine(kernel, *c):  # ms; a cheap synthetic device
    return 0.01 + 1e-9 * np.prod(c, axis=0)


@pytest.fixture
def stats() -> CorpusStats:
    rng = np.random.default_rng(0)
    counts = (1000 / np.arange(1, 301) ** 1.1).astype(np.int64)[rng.permutation(300)]  # Zipf counts, shuffled ids
    counts[7] = 0  # a never-seen id keeps its place
    tokens = [f"t{i}" for i in range(300)]
    tokens[: len(HOSTILE)] = HOSTILE
    return CorpusStats.from_counts(counts, tokens=tokens)


@pytest.fixture
def plan(stats) -> Plan:
    return Plan.from_cutoffs(
        stats, hidden=32, cutoffs=[20, 100], batch_tokens=512, predicted={"speedup": 2.5}, provenance={"name": "t"}
    )


def _json_without_array_names(obj: dict) -> dict:
    """The header minus the fields that name where arrays live (sidecar names vs member names)."""
    obj = dict(obj)
    for key in ("arrays", "counts_file"):
        obj.pop(key, None)
    return obj


def _assert_same_stats(a: CorpusStats, b: CorpusStats) -> None:
    assert a.counts.dtype == b.counts.dtype == np.int64
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.tokens == b.tokens and a.tokenizer == b.tokenizer and a.sources == b.sources
    assert (a.fits, a.options, a.n_sequences, a.n_bytes, a.n_words) == (
        b.fits,
        b.options,
        b.n_sequences,
        b.n_bytes,
        b.n_words,
    )
    assert _json_without_array_names(a.to_json()) == _json_without_array_names(b.to_json())


def _assert_same_plan(a: Plan, b: Plan) -> None:
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.counts_by_rank, b.counts_by_rank)
    assert a.order.dtype == b.order.dtype == np.int64
    assert a.to_json() == b.to_json()  # every JSON field: cutoffs, dims, mode, batch, predicted, provenance, summary


# --- round trips ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stats.json", "stats.npz", "STATS.NPZ"])
def test_stats_round_trip_both_forms(tmp_path, stats, name):
    stats.save(tmp_path / name)
    back = CorpusStats.load(tmp_path / name)
    _assert_same_stats(back, stats)
    files = sorted(p.name for p in tmp_path.iterdir())
    single = name.lower().endswith(".npz")
    assert len(files) == (1 if single else 2), files  # one file, or the JSON and its counts sidecar


@pytest.mark.parametrize("name", ["plan.json", "plan.npz"])
def test_plan_round_trip_both_forms(tmp_path, plan, name):
    plan.save(tmp_path / name)
    back = Plan.load(tmp_path / name)
    _assert_same_plan(back, plan)
    assert len(list(tmp_path.iterdir())) == (1 if name.endswith(".npz") else 3)


def test_same_object_from_both_forms(tmp_path, stats, plan):
    stats.save(tmp_path / "s.json")
    stats.save(tmp_path / "s.npz")
    _assert_same_stats(CorpusStats.load(tmp_path / "s.json"), CorpusStats.load(tmp_path / "s.npz"))
    plan.save(tmp_path / "p.json")
    plan.save(tmp_path / "p.npz")
    _assert_same_plan(Plan.load(tmp_path / "p.json"), Plan.load(tmp_path / "p.npz"))
    # the header inside the zip is the JSON form's text, except where the arrays live
    header = json.loads(zipfile.ZipFile(tmp_path / "p.npz").read("header.json"))
    on_disk = json.loads((tmp_path / "p.json").read_text())
    assert _json_without_array_names(header) == _json_without_array_names(on_disk)
    for name in ("order", "counts"):
        assert header["arrays"][name]["sha256"] == on_disk["arrays"][name]["sha256"]  # same .npy bytes


def test_json_form_is_unchanged_by_the_single_file_path(tmp_path, plan):
    """The JSON form still writes content-named sidecars, and its bytes do not depend on a prior .npz save."""
    plan.save(tmp_path / "a.json")
    plan.save(tmp_path / "b.npz")
    plan.save(tmp_path / "c.json")
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["arrays"]["order"]["file"].startswith("a.order.") and a["arrays"]["order"]["file"].endswith(".npy")
    assert (tmp_path / "a.json").read_text().replace("a.order.", "c.order.").replace("a.counts.", "c.counts.") == (
        tmp_path / "c.json"
    ).read_text()


def test_same_content_same_bytes(tmp_path, monkeypatch, plan):
    plan.save(tmp_path / "a.npz")
    later = time.time() + 86_400 * 400  # a save a year later: no clock in the bytes
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "localtime", lambda t=None: time.gmtime(later if t is None else t))
    plan.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_numpy_reads_the_container_without_pickle(tmp_path, stats, plan):
    """Independent reader: numpy's own npz loader, pickle off, sees the header and the same arrays."""
    stats.save(tmp_path / "s.npz")
    plan.save(tmp_path / "p.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["counts"], stats.counts)
        assert json.loads(z["header.json"])["artifact"] == "vocabopt.CorpusStats"
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["order"], plan.order)
        np.testing.assert_array_equal(z["counts"], plan.counts_by_rank)
    assert zipfile.ZipFile(tmp_path / "p.npz").namelist()[0] == "header.json"  # first, for a person listing it


def test_form_is_chosen_by_content_not_only_suffix(tmp_path, stats):
    """A single file renamed to .json still loads (zip magic), and read_header gives its kind for either form."""
    stats.save(tmp_path / "s.npz")
    os.replace(tmp_path / "s.npz", tmp_path / "renamed.json")
    _assert_same_stats(CorpusStats.load(tmp_path / "renamed.json"), stats)
    assert artifacts.read_header(tmp_path / "renamed.json")["artifact"] == "vocabopt.CorpusStats"
    stats.save(tmp_path / "t.json")
    assert artifacts.read_header(tmp_path / "t.json")["artifact"] == "vocabopt.CorpusStats"


# --- refusals ------------------------------------------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy the zip at `src` to `dst` with `edit(members)` applied (a consistent zip: CRCs recomputed)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    edit(members)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _object_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _load_error(path: Path, loader=Plan.load) -> str:
    with pytest.raises(ArtifactError) as e:
        loader(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg  # one line, naming the file
    return msg


def test_truncated_file_is_one_line_error(tmp_path, plan):
    plan.save(tmp_path / "p.npz")
    data = (tmp_path / "p.npz").read_bytes()
    for cut in (0, 3, 40, len(data) // 2, len(data) - 1):
        (tmp_path / "t.npz").write_bytes(data[:cut])
        assert "regenerate" in _load_error(tmp_path / "t.npz")


def test_flipped_byte_is_caught(tmp_path, plan):
    plan.save(tmp_path / "p.npz")
    data = (tmp_path / "p.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "p.npz") as z:
        info = z.getinfo("counts.npy")
    at = info.header_offset + 30 + len(info.filename) + info.file_size - 1  # last byte of the counts member's data
    bad = bytearray(data)
    bad[at] ^= 0xFF
    (tmp_path / "f.npz").write_bytes(bytes(bad))
    assert "CRC" in _load_error(tmp_path / "f.npz")


def test_tampered_array_fails_its_hash(tmp_path, plan):
    """A consistent zip (valid CRCs) whose array was swapped: the header's sha256 refuses it."""
    plan.save(tmp_path / "p.npz")
    swapped = plan.counts_by_rank.copy()
    swapped[0] += 1
    _rewrite(tmp_path / "p.npz", tmp_path / "x.npz", lambda m: m.update({"counts.npy": artifacts.npy_bytes(swapped)}))
    assert "hash differs" in _load_error(tmp_path / "x.npz")


def test_object_array_is_refused_never_unpickled(tmp_path, plan, stats):
    plan.save(tmp_path / "p.npz")
    stats.save(tmp_path / "s.npz")
    for src, loader, member, key in (
        (tmp_path / "p.npz", Plan.load, "order.npy", "order"),
        (tmp_path / "s.npz", CorpusStats.load, "counts.npy", None),
    ):
        evil = _object_npy()

        def edit(m, member=member, key=key, evil=evil):
            m[member] = evil
            header = json.loads(m["header.json"])
            if key:
                header["arrays"][key]["sha256"] = artifacts.sha256_bytes(evil)  # a forger fixes the hash too
            else:
                header["counts_sha256"] = artifacts.sha256_bytes(evil)
            m["header.json"] = json.dumps(header).encode()

        dst = tmp_path / f"evil-{src.name}"
        _rewrite(src, dst, edit)
        assert "allow_pickle" in _load_error(dst, loader)


def test_compressed_member_is_refused_before_it_is_inflated(tmp_path, plan, monkeypatch):
    """Review of issue 16: a deflated member (a zip bomb: 64 MB of zeros in ~64 KB) is refused from its header."""
    plan.save(tmp_path / "p.npz")
    with zipfile.ZipFile(tmp_path / "p.npz") as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr("pad.npy", bytes(64 << 20))
    assert (tmp_path / "bomb.npz").stat().st_size < 1 << 20
    inflated: list[str] = []
    real_read = zipfile.ZipFile.read
    monkeypatch.setattr(
        zipfile.ZipFile, "read", lambda self, name, pwd=None: inflated.append(name) or real_read(self, name, pwd)
    )
    msg = _load_error(tmp_path / "bomb.npz")
    assert "compressed" in msg and "regenerate" in msg and inflated == []
    assert artifacts.is_zip(tmp_path / "bomb.npz") and not artifacts.is_zip(tmp_path / "missing.npz")


def test_members_larger_than_the_archive_are_refused(tmp_path, plan):
    """Stored members cannot add up to more than the archive: a central directory that claims so is refused."""
    plan.save(tmp_path / "p.npz")
    data = bytearray((tmp_path / "p.npz").read_bytes())
    entry = data.index(b"PK\x01\x02")  # the first central directory entry
    data[entry + 24 : entry + 28] = (1 << 30).to_bytes(4, "little")  # its uncompressed size: 1 GiB
    (tmp_path / "big.npz").write_bytes(bytes(data))
    msg = _load_error(tmp_path / "big.npz")
    assert "bytes in a" in msg and f"{len(data)}-byte archive" in msg


def test_missing_member_and_header(tmp_path, plan):
    plan.save(tmp_path / "p.npz")
    _rewrite(tmp_path / "p.npz", tmp_path / "m.npz", lambda m: m.pop("order.npy"))
    assert "'order.npy'" in _load_error(tmp_path / "m.npz")
    _rewrite(tmp_path / "p.npz", tmp_path / "h.npz", lambda m: m.pop("header.json"))
    assert "header.json" in _load_error(tmp_path / "h.npz")


def test_wrong_kind_in_single_file(tmp_path, stats):
    stats.save(tmp_path / "s.npz")
    assert "not a vocabopt.Plan" in _load_error(tmp_path / "s.npz")


def test_missing_sidecar_names_it_and_suggests_single_file(tmp_path, plan):
    plan.save(tmp_path / "plan.json")
    sidecar = tmp_path / json.loads((tmp_path / "plan.json").read_text())["arrays"]["counts"]["file"]
    sidecar.unlink()
    with pytest.raises(ArtifactError) as e:
        Plan.load(tmp_path / "plan.json")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{sidecar}: sidecar missing (named by plan.json)")
    assert "plan.npz" in msg and "regenerate both" in msg


# --- atomic writes -------------------------------------------------------------------------------------------------


class _HalfWriter:
    """A file that writes half of what it is given, then fails like a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("kind", ["stats", "plan"])
def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch, stats, plan, kind):
    obj = stats if kind == "stats" else plan
    path = tmp_path / f"{kind}.npz"
    obj.save(path)
    before = path.read_bytes()
    changed = (
        CorpusStats.from_counts(stats.counts + 1)
        if kind == "stats"
        else Plan.from_cutoffs(stats, hidden=32, cutoffs=[10, 50])
    )
    real = os.fdopen
    monkeypatch.setattr(artifacts.os, "fdopen", lambda fd, *a, **k: _HalfWriter(real(fd, *a, **k)))
    with pytest.raises(ArtifactError, match="write failed"):
        changed.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old artifact, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left behind
    (CorpusStats if kind == "stats" else Plan).load(path)  # and it still loads


# --- the CLI takes the single-file form through the loaders ------------------------------------------------------


def test_cli_optimize_and_export_take_npz(tmp_path, stats):
    stats.save(tmp_path / "stats.npz")
    synthetic_profile(affine).save(tmp_path / "prof.json")
    runner = CliRunner()
    args = ["optimize", str(tmp_path / "stats.npz"), "--hidden", "64", "--batch-tokens", "512"]
    r = runner.invoke(main, [*args, "--profile", str(tmp_path / "prof.json"), "-o", str(tmp_path / "plan.npz")])
    assert r.exit_code == 0, r.output
    plan = Plan.load(tmp_path / "plan.npz")
    assert plan.vocab_size == stats.vocab_size
    np.testing.assert_array_equal(plan.counts_by_id, stats.counts)  # the counts came through the zip
    r = runner.invoke(main, ["export", str(tmp_path / "plan.npz"), "-o", str(tmp_path / "head.py")])
    assert r.exit_code == 0, r.output
    import torch

    (sidecar,) = tmp_path.glob("head.order.*.pt")
    exported = torch.load(sidecar, weights_only=True)
    np.testing.assert_array_equal(exported["order"].numpy(), plan.order)  # the exported head has the plan's order
    r = runner.invoke(
        main, ["merge", str(tmp_path / "stats.npz"), str(tmp_path / "stats.npz"), "-o", str(tmp_path / "m.npz")]
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(CorpusStats.load(tmp_path / "m.npz").counts, 2 * stats.counts)  # shards sum
    # a broken single file is a one-line error, no traceback
    (tmp_path / "bad.npz").write_bytes((tmp_path / "plan.npz").read_bytes()[:100])
    r = runner.invoke(main, ["export", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "h2.py")])
    assert r.exit_code != 0 and "Traceback" not in r.output and "bad.npz" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_report_reads_the_single_file_form(tmp_path):
    from vocabopt.html_report import read_artifact

    stats = CorpusStats.from_counts(np.array([5, 3, 0, 2], dtype=np.int64))
    stats.save(tmp_path / "stats.npz")
    back = read_artifact(tmp_path / "stats.npz")
    assert isinstance(back, CorpusStats) and back.counts.tolist() == [5, 3, 0, 2]
