"""vocabopt.corpus.records: JSON-lines fields, parquet, arrow and datasets give the same counts as the plain text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.shared import LINES, counts
from vocabopt import analyze

ROOT = Path(__file__).resolve().parents[2]


def test_jsonl_dotted_field_and_sequences(tmp_path, plain):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"meta": {"body": line}, "id": i}) + "\n" for i, line in enumerate(LINES)))
    stats = analyze([str(path)], "bytes", field="meta.body")
    np.testing.assert_array_equal(stats.counts, counts([str(plain)], "bytes", sequence="line"))
    assert stats.n_sequences == 3


def test_parquet_arrow_and_datasets(tmp_path, plain):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": LINES, "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "c.parquet")
    with pa.ipc.new_file(str(tmp_path / "c.arrow"), table.schema) as w:
        w.write_table(table)
    ref = counts([str(plain)], "bytes", sequence="line")  # a record per line: the text's lines, newlines left out
    np.testing.assert_array_equal(counts([str(tmp_path / "c.parquet")], "bytes"), ref)
    np.testing.assert_array_equal(counts([str(tmp_path / "c.arrow")], "bytes"), ref)

    ds = datasets.Dataset.from_dict({"text": LINES})
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    np.testing.assert_array_equal(counts([], "bytes", dataset=str(tmp_path / "saved")), ref)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in LINES))
    np.testing.assert_array_equal(counts([], "bytes", dataset=str(tmp_path / "folder")), ref)


def test_lone_surrogates_in_json_are_replaced_and_reported(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "abc \\ud800 def \\udfff"}\n{"text": "pair \\ud83d\\ude00 ok"}\n')
    from tokenizers import Tokenizer

    bpe = ROOT / "corpora" / "kjv-bpe-8k" / "tokenizer.json"
    stats = analyze([str(path)], str(bpe), field="text", on_warning=lambda w: None)
    assert stats.sources[0].replaced_bytes == 2  # the valid pair is one character, kept
    encs = Tokenizer.from_file(str(bpe)).encode_batch(["abc \ufffd def \ufffd", "pair \U0001f600 ok"])
    ref = np.bincount([i for e in encs for i in e.ids], minlength=stats.counts.size)
    np.testing.assert_array_equal(stats.counts, ref)


def test_skip_bad_lines_counts_them(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n{"other": 1}\n{"text": "fine"}\n')
    stats = analyze([str(path)], "bytes", skip_bad_lines=True)
    assert stats.sources[0].skipped_lines == 2 and stats.n_sequences == 2
