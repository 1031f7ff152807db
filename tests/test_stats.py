"""CorpusStats: hand-computed statistics, save/load, merge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vocabopt import CorpusStats, analyze, merge
from vocabopt.errors import ArtifactError, MismatchError


def test_summary_hand_computed():
    s = CorpusStats.from_counts([4, 2, 1, 1, 0]).summary()
    assert (s["total_tokens"], s["types_seen"], s["never_seen_ids"], s["hapax_legomena"]) == (8, 4, 1, 2)
    p = np.array([4, 2, 1, 1]) / 8
    assert s["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())  # = 1.75 bits
    assert s["entropy_bits"] == pytest.approx(1.75)
    assert s["good_turing_unseen_mass"] == pytest.approx(2 / 8)
    assert s["coverage_top_k"] == {"1": 0.5, "2": 0.75, "4": 1.0, "5": 1.0}
    assert s["k_for_coverage"] == {"0.5": 1, "0.8": 3, "0.9": 4, "0.95": 4, "0.99": 4, "0.999": 4}


def test_frequency_order_breaks_ties_by_id():
    stats = CorpusStats.from_counts([1, 5, 1, 5, 0])
    assert stats.frequency_order().tolist() == [1, 3, 0, 2, 4]


HOSTILE = ['"', "\\", "\n", "\x00", '"""', "__import__('os').system('x')", "\u202e", "\ud800", "é"]


def test_save_load_round_trip_is_byte_identical(tmp_path):
    stats = CorpusStats.from_counts(np.arange(len(HOSTILE))[::-1] * 3, tokens=HOSTILE)
    stats.save(tmp_path / "a.json")
    back = CorpusStats.load(tmp_path / "a.json")
    assert back.tokens == HOSTILE
    np.testing.assert_array_equal(back.counts, stats.counts)
    assert back.fits == stats.fits and back.tokenizer == stats.tokenizer
    back.save(tmp_path / "b.json")
    a = (tmp_path / "a.json").read_text()
    assert a == (tmp_path / "b.json").read_text().replace('"b.counts.', '"a.counts.')


def test_load_rejects_corrupt_and_future(tmp_path):
    stats = CorpusStats.from_counts([3, 2, 1])
    stats.save(tmp_path / "s.json")
    obj = json.loads((tmp_path / "s.json").read_text())
    (tmp_path / "future.json").write_text(json.dumps({**obj, "schema_version": 99}))
    with pytest.raises(ArtifactError, match="newer"):
        CorpusStats.load(tmp_path / "future.json")
    (tmp_path / "trunc.json").write_text((tmp_path / "s.json").read_text()[:40])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        CorpusStats.load(tmp_path / "trunc.json")
    np.save(tmp_path / obj["counts_file"], np.array([9, 9, 9]))
    with pytest.raises(ArtifactError, match="does not match"):
        CorpusStats.load(tmp_path / "s.json")


def _shards(tmp_path, corpus_slice):
    lines = corpus_slice.read_text().split("\n")
    half = len(lines) // 2
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n".join(lines[:half]) + "\n")
    b.write_text("\n".join(lines[half:]))
    return a, b


@pytest.mark.parametrize("tokenizer", ["bpe", "word"])
def test_merge_of_shards_equals_whole(tmp_path, corpus_slice, tokenizer_files, tokenizer):
    spec = str(tokenizer_files["bpe"]) if tokenizer == "bpe" else "word"
    a, b = _shards(tmp_path, corpus_slice)
    whole = analyze([str(a), str(b)], spec)
    merged = merge([analyze([str(a)], spec), analyze([str(b)], spec)])
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert merged.tokens == whole.tokens
    assert (merged.n_bytes, merged.n_sequences, merged.n_words) == (whole.n_bytes, whole.n_sequences, whole.n_words)
    assert merged.summary() == whole.summary() and merged.fits == whole.fits


def test_merge_refuses_different_tokenizers(corpus_slice, tokenizer_files):
    a = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]))
    b = analyze([str(corpus_slice)], str(tokenizer_files["wordpiece"]))
    with pytest.raises(MismatchError, match="same tokenizer"):
        merge([a, b])


def test_from_counts_validates():
    with pytest.raises(MismatchError):
        CorpusStats.from_counts([[1, 2]])
    with pytest.raises(MismatchError):
        CorpusStats.from_counts([1, -1])
    assert math.isclose(CorpusStats.from_counts([2.0, 1.0]).summary()["coverage_top_k"]["1"], 2 / 3)


def test_under_trained_groups_by_kind():
    """Hand-made vocabulary: each never/rarely seen id lands in the group its string says (SentencePiece-style)."""
    tokens = ["<unk>", "<0x41>", "▁", "▁▁", "a", "b", "ab", "[CLS]", "zq", "c"]
    counts = [0, 0, 5, 0, 100, 100, 0, 1, 0, 2]
    report = CorpusStats.from_counts(counts, tokens=tokens).under_trained()
    assert report["never"] == {
        "special": {"n": 1, "examples": ["<unk>"]},
        "byte": {"n": 1, "examples": ["<0x41>"]},
        "whitespace": {"n": 1, "examples": ["▁▁"]},
        "unreached_merge": {"n": 1, "examples": ["ab"]},  # "a" and "b" are common, "ab" never occurs
        "other": {"n": 1, "examples": ["zq"]},
    }
    assert report["rare"] == {"special": {"n": 1, "examples": ["[CLS]"]}, "other": {"n": 1, "examples": ["c"]}}


def test_under_trained_covers_every_rare_id_of_a_real_run(corpus_slice, tokenizer_files):
    """Byte-level BPE on real text: the groups partition the never-seen and rarely-seen ids (an independent count),
    and the byte group holds exactly the unseen one-character tokens of the byte alphabet."""
    stats = analyze([str(corpus_slice)], str(tokenizer_files["bpe"]))
    report = stats.under_trained()
    assert sum(g["n"] for g in report["never"].values()) == int((stats.counts == 0).sum())
    assert sum(g["n"] for g in report["rare"].values()) == int(((stats.counts > 0) & (stats.counts <= 2)).sum())
    unseen_single = sum(1 for t, c in zip(stats.tokens, stats.counts) if len(t) == 1 and c == 0)
    assert report["never"]["byte"]["n"] == unseen_single
    assert all(stats.counts[stats.tokens.index(t)] == 0 for g in report["never"].values() for t in g["examples"])
