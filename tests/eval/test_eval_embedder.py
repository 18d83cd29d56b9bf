"""The evaluate CLI and the MTEB adapter on a tiny random model (fast), and on the released
checkpoint against sentence-transformers (slow)."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import json
import logging
import os
import re
import shutil
import textwrap
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from conftest import train_tiny_tokenizer

from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.eval import tasks
from embeddinggemma_jax.evaluate import embedder_encode_fn, evaluate_embedder, main
from embeddinggemma_jax.model import ModelConfig, init_params
from embeddinggemma_jax.text.prompts import document_prompt

MODULES = (json, csv, textwrap, shutil, os, re, argparse, logging, inspect)


def _stdlib_functions():
    out = {}
    for m in (textwrap, shutil, json, csv):
        for name in sorted(dir(m)):
            f = getattr(m, name)
            if inspect.isfunction(f) and f.__doc__ and not name.startswith("_"):
                out[f"{m.__name__}.{name}"] = inspect.cleandoc(f.__doc__).split("\n\n")[0]
    return out


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory):
    """A random tiny model with a small SentencePiece model trained on stdlib docstrings."""
    folder = tmp_path_factory.mktemp("tiny")
    tok = train_tiny_tokenizer(folder, "\n".join(m.__doc__ for m in MODULES))
    cfg = ModelConfig.tiny(vocab_size=tok.vocab_size)
    return Embedder(cfg, init_params(cfg, jax.random.key(0)), tok, max_length=64)


@pytest.fixture(scope="module")
def local_tasks():
    funcs = _stdlib_functions()
    ids = sorted(funcs)
    retrieval = tasks.RetrievalTask(
        name="stdlib-mini-retrieval",
        corpus={i: (i.split(".")[0], funcs[i]) for i in ids},
        queries={f"q-{i}": i.split(".")[-1].replace("_", " ") for i in ids},
        qrels={f"q-{i}": {i: 1} for i in ids},
    )
    sts = tasks.STSTask(
        name="stdlib-mini-sts",
        sentence1=[i.split(".")[-1].replace("_", " ") for i in ids],
        sentence2=[funcs[i] for i in ids],
        scores=[float(len(funcs[i]) % 5) for i in ids],
    )
    return [retrieval, sts]


def test_cli_report_table_and_plot(tiny_embedder, local_tasks, tmp_path, capsys):
    model_dir = tiny_embedder.save_pretrained(tmp_path / "model")
    folders = [t.save(tmp_path / t.name) for t in local_tasks]
    out = tmp_path / "report" / "report.json"
    report = main(
        ["--model", str(model_dir), "--tasks", ",".join(map(str, folders)),
         "--dims", "40,12", "--output", str(out), "--batch-size", "16"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert all(t.name in printed for t in local_tasks) and "40" in printed
    assert json.loads(out.read_text()) == report
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same numbers as evaluating the tasks directly with the in-memory model.
    encode = embedder_encode_fn(tiny_embedder, batch_size=16)
    for task in local_tasks:
        direct = task.evaluate(encode, [40, 12])
        for dim in (40, 12):
            got = report["tasks"][task.name]["results"][str(dim)]
            assert got == pytest.approx(direct[dim], abs=1e-6), (task.name, dim)


def test_cli_on_orbax_checkpoint(tiny_embedder, local_tasks, tmp_path):
    """A workdir written by training's Checkpointer evaluates like the in-memory model."""
    ckpt = pytest.importorskip("embeddinggemma_jax.checkpoint")
    workdir = tmp_path / "run"
    saver = ckpt.Checkpointer(workdir, async_save=False)
    saver.copy_tokenizer(tiny_embedder.tokenizer.path)
    state = SimpleNamespace(
        params=tiny_embedder.params,
        opt_state={"count": np.zeros((), np.int32)},
        rng=np.zeros(2, np.uint32),
    )
    export_info = {
        "task": "contrastive",
        "model_config": dataclasses.asdict(tiny_embedder.config),
        "prompts": tiny_embedder.prompts,
        "tokenizer": {
            "file": ckpt.TOKENIZER,
            "sha256": ckpt.file_sha256(tiny_embedder.tokenizer.path),
        },
    }
    saver.save(3, state, data_state=None, config={}, export_info=export_info)
    saver.close()
    task = local_tasks[0]
    folder = task.save(tmp_path / task.name)
    for model_path in (workdir, workdir / "checkpoints" / "3"):
        report = main(["--model", str(model_path), "--tasks", str(folder), "--dims", "40"])
        direct = task.evaluate(embedder_encode_fn(tiny_embedder), [40])[40]
        assert report["tasks"][task.name]["results"]["40"] == pytest.approx(direct, abs=1e-6)


