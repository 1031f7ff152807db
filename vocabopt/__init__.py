"""vocabopt: design the output layer (adaptive softmax) of large-vocabulary language models.

Pipeline: analyze (corpus -> CorpusStats) -> profile (device -> DeviceProfile) -> optimize (-> Plan) -> export.
`import vocabopt` stays light: torch is imported only when a layer is built or a device profiled.
"""

from __future__ import annotations

import importlib
from typing import Any

# Stages whose module shares the function's name are bound eagerly (they import no torch): a lazy binding would
# be shadowed by the submodule as soon as anything imports it.
from .analyze import analyze, compare  # noqa: E402,F401
from .bench import bench  # noqa: E402,F401
from .drift import drift  # noqa: E402,F401
from .optimize import optimize  # noqa: E402,F401
from .tune import tune  # noqa: E402,F401
from .validate import validate  # noqa: E402,F401
from .version import __version__  # noqa: F401

# public name -> module that defines it
_EXPORTS = {
    "CorpusStats": "stats",
    "TokenizerInfo": "stats",
    "SourceInfo": "stats",
    "merge": "stats",
    "VocabOptError": "errors",
    "InputError": "errors",
    "TokenizerError": "errors",
    "ArtifactError": "errors",
    "MismatchError": "errors",
    "ClusterError": "errors",
    "Plan": "plan",
    "build_layer": "layer",
    "AdaptiveSoftmax": "adaptive_head",
    "AdaptiveHeadConfig": "adaptive_head",
    "DeviceProfile": "profile",
    "profile_device": "profiler",
    "synthetic_profile": "profile",
    "predict": "cost",
    "Prediction": "cost",
    "BenchResult": "bench",
    "BenchRow": "bench",
    "bench_decode": "decode",
    "DecodeResult": "decode",
    "DecodeRow": "decode",
    "ValidationResult": "validate",
    "ValidationRun": "validate",
    "expand_head": "expand",
    "Expansion": "expand",
    "replan_head": "replan",
    "Replan": "replan",
    "convert_head": "convert",
    "DriftReport": "drift",
}

__all__ = sorted([*_EXPORTS, "analyze", "bench", "compare", "drift", "optimize", "tune", "validate", "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vocabopt' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return __all__
