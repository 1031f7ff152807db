"""vocabopt.corpus.cluster, the Dask engine: on a 2-worker LocalCluster, `analyze(engine="dask")` equals the local
engine exactly (counts, tokens, statistics, sources, warnings), also when a worker is killed mid-run; the CLI's
errors are one line."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner

from vocabopt import CorpusStats, analyze
from vocabopt.cli import main
from vocabopt.corpus import cluster as vd
from vocabopt.corpus.files import resolve
from vocabopt.corpus.reader import SourceOptions
from vocabopt.errors import ClusterError, InputError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler():
    """One 2-worker cluster (processes, 1 thread each) for the whole module: starting one costs ~1 s. (Its nannies
    set OMP_NUM_THREADS=1 and the like in this process; later tests get the environment back.)"""
    with (
        vd._environ_kept(),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
            env={"RAYON_NUM_THREADS": "1"},
        ) as cluster,
    ):
        yield cluster.scheduler_address


def both(sources, tokenizer, scheduler, **kw) -> tuple[CorpusStats, CorpusStats, list[str], list[str]]:
    """(local stats, dask stats, local warnings, dask warnings) of the same call."""
    part = kw.pop("partition_bytes", None)
    warn_local, warn_dask = [], []
    local = analyze(sources, tokenizer, on_warning=warn_local.append, **kw)
    dask = analyze(
        sources, tokenizer, engine="dask", scheduler=scheduler, partition_bytes=part, on_warning=warn_dask.append, **kw
    )
    return local, dask, warn_local, warn_dask


def assert_same(local: CorpusStats, dask: CorpusStats) -> None:
    assert np.array_equal(local.counts, dask.counts)
    assert local.tokens == dask.tokens
    assert asdict(local.tokenizer) == asdict(dask.tokenizer)
    assert [asdict(s) for s in local.sources] == [asdict(s) for s in dask.sources]
    assert (local.n_sequences, local.n_bytes, local.n_words) == (dask.n_sequences, dask.n_bytes, dask.n_words)
    assert dask.options.pop("engine") == "dask"
    assert local.options == dask.options
    assert local.summary() == dask.summary()
    assert local.fits == dask.fits


def test_bpe_byte_ranges_of_one_file_equal_local(scheduler, corpus_slice, tokenizer_files):
    calls = []
    local = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]))
    dask = analyze(
        [str(corpus_slice)],
        str(tokenizer_files["bpe"]),
        engine="dask",
        scheduler=scheduler,
        partition_bytes=40_000,
        progress=lambda *a: calls.append(a),
    )
    assert_same(local, dask)
    size = corpus_slice.stat().st_size
    assert len(calls) == -(-size // 40_000) and calls[-1][:2] == (size, size)  # one call per range
    assert calls[-1][2] == local.total


@pytest.mark.parametrize("kind", ["wordpiece", "split_regex"])
def test_documents_are_never_cut_by_a_range(scheduler, tmp_path, corpus_slice, tokenizer_files, kind):
    """--sequence document: ranges split only at empty lines, so [CLS]/[SEP] are counted once per document."""
    lines = [line for line in corpus_slice.read_text().splitlines() if line.strip()]
    docs = ["\n".join(lines[i : i + 1 + i % 7]) for i in range(0, len(lines), 8)]
    seps = ["\n\n", "\r\n\r\n", "\n \n", "\n\n\n"]  # "\n \n" is blank but not a split point: still exact
    path = tmp_path / "docs.txt"
    path.write_bytes("".join(d + seps[i % 4] for i, d in enumerate(docs)).encode())
    local, dask, wl, wd = both(
        [str(path)], str(tokenizer_files[kind]), scheduler, sequence="document", partition_bytes=5_000
    )
    assert_same(local, dask)
    assert local.n_sequences == len(docs)


@pytest.mark.parametrize("tokenizer", ["bpe", "word"])
def test_lines_longer_than_max_chars_equal_local(scheduler, tmp_path, corpus_slice, tokenizer_files, tokenizer):
    """Lines over 1 Mi characters are cut at spaces; for tokenizers whose counts do not depend on where (the chunk
    path, bytes, words), ranges that start inside such a line or cut the 1 Mi-character blocks elsewhere still give
    the local engine's counts."""
    words = corpus_slice.read_text().split()
    long_line = " ".join(words * 3)  # ~0.9 M characters per copy of the words
    path = tmp_path / "long.txt"
    path.write_text("short line\n" * 50 + long_line * 2 + "\n" + "another\n" * 50 + long_line * 3 + "\nend\n")
    tok = "word" if tokenizer == "word" else str(tokenizer_files[tokenizer])
    local, dask, _, _ = both([str(path)], tok, scheduler, sequence="line", partition_bytes=700_000)
    assert_same(local, dask)
    assert local.n_sequences == 50 + 1 + 50 + 1 + 1


