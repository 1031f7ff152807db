"""Shared fixtures: a slice of the shipped corpus and tokenizers of each kind trained on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpora" / "kjv.txt"
BPE = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"


@pytest.fixture(autouse=True)
def _private_profile_cache(tmp_path_factory, monkeypatch):
    """Tests never read or litter the user's profile cache (~/.cache/vocabopt): each session gets its own."""
    monkeypatch.setenv("VOCABOPT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "profile-cache"))


@pytest.fixture(scope="session")
def corpus_slice(tmp_path_factory) -> Path:
    """The first ~300 KB of the shipped corpus (whole lines), for tests that count many times."""
    text = CORPUS.read_text(encoding="utf-8")[:300_000]
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory, corpus_slice) -> dict[str, Path]:
    """Tokenizers of the kinds the analyzer must count exactly: byte-level BPE, WordPiece, Unigram/Metaspace, and
    Split regexes (GPT-4/Llama 3, Qwen2, and one of our own that the fast chunk path must refuse)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    out = tmp_path_factory.mktemp("tokenizers")
    files = {"bpe": BPE}

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train(
        [str(corpus_slice)],
        trainers.WordPieceTrainer(vocab_size=2000, show_progress=False, special_tokens=["[UNK]", "[CLS]", "[SEP]"]),
    )
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", wp.token_to_id("[CLS]")), ("[SEP]", wp.token_to_id("[SEP]"))]
    )
    files["wordpiece"] = out / "wordpiece.json"
    wp.save(str(files["wordpiece"]))

    uni = Tokenizer(models.Unigram())
    uni.normalizer = normalizers.NFKC()
    uni.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    uni.decoder = decoders.Metaspace(prepend_scheme="first")
    uni.train(
        [str(corpus_slice)],
        trainers.UnigramTrainer(
            vocab_size=1500, show_progress=False, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>"
        ),
    )
    uni.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    files["unigram"] = out / "unigram.json"
    uni.save(str(files["unigram"]))
    unsplit = json.loads(files["unigram"].read_text())  # the same vocabulary, unsplit and without a normalizer
    unsplit["pre_tokenizer"]["split"], unsplit["normalizer"] = False, None
    files["spm_unigram"] = out / "spm_unigram.json"
    files["spm_unigram"].write_text(json.dumps(unsplit))

    # SentencePiece-style BPE with byte fallback as Llama 2 / Mistral ship it in tokenizers: trained on words, then
    # Metaspace without splitting (one pre-token per sequence). "spm_bpe": its tokens never join a character to a
    # following "▁" (chunk path); "spm_bpe_joined": trained on whole sequences, its tokens cross spaces (encode).
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    for name, split in (("spm_bpe", True), ("spm_bpe_joined", False)):
        sp = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        sp.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=split)
        sp.train([str(corpus_slice)], trainers.BpeTrainer(vocab_size=900, show_progress=False, special_tokens=specials))
        sp.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
        sp.decoder = decoders.Metaspace(prepend_scheme="first", split=False)
        sp.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        files[name] = out / f"{name}.json"
        sp.save(str(files[name]))
    # ... and with a whitespace-run token "▁▁" (as Llama 2's vocabulary has): safe for spaces, not for a literal "▁"
    # in the text ("a▁ b": the merge would cross the cut before the space), so such texts must be encoded whole
    runs = json.loads(files["spm_bpe"].read_text())
    runs["model"]["vocab"]["\u2581\u2581"] = len(runs["model"]["vocab"])
    runs["model"]["merges"].insert(0, ["\u2581", "\u2581"])  # the first merge: it always applies
    files["spm_bpe_runs"] = out / "spm_bpe_runs.json"
    files["spm_bpe_runs"].write_text(json.dumps(runs))
    # The same vocabulary in SentencePiece's other tokenizer.json layout: no pre-tokenizer, a normalizer that makes
    # the "▁"s (Llama 2 / Mistral v0.1: Prepend then Replace; "spm_replace": the Replace alone)
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    prepend = {"type": "Prepend", "prepend": "\u2581"}
    for name, normalizer in (
        ("spm_llama", {"type": "Sequence", "normalizers": [prepend, replace]}),
        ("spm_replace", replace),
    ):
        layout = json.loads(files["spm_bpe"].read_text())
        layout["normalizer"], layout["pre_tokenizer"] = normalizer, None
        files[name] = out / f"{name}.json"
        files[name].write_text(json.dumps(layout))

    # Byte-level BPE that learned whitespace-run tokens ("ĠĠĠ", tabs): the case where cutting inside a run of
    # spaces would change the counts.
    code = out / "code.txt"
    code.write_text("".join(f"{' ' * (4 * (i % 4))}line{i}  =  x\t\t{i}   \n" for i in range(3000)))
    ws = Tokenizer(models.BPE())
    ws.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    ws.train(
        [str(corpus_slice), str(code)],
        trainers.BpeTrainer(vocab_size=1200, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    ws.post_processor = processors.ByteLevel(trim_offsets=True)  # GPT-2's: trims spaces off token offsets
    files["bpe_spaces"] = out / "bpe_spaces.json"
    ws.save(str(files["bpe_spaces"]))

    # Byte-level BPE missing the bytes of non-ASCII characters: they are dropped (no unk token: tokens no longer add
    # up to the text's bytes, and the counter must fall back to token offsets), become <unk>, or fused <unk>s.
    for name, unk, fuse in (("bpe_gaps", None, False), ("bpe_unk", "<unk>", False), ("bpe_fuse_unk", "<unk>", True)):
        gaps = Tokenizer(models.BPE(unk_token=unk, fuse_unk=fuse))
        gaps.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        gaps.train(
            [str(corpus_slice)],
            trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=[unk] if unk else []),
        )
        files[name] = out / f"{name}.json"
        gaps.save(str(files[name]))

    # A Split regex then ByteLevel: GPT-4's cl100k as Llama 3 ships it, Qwen2's (digits one by one), and a regex of
    # our own, which the fast chunk path must refuse (it takes the pretokens path).
    for name, digits in (("split_regex", r"\p{N}{1,3}"), ("split_qwen", r"\p{N}"), ("split_custom", None)):
        pattern = (
            (
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
                + digits
                + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            )
            if digits
            else r"\w+ ?|\s+|[^\w\s]+"
        )
        split = Tokenizer(models.BPE())
        split.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        split.train(
            [str(corpus_slice)],
            trainers.BpeTrainer(
                vocab_size=1000, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
            ),
        )
        files[name] = out / f"{name}.json"
        split.save(str(files[name]))
    return files


@pytest.fixture
def plain(tmp_path):
    """Three KJV lines in a text file (tests.shared.LINES)."""
    from tests.shared import LINES

    path = tmp_path / "plain.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path
