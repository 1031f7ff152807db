"""Benchmark: analyzer throughput per tokenizer family and peak memory, against the tokenizer itself.

The peer is what vocabopt itself would call without its fast paths: `Tokenizer.encode_batch_fast` (ids only, no
offsets; Rust threads on all cores) over the same sequences + `np.bincount`, the tokenizer parsed once, outside the
timing. Both count the same thing: the default sequences (blank-line-separated documents with their newlines) and
the post-processor's special tokens; identical counts are asserted for every row.

Families (trained here on the shipped corpus with the `tokenizers` trainers where no real file ships): GPT-2
byte-level (the shipped kjv-bpe-8k), cl100k-style, o200k-style and tekken-style Split regexes then ByteLevel,
a SentencePiece-style BPE with byte fallback (Metaspace without splitting: one piece per sequence, as the tokenizers
library's own SentencePiece layout does) and the same model laid out as Llama 2's tokenizer.json (no pre-tokenizer,
a Prepend + Replace normalizer, which the analyzer restates as that Metaspace and counts on the same chunk path), a
Unigram (Metaspace), WordPiece (BERT). Corpora: the shipped corpus (4.4 MB) and a generated one whose distinct words
grow as in real text (Heaps' law: Zipf-Mandelbrot word sampling over a 2M-word synthetic vocabulary, a fifth of its
documents real text), since the distinct-piece rate is what decides the speed-up. Rounds are interleaved (peer,
vocabopt, peer, ...) and the ratio is the median of per-round ratios. Then peak RSS of `vocabopt analyze` on both
corpora (flat memory). Prints a table and rewrites its section of docs/benchmarks.md.

    python benchmarks/analyze_throughput.py [--rounds 3] [--big-rounds 3] [--big-mb 40] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _sections import command, machine, write_section  # noqa: E402

CORPUS = ROOT / "corpora" / "kjv.txt"
TOKENIZER = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"

CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
UPPER, LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
REGEXES = {
    "cl100k-style": CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+",
    "o200k-style": rf"[^\r\n\p{{L}}\p{{N}}]?{UPPER}*{LOWER}+{CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?{UPPER}+{LOWER}*"
    rf"{CONTRACTIONS}?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "tekken-style": rf"[^\r\n\p{{L}}\p{{N}}]?{UPPER}*{LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{UPPER}+{LOWER}*|\p{{N}}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


# --- tokenizers ---------------------------------------------------------------------------------------------------


def train_family(name: str, out: Path, vocab: int) -> Path:
    """A tokenizer of family `name` trained on the shipped corpus, saved as out/NAME.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if name in REGEXES:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(REGEXES[name]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False, initial_alphabet=alphabet)
    elif name == "SentencePiece BPE, byte fallback":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")  # split while training ...
        specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False, special_tokens=specials)
    elif name == "Unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab, show_progress=False, special_tokens=["<unk>", "</s>"], unk_token="<unk>"
        )
    elif name == "WordPiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab, show_progress=False, special_tokens=["[UNK]", "[CLS]"])
    else:
        raise ValueError(name)
    tok.train([str(CORPUS)], trainer)
    if name.startswith("SentencePiece"):  # ... then encode SentencePiece's way: one piece per sequence
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
        tok.decoder = decoders.Metaspace(prepend_scheme="first", split=False)
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    path = out / (name.split(",")[0].replace(" ", "-") + ".json")
    tok.save(str(path))
    return path


def llama_layout(spm_path: Path, out: Path) -> Path:
    """The SentencePiece BPE of `spm_path` as Llama 2's tokenizer.json lays it out (Mistral v0.1 too): no
    pre-tokenizer, a Prepend("▁") + Replace(" " -> "▁") normalizer; the same model, merges and ids."""
    import json

    layout = json.loads(spm_path.read_text(encoding="utf-8"))
    prepend = {"type": "Prepend", "prepend": "\u2581"}
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    layout["normalizer"] = {"type": "Sequence", "normalizers": [prepend, replace]}
    layout["pre_tokenizer"] = None
    path = out / "SentencePiece-BPE-llama2-layout.json"
    path.write_text(json.dumps(layout, ensure_ascii=False), encoding="utf-8")
    return path


# --- corpora ------------------------------------------------------------------------------------------------------