def test_word_vocabulary_is_pruned_after_the_merge(scheduler, tmp_path, corpus_slice):
    """A word under --min-count in every part but over it in the whole corpus is kept (pruned on global counts)."""
    parts = [tmp_path / f"p{i}.txt" for i in range(3)]
    for p in parts:
        p.write_text("zyzzyva and more\n" * 2 + "hapax" + p.stem + "\n")
    local, dask, _, _ = both(
        [str(p) for p in parts] + [str(corpus_slice)],
        "word",
        scheduler,
        min_count=3,
        max_vocab=3000,
        partition_bytes=30_000,
    )
    assert_same(local, dask)
    assert "zyzzyva" in dask.tokens and dask.counts[dask.tokens.index("zyzzyva")] == 6
    assert not any(t.startswith("hapax") for t in dask.tokens) and dask.counts[0] > 0  # pruned into <unk>


def test_mixed_sources_and_warnings_equal_local(scheduler, tmp_path, corpus_slice):
    text = corpus_slice.read_text()
    (tmp_path / "a.txt").write_text(text[:100_000])
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write(text[100_000:160_000])
    with bz2.open(tmp_path / "c.txt.bz2", "wt") as f:
        f.write(text[160_000:170_000])
    (tmp_path / "d.txt").write_bytes(b"caf\xe9 ol\xff\xfe\n" * 50 + b"ok\r\nlast line without newline \xe2\x82")
    (tmp_path / "e.txt").write_text("\n \n\t\n")  # blank only: an empty source
    paths = sorted(str(p) for p in tmp_path.iterdir())
    local, dask, wl, wd = both(paths, "bytes", scheduler, partition_bytes=7_000)
    assert_same(local, dask)
    assert wl == wd and any("empty source" in w for w in wd) and any("invalid UTF-8" in w for w in wd)


def test_jsonl_field_and_skipped_lines_equal_local(scheduler, tmp_path, corpus_slice, tokenizer_files):
    lines = corpus_slice.read_text().splitlines()[:2000]
    with open(tmp_path / "r.jsonl", "w") as f:
        for i, line in enumerate(lines):
            f.write("{not json\n" if i % 97 == 5 else json.dumps({"meta": {"body": line}, "id": i}) + "\n")
    assert len(vd.plan_parts([str(tmp_path / "r.jsonl")], None, SourceOptions(), 20_000)) > 5  # split in ranges
    local, dask, _, _ = both(
        [str(tmp_path / "r.jsonl")],
        str(tokenizer_files["unigram"]),
        scheduler,
        field="meta.body",
        skip_bad_lines=True,
        partition_bytes=20_000,
    )
    assert_same(local, dask)
    assert dask.sources[0].skipped_lines == 21


def test_dataset_shards_equal_local(scheduler, tmp_path, corpus_slice, tokenizer_files):
    import datasets

    lines = corpus_slice.read_text().splitlines()[:3000]
    ds = datasets.Dataset.from_dict({"text": lines, "n": list(range(len(lines)))})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"), num_shards={"train": 3})
    parts = vd.plan_parts([], str(tmp_path / "saved"), SourceOptions(), 1 << 20)
    assert len(parts) == 3 and all(p.path.endswith(".arrow") for p in parts)
    local, dask, _, _ = both([], str(tokenizer_files["wordpiece"]), scheduler, dataset=str(tmp_path / "saved"))
    assert_same(local, dask)


