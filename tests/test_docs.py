"""Figure provenance: every benchmark figure README.md quotes is one that docs/benchmarks.md holds.

Inputs: README.md (its "## Benchmarks" table, and every prose sentence outside code blocks that quotes a ratio
"5.45x" or a percentage) and docs/benchmarks.md, which the scripts under benchmarks/ write (benchmarks/README.md
maps each figure to its script and section). Fails when README quotes a number that no benchmark run wrote, e.g. a
range merged from several runs or a figure rounded differently from the table it came from.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH = ROOT / "docs" / "benchmarks.md"

# sign, number (thousands commas allowed), unit; "a–b" ranges give two figures
FIGURE = re.compile(r"(?<![\w.])([+\-−]?)(\d[\d,]*(?:\.\d+)?)\s?(x(?![\w])|%|ms|min|s(?![\w])|MB|GB)?")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
RANGE = re.compile(r"(\d[\d,]*(?:\.\d+)?)–(\d[\d,]*(?:\.\d+)?)\s?(x|%|ms|min|s|MB|GB)?")  # "1.57–1.85x"
# Percentages in README prose that are settings or definitions, not measurements: the phrase, and why.
SETTINGS = {
    "within 1% of": "tune's --tolerance example",
    "a 95% interval": "the interval's coverage",
    "last 5%": "validate's held-out share",
    "(5%) faster": "drift's --min-gain default",
    "the 1% tolerance": "tune's --tolerance",
    "tolerance 1%": "tune's --tolerance",
}


def figures(text: str) -> list[tuple[str, str, str]]:
    """(sign, number without commas, unit) of every number in `text`; dates are dropped (checked whole)."""
    text = re.sub(r"issue \d+", " ", DATE.sub(" ", text))  # references, not figures
    text = RANGE.sub(lambda m: f"{m[1]}{m[3] or ''} {m[2]}{m[3] or ''}", text)
    return [(s.replace("−", "-"), n.replace(",", ""), u or "") for s, n, u in FIGURE.findall(text)]


def quoted(fig: tuple[str, str, str]) -> str:
    return "".join(fig)


def present(fig: tuple[str, str, str], source: set[tuple[str, str, str]]) -> bool:
    """A ratio or percentage must appear with its unit (and a sign, if it has one); a plain number, as a number."""
    sign, num, unit = fig
    if unit in ("x", "%"):
        return any(n == num and u == unit and (s == sign or not sign) for s, n, u in source)
    return any(n == num for _, n, _ in source)


def readme_table() -> list[tuple[str, str]]:
    """(what, result) rows of README's benchmark table."""
    text = README.read_text()
    section = text[text.index("## Benchmarks") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    return [(what.strip(), result.strip()) for what, result in rows[1:]]  # rows[0] is the header


def readme_prose_claims() -> list[tuple[str, str]]:
    """(figure, context) of ratios and percentages quoted in README prose, outside code blocks and the table."""
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    for phrase in SETTINGS:
        text = text.replace(phrase, "")
    out = []
    for line in text.splitlines():
        if line.startswith("|"):
            continue  # the benchmark table: checked number by number
        for m in re.finditer(r"[+\-−]?\d[\d,]*(?:\.\d+)?(?:[–-]\d[\d,]*(?:\.\d+)?)?\s?(?:x\b|%)", line):
            out.append((m.group(), line.strip()))
    return out


def test_readme_has_a_benchmark_table():
    rows = readme_table()
    assert len(rows) >= 5, "README.md's ## Benchmarks table was not found or lost its rows"


def sections() -> dict[str, str]:
    """docs/benchmarks.md's sections by the script named in their heading ("## Layer speed (benchmarks/x.py)")."""
    out = {}
    for part in BENCH.read_text().split("\n## ")[1:]:
        m = re.search(r"benchmarks/\w+\.py", part.splitlines()[0])
        if m:
            out[m.group()] = out.get(m.group(), "") + part
    return out


@pytest.mark.parametrize("what,result", readme_table(), ids=lambda s: s[:40])
def test_readme_table_figures_are_in_benchmarks_md(what, result):
    scripts = re.findall(r"benchmarks/\w+\.py", what)
    assert scripts, f"README.md benchmark row {what!r} does not name the script that produces it"
    written = sections()
    absent = [s for s in scripts if s not in written]
    assert not absent, f"README.md row {what!r}: docs/benchmarks.md has no section written by {absent}"
    text = "".join(written[s] for s in scripts)
    source = set(figures(text))
    missing = [quoted(f) for f in figures(result) if not present(f, source)]
    missing += [d for d in DATE.findall(result) if d not in text]
    assert not missing, (
        f"README.md benchmark row {what!r} quotes {missing}, not in the docs/benchmarks.md section of {scripts}: "
        "quote the figure the script wrote there (benchmarks/README.md says which), or drop it"
    )


def test_readme_prose_ratios_and_percentages_are_in_benchmarks_md():
    source = set(figures(BENCH.read_text()))
    bad = [
        (fig, line[:100]) for fig, line in readme_prose_claims() if not all(present(f, source) for f in figures(fig))
    ]
    assert not bad, f"README.md quotes figures that no benchmark wrote into docs/benchmarks.md: {bad}"


def test_checker_rejects_what_no_run_wrote():
    """The check itself: a merged range, a re-rounded ratio and a figure absent from the source all fail."""
    source = set(figures("| vocabopt | 100.6 | 1.85x | -1.6% | 15.58x |"))
    assert present(("", "100.6", "ms"), source)
    assert present(("", "1.85", "x"), source)
    assert present(("-", "1.6", "%"), source)
    assert not present(("", "1.57", "x"), source)  # the other end of "1.57–1.85x"
    assert not present(("", "15.6", "x"), source)  # 15.58x re-rounded
    assert not present(("+", "1.6", "%"), source)  # wrong sign
    assert not present(("", "1.85", "%"), source)  # wrong unit
    assert figures("1.57–1.85x, V=262,144, 2026-11-22") == [("", "1.57", "x"), ("", "1.85", "x"), ("", "262144", "")]
