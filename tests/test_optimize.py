"""The optimizer: well-formed designs, the capacity floor (the paper's design's capacity, no ceiling), the head at the
inflection, infer plans that fit in the full softmax's memory, bad input (the DP itself: tests/test_search.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vocabopt import cost
from vocabopt.cli import main
from vocabopt.design import capacity, proj_dims
from vocabopt.errors import InputError
from vocabopt.optimize import optimize
from vocabopt.plan import Plan
from vocabopt.profile import DeviceProfile, synthetic_profile
from vocabopt.stats import CorpusStats


def zipf_stats(v: int, alpha: float = 1.1, seed: int = 0) -> CorpusStats:
    counts = np.maximum((1e8 / np.arange(1, v + 1) ** alpha).astype(np.int64), 1)
    perm = np.random.default_rng(seed).permutation(v)  # token ids are not in frequency order
    return CorpusStats.from_counts(counts[perm])


@pytest.fixture(scope="module")
def affine_prof():
    return synthetic_profile(lambda name, *c: 0.05 + 1e-8 * np.prod(c, axis=0))


def counts_by_rank_shares(stats: CorpusStats, cutoffs: list[int]) -> list[float]:
    """Target share of each cluster, counted from the sorted counts (independently of vocabopt.cost)."""
    c = np.sort(stats.counts)[::-1]
    edges = [0, *cutoffs, c.size]
    return [c[a:b].sum() / c.sum() for a, b in zip(edges, edges[1:])]


def test_default_capacity_floor_is_the_paper_design_with_no_ceiling(affine_prof):
    stats = zipf_stats(3000, alpha=1.4)  # [2000, 10000] -> [2000]: nearly all mass in the head
    shares = counts_by_rank_shares(stats, [2000])
    floor = shares[0] + shares[1] * 64 / 256  # d=256: the tail projects to 64
    assert floor > 0.9  # the old 0.9 ceiling would have lowered it
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024)
    options = plan.provenance["options"]
    assert options["min_capacity"] == pytest.approx(floor, abs=1e-6)
    assert options["min_capacity_rule"].startswith(f"{floor:.3f}, the capacity of paper/Lua [2000]")
    assert capacity(plan.cluster_shares, 256, plan.proj_dims) >= floor - 1e-6
    given = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, min_capacity=0.5)
    assert given.provenance["options"]["min_capacity_rule"] == "0.5 (given)"


def test_default_floor_without_a_paper_cutoff_is_the_full_softmax(affine_prof):
    """V <= 2000: the paper's design is the full softmax (capacity 1), so the most capacious design faster than it
    is recommended."""
    stats = zipf_stats(1500)
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024)
    assert plan.provenance["options"]["min_capacity"] == 1.0
    frontier = plan.predicted["frontier"]
    assert plan.capacity == pytest.approx(max(f["capacity"] for f in frontier), abs=1e-6)
    assert plan.predicted["speedup"] > 1


def test_plan_is_well_formed(affine_prof):
    stats = zipf_stats(30000)
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024)
    assert isinstance(plan, Plan)
    assert plan.cutoffs == sorted(set(plan.cutoffs)) and 0 < plan.cutoffs[0] and plan.cutoffs[-1] < 30000
    assert plan.proj_dims == proj_dims(256, len(plan.cutoffs), min_proj=8)  # the profile's alignment: no 4, 1
    assert plan.provenance["options"]["min_proj"] == 8
    assert np.array_equal(plan.order, stats.frequency_order())
    assert np.all(np.diff(plan.counts_by_rank) <= 0)  # counts by rank
    pred = plan.predicted
    parts = sum(c["time_ms"] for c in pred["plan"]["clusters"])
    assert pred["plan"]["time_ms"] == pytest.approx(parts)
    assert pred["speedup"] == pytest.approx(pred["full_softmax"]["time_ms"] / pred["plan"]["time_ms"])
    assert pred["speedup"] > 1
    times = [f["time_ms"] for f in pred["frontier"]]
    caps = [f["capacity"] for f in pred["frontier"]]
    assert times == sorted(times) and caps == sorted(caps)  # a Pareto frontier: slower only for more capacity
    assert times[-1] < pred["full_softmax"]["time_ms"]  # none dominated by the full softmax
    # The recommendation: at least the default floor, within the tolerance of the fastest such design. The floor is
    # the capacity of the paper's [2000, 10000] on these counts, computed here by hand.
    shares = counts_by_rank_shares(stats, [2000, 10000])
    floor = shares[0] + shares[1] / 4 + shares[2] / 16
    assert plan.provenance["options"]["min_capacity"] == pytest.approx(floor, abs=1e-6)
    eligible = [f for f in pred["frontier"] if f["capacity"] >= floor - 1e-6]
    assert capacity(plan.cluster_shares, 256, plan.proj_dims) >= floor - 1e-6
    assert pred["plan"]["time_ms"] <= eligible[0]["time_ms"] * 1.02 + 1e-9
    # Without the floor, the fastest design (within the tolerance) is recommended.
    fast = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, min_capacity=0.0)
    best_j = min(pred["best_per_clusters"].values(), key=lambda d: d["time_ms"])
    assert fast.predicted["plan"]["time_ms"] <= best_j["time_ms"] * 1.02 + 1e-9
    assert fast.predicted["plan"]["time_ms"] <= pred["plan"]["time_ms"]
    assert {f["name"] for f in pred["folklore"]} == {"paper/Lua", "fairseq WT103", "Transformer-XL"}
    assert all(c < 30000 for f in pred["folklore"] for c in f["cutoffs"])  # clipped to V: [20000, 60000] -> [20000]
    assert plan.provenance["profile"]["device"] == "synthetic"
    assert plan.provenance["stats"]["sha256"] == stats.tokenizer.sha256


def test_plan_round_trips(tmp_path, affine_prof):
    plan = optimize(zipf_stats(5000), hidden=64, profile=affine_prof, batch_tokens=512, max_clusters=2)
    plan.save(tmp_path / "plan.json")
    back = Plan.load(tmp_path / "plan.json")
    assert back.cutoffs == plan.cutoffs and back.predicted["speedup"] == pytest.approx(plan.predicted["speedup"])


def test_flat_then_affine_puts_the_head_at_the_inflection():
    """Paper §4: matmul time is flat up to an inflection, then affine; the head should fill the flat part."""
    n, d, k_star = 2048, 256, 4096  # on grid points: log interpolation would round off a kink between them
    c = 5.0  # ms: the flat floor, reached at n * d * k_star multiply-adds
    lam = c / (n * d * k_star)

    def fn(name, *x):
        if name.startswith("linear"):
            return np.maximum(c, lam * x[0] * x[1] * x[2])
        return np.full(x[0].shape, 1e-4)

    prof = synthetic_profile(fn)
    stats = zipf_stats(60000, alpha=1.0)
    plan = optimize(stats, hidden=d, profile=prof, batch_tokens=n, max_clusters=1, tolerance=0.0, min_capacity=0.0)
    assert k_star / 1.5 <= plan.cutoffs[0] + 1 <= k_star * 1.5, plan.cutoffs


def test_constraints_are_honoured(affine_prof):
    stats = zipf_stats(20000)
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, min_head=3000, max_head=5000)
    assert 3000 <= plan.cutoffs[0] <= 5000
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, proj_dims=[100, 50])
    assert plan.proj_dims == [100, 50][: len(plan.cutoffs)]
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, min_proj=32)
    assert min(plan.proj_dims) >= 32
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, min_proj=1, min_capacity=0.0)
    assert plan.provenance["options"]["min_proj"] == 1 and plan.proj_dims == proj_dims(256, len(plan.cutoffs))
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, mode="infer", decode="greedy")
    assert plan.mode == "infer" and plan.predicted["decode"] == "greedy"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"min_head": 20000}, "min_head=20000"),
        ({"max_clusters": 0}, "at least one tail cluster"),
        ({"proj_dims": [512]}, "proj_dims"),
        ({"min_head": 500, "max_head": 100}, "max_head=100"),
        ({"mode": "eval"}, "mode"),
    ],
)
def test_infeasible_constraints_are_clear_errors(affine_prof, kw, match):
    with pytest.raises(InputError, match=match):
        optimize(zipf_stats(20000), hidden=256, profile=affine_prof, batch_tokens=1024, **kw)


def test_empty_stats_are_an_error(affine_prof):
    with pytest.raises(InputError, match="no tokens"):
        optimize(np.zeros(100, dtype=np.int64), hidden=16, profile=affine_prof, batch_tokens=64)


# --- CLI ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def files(tmp_path, affine_prof):
    zipf_stats(20000).save(tmp_path / "stats.json")
    affine_prof.save(tmp_path / "device.json")
    return tmp_path


def test_cli_optimize(files):
    out = files / "plan.json"
    base = [
        "optimize",
        str(files / "stats.json"),
        "--hidden",
        "256",
        "--profile",
        str(files / "device.json"),
        "--batch-tokens",
        "1024",
        "-o",
        str(out),
    ]
    r = CliRunner().invoke(main, [*base, "--plot", str(files / "frontier.png")])
    assert r.exit_code == 0, r.output
    assert "recommended" in r.output and "Transformer-XL" in r.output and "frontier" in r.output.lower()
    assert Plan.load(out).cutoffs
    assert (files / "frontier.png").stat().st_size > 0
    r = CliRunner().invoke(main, [*base, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["cutoffs"] == Plan.load(out).cutoffs


def optimize_args(files) -> list[str]:
    """`vocabopt optimize` on the fixture's stats and profile, writing p.json."""
    return [
        "optimize",
        str(files / "stats.json"),
        "--hidden",
        "256",
        "--profile",
        str(files / "device.json"),
        "--batch-tokens",
        "1024",
        "-o",
        str(files / "p.json"),
    ]


