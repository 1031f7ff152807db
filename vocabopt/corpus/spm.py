"""SentencePiece models (.model: Llama 2, Mistral v1-v3, T5, Gemma), counted by the `sentencepiece` package itself.

Job: load a SentencePiece model once per process, decide whether its pieces can be counted per word, and give its
token strings. Inputs: the model file's bytes (`TokenizerSpec.blob`). Outputs: the processor (`processor`), the
counting path (`word_path`), the token strings.

Why per word is exact: with the trainer's defaults (split_by_whitespace, add_dummy_prefix, remove_extra_whitespaces)
SentencePiece normalizes a text (whitespace becomes "▁", runs collapse, a "▁" goes in front), cuts it before every
"▁" and segments each word alone (BPE merges and Unigram pieces never span a "▁" that is not their first character).
A word "▁w" is what encoding " w" alone gives. So the counter normalizes each text, cuts it into words, and encodes
each distinct word once. Models that keep runs of spaces, add no prefix, or hold a piece with an inner "▁" are
counted by encoding whole sequences. `sentencepiece` is an optional dependency (`pip install 'vocabopt[tokenizers]'`),
imported only here.
"""

from __future__ import annotations

from typing import Any

from ..errors import TokenizerError

_SHARED: dict[bytes, Any] = {}  # model bytes -> SentencePieceProcessor (the last few)


def processor(blob: bytes, where: str = "SentencePiece model") -> Any:
    """The model's SentencePieceProcessor, loaded once per process."""
    if blob not in _SHARED:
        try:
            import sentencepiece
        except ImportError:
            raise TokenizerError(
                f"{where}: counting a SentencePiece .model needs the sentencepiece package; "
                "pip install 'vocabopt[tokenizers]'"
            ) from None
        if len(_SHARED) >= 4:
            _SHARED.clear()
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(blob)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"{where}: not a valid SentencePiece model ({e}); pass a .model file") from None
        _SHARED[blob] = sp
    return _SHARED[blob]


def word_path(sp: Any) -> tuple[str, str]:
    """('words' | 'encode', reason) for a processor (see the module docstring)."""
    if not sp.normalize("a").startswith("▁"):
        return "encode", "SentencePiece model without a dummy prefix: words alone would encode differently"
    if "▁▁" in sp.normalize("a  b"):
        return "encode", "SentencePiece model keeps runs of spaces"
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i) or sp.is_control(i) or sp.is_byte(i):
            continue
        if "▁" in sp.id_to_piece(i)[1:]:
            return "encode", f"piece {sp.id_to_piece(i)!r} spans a word boundary"
    return "words", "SentencePiece segments each whitespace-separated word alone"


def token_strings(sp: Any) -> list[str]:
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