def heaps_corpus(path: Path, n_bytes: int, seed: int = 0, vocab: int = 2_000_000) -> int:
    """Write ~n_bytes of documents whose distinct words keep growing (Heaps' law) to `path`; returns the bytes.

    Words: ranks sampled from a Zipf-Mandelbrot law p(r) ∝ (r + 2.7)^-1.07 over `vocab` synthetic words (syllable
    strings, so tokenizers split them as they split real rare words); 12% capitalised, punctuation after 10%.
    Every fifth document is a run of real lines (the shipped corpus, from a random place).
    """
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "ea")]
    cdf = np.cumsum((np.arange(1, vocab + 1) + 2.7) ** -1.07)
    cdf /= cdf[-1]
    real = CORPUS.read_text(encoding="utf-8").splitlines()
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < n_bytes:
            ranks = np.searchsorted(cdf, rng.random(200_000))
            words = [_word(int(r), syllables) for r in ranks.tolist()]
            caps, punct = rng.random(len(words)) < 0.12, rng.random(len(words))
            words = [
                (w.capitalize() if c else w) + ("." if p < 0.05 else "," if p < 0.1 else "")
                for w, c, p in zip(words, caps.tolist(), punct.tolist())
            ]
            lines = [" ".join(words[i : i + 14]) for i in range(0, len(words), 14)]
            docs = ["\n".join(lines[i : i + 8]) for i in range(0, len(lines), 8)]
            for k in range(0, len(docs), 5):
                start = int(rng.integers(0, len(real) - 8))
                docs[k] = "\n".join(line for line in real[start : start + 8] if line.strip()) or docs[k]
            block = "\n\n".join(docs) + "\n\n"
            f.write(block)
            written += len(block.encode("utf-8"))
    return written


def _word(rank: int, syllables: list[str]) -> str:
    out = ""
    while True:
        rank, k = divmod(rank, len(syllables))
        out += syllables[k]
        if rank == 0:
            return out


def documents(path: Path) -> list[str]:
    """The default sequences of `vocabopt analyze`: blank-line-separated blocks, newlines inside kept."""
    docs, block = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                block.append(line)
            elif block:
                docs.append("\n".join(block))
                block = []
    return docs + (["\n".join(block)] if block else [])


# --- timing -------------------------------------------------------------------------------------------------------


def peer_counts(tok, path: Path) -> np.ndarray:
    """Read the documents, encode_batch_fast + bincount; the tokenizer parsed once (by the caller)."""
    encs = tok.encode_batch_fast(documents(path), add_special_tokens=True)
    ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64)
    return np.bincount(ids, minlength=max(tok.get_vocab(with_added_tokens=True).values()) + 1)


WORDS_PER_TEXT = 256  # words per text in `distinct_words_seconds` (ad hoc: 5-20% faster than ~60 words per text)


def distinct_words_seconds(tok_path: Path, words: list[str], rounds: int) -> float:
    """Best of `rounds` timings of the tokenizer (as the analyzer restates it: SentencePiece layouts split at
    spaces) encoding each distinct whitespace word once, with its leading space, WORDS_PER_TEXT to a text: an
    optimistic estimate of the least tokenizing an exact counter that tokenizes distinct pieces must do (a line's
    first word, and punctuation a regex joins to the newline after it, are pieces of their own that it leaves out;
    best of the rounds where the peer's time is their median), so peer / this is an optimistic ceiling on the
    speed-up such a counter can reach on this machine, whatever its own costs."""
    from vocabopt.corpus.tokenizer import load_spec, shared_tokenizer

    tok = shared_tokenizer(load_spec(str(tok_path)), restated=True)
    texts = [" " + " ".join(words[i : i + WORDS_PER_TEXT]) for i in range(0, len(words), WORDS_PER_TEXT)]
    best = float("inf")
    for _ in range(max(1, rounds)):
        t = time.perf_counter()
        tok.encode_batch_fast(texts, add_special_tokens=False)
        best = min(best, time.perf_counter() - t)
    return best


def vocabopt_counts(path: Path, tokenizer: Path) -> tuple[np.ndarray, str]:
    from vocabopt import analyze

    stats = analyze([str(path)], str(tokenizer))
    return stats.counts, stats.options["count_path"]


