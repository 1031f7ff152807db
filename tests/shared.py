"""Small text and helpers several test modules share (the `plain` fixture is in conftest.py)."""

from __future__ import annotations

import numpy as np

from vocabopt import analyze

LINES = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void;",
    "and darkness was upon the face of the deep.",
]


def counts(*args, **kw) -> np.ndarray:
    """Token counts by id, as `vocabopt.analyze` counts them."""
    return analyze(*args, **kw).counts
