"""The MTEB adapter scores like our evaluator and sends the documented prompts."""

from __future__ import annotations

import pytest

from embeddinggemma_jax.eval import embedder_encode_fn
from embeddinggemma_jax.text.prompts import document_prompt


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