def test_cli_optimize_bad_input(files):
    args = optimize_args(files)
    r = CliRunner().invoke(main, [*args, "--min-head", "99999"])
    assert r.exit_code == 1 and "min_head=99999" in r.output and "Traceback" not in r.output
    (files / "bad.json").write_text("{not json")
    r = CliRunner().invoke(main, [*args[:4], "--profile", str(files / "bad.json"), *args[6:]])
    assert r.exit_code == 1 and "bad.json" in r.output
    r = CliRunner().invoke(main, [*args, "--dtype", "bfloat16"])  # contradicts the profile: refused, both named
    assert r.exit_code == 1 and "float32" in r.output and "bfloat16" in r.output and "Drop --device/--dtype" in r.output
    assert not (files / "p.json").exists()


def test_given_cutoffs_are_evaluated(affine_prof):
    stats = zipf_stats(20000)
    plan = optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, cutoffs=[2000, 10000])
    assert plan.cutoffs == [2000, 10000] and plan.proj_dims == [64, 16]
    expect = cost.predict(
        affine_prof, plan.counts_by_rank, hidden=256, cutoffs=[2000, 10000], proj_dims=[64, 16], batch_tokens=1024
    ).time_ms
    assert plan.predicted["plan"]["time_ms"] == pytest.approx(expect)
    with pytest.raises(InputError, match="vocabulary of 20,000 ids"):
        optimize(stats, hidden=256, profile=affine_prof, batch_tokens=1024, cutoffs=[20000, 60000])


