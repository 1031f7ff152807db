"""The analyze/merge/compare verbs through click's CliRunner: exit codes, output, artifacts, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from vocabopt import CorpusStats
from vocabopt.cli import main


def test_analyze_writes_stats_and_plot(tmp_path, corpus_slice, tokenizer_files):
    out, plot = tmp_path / "s.json", tmp_path / "rank.png"
    r = CliRunner().invoke(
        main, ["analyze", str(corpus_slice), "-t", str(tokenizer_files["bpe"]), "-o", str(out), "--plot", str(plot)]
    )
    assert r.exit_code == 0, r.output
    assert "tokens" in r.output and "power law" in r.output
    stats = CorpusStats.load(out)
    assert stats.total > 0 and plot.read_bytes()[:4] == b"\x89PNG"


def test_analyze_json_and_stdin(corpus_slice):
    text = corpus_slice.read_text()
    r = CliRunner().invoke(main, ["analyze", "-", "--json", "-q"], input=text)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)["summary"]
    # the default counts documents (blank-line-separated blocks) with the newlines inside them
    documents = [d.strip("\n") for d in text.split("\n\n") if d.strip()]
    assert summary["total_tokens"] == len("".join(documents).encode())
    assert summary["sequences"] == len(documents)


def test_merge_and_compare(tmp_path, corpus_slice, tokenizer_files):
    runner = CliRunner()
    for name in ("a", "b"):
        out = str(tmp_path / f"{name}.json")
        r = runner.invoke(main, ["analyze", str(corpus_slice), "-t", "word", "-o", out, "-q"])
        assert r.exit_code == 0, r.output
    a, b, m = (str(tmp_path / f"{n}.json") for n in "abm")
    r = runner.invoke(main, ["merge", a, b, "-o", m])
    assert r.exit_code == 0, r.output
    a, m = CorpusStats.load(tmp_path / "a.json"), CorpusStats.load(tmp_path / "m.json")
    assert (m.counts == 2 * a.counts).all()
    r = runner.invoke(
        main, ["compare", str(corpus_slice), "-t", str(tokenizer_files["bpe"]), "-t", "bytes", "--json", "-q"]
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["vocab_size"] for row in rows] == [8000, 256]


def test_errors_are_one_line_and_write_nothing(tmp_path, corpus_slice, tokenizer_files):
    runner = CliRunner()
    out = tmp_path / "never.json"
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01")
    cases = [
        ["analyze", str(tmp_path / "missing.txt"), "-o", str(out)],
        ["analyze", str(tmp_path / "bin.txt"), "-o", str(out)],
        ["analyze", str(corpus_slice), "-t", str(tmp_path / "nope.json"), "-o", str(out)],
        ["merge", str(tmp_path / "missing.json"), "-o", str(out)],
    ]
    runner.invoke(main, ["analyze", str(corpus_slice), "-t", "bytes", "-o", str(tmp_path / "b.json"), "-q"])
    runner.invoke(main, ["analyze", str(corpus_slice), "-t", "word", "-o", str(tmp_path / "w.json"), "-q"])
    cases.append(["merge", str(tmp_path / "b.json"), str(tmp_path / "w.json"), "-o", str(out)])
    for args in cases:
        r = runner.invoke(main, args)
        assert r.exit_code == 1, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, r.output)
        assert "Traceback" not in r.output
        assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "vocabopt", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "analyze" in r.stdout


def test_the_cli_and_analyze_import_no_torch(corpus_slice, tokenizer_files, tmp_path):
    """Every command pays the CLI's imports: torch (~1 s) waits for a command that builds a layer or profiles."""
    script = (
        "import sys\n"
        "from vocabopt.cli import main\n"
        "assert 'torch' not in sys.modules, 'vocabopt.cli imported torch'\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'vocabopt analyze imported torch'\n"
    )
    args = ["analyze", str(corpus_slice), "-t", str(tokenizer_files["bpe"]), "-o", str(tmp_path / "s.json"), "-q"]
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_analyze_reports_under_trained_ids(corpus_slice, tokenizer_files):
    r = CliRunner().invoke(main, ["analyze", str(corpus_slice), "-t", str(tokenizer_files["bpe"]), "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    never = out["under_trained"]["never"]
    assert sum(g["n"] for g in never.values()) == out["summary"]["never_seen_ids"]
    r = CliRunner().invoke(main, ["analyze", str(corpus_slice), "-t", str(tokenizer_files["bpe"]), "-q"])
    assert "under-trained  never seen:" in r.output


def test_unknown_tokenizer_file_is_one_line(tmp_path, corpus_slice):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\x00\x01")
    r = CliRunner().invoke(main, ["analyze", str(corpus_slice), "-t", str(bad), "-q"])
    assert r.exit_code == 1 and "SentencePiece .model" in r.output and "Traceback" not in r.output
