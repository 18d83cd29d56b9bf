"""Task files: malformed files fail with the file, the line and the field named."""

from __future__ import annotations

import json

import pytest
from evalkit import SUMMARIES, jsonl_lines, write_files

from embeddinggemma_jax.eval.files import TaskDataError
from embeddinggemma_jax.eval.registry import load_task

_DOC = {"_id": "d1", "title": "shutil", "text": SUMMARIES["shutil.copyfile"]}
_QUERY = {"_id": "q1", "text": "copyfile"}
_GOOD = {
    "corpus.jsonl": jsonl_lines(_DOC),
    "queries.jsonl": jsonl_lines(_QUERY),
    "qrels.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
}

MALFORMED = [
    (
        "bad json",
        {"queries.jsonl": jsonl_lines(_QUERY, "{not json")},
        r"queries\.jsonl line 2: invalid JSON",
    ),
    (
        "not an object",
        {"corpus.jsonl": jsonl_lines(["d1"])},
        r"corpus\.jsonl line 1: expected a JSON object",
    ),
    (
        "missing text",
        {"queries.jsonl": jsonl_lines({"_id": "q1"})},
        r"queries\.jsonl line 1: field 'text': missing",
    ),
    (
        "empty query",
        {"queries.jsonl": jsonl_lines({"_id": "q1", "text": " "})},
        r"queries\.jsonl line 1: field 'text': is empty",
    ),
    (
        "bad id",
        {"corpus.jsonl": jsonl_lines(_DOC | {"_id": 1.5})},
        r"corpus\.jsonl line 1: field '_id': expected a non-empty string",
    ),
    (
        "title type",
        {"corpus.jsonl": jsonl_lines(_DOC | {"title": 3})},
        r"corpus\.jsonl line 1: field 'title': expected a string",
    ),
    (
        "dup id",
        {"corpus.jsonl": jsonl_lines(_DOC, _DOC)},
        r"corpus\.jsonl line 2: field '_id': duplicate id 'd1' \(first at .*line 1\)",
    ),
    ("empty file", {"corpus.jsonl": "\n"}, r"corpus\.jsonl: no records"),
    (
        "qrels columns",
        {"qrels.tsv": "q1\td1\n"},
        r"qrels\.tsv line 1: expected 3 tab-separated columns",
    ),
    (
        "qrels score",
        {"qrels.tsv": "q1\td1\thigh\n"},
        r"qrels\.tsv line 1: field 'score': expected an integer",
    ),
    (
        "qrels query",
        {"qrels.tsv": "q1\td1\t1\nq9\td1\t1\n"},
        r"qrels\.tsv line 2: field 'query-id': query id 'q9' is not in queries\.jsonl",
    ),
    (
        "qrels dup",
        {"qrels.tsv": "q1\td1\t1\nq1\td1\t2\n"},
        r"qrels\.tsv line 2: field 'corpus-id': duplicate judgement",
    ),
    (
        "task type",
        {"task.json": json.dumps({"type": "Retrival"})},
        r"task\.json: field 'type': unknown task type 'Retrival'",
    ),
    (
        "task option",
        {"task.json": json.dumps({"type": "Retrieval", "k_value": [1]})},
        r"task\.json: field 'k_value': not an option of Retrieval tasks",
    ),
    (
        "task option type",
        {"task.json": json.dumps({"type": "Retrieval", "k_values": [0]})},
        r"task\.json: field 'k_values': expected ints",
    ),
    (
        "candidates id",
        {
            "task.json": json.dumps({"type": "Reranking"}),
            "candidates.jsonl": jsonl_lines({"query-id": "q1", "corpus-ids": ["d1", "d7"]}),
        },
        r"candidates\.jsonl line 1: field 'corpus-ids\[1\]': 'd7' is not a corpus id",
    ),
]


@pytest.mark.parametrize("files,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_retrieval_files(tmp_path, files, message):
    folder = write_files(tmp_path / "t", {**_GOOD, **files})
    with pytest.raises(TaskDataError, match=message):
        load_task(folder)


def test_good_retrieval_files_load(tmp_path):
    task = load_task(write_files(tmp_path / "t", _GOOD))
    assert task.qrels == {"q1": {"d1": 1}} and task.corpus["d1"] == ("shutil", _DOC["text"])


_S = SUMMARIES["json.dumps"]
MALFORMED_OTHER = [
    (
        "STS",
        {"test.jsonl": jsonl_lines({"sentence1": _S, "sentence2": _S, "score": "5"})},
        r"test\.jsonl line 1: field 'score': expected a finite number",
    ),
    (
        "STS",
        {"test.jsonl": jsonl_lines({"sentence1": _S, "score": 1})},
        r"test\.jsonl line 1: field 'sentence2': missing",
    ),
    (
        "PairClassification",
        {"test.jsonl": jsonl_lines({"sentence1": _S, "sentence2": _S, "label": 2})},
        r"test\.jsonl line 1: field 'label': expected 0 or 1",
    ),
    (
        "PairClassification",
        {"test.jsonl": jsonl_lines({"sentence1": _S, "sentence2": _S, "label": 0})},
        r"test\.jsonl: field 'label': no pair has label 1",
    ),
    (
        "Clustering",
        {"test.jsonl": jsonl_lines({"text": _S, "label": "a"}, {"text": _S, "label": 1})},
        r"test\.jsonl: field 'label': labels mix strings and integers",
    ),
    (
        "Clustering",
        {"test.jsonl": jsonl_lines({"text": _S, "label": [1]})},
        r"test\.jsonl line 1: field 'label': expected a string or integer label",
    ),
    (
        "Classification",
        {
            "train.jsonl": jsonl_lines({"text": _S, "label": "a"}),
            "test.jsonl": jsonl_lines({"text": _S, "label": "b"}),
        },
        r"test\.jsonl: field 'label': test labels never seen in train: \['b'\]",
    ),
    (
        "BitextMining",
        {"test.jsonl": jsonl_lines({"sentence1": _S, "sentence2": ""})},
        r"test\.jsonl line 1: field 'sentence2': is empty",
    ),
    (
        "Summarization",
        {
            "test.jsonl": jsonl_lines(
                {"human_summaries": [_S], "machine_summaries": [_S, _S], "relevance": [1]}
            )
        },
        r"test\.jsonl line 1: field 'relevance': 1 scores for 2 machine summaries",
    ),
    (
        "Summarization",
        {
            "test.jsonl": jsonl_lines(
                {"human_summaries": [_S, 3], "machine_summaries": [_S], "relevance": [1]}
            )
        },
        r"test\.jsonl line 1: field 'human_summaries\[1\]': must be a non-empty string",
    ),
]


@pytest.mark.parametrize("task_type,files,message", MALFORMED_OTHER)
def test_malformed_task_files(tmp_path, task_type, files, message):
    folder = write_files(tmp_path / "t", {"task.json": json.dumps({"type": task_type}), **files})
    with pytest.raises(TaskDataError, match=message):
        load_task(folder)
