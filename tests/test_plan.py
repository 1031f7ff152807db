"""Plan: construction by hand, validation errors that name the fix, save/load round trip."""

import json

import numpy as np
import pytest

from vocabopt.errors import ArtifactError, InputError
from vocabopt.plan import Plan
from vocabopt.stats import CorpusStats, TokenizerInfo


def zipf_counts(V: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.round(1e6 / np.arange(1, V + 1)).astype(np.int64))  # ids NOT in frequency order


def test_from_cutoffs_orders_by_frequency_and_follows_div_value():
    counts = zipf_counts()
    plan = Plan.from_cutoffs(counts, hidden=64, cutoffs=[20, 100])
    assert np.all(np.diff(plan.counts_by_rank) <= 0)
    assert np.array_equal(counts[plan.order], plan.counts_by_rank)
    assert plan.proj_dims == [16, 4]  # ALSWL: 64 // 4, 64 // 16
    assert plan.cluster_sizes == [20, 80, 400] and plan.head_size == 22
    assert abs(sum(plan.cluster_shares) - 1) < 1e-12
    assert np.array_equal(plan.rank_of[plan.order], np.arange(500))


def test_from_corpus_stats_records_tokenizer():
    counts = zipf_counts(50)
    info = TokenizerInfo(kind="counts", name="toy", sha256="ab" * 32, vocab_size=50)
    stats = CorpusStats(counts=counts, tokens=[str(i) for i in range(50)], tokenizer=info)
    plan = Plan.from_cutoffs(stats, hidden=8, cutoffs=[5], proj_dims=[3])
    assert np.array_equal(plan.order, stats.frequency_order())
    assert plan.provenance["tokenizer"]["name"] == "toy"


@pytest.mark.parametrize(
    "cutoffs, proj_dims, match",
    [
        ([100, 20], None, r"strictly increasing"),
        ([0, 20], None, r"strictly increasing"),
        ([20, 500], None, r"in \(0, vocab_size=500\)"),
        ([], None, r"cutoffs is empty"),
        ([20, 100], [16], r"pass one per cutoff"),
        ([20, 100], [16, 0], r"each must be in \[1, hidden=64\]"),
        ([20, 100], [16, 65], r"each must be in \[1, hidden=64\]"),
        ([20.5, 100], None, r"must be integers"),
    ],
)
def test_invalid_designs_are_named(cutoffs, proj_dims, match):
    with pytest.raises(InputError, match=match):
        Plan.from_cutoffs(zipf_counts(), hidden=64, cutoffs=cutoffs, proj_dims=proj_dims)


def test_save_load_round_trip(tmp_path):
    plan = Plan.from_cutoffs(
        zipf_counts(),
        hidden=64,
        cutoffs=[20, 100],
        mode="infer",
        batch_tokens=4096,
        predicted={"ms": 1.5},
        provenance={"name": "toy"},
    )
    plan.save(tmp_path / "plan.json")
    obj = json.loads((tmp_path / "plan.json").read_text())
    assert obj["artifact"] == "vocabopt.Plan" and obj["cutoffs"] == [20, 100]
    back = Plan.load(tmp_path / "plan.json")
    assert np.array_equal(back.order, plan.order) and np.array_equal(back.counts_by_rank, plan.counts_by_rank)
    assert (back.cutoffs, back.proj_dims, back.mode, back.batch_tokens) == ([20, 100], [16, 4], "infer", 4096)
    assert back.predicted == {"ms": 1.5} and back.provenance == plan.provenance


def test_load_rejects_other_artifacts_and_tampering(tmp_path):
    (tmp_path / "stats.json").write_text(json.dumps({"artifact": "vocabopt.CorpusStats", "schema_version": 1}))
    with pytest.raises(ArtifactError, match="not a vocabopt.Plan"):
        Plan.load(tmp_path / "stats.json")
    plan = Plan.from_cutoffs(zipf_counts(), hidden=64, cutoffs=[20, 100])
    plan.save(tmp_path / "p.json")
    np.save(tmp_path / json.loads((tmp_path / "p.json").read_text())["arrays"]["order"]["file"], np.arange(500))
    with pytest.raises(ArtifactError, match="hash differs"):
        Plan.load(tmp_path / "p.json")
    plan.save(tmp_path / "p.json")
    obj = json.loads((tmp_path / "p.json").read_text())
    del obj["hidden"]
    (tmp_path / "q.json").write_text(json.dumps(obj))
    with pytest.raises(ArtifactError, match="malformed Plan"):
        Plan.load(tmp_path / "q.json")
