"""Finding tasks: BEIR folders without task.json, MTEB's query filtering, unknown names."""

from __future__ import annotations

import json

import pytest
from evalkit import SUMMARIES, retrieval_task, write_files

from embeddinggemma_jax.eval import tasks
from embeddinggemma_jax.eval.registry import get_task, load_task


def test_beir_folder_without_task_json(tmp_path):
    task = retrieval_task()
    folder = task.save(tmp_path / "beir")
    (folder / "task.json").unlink()
    (folder / "qrels").mkdir()
    (folder / "qrels.tsv").rename(folder / "qrels" / "test.tsv")
    loaded = load_task(folder)
    assert type(loaded) is tasks.RetrievalTask and loaded.qrels == task.qrels
    assert loaded.name == "beir"


def test_queries_without_qrels_are_dropped(tmp_path):
    task = retrieval_task()
    folder = task.save(tmp_path / "t")
    with open(folder / "queries.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "extra", "text": SUMMARIES[sorted(SUMMARIES)[0]]}) + "\n")
    assert "extra" not in load_task(folder).queries


def test_missing_folder_and_unknown_task(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        load_task(write_files(tmp_path / "t", {"task.json": json.dumps({"type": "Retrieval"})}))
    with pytest.raises(KeyError, match="unknown task 'nope'.*humanize-bitext"):
        get_task("nope")