def test_fsspec_urls_equal_local(scheduler, tmp_path, corpus_slice, tokenizer_files):
    """Sources given as fsspec URLs (file:// here; s3://, gs://, ... alike) are listed, split and read through
    fsspec, by both engines."""
    text = corpus_slice.read_text()
    cut = text.rfind("\n\n", 0, 150_000) + 2  # at a blank line: the two files hold the slice's documents
    (tmp_path / "a.txt").write_text(text[:cut])
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write(text[cut:])
    urls = [f"file://{tmp_path}/*.txt", f"file://{tmp_path}/b.txt.gz"]
    assert resolve(urls) == [f"file://{tmp_path}/a.txt", f"file://{tmp_path}/b.txt.gz"]
    local, dask, _, _ = both(urls, str(tokenizer_files["bpe"]), scheduler, partition_bytes=40_000)
    assert_same(local, dask)
    plain = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]))
    assert np.array_equal(plain.counts, dask.counts) and plain.n_sequences == dask.n_sequences


def test_a_worker_killed_mid_run_still_gives_the_exact_result(scheduler, corpus_slice, tokenizer_files, monkeypatch):
    """SIGKILL one of the two workers as soon as the first part is counted, while most parts are still pending
    (each task sleeps 0.2 s): Dask reruns its lost tasks and the result is exact."""

    def slow_count_part(*args, **kwargs):
        """The task, then a 0.2 s sleep. Defined here, so cloudpickle sends it by value (the workers cannot import
        this test module); on the worker, `cluster._count_part` is the real task (the patch lives only here)."""
        import time

        from vocabopt.corpus import cluster

        tally = cluster._count_part(*args, **kwargs)
        time.sleep(0.2)
        return tally

    monkeypatch.setattr(vd, "_count_part", slow_count_part)
    with distributed.Client(scheduler, set_as_default=False) as client:
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        killed = []

        def kill_once(done, total, tokens):
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(done < total)

        local = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]))
        dask = analyze(
            [str(corpus_slice)],
            str(tokenizer_files["bpe"]),
            engine="dask",
            scheduler=scheduler,
            partition_bytes=20_000,
            progress=kill_once,
        )
        assert killed == [True]  # killed while parts were pending
        assert_same(local, dask)
        client.wait_for_workers(2, timeout=60)  # the nanny restarted it
        assert victim not in client.run(os.getpid).values()


def test_cli_dask_engine_local_cluster_and_scheduler(tmp_path, corpus_slice, tokenizer_files, scheduler):
    """Also: the run's own LocalCluster leaves this process's environment as it was (no OMP_NUM_THREADS=1)."""
    runner = CliRunner()
    environ = dict(os.environ)
    local = tmp_path / "local.json"
    assert runner.invoke(main, ["analyze", str(corpus_slice), "-t", "word", "-o", str(local), "-q"]).exit_code == 0
    for extra in (["--workers", "2"], ["--scheduler", scheduler]):
        out = tmp_path / "dask.json"
        r = runner.invoke(
            main, ["analyze", str(corpus_slice), "-t", "word", "--engine", "dask", *extra, "-o", str(out)]
        )
        assert r.exit_code == 0, r.output
        assert "tokens" in r.output
        assert_same(CorpusStats.load(local), CorpusStats.load(out))
        assert dict(os.environ) == environ


def _one_line_error(r) -> str:
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.output, r.output
    return lines[0]


def test_cli_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, corpus_slice):
    import dask

    out = tmp_path / "never.json"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        r = CliRunner().invoke(
            main, ["analyze", str(corpus_slice), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "-o", str(out)]
        )
    line = _one_line_error(r)
    assert "tcp://127.0.0.1:9" in line and "dask scheduler" in line
    assert not out.exists()