def test_cli_given_cutoffs_beyond_the_vocabulary(files):
    args = optimize_args(files)
    r = CliRunner().invoke(main, [*args, "--cutoffs", "2000,10000"])
    assert r.exit_code == 0 and "given: cutoffs [2000, 10000]" in r.output
    stats = CorpusStats.load(files / "stats.json")
    cap = capacity(counts_by_rank_shares(stats, [2000, 10000]), 256, [64, 16])
    assert f"capacity {cap:.3f} (share-weighted width / d" in r.output  # the given design's own capacity
    r = CliRunner().invoke(main, [*args, "--cutoffs", "2000,60000"])
    assert r.exit_code == 1 and "60000" in r.output and "20,000" in r.output


CPU_PROFILE = Path(__file__).resolve().parents[1] / "configs" / "devices" / "cpu-xeon-2core-float32.json"


def test_infer_plans_never_need_more_memory_than_the_full_softmax(files):
    """On the shipped CPU profile: greedy plans need less memory than the full softmax; in full-distribution
    inference every design needs more (it assembles the (N, V) log-probs), so none is proposed and the error says
    why. A given design is still evaluated."""
    prof = DeviceProfile.load(CPU_PROFILE)
    stats = zipf_stats(8000, alpha=1.2)
    kw = {"hidden": 512, "profile": prof, "batch_tokens": 2048, "mode": "infer"}
    greedy = optimize(stats, decode="greedy", **kw)
    assert greedy.predicted["plan"]["memory_bytes"] <= greedy.predicted["full_softmax"]["memory_bytes"]
    assert all(c % prof.alignment == 0 for c in greedy.cutoffs)
    with pytest.raises(InputError, match="keep the full softmax, or plan for --decode greedy"):
        optimize(stats, decode="full", **kw)
    given = optimize(stats, decode="full", cutoffs=[2000], **kw)
    assert given.predicted["plan"]["memory_bytes"] > given.predicted["full_softmax"]["memory_bytes"]
    stats.save(files / "big.json")
    args = ["optimize", str(files / "big.json"), "--hidden", "512", "--profile", str(CPU_PROFILE)]
    args += ["--batch-tokens", "2048", "--mode", "infer", "--decode", "full", "-o", str(files / "i.json")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "more activation memory" in r.output and "Traceback" not in r.output


def test_cli_says_the_floor_measures_no_quality(files):
    r = CliRunner().invoke(main, optimize_args(files))
    assert r.exit_code == 0, r.output
    floor_line = next(line for line in r.output.splitlines() if "floor (--min-capacity)" in line)
    assert "paper/Lua [2000, 10000]" in floor_line and "measures no quality" in floor_line
    assert "vocabopt tune" in floor_line and "--from-tune" in floor_line
    help_text = " ".join(CliRunner().invoke(main, ["optimize", "--help"]).output.split())
    assert "measures no quality" in help_text and "0.9" not in help_text
