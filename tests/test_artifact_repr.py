"""Short reprs: Plan and CorpusStats print as one line of their headline figures, never their V-long arrays."""

from __future__ import annotations

import numpy as np

from tests.test_cli_plan import SHIPPED
from vocabopt import CorpusStats, optimize
from vocabopt.plan import Plan
from vocabopt.profile import DeviceProfile

V = 100_000


def zipf_counts(v: int = V) -> np.ndarray:
    return np.random.default_rng(0).permutation((1e7 / np.arange(1, v + 1)).astype(np.int64))


def test_corpus_stats_repr_is_one_short_line_of_its_summary():
    stats = CorpusStats.from_counts(zipf_counts(), name="zipf")
    text, summary = repr(stats), stats.summary()
    assert "\n" not in text and len(text) < 160 and "array" not in text
    assert text.startswith("CorpusStats(V=100,000, ") and f"{summary['total_tokens']:,} tokens" in text
    assert f"{summary['types_seen']:,} ids seen" in text
    assert f"top {summary['k_for_coverage']['0.9']:,} ids cover 90%" in text  # the summary's own count
    assert repr(CorpusStats.from_counts([0, 0])) == "CorpusStats(V=2, 0 tokens, 0 ids seen, tokenizer='counts')"


def test_plan_repr_is_one_short_line_of_its_design():
    counts = zipf_counts()
    bare = Plan.from_cutoffs(counts, hidden=512, cutoffs=[2000, 20000])
    assert repr(bare) == (
        f"Plan(V=100,000, d=512, cutoffs=[2000, 20000], proj_dims={bare.proj_dims}, capacity={bare.capacity:.3f}, "
        "mode=train)"
    )
    plan = optimize(CorpusStats.from_counts(counts), hidden=512, profile=DeviceProfile.load(SHIPPED), batch_tokens=2048)
    text = repr(plan)
    assert "\n" not in text and len(text) < 200 and "array" not in text
    assert f"cutoffs={plan.cutoffs}" in text and ", N=2,048, " in text
    assert text.endswith(f"predicted {plan.predicted['speedup']:.2f}x)")
