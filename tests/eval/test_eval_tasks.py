"""Task types: `Task.evaluate` equals the metrics computed directly, prompts are the documented
ones, and each type round-trips through its folder layout."""

from __future__ import annotations

import numpy as np
import pytest
from evalkit import SUMMARIES, HashingEncoder, retrieval_task

from embeddinggemma_jax.eval import metrics, tasks
from embeddinggemma_jax.eval.registry import load_task
from embeddinggemma_jax.text.prompts import apply_document_prompts, document_prompt


def test_retrieval_evaluate_equals_direct_metrics_and_uses_prompts(tmp_path):
    task = retrieval_task(query_chunk=3)
    enc = HashingEncoder()
    got = task.evaluate(enc, dims=[64, 32])
    assert set(got) == {64, 32}
    (qp, _, qtexts), (dp, _, dtexts) = enc.calls[:2]
    assert qp == "Retrieval" and qtexts == list(task.queries.values())
    assert dp is None  # documents arrive prefixed with their title prompt
    assert dtexts == [document_prompt(t) + x for t, x in task.corpus.values()]
    for dim in (64, 32):
        q = enc(list(task.queries.values()), "Retrieval", dim)
        d = enc(dtexts, None, dim)
        want = metrics.retrieval_scores(
            metrics.cosine_similarity_matrix(q, d),
            task.qrels,
            query_ids=list(task.queries),
            doc_ids=list(task.corpus),
        )
        for k, v in want.items():
            assert got[dim][k] == pytest.approx(v, abs=1e-9), k
        assert got[dim]["main_score"] == got[dim]["ndcg_at_10"]
    # round trip through the documented layout
    again = load_task(task.save(tmp_path / "t"))
    assert isinstance(again, tasks.RetrievalTask)
    assert again.evaluate(HashingEncoder(), [32])[32] == pytest.approx(got[32])


def test_reranking_restricts_to_candidates(tmp_path):
    base = retrieval_task()
    ids = list(base.corpus)
    candidates = {
        q: [next(iter(base.qrels[q])), ids[i % len(ids)], ids[(i * 7) % len(ids)]]
        for i, q in enumerate(base.queries)
    }
    task = tasks.RerankingTask(
        name="rr", corpus=base.corpus, queries=base.queries, qrels=base.qrels, candidates=candidates
    )
    enc = HashingEncoder()
    got = task.evaluate(enc, [48])[48]
    q = enc(list(task.queries.values()), "Reranking", 48)
    d = enc(
        apply_document_prompts(
            [x for _, x in task.corpus.values()], [t for t, _ in task.corpus.values()]
        ),
        None,
        48,
    )
    mask = np.array([[d_ in set(candidates[q_]) for d_ in ids] for q_ in task.queries])
    want = metrics.reranking_scores(
        metrics.cosine_similarity_matrix(q, d),
        task.qrels,
        query_ids=list(task.queries),
        doc_ids=ids,
        candidates_qd=mask,
    )
    assert (
        got["map_at_1000"] == pytest.approx(want["map_at_1000"])
        and got["main_score"] == got["map_at_1000"]
    )
    loaded = load_task(task.save(tmp_path / "rr"))
    assert type(loaded) is tasks.RerankingTask and loaded.candidates == candidates


def _pairs():
    keys = sorted(SUMMARIES)
    s1 = [k.split(".")[-1].replace("_", " ") for k in keys]
    s2 = [SUMMARIES[k] for k in keys]
    return keys, s1, s2


