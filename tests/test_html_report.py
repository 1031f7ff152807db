"""vocabopt.html_report and `vocabopt report`: one self-contained HTML page, parsed back with the stdlib parser."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner

from vocabopt import tradeoff
from vocabopt.bench import BenchResult, BenchRow
from vocabopt.cli import main
from vocabopt.decode import DecodeResult, DecodeRow
from vocabopt.errors import InputError
from vocabopt.html_report import read_artifact, render
from vocabopt.optimize import optimize
from vocabopt.plan import Plan
from vocabopt.profile import synthetic_profile
from vocabopt.stats import CorpusStats
from vocabopt.validate import ValidationResult, ValidationRun

PNG = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"
V = 30_000


class Page(HTMLParser):
    """What a browser would see: section ids, every tag's attributes, the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []  # every table row's cell texts, in page order
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "section":
            self.sections.append(dict(attrs)["id"])
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_data(self, data):
        self.text.append(data)
        if self.rows and self.rows[-1] and self.tags[-1][0] in ("td", "th"):
            self.rows[-1][-1] += data

    def row(self, first: str) -> list[str]:
        """The first table row whose first cell is `first`."""
        return next(r for r in self.rows if r and r[0] == first)

    def tables(self) -> str:
        return " ".join(self.text)


# --- small artifacts, made the way the pipeline makes them -----------------------------------------------------------


@pytest.fixture(scope="module")
def stats() -> CorpusStats:
    counts = np.round(1e6 / np.arange(1, V + 1) ** 1.1).astype(np.int64)
    counts[-40:] = 0  # dead ids
    tokens = [f"t{i}" for i in range(V)]
    tokens[-1] = EVIL  # a token string the page must escape (never seen, so listed among the under-trained)
    st = CorpusStats.from_counts(counts, tokens=tokens, name="bpe <b>30k</b>")
    st.options["sequence"] = "line"
    return st


@pytest.fixture(scope="module")
def profile():
    return synthetic_profile(lambda kernel, *c: 0.01 + 1e-7 * np.prod(c, axis=0))


@pytest.fixture(scope="module")
def plan(stats, profile) -> Plan:
    p = optimize(stats, hidden=64, profile=profile, batch_tokens=512, min_capacity=0.0)
    p.provenance["name"] = EVIL
    return p


