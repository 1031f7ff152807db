"""vocabopt.plots: every figure renders to a PNG from its artifact alone (no file read, nothing written)."""

from __future__ import annotations

import numpy as np

from vocabopt import plots
from vocabopt.optimize import optimize
from vocabopt.profile import synthetic_profile
from vocabopt.stats import CorpusStats
from vocabopt.validate import ValidationResult, ValidationRun

PNG = b"\x89PNG\r\n\x1a\n"


def _stats() -> CorpusStats:
    counts = np.round(1e6 / np.arange(1, 2001) ** 1.1).astype(np.int64)
    return CorpusStats.from_counts(counts)


def test_rank_frequency_png():
    assert plots.rank_frequency_png(_stats()).startswith(PNG)


def test_plan_png():
    prof = synthetic_profile(lambda kernel, *c: 0.01 + 1e-9 * np.prod(c, axis=0))
    plan = optimize(_stats(), hidden=64, profile=prof, batch_tokens=256)
    assert plots.plan_png(plan).startswith(PNG)


def test_curves_png():
    run = ValidationRun("vocabopt", [10], [4], 100, 3.0, 20.1, 1.0, 1000.0, 10, None, [(1, 4.0), (2, 3.5)], [(2, 3.6)])
    result = ValidationResult(
        runs=[run], settings={"model": "lstm", "hidden": 8, "vocab_size": 50, "tokens_per_step": 64}
    )
    assert plots.curves_png(result).startswith(PNG)