def test_pair_tasks_evaluate_and_round_trip(tmp_path):
    keys, s1, s2 = _pairs()
    n = len(keys)
    modules = [k.split(".")[0] for k in keys]
    shuffled = s2[1:] + s2[:1]  # mismatched pairs as negatives
    pc = tasks.PairClassificationTask(
        name="pc", sentence1=s1 + s1, sentence2=s2 + shuffled, labels=[1] * n + [0] * n
    )
    sts = tasks.STSTask(name="sts", sentence1=s1, sentence2=s2, scores=[float(len(s)) for s in s2])
    bt = tasks.BitextMiningTask(name="bt", sentence1=s1, sentence2=s2, subsets=modules)
    enc = HashingEncoder()
    for task, fn, args in (
        (pc, metrics.pair_classification_scores, (pc.labels,)),
        (sts, metrics.sts_scores, (sts.scores,)),
    ):
        got = task.evaluate(enc, [40])[40]
        e1 = enc(list(task.sentence1), task.type, 40)
        e2 = enc(list(task.sentence2), task.type, 40)
        assert got == pytest.approx({**fn(e1, e2, *args), "main_score": got[task.main_score]})
        assert {c[0] for c in enc.calls} >= {task.type}
        again = load_task(task.save(tmp_path / task.name))
        assert type(again) is type(task) and again.evaluate(enc, [40])[40] == pytest.approx(got)
    got = bt.evaluate(enc, [40])[40]
    per = []
    for m in dict.fromkeys(modules):
        idx = [i for i, x in enumerate(modules) if x == m]
        e1 = enc([s1[i] for i in idx], "BitextMining", 40)
        e2 = enc([s2[i] for i in idx], "BitextMining", 40)
        per.append(metrics.bitext_mining_scores(e1, e2)["f1"])
        assert got[f"f1/{m}"] == pytest.approx(per[-1])
    assert got["f1"] == pytest.approx(np.mean(per))
    assert load_task(bt.save(tmp_path / "bt")).subsets == modules


def test_labelled_tasks_evaluate_and_round_trip(tmp_path):
    keys, _, texts = _pairs()
    labels = [k.split(".")[0] for k in keys]
    train = [i for i in range(len(keys)) if i % 2 == 0]
    test = [i for i in range(len(keys)) if i % 2 == 1]
    clf = tasks.ClassificationTask(
        name="clf",
        texts=[texts[i] for i in test],
        labels=[labels[i] for i in test],
        train_texts=[texts[i] for i in train],
        train_labels=[labels[i] for i in train],
        samples_per_label=2,
        n_experiments=3,
    )
    clu = tasks.ClusteringTask(name="clu", texts=texts, labels=labels)
    enc = HashingEncoder()
    got = clf.evaluate(enc, [32])[32]
    want = metrics.classification_scores(
        enc(list(clf.train_texts), "Classification", 32),
        clf.train_labels,
        enc(list(clf.texts), "Classification", 32),
        clf.labels,
        samples_per_label=2,
        n_experiments=3,
    )
    assert got == pytest.approx({**want, "main_score": want["accuracy"]})
    got_clu = clu.evaluate(enc, [32])[32]
    assert got_clu["v_measure"] == pytest.approx(
        metrics.clustering_scores(enc(texts, "Clustering", 32), labels)["v_measure"]
    )
    for task, result in ((clf, got), (clu, got_clu)):
        again = load_task(task.save(tmp_path / task.name))
        assert type(again) is type(task) and again.evaluate(enc, [32])[32] == pytest.approx(result)
    assert load_task(tmp_path / "clf").samples_per_label == 2


def test_summarization_evaluate_and_round_trip(tmp_path):
    keys, names, texts = _pairs()
    groups = [slice(i, i + 4) for i in range(0, len(keys) - 4, 4)]
    human = [[names[i] for i in range(len(keys))[g][:1]] for g in groups]
    machine = [texts[g] for g in groups]
    relevance = [[float(len(t)) for t in m] for m in machine]
    task = tasks.SummarizationTask(
        name="summ", human_summaries=human, machine_summaries=machine, relevance=relevance
    )
    enc = HashingEncoder()
    got = task.evaluate(enc, [24])[24]
    want = metrics.summarization_scores(
        [enc(m, "Summarization", 24) for m in machine],
        [enc(h, "Summarization", 24) for h in human],
        relevance,
    )
    assert got["cosine_spearman"] == pytest.approx(want["cosine_spearman"])
    assert load_task(task.save(tmp_path / "s")).evaluate(enc, [24])[24] == pytest.approx(got)


def test_truncating_encoder_encodes_once():
    enc = HashingEncoder()
    trunc = tasks.TruncatingEncoder(enc, full_dim=64)
    texts = list(SUMMARIES.values())[:5]
    full = enc(texts, "STS", 64)
    for dim in (64, 16, 8):
        want = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
        np.testing.assert_allclose(trunc(texts, prompt_name="STS", dim=dim), want, rtol=1e-6)
    assert len(enc.calls) == 2  # one direct call above, one through the wrapper
    with pytest.raises(ValueError, match="exceeds"):
        trunc(texts, prompt_name="STS", dim=65)