def interleaved(peer, ours, rounds: int, warmup: bool) -> tuple[float, float, float, np.ndarray, np.ndarray, str]:
    """(median peer s, median ours s, median per-round ratio, peer counts, our counts, our path), after one untimed
    call of each if `warmup` (imports, the tokenizer parsed and cached per process)."""
    if warmup:
        peer(), ours()
    t_peer, t_ours = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        ref = peer()
        t_peer.append(time.perf_counter() - t)
        t = time.perf_counter()
        got, path = ours()
        t_ours.append(time.perf_counter() - t)
    ratio = statistics.median(a / b for a, b in zip(t_peer, t_ours))
    return statistics.median(t_peer), statistics.median(t_ours), ratio, ref, got, path


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS of the whole process tree in MB, wall seconds), sampled every 20 ms from /proc."""
    import subprocess

    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed with exit code {proc.returncode}")
    return peak / 1e6, time.perf_counter() - t


def _tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds on the shipped corpus")
    ap.add_argument("--big-rounds", type=int, default=3, help="interleaved rounds on the generated corpus")
    ap.add_argument("--big-mb", type=float, default=40.0, help="size of the generated Heaps'-law corpus")
    ap.add_argument("--vocab", type=int, default=32_000, help="ids of the trained tokenizers")
    ap.add_argument("--quick", action="store_true", help="1 round, an 8 MB generated corpus, 8K-id tokenizers")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.big_rounds, args.big_mb, args.vocab = 1, 1, 8.0, 8000
    from tokenizers import Tokenizer

    rows, rss = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "heaps.txt"
        big_bytes = heaps_corpus(big, int(args.big_mb * 1e6))
        corpora = {"kjv.txt": (CORPUS, args.rounds), f"Heaps {big_bytes / 1e6:.0f} MB": (big, args.big_rounds)}
        words = {name: sorted({w for d in documents(p) for w in d.split()}) for name, (p, _) in corpora.items()}
        distinct = {name: len(w) for name, w in words.items()}
        families = {"GPT-2 byte-level (kjv-bpe-8k)": TOKENIZER}
        for name in [*REGEXES, "SentencePiece BPE, byte fallback", "Unigram", "WordPiece"]:
            families[name] = train_family(name, Path(tmp), args.vocab)
        spm_bpe = families["SentencePiece BPE, byte fallback"]
        families["SentencePiece BPE, Llama 2 layout"] = llama_layout(spm_bpe, Path(tmp))
        for family, tok_path in families.items():
            tok = Tokenizer.from_file(str(tok_path))
            tok.no_truncation()
            tok.no_padding()
            for corpus, (path, rounds) in corpora.items():
                t_peer, t_ours, ratio, ref, got, used = interleaved(
                    lambda tok=tok, path=path: peer_counts(tok, path),
                    lambda path=path, tok_path=tok_path: vocabopt_counts(path, tok_path),
                    rounds,
                    warmup=corpus == "kjv.txt",
                )
                assert np.array_equal(ref, got), f"{family} on {corpus}: counts differ from encode_batch_fast"
                mb = path.stat().st_size / 1e6
                t_words = distinct_words_seconds(tok_path, words[corpus], rounds)
                rows.append((family, corpus, used, t_peer, t_ours, ratio, mb, t_words))
                print(
                    f"{family:34} {corpus:14} {used:10} {t_peer:7.2f} s {t_ours:7.2f} s {ratio:5.2f}x"
                    f"  (distinct words once {t_words:.2f} s: bound {t_peer / t_words:.2f}x)",
                    flush=True,
                )
        for name, (path, _) in corpora.items():
            args_ = [sys.executable, "-m", "vocabopt", "analyze", str(path), "-t", str(TOKENIZER), "-q"]
            rss[name] = peak_rss_mb(args_ + ["-o", str(Path(tmp) / "s.json")])

    lines = [
        f"Machine: {machine()}, {os.cpu_count()} cores. Command: `{command()}`",
        "",
        "Peer: read the file's documents, `encode_batch_fast` + `np.bincount`, tokenizer parsed once, special "
        "tokens included (what `vocabopt analyze` counts by default; its time includes reading and the Zipf fits). "
        "Identical counts asserted on every row. Trained "
        f"tokenizers: {args.vocab:,} ids, on corpora/kjv.txt. Ratio: median of per-round ratios "
        f"({args.rounds} interleaved round(s) on kjv.txt after a warm-up call of each, {args.big_rounds} on the "
        "generated corpus).",
        "",
        "Corpora: " + "; ".join(f"{name}: {distinct[name]:,} distinct whitespace words" for name in distinct) + ".",
        "",
        "Distinct words once: the same tokenizer (as the analyzer restates it) encoding each distinct whitespace word "
        f"of the corpus once, {WORDS_PER_TEXT} words to a text, best of the rounds: an optimistic estimate of the "
        "least tokenizing an exact counter must do (a line's first word and punctuation joined to a newline are "
        "pieces of their own it leaves out). Bound: encode_batch_fast (median) / that, an optimistic ceiling on the "
        "speed-up such a counter could reach here if cutting, counting, reading and fitting cost nothing.",
        "",
        "| family | corpus | vocabopt path | encode_batch_fast (s) | vocabopt.analyze (s) | MB/s (vocabopt) "
        "| speed-up | distinct words once (s) | bound |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for family, corpus, used, t_peer, t_ours, ratio, mb, t_words in rows:
        lines.append(
            f"| {family} | {corpus} | {used} | {t_peer:.2f} | {t_ours:.2f} | {mb / t_ours:.1f} | {ratio:.2f}x "
            f"| {t_words:.2f} | {t_peer / t_words:.1f}x |"
        )
    lines += [
        "",
        "Peak RSS of `vocabopt analyze` (process tree, including worker processes and interpreter start-up; "
        "GPT-2 byte-level):",
        "",
        "| corpus | wall (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {wall:.2f} | {peak:.0f} |" for name, (peak, wall) in rss.items()]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("Analyzer throughput (benchmarks/analyze_throughput.py)", body)


if __name__ == "__main__":
    main()
