"""vocabopt.corpus.formats and spm: every tokenizer format `-t` takes counts exactly as that format's own encoder on
real text (corpora/kjv.txt slices) and adversarial text: SentencePiece .model vs `sentencepiece`, tiktoken rank files
and tekken JSON vs `tiktoken`, a transformers folder's added tokens vs `tokenizers` with them added."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers, trainers

from vocabopt import analyze
from vocabopt.corpus.formats import TIKTOKEN_PATTERNS
from vocabopt.corpus.regex_safety import split_safety
from vocabopt.errors import TokenizerError

EXTRA = "Tabs\there,  double  spaces, ﬁne\u00a0NBSP, Ésaïe 中文 😀 ok\r\nnext line\n\n  indented\n"


def documents(text: str) -> list[str]:
    """The default sequences: blank-line-separated blocks, read with universal newlines (\r\n becomes \n)."""
    return [d.strip("\n") for d in text.replace("\r\n", "\n").split("\n\n") if d.strip()]


@pytest.fixture(scope="module")
def text(corpus_slice) -> str:
    return corpus_slice.read_text(encoding="utf-8")[:200_000] + "\n\n" + EXTRA


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("formats") / "c.txt"
    path.write_text(text, encoding="utf-8")
    return path


def bincount(ids, size: int) -> np.ndarray:
    return np.bincount(np.asarray(list(ids), dtype=np.int64), minlength=size)


@pytest.mark.parametrize(
    "options",
    [
        {"model_type": "bpe", "byte_fallback": True},  # Llama 2 / Mistral style
        {"model_type": "unigram"},  # T5 style
        {"model_type": "bpe", "split_by_whitespace": False},  # pieces across words: counted by encoding
    ],
)
def test_sentencepiece_model_counts_as_sentencepiece_encodes(tmp_path, corpus, text, options):
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text[:150_000].splitlines()),
        model_writer=model,
        vocab_size=1200,
        minloglevel=2,
        **options,
    )
    path = tmp_path / "tokenizer.model"
    path.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    for sequence, sequences in ((None, documents(text)), ("line", [ln for ln in text.split("\n") if ln.strip()])):
        stats = analyze([str(corpus)], str(path), sequence=sequence)
        ref = bincount((i for ids in sp.encode(sequences) for i in ids), sp.get_piece_size())
        np.testing.assert_array_equal(stats.counts, ref)
    assert stats.tokens[5] == sp.id_to_piece(5) and stats.tokenizer.kind == "spm"
    want = "encode" if options.get("split_by_whitespace") is False else "words"
    assert stats.options["count_path"] == want
    if options.get("byte_fallback"):
        assert any(stats.counts[sp.piece_to_id(f"<0x{b:02X}>")] for b in "😀".encode())


def _ranks_and_pattern(corpus) -> tuple[dict[bytes, int], str]:
    """Ranks of a byte-level BPE trained on the corpus with o200k's regex (ids in merge order, as tiktoken's)."""
    pattern = TIKTOKEN_PATTERNS["o200k_base"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.train(
        [str(corpus)],
        trainers.BpeTrainer(vocab_size=900, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    from vocabopt.corpus.formats import _byte_chars

    index = {c: b for b, c in enumerate(_byte_chars())}
    return {bytes(index[c] for c in token): i for token, i in tok.get_vocab().items()}, pattern


def test_tiktoken_rank_file_and_tekken_json_count_as_tiktoken(tmp_path, corpus, text):
    tiktoken = pytest.importorskip("tiktoken")
    ranks, pattern = _ranks_and_pattern(corpus)
    enc = tiktoken.Encoding("test", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    docs = documents(text)
    ref = bincount((i for ids in enc.encode_ordinary_batch(docs) for i in ids), len(ranks))

    path = tmp_path / "test.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    with pytest.raises(TokenizerError, match="needs its regex"):
        analyze([str(corpus)], str(path))
    (tmp_path / "test.tiktoken.regex").write_text(pattern)
    stats = analyze([str(corpus)], str(path))
    np.testing.assert_array_equal(stats.counts, ref)
    assert stats.options["count_path"] == "chunks" and split_safety(pattern)[:2] == (True, True)

    offset = 1000  # tekken: special ids first, then the ranks
    tekken = {
        "config": {"pattern": pattern, "default_vocab_size": offset + len(ranks), "default_num_special_tokens": offset},
        "vocab": [{"rank": r, "token_bytes": base64.b64encode(t).decode()} for t, r in ranks.items()],
        "special_tokens": [],
    }
    (tmp_path / "tekken.json").write_text(json.dumps(tekken))
    stats = analyze([str(corpus)], str(tmp_path / "tekken.json"))
    np.testing.assert_array_equal(stats.counts[offset:], ref)
    assert stats.counts[:offset].sum() == 0


def test_transformers_folder_adds_the_config_tokens(tmp_path, corpus, tokenizer_files):
    folder = tmp_path / "model"
    folder.mkdir()
    tok = Tokenizer.from_file(str(tokenizer_files["bpe"]))
    tok.save(str(folder / "tokenizer.json"))
    new_id = tok.get_vocab_size(with_added_tokens=True)
    config = {"added_tokens_decoder": {str(new_id): {"content": "<|im_start|>", "special": True}}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    path = tmp_path / "chat.txt"
    path.write_text(corpus.read_text(encoding="utf-8")[:20_000] + "\n\n<|im_start|>user hello<|im_start|>\n")

    stats = analyze([str(path)], str(folder))
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False)])
    ref = bincount((i for e in tok.encode_batch(documents(path.read_text())) for i in e.ids), new_id + 1)
    np.testing.assert_array_equal(stats.counts, ref)
    assert stats.counts[new_id] == 2 and stats.tokens[new_id] == "<|im_start|>"

    config["added_tokens_decoder"] = {str(new_id + 5): {"content": "<|gap|>", "special": True}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="next free id"):
        analyze([str(path)], str(folder))


def test_unknown_file_names_the_formats(tmp_path, corpus):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01binary")
    with pytest.raises(TokenizerError, match="tiktoken rank file") as e:
        analyze([str(corpus)], str(path))
    assert "\n" not in str(e.value)
