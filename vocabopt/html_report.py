"""The report stage: the artifacts a user has -> one self-contained HTML page to open, share or attach to a review.

Inputs: any of CorpusStats, DeviceProfile, Plan (a tuned one adds its tune evidence), BenchResult, DecodeResult,
ValidationResult (`read_artifact` loads each from its file, recognised by its JSON "artifact" field).
Output: one HTML string (`render`): inline CSS, figures as base64 PNG data URIs from `vocabopt.plots`, no script, no
network. Every string taken from an artifact is HTML-escaped. A section appears only for an artifact given.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import artifacts, plots
from .bench import ARTIFACT as BENCH
from .bench import BenchResult, noise_warnings
from .decode import ARTIFACT as DECODE
from .decode import DecodeResult
from .errors import ArtifactError, InputError
from .optimize import folklore_skipped
from .plan import ARTIFACT as PLAN
from .plan import Plan
from .profile import ARTIFACT as PROFILE
from .profile import DeviceProfile
from .stats import ARTIFACT as STATS
from .stats import CorpusStats
from .validate import ARTIFACT as VALIDATE
from .validate import ValidationResult
from .version import __version__

LOADERS: dict[str, Callable[[Any], Any]] = {
    STATS: CorpusStats.load,
    PROFILE: DeviceProfile.load,
    PLAN: Plan.load,
    BENCH: BenchResult.load,
    DECODE: DecodeResult.load,
    VALIDATE: ValidationResult.load,
}
KINDS_TEXT = "stats, profile, plan, bench, decode or validate JSON written by vocabopt"
DASH = "–"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #1b1f24; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2em;
margin-top: 2em; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f6f8fa; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.meta { color: #57606a; } .warn { color: #9a6700; } .bad { color: #cf222e; font-weight: 600; }
.good { color: #1a7f37; font-weight: 600; } code { background: #f6f8fa; padding: 0 .2em; }
nav a { margin-right: 1em; }
"""


# --- loading ----------------------------------------------------------------------------------------------------


def read_artifact(path: str | Path) -> Any:
    """The artifact at `path`, loaded by its own class (recognised by the JSON "artifact" field).

    Raises InputError for a file that is not a vocabopt artifact the report shows; the loaders' ArtifactError for a
    vocabopt artifact that is corrupt or lacks its sidecars."""
    path = Path(path)
    try:
        if path.is_file() and (artifacts.is_single_file(path) or artifacts.is_zip(path)):  # the one-file form, any name
            obj = artifacts.read_header(path)
        else:
            obj = json.loads(path.read_text(encoding="utf-8"))
    except ArtifactError as e:
        raise InputError(str(e)) from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; pass the artifact files in it ({KINDS_TEXT})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = "not JSON" if isinstance(e, json.JSONDecodeError | UnicodeDecodeError) else str(e)
        raise InputError(f"{path}: not a vocabopt artifact ({reason}); pass a {KINDS_TEXT}") from None
    kind = obj.get("artifact") if isinstance(obj, dict) else None
    if kind not in LOADERS:
        found = "no 'artifact' field" if kind is None else f"artifact {str(kind)[:60]!r}"
        raise InputError(f"{path}: not a vocabopt artifact the report shows ({found}); pass a {KINDS_TEXT}")
    return LOADERS[kind](path)


# --- the page ---------------------------------------------------------------------------------------------------

ORDER = (CorpusStats, DeviceProfile, Plan, BenchResult, DecodeResult, ValidationResult)  # pipeline order