def test_a_scheduler_without_workers_is_named(corpus_slice):
    import dask

    with (
        distributed.LocalCluster(
            n_workers=0, processes=False, dashboard_address=":0", silence_logs=logging.ERROR
        ) as empty,
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
    ):
        with pytest.raises(ClusterError, match="has no workers; start some with `dask worker "):
            analyze([str(corpus_slice)], "bytes", engine="dask", scheduler=empty.scheduler_address)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--engine", "dask", "--limit-bytes", "1000"], "--limit-bytes with --engine dask"),
        (["--engine", "dask", "--limit-tokens", "1000"], "--limit-tokens with --engine dask"),
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler is for --engine dask"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "leave out --workers"),
    ],
)
def test_cli_refuses_what_the_dask_engine_cannot_do_exactly(corpus_slice, args, needle):
    assert needle in _one_line_error(CliRunner().invoke(main, ["analyze", str(corpus_slice), *args]))


def test_cli_stdin_with_dask_is_refused():
    r = CliRunner().invoke(main, ["analyze", "-", "--engine", "dask"], input="some text\n")
    assert "stdin" in _one_line_error(r)


def test_without_dask_says_how_to_install(monkeypatch, corpus_slice):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    r = CliRunner().invoke(main, ["analyze", str(corpus_slice), "--engine", "dask"])
    assert "pip install 'vocabopt[dask]'" in _one_line_error(r)


class _FakeClient:
    def __init__(self, answers):
        self.answers = answers

    def run(self, fn):
        return self.answers


@pytest.mark.parametrize(
    "answer, needle",
    [
        ((None, []), "cannot import vocabopt"),
        (("0.0.1", []), "same version everywhere"),
        (("__same__", ["/data/x.txt", "/data/y.txt"]), "cannot read /data/x.txt (and 1 more)"),
    ],
)
def test_worker_problems_are_named_with_the_fix(answer, needle):
    import vocabopt

    version, missing = answer
    version = vocabopt.__version__ if version == "__same__" else version
    with pytest.raises(ClusterError, match=r"worker tcp://10\.0\.0\.7:4000") as e:
        vd._check_workers(_FakeClient({"tcp://10.0.0.7:4000": (version, missing)}), [vd.Part(0, "/data/x.txt", 1)])
    assert needle in str(e.value)


def test_probe_runs_where_vocabopt_is_missing(tmp_path):
    """The probe is pickled by value: a worker without vocabopt can run it and say so."""
    import cloudpickle

    blob = cloudpickle.dumps(vd._worker_probe([str(tmp_path), str(tmp_path / "missing")]))
    code = f"import pickle, sys; sys.modules['vocabopt'] = None; print(pickle.loads({blob!r})())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == f"(None, [{str(tmp_path / 'missing')!r}])"


def test_real_workers_report_an_unreadable_source(scheduler, tmp_path):
    with distributed.Client(scheduler, set_as_default=False) as client:
        with pytest.raises(ClusterError, match="cannot read .*nowhere.txt"):
            vd._check_workers(client, [vd.Part(0, str(tmp_path / "nowhere.txt"), 1)])


def test_bad_input_on_a_worker_is_the_same_error(scheduler, tmp_path):
    (tmp_path / "r.jsonl").write_text('{"text": "fine"}\n{broken\n')
    with pytest.raises(InputError, match=r"r.jsonl:2: invalid JSON"):
        analyze([str(tmp_path / "r.jsonl")], "bytes", engine="dask", scheduler=scheduler)
    # Deep in a file read in byte ranges, the line is still numbered from the file's start.
    lines = [json.dumps({"text": f"line {i}"}) for i in range(3000)]
    lines[2345] = '{"text": 7}'
    lines[100] += '\r{"text": "after a lone CR, which also ends a line"}'
    (tmp_path / "big.jsonl").write_bytes(("\n".join(lines) + "\n").encode())
    for engine in ("local", "dask"):
        with pytest.raises(InputError, match=r"big.jsonl:2347: field 'text' holds int"):
            analyze(
                [str(tmp_path / "big.jsonl")],
                "bytes",
                engine=engine,
                partition_bytes=4_000,
                **({"scheduler": scheduler} if engine == "dask" else {}),
            )


def test_spec_and_parts_pickle():
    part = vd.Part(0, "x.txt", 10, byte_range=(0, 10))
    assert pickle.loads(pickle.dumps(part)) == part
