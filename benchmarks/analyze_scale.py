"""Scale: analyze a generated corpus of >= 1 GB and record the peak RSS of the process tree (flat memory).

The corpus is generated with realistic vocabulary growth (Heaps' law: Zipf-Mandelbrot word sampling over a 2M-word
synthetic vocabulary, a fifth of its documents real text; `analyze_throughput.heaps_corpus`), so new distinct pieces
keep arriving as they do in real text and the counts are never a cached pass over copies. Peak RSS is sampled
from /proc every 20 ms, over the whole process tree (worker processes included), and compared with the same run on
a 1/16 slice: flat memory means the 1 GB run needs about what the small run needs.

Usage: python benchmarks/analyze_scale.py [--gb 1.0] [--dir /tmp] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _sections import command, machine, write_section  # noqa: E402
from analyze_throughput import heaps_corpus, peak_rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BPE = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"


def generate(path: Path, n_bytes: int) -> int:
    """Write at least `n_bytes` of text to `path`; returns the bytes written."""
    return heaps_corpus(path, n_bytes)


def run(path: Path, out: Path) -> tuple[float, float, dict]:
    args = [sys.executable, "-m", "vocabopt", "analyze", str(path), "-t", str(BPE), "-q", "-o", str(out)]
    rss, wall = peak_rss_mb(args)
    return rss, wall, json.loads(out.read_text())["summary"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--dir", default=None, help="where to generate the corpus (deleted afterwards)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for frac in (1 / 16, 1.0):
            corpus = Path(tmp) / "corpus.txt"
            size = generate(corpus, int(args.gb * frac * 1e9))
            rss, wall, summary = run(corpus, Path(tmp) / "stats.json")
            rows.append((size, wall, rss, summary["total_tokens"]))
            print(
                f"{size / 1e9:.3f} GB: {wall:.1f} s, peak RSS {rss:.0f} MB, {summary['total_tokens']:,} tokens",
                flush=True,
            )
            corpus.unlink()
    table = ["| corpus (GB) | tokens | wall (s) | MB/s | peak RSS, process tree (MB) |", "|---:|---:|---:|---:|---:|"]
    for size, wall, rss, tokens in rows:
        table.append(f"| {size / 1e9:.3f} | {tokens:,} | {wall:.1f} | {size / 1e6 / wall:.1f} | {rss:.0f} |")
    growth = rows[-1][2] - rows[0][2]
    flat = growth <= 0.1 * rows[0][2]  # within 10% of the small run's peak
    verdict = (
        "memory is flat in corpus size"
        if flat
        else "memory is **not** flat in this run (more than 10% growth; see docs/reliability.md, Known limits)"
    )
    body = (
        f"Machine: {machine()}. Corpus: generated, Heaps' law (Zipf-Mandelbrot words over 2M synthetic ones, a fifth "
        "real text); "
        f"tokenizer kjv-bpe-8k; default workers (one per core above 24 MB). Command: `{command()}`\n\n"
        + "\n".join(table)
        + f"\n\nPeak RSS grows by {growth:+.0f} MB ({growth / rows[0][2]:+.0%}) from the 1/16 slice to the full "
        f"corpus ({rows[-1][0] / rows[0][0]:.0f}x the text): {verdict}."
    )
    print(body)
    if not args.no_write:
        write_section("Analyzer at scale (benchmarks/analyze_scale.py)", body)


if __name__ == "__main__":
    main()
