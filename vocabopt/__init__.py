"""vocabopt: design the output layer (adaptive softmax) of large-vocabulary language models.

Pipeline: analyze (corpus -> CorpusStats) -> profile (device -> DeviceProfile) -> optimize (-> Plan) -> export.
Public names are imported lazily so `import vocabopt` stays light (no torch until a layer is built).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "CorpusStats": "stats",
    "TokenizerInfo": "stats",
    "SourceInfo": "stats",
    "merge": "stats",
    "analyze": "analyze",
    "compare": "analyze",
    "VocabOptError": "errors",
    "InputError": "errors",
    "TokenizerError": "errors",
    "ArtifactError": "errors",
    "MismatchError": "errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vocabopt' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return __all__
