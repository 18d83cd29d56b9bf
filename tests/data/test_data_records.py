"""Malformed data fails with file, line/row and field named; empty datasets fail before training."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data.datalib import WordTokenizer

from embeddinggemma_jax.data import (
    DataConfig,
    DataError,
    DataPipeline,
    DatasetConfig,
    open_source,
    parse_record,
)

GOOD = {
    "query": "what is a list",
    "positive": "a list is a sequence",
    "negatives": ["a dict", "a set"],
}


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


def open_pipeline(path, **dataset):
    config = DataConfig(datasets=(DatasetConfig(path=str(path), **dataset),), global_batch_size=2)
    return DataPipeline(config, WordTokenizer(), process_index=0, process_count=1)


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        ({"positive": "p"}, "query", "missing"),
        ({"query": "q", "positive": "  "}, "positive", "empty"),
        ({"query": "q", "positive": 3}, "positive", "must be a string"),
        ({**GOOD, "negatives": "one"}, "negatives", "list of strings"),
        ({**GOOD, "negatives": ["x", 7]}, "negatives[1]", "must be a string"),
        ({**GOOD, "negative": ["x"]}, "negative", "unknown field"),
        ({**GOOD, "title": ["t"]}, "title", "must be a string"),
        ({**GOOD, "query_id": 1.5}, "query_id", "string or an integer"),
        (
            {**GOOD, "teacher": {"query": [1.0, 2.0], "positive": [1.0]}},
            "teacher.positive",
            "dimension",
        ),
        (
            {**GOOD, "teacher": {"query": [1.0, "x"], "positive": [1.0, 2.0]}},
            "teacher.query[1]",
            "finite",
        ),
        (
            {**GOOD, "teacher": {"query": [1.0], "positive": [1.0], "negatives": [[1.0]]}},
            "teacher.negatives",
            "rows",
        ),
        ({**GOOD, "teacher": {"positive": [1.0]}}, "teacher.query", "missing"),
    ],
)
def test_malformed_jsonl_record_names_file_line_and_field(tmp_path, bad, field, reason):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, "", GOOD, bad, GOOD])  # line 2 blank
    with pytest.raises(DataError) as info:
        open_pipeline(path)
    message = str(info.value)
    assert f"{path} line 4" in message
    assert f"field {field!r}" in message
    assert reason in message
    assert info.value.field == field


def test_invalid_json_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, '{"query": "q", "positive": '])
    with pytest.raises(DataError, match=r"train\.jsonl line 2: invalid JSON"):
        open_pipeline(path)


def test_non_object_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, '["q", "p"]'])
    with pytest.raises(DataError, match=r"line 2: a record must be a JSON object"):
        open_pipeline(path)


def test_too_few_negatives_for_the_dataset(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl", [GOOD, {"query": "q", "positive": "p", "negatives": ["n"]}]
    )
    with pytest.raises(DataError) as info:
        open_pipeline(path, num_negatives=2)
    assert f"{path} line 2" in str(info.value) and info.value.field == "negatives"


def test_missing_teacher_for_a_teacher_dataset(tmp_path):
    teacher = {"query": [0.1, 0.2], "positive": [0.3, 0.4]}
    path = write_jsonl(tmp_path / "train.jsonl", [{**GOOD, "teacher": teacher}, GOOD])
    with pytest.raises(DataError) as info:
        open_pipeline(path, teacher=True)
    assert f"{path} line 2" in str(info.value) and info.value.field == "teacher"


def test_teacher_dimension_must_agree_across_records(tmp_path):
    rows = [
        {**GOOD, "teacher": {"query": [0.1, 0.2], "positive": [0.3, 0.4]}},
        {**GOOD, "teacher": {"query": [0.1, 0.2, 0.3], "positive": [0.3, 0.4, 0.5]}},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"line 2: field 'teacher.query': has dimension 3"):
        open_pipeline(path, teacher=True)


def test_unknown_task_in_record(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, {**GOOD, "task": "NoSuchPrompt"}])
    with pytest.raises(DataError) as info:
        open_pipeline(path)
    assert f"{path} line 2" in str(info.value) and info.value.field == "task"


def test_unknown_dataset_task_fails_at_config_time(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD])
    with pytest.raises(ValueError, match="datasets\\[0\\].task"):
        open_pipeline(path, task="NoSuchPrompt")


def test_parquet_row_is_named(tmp_path):
    rows = [GOOD, GOOD, {"query": "q", "positive": None, "negatives": None}]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError) as info:
        open_pipeline(path)
    assert f"{path} row 2" in str(info.value) and info.value.field == "positive"


def test_lazy_validation_still_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, {"query": "q"}])
    source = open_source(path)
    assert source[0].query == GOOD["query"]
    with pytest.raises(DataError, match=r"line 2: field 'positive'"):
        source[1]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_dataset_fails_when_the_pipeline_opens(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="empty"):
        open_pipeline(path)


def test_empty_parquet_fails(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(
        pa.table({"query": pa.array([], pa.string()), "positive": pa.array([], pa.string())}), path
    )
    with pytest.raises(DataError, match="empty"):
        open_pipeline(path)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no files match"):
        open_pipeline(tmp_path / "shard-*.jsonl")
    with pytest.raises(DataError, match="no such file"):
        open_pipeline(tmp_path / "nope.jsonl")


def test_unknown_config_keys_are_named():
    with pytest.raises(ValueError, match="data.batch_size"):
        DataConfig.from_mapping(
            {"datasets": [{"path": "x.jsonl"}], "global_batch_size": 2, "batch_size": 2}
        )
    with pytest.raises(ValueError, match=r"data.datasets\[0\].wieght"):
        DataConfig.from_mapping(
            {"datasets": [{"path": "x.jsonl", "wieght": 2}], "global_batch_size": 2}
        )


def test_parse_record_roundtrip():
    raw = {
        **GOOD,
        "title": "lists",
        "task": "Retrieval",
        "query_id": 7,
        "positive_id": "p7",
        "teacher": {
            "query": [0.5, 0.25],
            "positive": [0.0, 1.0],
            "negatives": [[1.0, 0.0], [0.0, -1.0]],
        },
    }
    record = parse_record(raw, where="memory")
    assert record.query_id == "7" and record.negatives == tuple(GOOD["negatives"])
    assert record.teacher.negatives.shape == (2, 2) and record.teacher.query.dtype == np.float32
    again = parse_record(record.to_json(), where="again")
    assert again.to_json() == record.to_json() == {**raw, "query_id": "7"}