def render(artifacts: Iterable[Any], *, title: str = "vocabopt report", sources: list[str] | None = None) -> str:
    """One self-contained HTML page with a section per artifact (a tuned plan adds a tune section).

    Args:
        artifacts: loaded artifacts (CorpusStats, DeviceProfile, Plan, BenchResult, DecodeResult,
            ValidationResult), shown in pipeline order whatever order they come in.
        title: the page's title.
        sources: the files they were read from, listed under the title.

    Example:
        >>> page = vocabopt.html_report.render([CorpusStats.load("stats.json"), Plan.load("plan.json")])
    """
    items = list(artifacts)
    unknown = [type(a).__name__ for a in items if not isinstance(a, ORDER)]
    if unknown or not items:
        raise InputError(f"render: cannot show {unknown or 'nothing'}; pass loaded vocabopt artifacts")
    items.sort(key=lambda a: next(i for i, cls in enumerate(ORDER) if isinstance(a, cls)))
    sections: list[tuple[str, str, str]] = []  # (id, heading, body html)
    seen: dict[str, int] = {}
    for a in items:
        for kind, heading, body in _sections(a):
            seen[kind] = seen.get(kind, 0) + 1
            sid = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
            sections.append((sid, heading if seen[kind] == 1 else f"{heading} ({seen[kind]})", body))
    nav = " ".join(f'<a href="#{sid}">{_e(h)}</a>' for sid, h, _ in sections)
    listed = "".join(f"<li><code>{_e(s)}</code></li>" for s in sources or [])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">made by vocabopt {_e(__version__)}; one self-contained file (no scripts, no network)</p>',
        f"<ul class='meta'>{listed}</ul>" if listed else "",
        f"<nav>{nav}</nav>",
        *(f'<section id="{sid}"><h2>{_e(h)}</h2>\n{body}</section>' for sid, h, body in sections),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _sections(a: Any) -> list[tuple[str, str, str]]:
    if isinstance(a, CorpusStats):
        return [("stats", f"Corpus statistics: {a.tokenizer.name}", _stats_html(a))]
    if isinstance(a, DeviceProfile):
        return [("profile", f"Device profile: {a.device}", _profile_html(a))]
    if isinstance(a, Plan):
        out = [("plan", f"Design: cutoffs {a.cutoffs}", _plan_html(a))]
        if a.provenance.get("tune"):
            out.append(("tune", "Tune: measured quality of the candidate designs", _tune_html(a)))
        return out
    if isinstance(a, BenchResult):
        return [("bench", f"Bench: measured step time on {a.device}", _bench_html(a))]
    if isinstance(a, DecodeResult):
        return [("decode", f"Decode latency on {a.device}", _decode_html(a))]
    return [("validate", "Validate: trained quality next to the full softmax", _validate_html(a))]


# --- building blocks --------------------------------------------------------------------------------------------


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: Any, spec: str = ".3g") -> str:
    return DASH if x is None else format(x, spec)


def _x(ratio: float | None) -> str:
    return DASH if ratio is None else f"{ratio:.2f}x"


def _pct(x: float | None) -> str:
    if x is None:
        return DASH
    return ">+999%" if x > 9.99 else f"{x:+.2%}"