@pytest.fixture(scope="module")
def tuned(plan) -> Plan:
    """A plan carrying tune evidence: penalties for three frontier designs, the monotone model and the choice from
    `vocabopt.tradeoff` (the functions `tune` itself uses)."""
    frontier = plan.predicted["frontier"]
    picks = [frontier[0], frontier[len(frontier) // 2], frontier[-2]]
    measured = []
    for i, d in enumerate(picks):
        pen = 0.08 * (1 - d["capacity"])  # falls with capacity
        bands = [
            {"ranks": [0, 500], "ppl": 30.0, "full_ppl": 29.5},
            {"ranks": [500, V], "ppl": 900.0 + i, "full_ppl": 850.0},
        ]
        measured.append(
            {**d, "name": f"d{i}", "round": 0, "predicted_ms": d["time_ms"], "proxy_step_ms": 5.0 + i,
             "proxy_speedup": 2.0 - 0.3 * i, "heldout_ppl": 100 * (1 + pen), "fitted": False, "at_length": None,
             "at_end": {}, "equal_time_penalty": None, "equal_time_at_steps": 30, "bands": bands, "ece": 0.03,
             "temperature": 1.1, "penalty": pen, "low": pen - 0.01, "high": pen + 0.01}
        )  # fmt: skip
    model = tradeoff.penalty_model(measured)
    chosen, met = tradeoff.choose(frontier, model, 0.02, measured)
    p = Plan(**{k: getattr(plan, k) for k in ("vocab_size", "hidden", "order", "counts_by_rank", "mode")},
             cutoffs=chosen["cutoffs"], proj_dims=chosen["proj_dims"], batch_tokens=512, predicted=plan.predicted,
             provenance={**plan.provenance})  # fmt: skip
    p.provenance["tune"] = {
        "tolerance": 0.02, "met": False, "met_at_end_of_run": met, "basis": "measured after 30 proxy steps",
        "train_tokens": None, "chosen": chosen, "measured": measured, "model": model,
        "full_softmax": {"heldout_ppl": 100.0, "proxy_step_ms": 9.0, "ece": 0.02, "temperature": 1.05},
    }  # fmt: skip
    return p


@pytest.fixture(scope="module")
def bench() -> BenchResult:
    rows = [
        BenchRow("vocabopt", [16, 480], [16, 4], 2.0, 1.9, 2.2, 20, 1_000_000, 2_000_000, predicted_ms=2.4),
        BenchRow("full softmax", [], [], 30.0, 29.0, 45.0, 20, 60_000_000, 90_000_000, predicted_ms=28.0),
    ]
    notes = ["ALSWL left out: custom projections"]
    return BenchResult(plan="plan.json", vocab_size=V, hidden=64, batch_tokens=512, device="cpu", dtype="float32",
                       rows=rows, environment={"torch": "2.13.0"}, notes=notes)  # fmt: skip


@pytest.fixture(scope="module")
def validation() -> ValidationResult:
    def run(name: str, cutoffs: list[int], ppl: float) -> ValidationRun:
        return ValidationRun(
            name=name, cutoffs=cutoffs, proj_dims=[16] * len(cutoffs), layer_params=1000, heldout_loss=np.log(ppl),
            heldout_ppl=ppl, step_ms=10.0 if cutoffs else 30.0, tokens_per_s=5000.0, saved_bytes=10**6,
            peak_bytes=None, train_curve=[(1, 6.0), (2, 5.0), (3, 4.8)], eval_curve=[(3, 4.9)],
            bands=[{"ranks": [0, 500], "tokens": 10, "loss": 3.0, "ppl": 20.1}, {"ranks": [500, V], "tokens": 0,
                    "loss": None, "ppl": None}], accuracy=0.2, ece=0.04, temperature=1.2,
        )  # fmt: skip

    settings = {"model": "lstm", "hidden": 64, "vocab_size": V, "tokens_per_step": 64, "steps": 3, "eval_tokens": 64}
    return ValidationResult(runs=[run("vocabopt", [500], 131.0), run("full softmax", [], 128.0)], settings=settings)


@pytest.fixture(scope="module")
def decode() -> DecodeResult:
    rows = [DecodeRow("greedy", 1, "vocabopt", 0.5, 0.5, 0.4, 0.6, 30, 2, 4, True),
            DecodeRow("greedy", 1, "full lm_head", 1.5, 1.5, 1.4, 1.6, 30)]  # fmt: skip
    return DecodeResult(plan="plan.json", vocab_size=V, hidden=64, device="cpu", rows=rows)


# --- the page --------------------------------------------------------------------------------------------------------


def _images(page: Page) -> list[bytes]:
    srcs = [a["src"] for tag, a in page.tags if tag == "img"]
    assert all(s.startswith("data:image/png;base64,") for s in srcs), srcs
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in srcs]


def test_sections_follow_the_artifacts_given(stats, plan, tuned, bench, validation, profile, decode):
    assert Page(render([stats])).sections == ["stats"]
    assert Page(render([plan])).sections == ["plan"]  # no tune evidence, no tune section
    assert Page(render([tuned])).sections == ["plan", "tune"]
    assert Page(render([validation, bench])).sections == ["bench", "validate"]  # pipeline order, not argument order
    everything = Page(render([validation, decode, tuned, bench, profile, stats]))
    assert everything.sections == ["stats", "profile", "plan", "tune", "bench", "decode", "validate"]
    assert Page(render([plan, tuned])).sections == ["plan", "plan-2", "tune"]
    nav = [a["href"] for tag, a in everything.tags if tag == "a"]
    assert nav == [f"#{s}" for s in everything.sections]  # every link stays inside the page


def test_figures_are_inline_pngs_and_nothing_is_fetched(stats, tuned, bench, validation):
    page = Page(render([stats, tuned, bench, validation]))
    pngs = _images(page)
    assert len(pngs) == 4  # rank-frequency, frontier, tune, learning curves (bench is a table)
    assert all(p.startswith(PNG) and len(p) > 1000 for p in pngs)
    urls = [v for _, attrs in page.tags for k, v in attrs.items() if k in ("src", "href", "action", "data") and v]
    assert not [u for u in urls if not u.startswith(("data:", "#"))]
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert "http" not in "".join(t for t in page.text if "{" in t)  # the inline CSS imports nothing


def test_strings_from_artifacts_are_escaped(stats, plan):
    text = render([stats, plan])
    page = Page(text)
    assert not [t for t, _ in page.tags if t in ("script", "b")]
    shown = page.tables()
    assert EVIL in shown  # the provenance name and the token string, shown as text
    assert "bpe <b>30k</b>" in shown
    assert text.count("&lt;script&gt;") >= 2


def test_stats_section_shows_coverage_and_dead_ids(stats):
    page = Page(render([stats]))
    cum = np.cumsum(np.sort(stats.counts)[::-1]) / stats.total
    for share in (0.5, 0.9, 0.99):
        k = int(np.argmax(cum >= share - 1e-12)) + 1  # brute force: the first k whose top-k ids reach the share
        assert page.row(f"{share:.1%}")[1] == f"{k:,}"
    assert page.row("dead ids (never seen)")[1] == "40 (0.1%)"  # 40 of 30,000
    assert page.row("sequence mode")[1] == "line"
    never = {r[1]: int(r[2]) for r in page.rows if r and r[0] == "never seen"}  # by kind; EVIL looks "special"
    assert sum(never.values()) == 40 and never["special"] == 1


def test_plan_section_shows_prediction_folklore_and_provenance(plan):
    shown = Page(render([plan])).tables()
    assert f"{plan.predicted['speedup']:.2f}x predicted speed-up" in shown
    for f in plan.predicted["folklore"]:
        assert f["name"] in shown and f"{f['time_ms']:.2f}" in shown
    assert "vocabopt.optimize" in shown  # provenance method


def test_hand_made_plan_has_no_prediction(stats):
    page = Page(render([Plan.from_cutoffs(stats, hidden=64, cutoffs=[100, 1000])]))
    assert "No prediction" in page.tables() and not _images(page)


def test_tune_and_bench_tables(tuned, bench):
    page = Page(render([tuned, bench]))
    shown = page.tables()
    t = tuned.provenance["tune"]
    for m in t["measured"]:
        assert page.row(m["name"])[3:5] == [f"{m['penalty']:+.2%}", f"[{m['low']:+.2%}, {m['high']:+.2%}]"]
    assert f"Chosen: cutoffs {t['chosen']['cutoffs']}" in shown and "end of the run only" in shown
    assert "Confirmation" not in shown and "out of the race" not in shown
    raced = copy.deepcopy(tuned)  # two seeds, the first design out of the race after one, a failed confirmation
    raced.provenance["tune"]["proxy"] = {"seeds": 2}
    raced.provenance["tune"]["measured"][0]["seeds"] = 1
    conf = {"seed": 2, "penalty": 0.031, "low": 0.02, "high": 0.04, "runs": 1, "confirmed": False}
    raced.provenance["tune"]["confirmation"] = conf
    page = Page(render([raced]))
    first = raced.provenance["tune"]["measured"][0]["name"]
    assert page.row(first)[4].endswith("(1 seed: out of the race)")
    assert "Confirmation (one more run, seed 2): penalty +3.10%" in page.tables() and "NOT confirmed" in page.tables()
    page = Page(render([bench]))  # alone: the plan's provenance has a "vocabopt" row too
    ours = page.row("vocabopt")  # measured, p20-p80, spread, predicted, error (2.4 - 2) / 2, speed-up 30 / 2
    assert ours[2:8] == ["2.00", "1.90–2.20", "1.16x", "2.40", "+20.00%", "15.00x"]
    assert page.row("full softmax")[4] == "1.55x" and "noisy" in page.tables()  # 45 / 29


def test_render_refuses_what_it_cannot_show():
    with pytest.raises(InputError, match="loaded vocabopt artifacts"):
        render([{"artifact": "vocabopt.Plan"}])
    with pytest.raises(InputError):
        render([])


# --- files and the CLI ---------------------------------------------------------------------------------------------


def test_read_artifact_recognises_each_kind(tmp_path, stats, plan, bench, validation):
    for name, a in (("s.json", stats), ("p.json", plan), ("b.json", bench), ("v.json", validation)):
        a.save(tmp_path / name)
        assert type(read_artifact(tmp_path / name)) is type(a)


def test_a_renamed_single_file_artifact_is_recognised_by_its_magic(tmp_path, plan):
    """A plan.npz renamed to .json (or to no suffix) loads with Plan.load; the report reads it the same way."""
    plan.save(tmp_path / "plan.npz")
    for name in ("plan.json", "plan"):
        shutil.copy(tmp_path / "plan.npz", tmp_path / name)
        back = read_artifact(tmp_path / name)
        assert isinstance(back, Plan) and back.cutoffs == plan.cutoffs
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(tmp_path / "plan.json"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert Page(out.read_text(encoding="utf-8")).sections[0] == "plan"


@pytest.mark.parametrize(
    "content, why",
    [("hello", "not JSON"), ('{"a": 1}', "no 'artifact' field"), ("[1, 2]", "no 'artifact' field"),
     ('{"artifact": "other.Thing"}', "artifact 'other.Thing'")],
)  # fmt: skip
def test_read_artifact_names_a_file_that_is_not_one(tmp_path, content, why):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(InputError, match="not a vocabopt artifact") as e:
        read_artifact(path)
    assert str(path) in str(e.value) and why in str(e.value) and "\n" not in str(e.value)


def test_cli_report(tmp_path, stats, tuned, bench, validation):
    paths = []
    for name, a in (("stats.json", stats), ("plan.json", tuned), ("bench.json", bench), ("val.json", validation)):
        a.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["report", *paths, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    page = Page(out.read_text(encoding="utf-8"))
    assert page.sections == ["stats", "plan", "tune", "bench", "validate"]
    assert all(p.startswith(PNG) for p in _images(page))
    assert not list(tmp_path.glob(".report.html.*"))  # the atomic writer's temp file is gone
    res = CliRunner().invoke(main, ["report", paths[2], "-o", str(tmp_path / "b.html"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["artifacts"] == ["BenchResult"]
    assert CliRunner().invoke(main, ["report", paths[2], "-o", str(tmp_path / "q.html"), "-q"]).output == ""


def test_cli_report_errors(tmp_path, bench):
    bench.save(tmp_path / "bench.json")
    junk = tmp_path / "notes.txt"
    junk.write_text("not an artifact\n")
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(tmp_path / "bench.json"), str(junk), "-o", str(out)])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and "not a vocabopt artifact" in res.output
    assert "Traceback" not in res.output and not out.exists()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing.json"), "-o", str(out)])
    assert res.exit_code == 1 and "no such file" in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path / "bench.json"), "-o", str(tmp_path)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert CliRunner().invoke(main, ["report"]).exit_code == 2  # no artifact: a usage error


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.mark.slow
def test_a_headless_browser_renders_the_page(tmp_path, stats, tuned, validation):
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip("no headless Chromium/Chrome on this machine")
    page = tmp_path / "report.html"
    page.write_text(render([stats, tuned, validation]), encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--window-size=1280,4000", f"--screenshot={shot}",
         page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = shot.read_bytes()
    assert data.startswith(PNG) and len(data) > 50_000  # figures and tables drawn, not a blank page
