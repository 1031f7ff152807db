"""Regenerates corpora/kjv-bpe-8k/tokenizer.json: a byte-level BPE (GPT-2 style, 8,000 ids) trained on kjv.txt.

Usage: python corpora/train_tokenizer.py [--vocab-size 8000]
Deterministic for a given tokenizers version (the trainer is single-pass and sorts ties).
"""

import argparse
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--corpus", default=str(HERE / "kjv.txt"))
    ap.add_argument("--out", default=str(HERE / "kjv-bpe-8k" / "tokenizer.json"))
    args = ap.parse_args()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([args.corpus], trainer)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tok.save(args.out)
    print(f"wrote {args.out}: {tok.get_vocab_size()} ids")


if __name__ == "__main__":
    main()
