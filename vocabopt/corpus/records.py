"""Records: the texts of JSON-lines fields, parquet and arrow columns, and local `datasets` datasets.

Job: pull the text field out of structured sources. Inputs: a record (dict) or a file / dataset folder and a field
name (dotted for nested structs). Outputs: the field's value or why it is missing (`get_field`, `field_error`), and
iterators of texts with the progress through the source (parquet/arrow: (text, rows done, fraction done); a
dataset: (text, fraction done)). pyarrow and datasets are imported only when such a source is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .files import is_url, open_file


def get_field(record: Any, field: str) -> Any:
    value = record
    for part in field.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _Missing
    return value


class _Missing:
    pass


LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate (a valid pair is decoded to one character)


def field_error(path: str, lineno: int | None, field: str, record: Any, value: Any) -> str:
    where = f"{path}:{lineno}" if lineno else path
    if value is _Missing:
        keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        return f"{where}: no field {field!r} (available: {keys}); pass --field NAME (dotted for nested fields)"
    return (
        f"{where}: field {field!r} holds {type(value).__name__}, not text; pass --field with a text field "
        "or --skip-bad-lines"
    )


def _field_texts(values: Iterable[Any], field: str, path: str) -> Iterator[str]:
    """The texts in a column's values: `field`'s part after the first dot navigates nested structs; None is skipped."""
    top, _, rest = field.partition(".")
    for value in values:
        if rest:
            value = get_field(value, rest)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(field_error(path, None, field, {top: value}, value))
        yield value


def _arrow_column_texts(table_batches: Iterator[Any], field: str, path: str, total_rows: int) -> Iterator:
    top = field.partition(".")[0]
    done = 0
    for batch in table_batches:
        if top not in batch.schema.names:
            raise InputError(f"{path}: no column {top!r} (columns: {', '.join(batch.schema.names)}); pass --field")
        done += batch.num_rows
        for value in _field_texts(batch.column(top).to_pylist(), field, path):
            yield value, done, done / max(total_rows, 1)


def parquet_texts(path: str, field: str) -> Iterator[tuple[str, int, float]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(open_file(path) if is_url(path) else path)
    except InputError:
        raise
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: not a valid parquet file ({e})") from None
    top = field.partition(".")[0]
    if top not in pf.schema_arrow.names:
        raise InputError(f"{path}: no column {top!r} (columns: {', '.join(pf.schema_arrow.names)}); pass --field")
    yield from _arrow_column_texts(pf.iter_batches(batch_size=1024, columns=[top]), field, path, pf.metadata.num_rows)


def arrow_texts(path: str, field: str) -> Iterator[tuple[str, int, float]]:
    import pyarrow as pa

    source = open_file(path) if is_url(path) else pa.memory_map(path)
    try:
        reader = pa.ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        try:  # `datasets` writes the streaming format
            source = open_file(path) if is_url(path) else pa.memory_map(path)
            reader = pa.ipc.open_stream(source)
            batches, rows = iter(reader), 0
        except pa.ArrowInvalid as e:
            raise InputError(f"{path}: not a valid arrow file ({e})") from None
    yield from _arrow_column_texts(batches, field, path, rows)


def dataset_texts(path: str, *, field: str | None, split: str) -> Iterator[tuple[str, float]]:
    """Texts of a local `datasets` dataset: a `save_to_disk` folder, or files `load_dataset` can read (streamed).

    Never contacts the Hugging Face Hub: the path must exist locally.
    """
    if not Path(path).exists():
        raise InputError(
            f"{path}: no such dataset folder; vocabopt reads local datasets only "
            "(save one with Dataset.save_to_disk, or pass its data files)"
        )
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    field = field or "text"
    p = Path(path)
    if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise InputError(f"{path}: no split {split!r} (splits: {', '.join(ds)}); pass --split")
            ds = ds[split]
        total = len(ds)
    else:
        try:
            ds = datasets.load_dataset(path, split=split, streaming=True)
        except Exception as e:  # datasets raises many types for unreadable folders
            raise InputError(
                f"{path}: datasets.load_dataset could not read it ({e}); pass a save_to_disk folder "
                "or a folder of text/json/csv/parquet files"
            ) from None
        total = 0
    top = field.partition(".")[0]
    names = ds.column_names or []
    if names and top not in names:
        raise InputError(f"{path}: no field {top!r} (columns: {', '.join(names)}); pass --field")

    def texts() -> Iterator[tuple[str, float]]:
        done = 0
        for batch in ds.select_columns([top]).iter(batch_size=1000):
            done += len(batch[top])
            for value in _field_texts(batch[top], field, path):
                yield value, (done / total if total else 0.0)

    return texts()
