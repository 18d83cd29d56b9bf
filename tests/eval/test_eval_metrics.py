"""Every metric of `embeddinggemma_jax.eval.metrics` against an established implementation
(pytrec_eval / trec_eval, SciPy, scikit-learn, MTEB's own helpers where importable) on the same
scores, to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval
import scipy.stats
from sklearn import metrics as skm
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import paired_cosine_distances

from embeddinggemma_jax.eval import metrics

TOL = 1e-6
K_VALUES = (1, 2, 3, 5, 10, 40)  # 40 > number of documents: cutoffs past the corpus


def _retrieval_problem(seed: int, n_q: int = 23, n_d: int = 31):
    """Random scores with many exact ties, graded qrels with zeros/negatives, judged docs outside
    the corpus, a query judged only non-relevant and a query absent from the qrels."""
    rng = np.random.default_rng(seed)
    # ids of different lengths so that string order differs from numeric order
    doc_ids = [f"d{j}" for j in rng.permutation(n_d) * 7]
    query_ids = [f"q{i}" for i in range(n_q)]
    scores = (rng.integers(0, 6, size=(n_q, n_d)) / 4).astype(np.float32)
    qrels: dict[str, dict[str, int]] = {}
    for i, qid in enumerate(query_ids[:-1]):  # the last query is unjudged
        judged = rng.choice(n_d, size=rng.integers(1, 8), replace=False)
        qrels[qid] = {doc_ids[j]: int(rng.integers(-1, 4)) for j in judged}
        if i % 5 == 0:
            qrels[qid][f"missing{i}"] = int(rng.integers(1, 4))  # relevant but not in corpus
    qrels[query_ids[0]] = {doc_ids[0]: 0, doc_ids[1]: -2}  # judged, nothing relevant
    return scores, qrels, query_ids, doc_ids


def _run(scores, query_ids, doc_ids, candidates=None):
    return {
        qid: {
            did: float(scores[i, j])
            for j, did in enumerate(doc_ids)
            if candidates is None or candidates[i, j]
        }
        for i, qid in enumerate(query_ids)
    }


def _trec(qrels, run, relevance_level=1):
    ks = ",".join(str(k) for k in K_VALUES)
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels,
        {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}", f"success.{ks}"},
        relevance_level=relevance_level,
    )
    return evaluator.evaluate(run)


def _trec_mrr_at_k(qrels, run, k, relevance_level):
    """MRR@k: trec_eval's recip_rank on the run cut to its top k (trec_eval's own order)."""
    cut = {
        qid: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k])
        for qid, docs in run.items()
    }
    cut = {qid: docs for qid, docs in cut.items() if docs}
    out = pytrec_eval.RelevanceEvaluator(
        qrels, {"recip_rank"}, relevance_level=relevance_level
    ).evaluate(cut)
    return {qid: v["recip_rank"] for qid, v in out.items()}


def _compare(ours_ids, ours, trec, mrr_by_k):
    assert set(ours_ids) == set(trec)
    names = {
        "ndcg_at": "ndcg_cut_",
        "map_at": "map_cut_",
        "recall_at": "recall_",
        "precision_at": "P_",
    }
    names["hit_rate_at"] = "success_"
    for row, qid in enumerate(ours_ids):
        for k in K_VALUES:
            for ours_name, trec_name in names.items():
                np.testing.assert_allclose(
                    ours[f"{ours_name}_{k}"][row],
                    trec[qid][f"{trec_name}{k}"],
                    atol=TOL,
                    err_msg=f"{ours_name}_{k} of {qid}",
                )
            np.testing.assert_allclose(
                ours[f"mrr_at_{k}"][row],
                mrr_by_k[k].get(qid, 0.0),
                atol=TOL,
                err_msg=f"mrr_at_{k} of {qid}",
            )


def _at_k(fn, problem, **kw):
    """A retrieval measure function of `metrics` on a `_retrieval_problem`, at K_VALUES."""
    scores, qrels, query_ids, doc_ids = problem
    return fn(scores, qrels, query_ids=query_ids, doc_ids=doc_ids, k_values=K_VALUES, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("relevance_level", [1, 2])
def test_retrieval_matches_pytrec_eval(seed, relevance_level):
    problem = _retrieval_problem(seed)
    scores, qrels, query_ids, doc_ids = problem
    run = _run(scores, query_ids, doc_ids)
    ids, ours = _at_k(metrics.retrieval_scores_per_query, problem, relevance_level=relevance_level)
    trec = _trec(qrels, run, relevance_level)
    mrr = {k: _trec_mrr_at_k(qrels, run, k, relevance_level) for k in K_VALUES}
    _compare(ids, ours, trec, mrr)
    # the unjudged query is left out, the judged-but-irrelevant one counts as zeros
    assert query_ids[-1] not in ids and query_ids[0] in ids
    means = _at_k(metrics.retrieval_scores, problem, relevance_level=relevance_level)
    for k in K_VALUES:
        expected = np.mean([trec[q][f"ndcg_cut_{k}"] for q in trec])
        assert abs(means[f"ndcg_at_{k}"] - expected) < TOL


def test_retrieval_chunked_top_k_matches_pytrec_eval(monkeypatch):
    """A tiny chunk size forces the ranking through several chunks and the tie path."""
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 50)
    problem = _retrieval_problem(7, n_q=17, n_d=29)
    scores, qrels, query_ids, doc_ids = problem
    run = _run(scores, query_ids, doc_ids)
    ids, ours = _at_k(metrics.retrieval_scores_per_query, problem)
    _compare(ids, ours, _trec(qrels, run), {k: _trec_mrr_at_k(qrels, run, k, 1) for k in K_VALUES})


def test_mrr_matches_mteb():
    mteb_metrics = pytest.importorskip("mteb._evaluators.retrieval_metrics")
    problem = _retrieval_problem(3)
    scores, qrels, query_ids, doc_ids = problem
    ids, ours = _at_k(metrics.retrieval_scores_per_query, problem)
    run = {q: d for q, d in _run(scores, query_ids, doc_ids).items() if q in qrels}
    theirs = mteb_metrics.mrr(qrels, run, list(K_VALUES))
    order = list(run)  # mteb returns lists in the run's query order
    for k in K_VALUES:
        mine = dict(zip(ids, ours[f"mrr_at_{k}"], strict=True))
        np.testing.assert_allclose([mine[q] for q in order], theirs[f"MRR@{k}"], atol=TOL)


def test_reranking_matches_pytrec_eval_on_candidates():
    problem = _retrieval_problem(4)
    scores, qrels, query_ids, doc_ids = problem
    rng = np.random.default_rng(4)
    candidates = rng.random(scores.shape) < 0.4
    candidates[:, 0] = True  # every query has at least one candidate
    run = _run(scores, query_ids, doc_ids, candidates)
    ids, ours = _at_k(metrics.retrieval_scores_per_query, problem, candidates_qd=candidates)
    _compare(ids, ours, _trec(qrels, run), {k: _trec_mrr_at_k(qrels, run, k, 1) for k in K_VALUES})
    means = _at_k(metrics.reranking_scores, problem, candidates_qd=candidates)
    assert means["map_at_40"] == pytest.approx(float(np.mean(ours["map_at_40"])), abs=TOL)


def test_retrieval_rejects_bad_input():
    scores, qrels, query_ids, doc_ids = _retrieval_problem(0)
    with pytest.raises(ValueError, match="duplicate id"):
        metrics.retrieval_scores(
            scores, qrels, query_ids=query_ids, doc_ids=doc_ids[:-1] + doc_ids[:1]
        )
    with pytest.raises(ValueError, match="no query"):
        metrics.retrieval_scores(scores, {"nope": {}}, query_ids=query_ids, doc_ids=doc_ids)
    bad = scores.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.retrieval_scores(bad, qrels, query_ids=query_ids, doc_ids=doc_ids)
    with pytest.raises(TypeError, match="must be an int"):
        metrics.retrieval_scores(
            scores, {query_ids[1]: {doc_ids[0]: 0.5}}, query_ids=query_ids, doc_ids=doc_ids
        )


def test_rankdata_and_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(4, 37)).astype(np.float64)  # heavy ties
    y = rng.normal(size=(4, 37))
    np.testing.assert_allclose(metrics.rankdata(x), scipy.stats.rankdata(x, axis=-1), atol=TOL)
    for a, b in zip(x, y, strict=True):
        assert abs(metrics.spearman(a, b) - scipy.stats.spearmanr(a, b).statistic) < TOL
        assert abs(metrics.pearson(a, b) - scipy.stats.pearsonr(a, b).statistic) < TOL
    assert np.isnan(metrics.pearson(np.ones(5), y[0, :5]))


def _pairs(seed, n=61, e=12):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, e)).astype(np.float32)
    b = (a * rng.uniform(0, 1, size=(n, 1)) + rng.normal(size=(n, e))).astype(np.float32)
    return a, b, rng


def test_sts_matches_scipy_on_mteb_cosine():
    a, b, rng = _pairs(1)
    gold = rng.integers(0, 6, size=len(a)).astype(np.float64)  # ties in gold, as in STS data
    cos = 1 - paired_cosine_distances(a, b)  # what MTEB correlates
    ours = metrics.sts_scores(a, b, gold)
    assert abs(ours["cosine_spearman"] - scipy.stats.spearmanr(gold, cos).statistic) < TOL
    assert abs(ours["cosine_pearson"] - scipy.stats.pearsonr(gold, cos).statistic) < TOL


def test_summarization_matches_scipy_per_text_mean():
    rng = np.random.default_rng(2)
    machine, human, gold = [], [], []
    for i in range(5):
        m = int(rng.integers(4, 9))
        machine.append(rng.normal(size=(m, 8)).astype(np.float32))
        human.append(rng.normal(size=(int(rng.integers(1, 4)), 8)).astype(np.float32))
        g = rng.integers(1, 6, size=m).astype(np.float64)
        gold.append(np.full(m, g[0]) if i == 2 else g)  # text 2 has constant gold: skipped
    sp, pe = [], []
    for m, h, g in zip(machine, human, gold, strict=True):
        if np.unique(g).size == 1:
            continue
        pred = (1 - skm.pairwise.cosine_distances(m, h)).max(axis=1)
        sp.append(scipy.stats.spearmanr(g, pred).statistic)
        pe.append(scipy.stats.pearsonr(g, pred).statistic)
    ours = metrics.summarization_scores(machine, human, gold)
    assert abs(ours["cosine_spearman"] - np.mean(sp)) < TOL
    assert abs(ours["cosine_pearson"] - np.mean(pe)) < TOL


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        labels = rng.integers(0, 2, size=50)
        labels[0] = 1
        scores = rng.integers(0, 7, size=50) / 7
        ref = skm.average_precision_score(labels, scores)
        assert abs(metrics.average_precision(labels, scores) - ref) < TOL
    with pytest.raises(ValueError, match="no positive"):
        metrics.average_precision(np.zeros(4, int), np.arange(4.0))


def test_pair_classification_matches_sklearn():
    a, b, rng = _pairs(4)
    cos = 1 - paired_cosine_distances(a, b)
    labels = (cos + rng.normal(scale=0.3, size=len(cos)) > 0.3).astype(int)
    ours = metrics.pair_classification_scores(a, b, labels)
    assert abs(ours["cosine_ap"] - skm.average_precision_score(labels, cos)) < TOL
    # best accuracy / F1 over thresholds between consecutive distinct scores (MTEB's sweep)
    s = np.sort(np.unique(cos))
    thresholds = (s[:-1] + s[1:]) / 2
    accs = [skm.accuracy_score(labels, cos > t) for t in thresholds]
    f1s = [skm.f1_score(labels, cos > t) for t in thresholds]
    assert abs(ours["cosine_accuracy"] - max(accs)) < TOL
    assert abs(ours["cosine_f1"] - max(f1s)) < TOL
    # MTEB keeps the first best F1 sweeping from high to low thresholds
    t = thresholds[::-1][int(np.argmax(f1s[::-1]))]
    assert abs(ours["cosine_precision"] - skm.precision_score(labels, cos > t)) < TOL
    assert abs(ours["cosine_recall"] - skm.recall_score(labels, cos > t)) < TOL


def test_pair_classification_threshold_sweep_matches_mteb():
    pc = pytest.importorskip("mteb.abstasks.pair_classification")
    a, b, rng = _pairs(5)
    cos = np.round(1 - paired_cosine_distances(a, b), 2)  # ties
    labels = (cos + rng.normal(scale=0.3, size=len(cos)) > 0.3).astype(np.int64)
    task = pc.AbsTaskPairClassification.__new__(pc.AbsTaskPairClassification)
    theirs = task._compute_metrics_values(list(cos), labels, True)
    ours = metrics._best_threshold_metrics(cos.astype(np.float64), labels)
    for name in ("accuracy", "f1", "precision", "recall"):
        assert abs(ours[f"cosine_{name}"] - theirs[name]) < TOL, name


def _labelled(seed, n_per=(9, 14, 11), e=16):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(n_per), e))
    x = np.concatenate(
        [c + rng.normal(scale=1.5, size=(n, e)) for c, n in zip(centers, n_per, strict=True)]
    )
    labels = [f"label{i}" for i, n in enumerate(n_per) for _ in range(n)]
    return x.astype(np.float32), labels


def test_classification_matches_sklearn_logistic_regression():
    x_train, y_train = _labelled(5)
    x_test, y_test = _labelled(6)
    ours = metrics.classification_scores(x_train, y_train, x_test, y_test, samples_per_label=None)
    pred = LogisticRegression(max_iter=100, random_state=42).fit(x_train, y_train).predict(x_test)
    assert abs(ours["accuracy"] - skm.accuracy_score(y_test, pred)) < TOL
    assert abs(ours["f1"] - skm.f1_score(y_test, pred, average="macro")) < TOL
    assert abs(ours["f1_weighted"] - skm.f1_score(y_test, pred, average="weighted")) < TOL


def test_classification_few_shot_draws_match_mteb():
    clf_mod = pytest.importorskip("mteb.abstasks.classification")
    datasets = pytest.importorskip("datasets")
    _, labels = _labelled(7)
    ds = datasets.Dataset.from_dict({"text": [str(i) for i in range(len(labels))], "label": labels})
    task = clf_mod.AbsTaskClassification.__new__(clf_mod.AbsTaskClassification)
    task.seed, task.samples_per_label, task.label_column_name = 42, 4, "label"
    idxs, theirs = None, []
    for i in range(3):
        _, idxs, chosen = task._undersample_data(ds, i, idxs)
        theirs.append(chosen)
    assert metrics._undersample(labels, 4, 42, 3) == theirs


def test_classification_few_shot_averages_direct_sklearn_fits():
    x_train, y_train = _labelled(8)
    x_test, y_test = _labelled(9)
    draws = metrics._undersample(y_train, 3, 42, 4)
    accs = []
    for chosen in draws:
        clf = LogisticRegression(max_iter=100, random_state=42)
        pred = clf.fit(x_train[chosen], [y_train[i] for i in chosen]).predict(x_test)
        accs.append(skm.accuracy_score(y_test, pred))
    ours = metrics.classification_scores(
        x_train, y_train, x_test, y_test, samples_per_label=3, n_experiments=4
    )
    assert abs(ours["accuracy"] - np.mean(accs)) < TOL


def test_clustering_matches_sklearn():
    x, labels = _labelled(10)
    km = MiniBatchKMeans(n_clusters=3, batch_size=500, n_init="auto", random_state=42).fit(x)
    ours = metrics.clustering_scores(x, labels)
    assert abs(ours["v_measure"] - skm.v_measure_score(labels, km.labels_)) < TOL


def test_bitext_mining_matches_sklearn():
    a, b, _ = _pairs(11, n=40)
    pred = (1 - skm.pairwise.cosine_distances(a, b)).argmax(axis=1)
    gold = np.arange(len(a))
    ours = metrics.bitext_mining_scores(a, b)
    kw = dict(zero_division=0, average="weighted")
    assert abs(ours["accuracy"] - skm.accuracy_score(gold, pred)) < TOL
    assert abs(ours["precision"] - skm.precision_score(gold, pred, **kw)) < TOL
    assert abs(ours["recall"] - skm.recall_score(gold, pred, **kw)) < TOL
    assert abs(ours["f1"] - skm.f1_score(gold, pred, **kw)) < TOL
    assert 0 < ours["accuracy"] < 1  # the problem is neither trivial nor hopeless
