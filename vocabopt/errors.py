"""vocabopt's exceptions. The library raises these; the CLI turns them into one-line errors (exit 1).

Anything else escaping the library is a bug and shows a traceback.
"""


class VocabOptError(Exception):
    """Base class: a problem with the user's input, named with what to do about it."""


class InputError(VocabOptError):
    """A corpus source is missing, unreadable, empty or malformed."""


class TokenizerError(VocabOptError):
    """A tokenizer file or spec is missing or invalid."""


class ArtifactError(VocabOptError):
    """An artifact (stats, plan, profile) is missing, corrupt, or from an unsupported schema version."""


class MismatchError(VocabOptError):
    """Artifacts that must agree do not (different tokenizers, vocabulary sizes, ...)."""


class ClusterError(VocabOptError):
    """The Dask cluster cannot be reached, or its workers cannot run the job (missing vocabopt, unreadable sources)."""
