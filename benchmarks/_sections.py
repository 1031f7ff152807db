"""Shared by the optimizer's benchmarks: machine facts, and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    import torch

    from vocabopt.device import device_name

    return f"{device_name('cpu').removeprefix('cpu: ')}, torch {torch.__version__}, {datetime.date.today()}"


def command() -> str:
    return "python " + " ".join(["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]])


def write_section(heading: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) the section `## heading` of docs/benchmarks.md, leaving other sections alone."""
    marker = f"## {heading}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(marker + "\n")
    section = f"{marker}\n\n{body.strip()}\n"
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[nxt:] if nxt >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def stdlib_text(limit: int) -> str:
    """The first `limit` bytes (whole files, sorted by path) of the running interpreter's standard library source
    (PSF License v2): a real text of another kind than the shipped corpus, available offline."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out, size = [], 0
    for f in sorted(stdlib.rglob("*.py")):
        if "site-packages" in f.parts or "test" in f.parts or "tests" in f.parts:
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        size += len(text.encode("utf-8"))
        if size >= limit:
            break
    return "\n".join(out)


def stdlib_corpus(tmp: Path, limit: int, vocab: int) -> tuple[Path, Path, int]:
    """(a text file of `stdlib_text(limit)`, a byte-level BPE of `vocab` ids trained on it, its size in bytes), both
    written under `tmp` (tokenizers' BpeTrainer; nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = stdlib_text(limit)
    corpus = tmp / "python-stdlib.txt"
    corpus.write_text(text, encoding="utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(
        [str(corpus)], trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    path = tmp / f"python-stdlib-bpe-{vocab // 1000}k.json"
    tok.save(str(path))
    return corpus, path, len(text.encode("utf-8"))
