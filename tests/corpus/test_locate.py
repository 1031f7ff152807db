"""vocabopt.corpus.locate: distinct chunks encoded laid end to end, each token placed back in its chunk."""

from __future__ import annotations

from tokenizers import Tokenizer

from vocabopt.corpus.chunks import Chunks
from vocabopt.corpus.locate import JOINED_TEXTS, ChunkEncoder
from vocabopt.corpus.tokenizer import config_of, load_spec, shared_tokenizer
from vocabopt.corpus.vocab import metaspace_sizes


def test_sizes_that_hold_for_ascii_only_are_not_used_on_other_text(tokenizer_files):
    """NFKC changes lengths both ways ("ﬃ" -> "ffi", "e" + combining acute -> "é"): in one joined text they can
    cancel, so sizes in characters would add up and still shift a chunk's tokens into the next. Such texts are
    placed by offsets; every chunk gets the ids the tokenizer gives it alone."""
    spec = load_spec(str(tokenizer_files["unigram"]))
    tok = shared_tokenizer(spec)
    sizes = metaspace_sizes(tok, config_of(spec.json))
    assert sizes is not None and sizes[2]  # sizes in characters, for ASCII texts only (NFKC)
    # one leader, then glue i in text i % JOINED_TEXTS: " x" and the last glue chunk share the leader's text
    texts = ["\ufb03", " x", *[f" w{i}" for i in range(JOINED_TEXTS - 1)], " e\u0301e\u0301"]
    encoder = ChunkEncoder(tok, None, sizes, None)
    ids, starts, lengths = encoder.encode(Chunks.of_strings(texts))
    alone = Tokenizer.from_str(spec.json)
    for j, text in enumerate(texts):
        want = alone.encode(text, add_special_tokens=False).ids
        assert ids[starts[j] : starts[j] + lengths[j]].tolist() == want, text
    assert encoder.token_chars is not None  # kept for the ASCII batches to come
