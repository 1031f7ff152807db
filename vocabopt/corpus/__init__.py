"""The machinery of the analyze stage: read a corpus and count its tokens exactly. One module per job, in the order
the data flows (each imports only the ones above it):

- `files`: resolve paths, globs, URLs and stdin; sizes and kinds; open and decompress; `SourceInfo`.
- `ranges`: byte ranges of a file, cut at line starts (the Dask engine's parts).
- `records`: JSON-lines fields, parquet and arrow columns, local `datasets` datasets.
- `reader`: `Reader`, the stream of `Text` and `Block` items; `SourceOptions`; `cut_long`.
- `words`: the word vocabulary of `--tokenizer word`.
- `regex_safety`: whether a Split regex lets the chunk path cut before spaces, newlines or punctuation (parsed,
  not whitelisted).
- `formats`: transformers folders, tiktoken rank files, tekken JSON (as tokenizer.json); `spm`: SentencePiece .model.
- `tokenizer`: `TokenizerSpec` (`load_spec`), the counting path a tokenizer allows (`choose_path`).
- `cuts`: where a tokenizer's config lets the chunk path cut besides before spaces (lone newlines, punctuation).
- `vocab`: a tokenizer's vocabulary, read once: its size, token strings, the text size of each token.
- `chunks`: the numpy byte-key machinery of the "chunks" path.
- `store`: `IdStore`, the ids of the distinct pieces seen so far, and `add_distinct`, a batch's counts from them.
- `locate`: `ChunkEncoder`: a batch's new distinct chunks encoded laid end to end, each token placed back.
- `counters`: `HFCounter`, `BytesCounter`, `WordCounter` (`make_counter` from `CountOptions`) -> `BatchCounts`.
- `tally`: `Tally` (counts that add up across parts), `Batch` and `batches`.
- `pool`: the local engine (worker processes; `server`: what its fork server imports last); `cluster`: the Dask
  engine.

`vocabopt.analyze` sits on top and turns a Tally into CorpusStats (`vocabopt.stats`); nothing here imports those.
"""