def test_cli_fails_on_unknown_task_before_loading(tmp_path):
    with pytest.raises(KeyError, match="unknown task"):
        main(["--model", str(tmp_path / "missing"), "--tasks", "no-such-task"])


def test_evaluate_embedder_rejects_dims(tiny_embedder, local_tasks):
    with pytest.raises(ValueError, match="outside 1..40"):
        evaluate_embedder(tiny_embedder, local_tasks, [41])


def _mteb_main_score(result):
    (task_result,) = result.task_results
    (scores,) = task_result.scores["test"]
    return scores["main_score"], scores


def test_mteb_adapter_matches_local_evaluator(tiny_embedder, local_tasks):
    mteb = pytest.importorskip("mteb")
    from embeddinggemma_jax.eval.mteb import MTEBEncoder, to_mteb_task

    model = MTEBEncoder(tiny_embedder, dim=24)
    encode = embedder_encode_fn(tiny_embedder)
    for task in local_tasks:
        ours = task.evaluate(encode, [24])[24]
        result = mteb.evaluate(
            model, tasks=[to_mteb_task(task)], cache=None, show_progress_bar=False
        )
        main_score, scores = _mteb_main_score(result)
        # MTEB rounds retrieval means to 5 decimals
        assert main_score == pytest.approx(ours["main_score"], abs=1e-5), task.name
        if task.type == "Retrieval":
            for k in ("recall_at_10", "map_at_10", "mrr_at_10"):
                assert scores[k] == pytest.approx(ours[k], abs=1e-5), k


def test_mteb_adapter_prompts(tiny_embedder, local_tasks):
    mteb = pytest.importorskip("mteb")
    from embeddinggemma_jax.eval.mteb import MTEBEncoder, to_mteb_task

    calls = []

    class Recording:
        def __getattr__(self, name):
            return getattr(tiny_embedder, name)

        def encode(self, texts, **kw):
            calls.append((list(texts), kw["prompt_name"]))
            return tiny_embedder.encode(texts, **kw)

    model = MTEBEncoder(tiny_embedder)
    model.model = Recording()
    retrieval = local_tasks[0]
    mteb.evaluate(model, tasks=[to_mteb_task(retrieval)], cache=None, show_progress_bar=False)
    by_prompt = {p: sorted(t) for t, p in calls}
    assert by_prompt["Retrieval-query"] == sorted(retrieval.queries.values())
    assert tiny_embedder.prompts["Retrieval-query"] == tiny_embedder.prompts["Retrieval"]
    want_docs = [document_prompt(t) + x for t, x in retrieval.corpus.values()]
    assert by_prompt[None] == sorted(want_docs)


# ------------------------------------------------------------------------------------------
# Real checkpoint: our evaluation equals a sentence-transformers evaluation of the same tasks
# ------------------------------------------------------------------------------------------


def _small_code_search(n_queries: int = 16) -> tasks.RetrievalTask:
    full = tasks.stdlib_code_search()
    short = sorted(full.corpus, key=lambda d: (len(full.corpus[d][1]), d))
    keep_docs = set(short[: 3 * n_queries])
    queries = [q for q in full.queries if set(full.qrels[q]) <= keep_docs][:n_queries]
    return tasks.RetrievalTask(
        name="stdlib-code-search-small",
        corpus={d: full.corpus[d] for d in sorted(keep_docs)},
        queries={q: full.queries[q] for q in queries},
        qrels={q: full.qrels[q] for q in queries},
        query_prompt=full.query_prompt,
    )


@pytest.mark.slow
def test_real_checkpoint_matches_sentence_transformers(real_checkpoint):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(real_checkpoint), device="cpu")

    def st_encode(texts, prompt_name, dim):
        return st.encode(
            list(texts), prompt_name=prompt_name, truncate_dim=dim, normalize_embeddings=True,
            batch_size=16, convert_to_numpy=True,
        )  # fmt: skip

    bitext = tasks.humanize_bitext()
    keep = [i for i, s in enumerate(bitext.subsets) if s in ("en-de_DE", "en-ja_JP")]
    small_bitext = tasks.BitextMiningTask(
        name="humanize-bitext-small",
        sentence1=[bitext.sentence1[i] for i in keep],
        sentence2=[bitext.sentence2[i] for i in keep],
        subsets=[bitext.subsets[i] for i in keep],
    )
    local = [_small_code_search(), small_bitext]
    dims = [768, 128]
    ours = evaluate_embedder(Embedder.from_pretrained(real_checkpoint), local, dims, batch_size=16)
    for task in local:
        reference = task.evaluate(st_encode, dims)
        for dim in dims:
            got = ours["tasks"][task.name]["results"][str(dim)]
            for name, value in reference[dim].items():
                assert got[name] == pytest.approx(value, abs=1e-4), (task.name, dim, name)
