"""Each source type reads back what was written (random access, globs, renames, pickling)."""

import gzip
import json
import pickle
import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embeddinggemma_jax.data import DataError, open_source, write_array_record
from embeddinggemma_jax.data.sources import (
    ArrayRecordSource,
    JsonlSource,
    ParquetSource,
    TfdsSource,
)


def make_rows(n, start=0):
    rows = []
    for i in range(start, start + n):
        row = {"query": f"query {i} é", "positive": f"positive {i}\nsecond line"}
        if i % 2:
            row["negatives"] = [f"neg {i}.{j}" for j in range(i % 3 + 1)]
            row["teacher"] = {
                "query": [i / 8, -i / 4],
                "positive": [1.0, float(i)],
                "negatives": [[float(j), 0.5] for j in range(i % 3 + 1)],
            }
        if i % 3 == 0:
            row["title"] = f"title {i}"
            row["query_id"] = f"q{i}"
        rows.append(row)
    return rows


def to_table(rows):
    """Arrow table with every field a column (from_pylist would infer the schema from row 0 only)."""
    keys = sorted({k for r in rows for k in r})
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def read_all(source):
    return [source[i].to_json() for i in range(len(source))]


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n\n")  # blank lines are skipped
    return str(path)


@pytest.mark.parametrize("name, opener", [("d.jsonl", open), ("d.jsonl.gz", gzip.open)])
def test_jsonl_roundtrip(tmp_path, name, opener):
    rows = make_rows(9)
    path = write_jsonl(tmp_path / name, rows, opener)
    source = open_source(path)
    assert isinstance(source, JsonlSource) and len(source) == len(rows)
    assert read_all(source) == rows
    # Random access in any order, negative indices, and the 1-based line number (blank lines count).
    assert source[-1].to_json() == rows[-1]
    assert source[4].where == f"{path} line 9"
    with pytest.raises(IndexError):
        source[len(rows)]


def test_jsonl_glob_concatenates_sorted_files(tmp_path):
    rows_a, rows_b = make_rows(4), make_rows(3, start=4)
    write_jsonl(tmp_path / "part-1.jsonl", rows_b)
    write_jsonl(tmp_path / "part-0.jsonl", rows_a)
    source = open_source(str(tmp_path / "part-*.jsonl"))
    assert read_all(source) == rows_a + rows_b
    assert source[5].where == f"{tmp_path / 'part-1.jsonl'} line 3"


def test_parquet_roundtrip(tmp_path):
    rows = make_rows(10)
    path = tmp_path / "d.parquet"
    pq.write_table(to_table(rows), path, row_group_size=3)
    source = open_source(str(path))
    assert isinstance(source, ParquetSource) and len(source) == len(rows)
    assert read_all(source) == rows
    assert source[7].where == f"{path} row 7"


def test_arrayrecord_roundtrip(tmp_path):
    rows = make_rows(7)
    paths = [tmp_path / "d-00000.array_record", tmp_path / "d-00001.array_record"]
    write_array_record(paths[0], rows[:4])
    write_array_record(paths[1], rows[4:])
    source = open_source(str(tmp_path / "d-*.array_record"))
    assert isinstance(source, ArrayRecordSource) and len(source) == len(rows)
    assert read_all(source) == rows
    assert source[5].where == f"{paths[1]} record 1"


def test_sources_survive_pickling(tmp_path):
    rows = make_rows(5)
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    pq.write_table(to_table(rows), tmp_path / "d.parquet")
    write_array_record(tmp_path / "d.array_record", rows)
    for path in (jsonl, tmp_path / "d.parquet", tmp_path / "d.array_record"):
        source = open_source(str(path))
        source[0]  # opens lazily held handles/tables before pickling
        assert read_all(pickle.loads(pickle.dumps(source))) == rows


def test_field_renames_and_extra_columns(tmp_path):
    rows = [{"anchor": "a", "pos": "b", "score": 0.5}, {"anchor": "c", "pos": "d", "score": 1.0}]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match="field 'anchor'"):
        open_source(str(path), fields={})[0]
    with pytest.raises(DataError, match="field 'score'"):
        open_source(str(path), fields={"query": "anchor", "positive": "pos"})[0]
    source = open_source(
        str(path), fields={"query": "anchor", "positive": "pos"}, ignore_extra_fields=True
    )
    assert read_all(source) == [{"query": "a", "positive": "b"}, {"query": "c", "positive": "d"}]


def test_format_detection_and_explicit_format(tmp_path):
    rows = make_rows(3)
    path = write_jsonl(tmp_path / "records.txt", rows)
    with pytest.raises(DataError, match="give format="):
        open_source(path)
    assert read_all(open_source(path, "jsonl")) == rows
    with pytest.raises(DataError, match="unknown format"):
        open_source(path, "csv")


def test_unreadable_files_are_named(tmp_path):
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=f"{bad_parquet}: cannot read as Parquet"):
        open_source(str(bad_parquet))
    bad_gzip = tmp_path / "bad.jsonl.gz"
    bad_gzip.write_bytes(b"not gzip")
    with pytest.raises(DataError, match=f"{bad_gzip}: cannot read"):
        open_source(str(bad_gzip))


class FakeTfdsSource:
    """What tfds.data_source returns: random access to dicts of bytes/numpy features."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        out = {"query": row["query"].encode(), "positive": np.bytes_(row["positive"].encode())}
        if "negatives" in row:
            out["negatives"] = np.array([n.encode() for n in row["negatives"]], dtype=object)
            out["teacher"] = {k: np.asarray(v, np.float32) for k, v in row["teacher"].items()}
        return out


def test_tfds_source_through_data_source(tmp_path, monkeypatch):
    rows = [{k: v for k, v in r.items() if k not in ("title", "query_id")} for r in make_rows(6)]
    calls = []

    def data_source(name, split, data_dir):
        calls.append((name, split, data_dir))
        return FakeTfdsSource(rows)

    monkeypatch.setitem(
        sys.modules, "tensorflow_datasets", types.SimpleNamespace(data_source=data_source)
    )
    source = open_source("my_pairs:1.0.0", "tfds", split="train[:6]", data_dir=str(tmp_path))
    assert isinstance(source, TfdsSource)
    assert calls == [("my_pairs:1.0.0", "train[:6]", str(tmp_path))]
    assert read_all(source) == rows
    assert source[3].where == "tfds my_pairs:1.0.0 split train[:6] example 3"


def test_tfds_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match="optional extra"):
        open_source("my_pairs", "tfds")