def _bytes(n: float | None) -> str:
    if n is None:
        return DASH
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _table(headers: list[str] | None, rows: Iterable[list[Any]], left: int = 1) -> str:
    """A table (with a header row unless `headers` is None) whose first `left` columns align left; every cell is
    escaped."""

    def cells(tag: str, values: list[Any]) -> str:
        return "".join(f"<{tag}{' class=l' if i < left else ''}>{_e(v)}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    head = "" if headers is None else f"<thead><tr>{cells('th', headers)}</tr></thead>"
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _facts(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of (what, value)."""
    return _table(None, [[k, v] for k, v in pairs], left=2)


def _img(png: bytes, alt: str) -> str:
    return f'<p><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_e(alt)}"></p>'


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{_e(text)}</p>' if cls else f"<p>{_e(text)}</p>"


def _compact(value: Any) -> str:
    """A provenance value as one line: scalars as they are, containers as compact JSON."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return DASH if value is None else str(value)


# --- stats, profile ---------------------------------------------------------------------------------------------


def _stats_html(stats: CorpusStats) -> str:
    s = stats.summary()
    tok = stats.tokenizer
    k = s.get("k_for_coverage", {})
    pl = stats.fits.get("power_law") or {}
    zm = stats.fits.get("zipf_mandelbrot") or {}
    facts = [
        ("tokenizer", f"{tok.name} ({tok.kind}), sha256 {tok.sha256[:16]}"),
        ("vocabulary", f"{s['vocab_size']:,} ids: {s['types_seen']:,} seen, {s['hapax_legomena']:,} seen once"),
        ("dead ids (never seen)", f"{s['never_seen_ids']:,} ({s['never_seen_ids'] / max(s['vocab_size'], 1):.1%})"),
        ("sequence mode", stats.options.get("sequence") or DASH),
        ("corpus", f"{len(stats.sources)} source(s), {stats.n_bytes:,} bytes, {s['sequences']:,} sequences"),
        ("tokens", f"{s['total_tokens']:,} ({_f(s['bytes_per_token'], '.2f')} bytes/token, "
                   f"{_f(s['tokens_per_word'], '.2f')} tokens/word)"),  # fmt: skip
        ("entropy", f"{_f(s.get('entropy_bits'), '.3f')} bits/token; Good-Turing unseen mass "
                    f"{_f(s['good_turing_unseen_mass'])}"),  # fmt: skip
        ("power law (CSN MLE)", DASH if pl.get("alpha") is None else
         f"alpha {pl['alpha']:.3f} ± {_f(pl.get('alpha_se'), '.3f')} for counts >= {pl['xmin']}, KS {pl['ks']:.3f}"),
        ("Zipf-Mandelbrot (MLE)", DASH if zm.get("s") is None else f"p(r) ∝ (r + {zm['q']:.2f})^-{zm['s']:.3f}"),
    ]  # fmt: skip
    cover = [[f"{float(t):.1%}", f"{v:,}", f"{v / max(s['vocab_size'], 1):.2%}"] for t, v in k.items()]
    under = stats.under_trained(examples=4)
    groups = [
        [label, kind, f"{g['n']:,}", ", ".join(repr(x) for x in g["examples"])]
        for name, label in (("never", "never seen"), ("rare", f"seen 1-{under['rare_count']}x"))
        for kind, g in sorted(under[name].items(), key=lambda kv: -kv[1]["n"])
    ]
    out = [
        _facts(facts),
        "<h3>Coverage</h3>",
        _table(["share of tokens", "top-k ids needed", "share of the vocabulary"], cover),
    ]
    if groups:
        out += ["<h3>Under-trained ids</h3>", _table(["", "kind", "ids", "examples"], groups, left=2)]
    if stats.total > 0:
        out.append(_img(plots.rank_frequency_png(stats), "rank-frequency with the Zipf-Mandelbrot fit; coverage"))
    return "\n".join(out)


def _profile_html(prof: DeviceProfile) -> str:
    s = prof.summary()
    return _facts((k.replace("_", " "), _compact(v)) for k, v in s.items()) + _p(f"created {prof.created}", "meta")


# --- plan, tune -------------------------------------------------------------------------------------------------


def _plan_html(plan: Plan) -> str:
    p = plan.predicted
    summ = plan.summary()
    out = [
        _facts(
            [
                (
                    "workload",
                    f"V={plan.vocab_size:,}, d={plan.hidden}, N={_f(plan.batch_tokens, ',')} tokens per "
                    f"step, mode={plan.mode}",
                ),  # fmt: skip
                ("cutoffs", plan.cutoffs),
                ("projections", plan.proj_dims),
                ("capacity", f"{plan.capacity:.3f} (share-weighted width / d; 1 = full softmax)"),
                ("parameters", f"{summ['params']:,} vs {summ['full_softmax_params']:,} for the full softmax"),
            ]
        )
    ]
    clusters = (p.get("plan") or {}).get("clusters") or [{} for _ in summ["clusters"]]
    rows = [
        [f"{'head' if i == 0 else f'tail {i - 1}'}", f"[{c['ranks'][0]:,}, {c['ranks'][1]:,})", f"{c['size']:,}",
         f"{c['share']:.2%}", c["proj_dim"], _f(pc.get("time_ms"), ".3f")]
        for i, (c, pc) in enumerate(zip(summ["clusters"], clusters, strict=False))
    ]  # fmt: skip
    out += ["<h3>Clusters</h3>", _table(["cluster", "ranks", "ids", "share of tokens", "dim", "predicted ms"], rows)]
    if p.get("plan") and p.get("full_softmax"):
        out += ["<h3>Prediction (cost model)</h3>", _prediction_html(plan)]
        if p.get("frontier"):
            out.append(_img(plots.plan_png(plan), "frontier of predicted time vs capacity; cost per cluster"))
    else:
        out.append(_p("No prediction: this plan was built by hand (optimize adds the cost model's view).", "meta"))
    out += ["<h3>Provenance</h3>", _provenance_html(plan.provenance)]
    return "\n".join(out)


def _prediction_html(plan: Plan) -> str:
    p = plan.predicted
    plan_ms, full = p["plan"]["time_ms"], p["full_softmax"]
    head = [
        _p(
            f"{plan_ms:.2f} ms per step vs {full['time_ms']:.2f} ms for the full softmax: {p['speedup']:.2f}x "
            f"predicted speed-up; memory {_bytes(p['plan']['memory_bytes'])} vs {_bytes(full['memory_bytes'])} "
            f"({p['memory_ratio']:.2f}x less)"
            + (" [extrapolated beyond the profile]" if p["plan"].get("extrapolated") else "")  # fmt: skip
        )
    ]
    rows = [
        [f["name"], f["cutoffs"], f["proj_dims"], f"{f['time_ms']:.2f}", _x(f.get("speedup")),
         _bytes(f["memory_bytes"]), f"{f['capacity']:.3f}", f"{f['time_ms'] / plan_ms:.2f}x"]
        for f in p.get("folklore", [])
    ]  # fmt: skip
    rows.insert(
        0,
        ["this plan", plan.cutoffs, plan.proj_dims, f"{plan_ms:.2f}", f"{p['speedup']:.2f}x",
         _bytes(p["plan"]["memory_bytes"]), f"{plan.capacity:.3f}", "1.00x"],
    )  # fmt: skip
    rows += [[name, cut, DASH, f"n/a: no cutoff below V={plan.vocab_size:,}", *[DASH] * 4]
             for name, cut in folklore_skipped(plan)]  # fmt: skip
    headers = ["design", "cutoffs", "dims", "predicted ms", "speed-up", "memory", "capacity", "plan is faster by"]
    return "\n".join([*head, "<h3>Against the folklore cutoffs (same projection rule)</h3>", _table(headers, rows, 3)])


def _provenance_html(provenance: dict[str, Any]) -> str:
    """Which stats, profile and options made the plan (the tune evidence has its own section)."""
    return _facts((k, _compact(v)) for k, v in sorted(provenance.items()) if k != "tune")


def _tune_html(plan: Plan) -> str:
    t = plan.provenance["tune"]
    c, full = t["chosen"], t["full_softmax"]
    if t["met"]:
        verdict, cls = f"within the {t['tolerance']:.1%} tolerance", "good"
    elif t.get("met_at_end_of_run"):
        verdict, cls = (
            "within the tolerance at the end of the run only: provisional (short runs favour small heads)",
            "warn",
        )
    else:
        verdict, cls = (
            f"no design met the {t['tolerance']:.1%} tolerance: the best trade-off measured, not a pass",
            "bad",
        )
    how = "trained" if c.get("measured") else "interpolated, not trained"
    out = [
        _p(f"Penalty = held-out perplexity / the full softmax's - 1, compared at: {t['basis']}."),
        _p(
            f"Chosen: cutoffs {c['cutoffs']}, dims {c['proj_dims']} ({how}); {c.get('bound', 'model')} penalty "
            f"{_pct(c['predicted_penalty'])} (upper {_pct(c['predicted_high'])}); {verdict}.",
            cls,
        ),
    ]  # fmt: skip
    conf = t.get("confirmation")
    if conf:
        word = "confirmed" if conf["confirmed"] else "NOT confirmed: its pass may be luck among several designs"
        text = f"Confirmation (one more run, seed {conf['seed']}): penalty {_pct(conf['penalty'])} "
        text += f"[{_pct(conf['low'])}, {_pct(conf['high'])}]: {word}."
        out.append(_p(text, "good" if conf["confirmed"] else "bad"))
    seeds = (t.get("proxy") or {}).get("seeds", 1)
    full_ms = plan.predicted.get("full_softmax", {}).get("time_ms")
    rows = [["full softmax", DASH, "1.000", DASH, DASH, f"{full['heldout_ppl']:.2f}", "1.00x", "1.00x", DASH,
             _f(full.get("ece"), ".3f"), _f(full.get("temperature"), ".2f")]]  # fmt: skip
    for m in t["measured"]:
        rows.append(
            [m["name"], m["cutoffs"], f"{m['capacity']:.3f}", _pct(m["penalty"]),
             f"[{_pct(m['low'])}, {_pct(m['high'])}]" + (f" ({m['seeds']} seed: out of the race)"
                                                        if m.get("seeds", seeds) < seeds else "")
             + (f" (undecided after {m['seeds'] - 1} seeds; seed {m['seeds']} in round {m['tie_break']})"
                if m.get("tie_break") else ""),
             f"{m['heldout_ppl']:.2f}",
             DASH if not full_ms else f"{full_ms / m['predicted_ms']:.2f}x", f"{m['proxy_speedup']:.2f}x",
             _pct(m.get("equal_time_penalty")) + (" (in run)" if m.get("equal_time_basis") == "measured"
                                                  and m.get("equal_time_penalty") is not None else ""),
             _f(m.get("ece"), ".3f"), _f(m.get("temperature"), ".2f")]
        )  # fmt: skip
    headers = ["design", "cutoffs", "capacity", "penalty", "95% interval", "held-out ppl", "predicted x", "proxy x",
               "equal-time", "ECE", "T"]  # fmt: skip
    out += [_table(headers, rows, 2), _tune_bands(t["measured"]), _img(plots.tune_png(plan), "tune penalties")]
    if t["model"].get("monotone_violations"):
        out.append(
            _p(
                f"{t['model']['monotone_violations']} pair(s) of designs contradict a penalty that falls with "
                "capacity; the monotone model pooled them.",
                "warn",
            )
        )
    return "\n".join(out)


def _tune_bands(measured: list[dict]) -> str:
    """Perplexity per frequency band of each trained design next to the full softmax's."""
    edges = [tuple(b["ranks"]) for b in (measured[0]["bands"] if measured else [])]
    if not edges:
        return ""
    rows = []
    for m in measured:
        by = {tuple(b["ranks"]): b for b in m["bands"]}
        rows.append(
            [m["name"]] + [DASH if e not in by else f"{by[e]['ppl']:.1f} (full {by[e]['full_ppl']:.1f})" for e in edges]
        )
    headers = ["design"] + [f"ranks [{lo:,}, {hi:,})" for lo, hi in edges]
    return "<h3>Perplexity per frequency band</h3>" + _table(headers, rows)


# --- bench, decode, validate ------------------------------------------------------------------------------------


def _bench_html(b: BenchResult) -> str:
    env = b.environment
    full = b.row("full softmax")
    facts = [
        ("plan", b.plan),
        ("workload", f"V={b.vocab_size:,}, d={b.hidden}, N={b.batch_tokens:,} tokens, {b.dtype}, fwd+bwd"),
        ("environment", _compact(env)),
    ]
    rows = [
        [r.method, r.cutoffs or DASH, f"{r.measured_ms:.2f}", f"{r.p20_ms:.2f}–{r.p80_ms:.2f}",
         f"{r.p80_ms / r.p20_ms:.2f}x" if r.p20_ms > 0 else DASH, _f(r.predicted_ms, ".2f"), _pct(r.error),
         DASH if full is None else f"{full.measured_ms / r.measured_ms:.2f}x", _bytes(r.saved_bytes),
         _bytes(r.peak_bytes), r.samples]
        for r in b.rows
    ]  # fmt: skip
    headers = ["method", "cutoffs", "measured ms (median)", "p20–p80 ms", "spread p80/p20", "predicted ms",
               "prediction error", "speed-up vs full", "saved for backward", "step peak", "samples"]  # fmt: skip
    out = [_facts(facts), _table(headers, rows, 2)]
    out += [_p(w, "warn") for w in noise_warnings(b.rows)]
    out += [_p(f"note: {n}", "meta") for n in b.notes]
    return "\n".join(out)


def _decode_html(d: DecodeResult) -> str:
    def speedup(r):  # the full lm_head in its fastest layout over this row
        full = d.row(r.decode, r.batch, "full lm_head") if r.method == "vocabopt" else None
        return None if full is None else full.ms_per_call / r.ms_per_call

    rows = [
        [r.decode, r.batch, r.method, r.layout, f"{r.ms_per_call:.3f}", f"{r.ms_per_token:.4f}",
         f"{r.p20_ms:.3f}–{r.p80_ms:.3f}", _f(r.tails_skipped), _f(r.exact), _f(speedup(r), ".2f")]
        for r in d.rows
    ]  # fmt: skip
    headers = ["decode", "batch", "method", "weight layout", "ms per call", "ms per token", "p20–p80 ms",
               "tails skipped", "exact", "speed-up vs the full's fastest layout"]  # fmt: skip
    return _facts([("plan", d.plan), ("workload", f"V={d.vocab_size:,}, d={d.hidden}")]) + _table(headers, rows, 3)


def _validate_html(v: ValidationResult) -> str:
    s = v.settings
    summ = v.summary()
    facts = [
        (
            "proxy model",
            f"{s['model']}, d={s['hidden']}, V={s['vocab_size']:,}, {s['steps']} steps of "
            f"{s['tokens_per_step']} tokens, {s.get('optimizer', '?')} lr {s.get('lr')}",
        ),  # fmt: skip
        ("where", f"{s.get('device')} {s.get('dtype')}, torch {s.get('torch')}"),
        ("held-out", f"{_f(s.get('eval_tokens'), ',')} tokens scored, never trained on"),
    ]
    rows = []
    for r in v.runs:
        gap = summ.get(r.name, {})
        rows.append(
            [r.name, r.cutoffs or DASH, f"{r.heldout_ppl:.2f}", _pct(gap.get("ppl_gap")),
             _pct(gap.get("equal_time_ppl_gap")), f"{r.step_ms:.1f}", _f(gap.get("speedup"), ".2f"),
             f"{r.tokens_per_s:,.0f}", _bytes(r.saved_bytes), _f(r.accuracy, ".3f"), _f(r.ece, ".3f"),
             _f(r.temperature, ".2f")]
        )  # fmt: skip
    headers = ["layer", "cutoffs", "held-out ppl", "vs full", "vs full, equal time", "step ms", "speed-up", "tokens/s",
               "saved for backward", "accuracy", "ECE", "temperature"]  # fmt: skip
    out = [_facts(facts), _table(headers, rows, 2)]
    edges = [tuple(b["ranks"]) for b in v.runs[0].bands] if v.runs else []
    if edges:
        band_rows = [[r.name] + [_f(b.get("ppl"), ".1f") for b in r.bands] for r in v.runs]
        out += [
            "<h3>Held-out perplexity per frequency band (ranks of the plan's clusters)</h3>",
            _table(["layer"] + [f"ranks [{lo:,}, {hi:,})" for lo, hi in edges], band_rows),
        ]
    out.append(_p("Calibration: top-label ECE over 15 bins; T is the temperature that minimises held-out NLL.", "meta"))
    if all(r.train_curve and r.eval_curve for r in v.runs):
        out.append(_img(plots.curves_png(v), "learning curves"))
    return "\n".join(out)
