"""Evaluation metrics for embedding models, on score matrices or embeddings.

Every metric reproduces an established implementation exactly (tests compare to 1e-6):

| task type            | function                       | reference                                    |
|----------------------|--------------------------------|----------------------------------------------|
| retrieval            | `retrieval_scores`             | trec_eval via pytrec_eval (+ MTEB's MRR@k)   |
| reranking            | `reranking_scores`             | MTEB v2: retrieval restricted to candidates  |
| STS                  | `sts_scores`                   | MTEB STS: SciPy Pearson/Spearman of cosine   |
| summarization        | `summarization_scores`         | MTEB SummarizationEvaluator (cosine)         |
| pair classification  | `pair_classification_scores`   | MTEB: sklearn average precision of cosine    |
| classification       | `classification_scores`        | MTEB: sklearn LogisticRegression, few-shot   |
| clustering           | `clustering_scores`            | MTEB ClusteringEvaluator: MiniBatchKMeans    |
| bitext mining        | `bitext_mining_scores`         | MTEB BitextMiningEvaluator (sklearn scores)  |

Retrieval conventions (those of trec_eval, which pytrec_eval and MTEB use):
- Ranking: documents sorted by score descending, ties broken by document id descending (byte
  order of the id strings).
- Relevance: a document is relevant for binary measures (MAP, recall, precision, MRR, hit rate)
  when its qrel is >= `relevance_level` (default 1). nDCG uses the qrel value itself as the gain
  (linear gain, log2(rank + 1) discount); qrels <= 0 give no gain. The ideal ranking is built from
  all judged documents of the query, including judged documents absent from the corpus.
- `map_at_k` is trec_eval's `map_cut.k`: precision summed over relevant documents ranked <= k,
  divided by the query's total number of relevant documents (not by min(k, R)).
- `precision_at_k` divides by k even when fewer than k documents were retrieved.
- Which queries count: queries absent from `qrels` are skipped (pytrec_eval leaves them out of its
  results). A query present in `qrels` with no document at or above `relevance_level` scores 0 on
  every measure and counts in the mean, as in trec_eval. (MTEB removes queries whose qrels are
  empty before evaluating; a task loader here does the same - see `eval.tasks`.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "MAIN_SCORES",
    "average_precision",
    "bitext_mining_scores",
    "classification_scores",
    "clustering_scores",
    "cosine_similarity_matrix",
    "paired_cosine",
    "pair_classification_scores",
    "pearson",
    "rankdata",
    "reranking_scores",
    "retrieval_scores",
    "retrieval_scores_per_query",
    "spearman",
    "sts_scores",
    "summarization_scores",
]

# The headline metric of each task type (MTEB's `main_score` for the same type).
MAIN_SCORES: dict[str, str] = {
    "Retrieval": "ndcg_at_10",
    "Reranking": "map_at_1000",
    "STS": "cosine_spearman",
    "Summarization": "cosine_spearman",
    "PairClassification": "cosine_ap",
    "Classification": "accuracy",
    "Clustering": "v_measure",
    "BitextMining": "f1",
}

DEFAULT_K_VALUES = (1, 3, 5, 10, 20, 100, 1000)
_CHUNK_ELEMENTS = 1 << 22  # score-matrix elements ranked at once (bounds memory of the top-k pass)


# --------------------------------------------------------------------------------------------
# Similarities
# --------------------------------------------------------------------------------------------


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, E], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.finfo(x.dtype).tiny)


def cosine_similarity_matrix(a_ne, b_me) -> np.ndarray:
    """Cosine similarities of every row of `a` with every row of `b`.

    Args: a [N, E], b [M, E]. Returns: [N, M] float32 (the precision MTEB scores in).
    """
    a = _l2_normalise(_as_2d(a_ne, "a").astype(np.float32))
    b = _l2_normalise(_as_2d(b_me, "b").astype(np.float32))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding widths differ: {a.shape} vs {b.shape}")
    return np.einsum("NE,ME->NM", a, b)


def paired_cosine(a_ne, b_ne) -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b`. Returns: [N] float64."""
    a = _as_2d(a_ne, "a").astype(np.float64)
    b = _as_2d(b_ne, "b").astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {a.shape} vs {b.shape}")
    return np.einsum("NE,NE->N", _l2_normalise(a), _l2_normalise(b))


# --------------------------------------------------------------------------------------------
# Correlations and average precision (numpy versions of SciPy's / scikit-learn's definitions)
# --------------------------------------------------------------------------------------------


def rankdata(x) -> np.ndarray:
    """Ranks 1..N along the last axis, ties getting their average rank (SciPy's "average")."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    sorter = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, sorter, axis=-1)
    new_group = np.concatenate(
        [np.ones(x.shape[:-1] + (1,), bool), xs[..., 1:] != xs[..., :-1]], axis=-1
    )
    # Each element's rank is the mean of the first and last 1-based position of its tie group.
    pos = np.broadcast_to(np.arange(n), x.shape)
    first = np.maximum.accumulate(np.where(new_group, pos, 0), axis=-1)
    is_last = np.concatenate([new_group[..., 1:], np.ones(x.shape[:-1] + (1,), bool)], axis=-1)
    last = np.flip(
        np.minimum.accumulate(np.flip(np.where(is_last, pos, n), axis=-1), axis=-1), axis=-1
    )
    ranks_sorted = 0.5 * (first + last) + 1.0
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, sorter, ranks_sorted, axis=-1)
    return ranks


def pearson(x, y) -> float | np.ndarray:
    """Pearson correlation along the last axis (NaN where either input is constant, as SciPy)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pearson: shapes differ, {x.shape} vs {y.shape}")
    if x.shape[-1] < 2:
        raise ValueError(f"pearson needs at least 2 values, got {x.shape[-1]}")
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    # Scale first so that the products neither under- nor overflow (SciPy does the same).
    xn = np.linalg.norm(xc, axis=-1, keepdims=True)
    yn = np.linalg.norm(yc, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum((xc / xn) * (yc / yn), axis=-1)
    r = np.where((xn[..., 0] == 0) | (yn[..., 0] == 0), np.nan, np.clip(r, -1.0, 1.0))
    return float(r) if r.ndim == 0 else r


def spearman(x, y) -> float | np.ndarray:
    """Spearman rank correlation along the last axis (Pearson of average ranks, as SciPy)."""
    return pearson(rankdata(x), rankdata(y))


def average_precision(labels, scores) -> float:
    """Average precision of binary `labels` ranked by `scores` (higher = more likely positive).

    Same definition as `sklearn.metrics.average_precision_score`: the sum over distinct score
    thresholds of (recall gain) x (precision at that threshold); tied scores form one threshold.
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape}, {s.shape}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("average_precision: labels must be 0/1")
    y = y.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average_precision: no positive label, precision-recall is undefined")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.concatenate([np.flatnonzero(s[1:] != s[:-1]), [len(s) - 1]])
    tp = np.cumsum(y)[last_of_group]
    precision = tp / (last_of_group + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


# --------------------------------------------------------------------------------------------
# Retrieval and reranking
# --------------------------------------------------------------------------------------------


def _ids(ids: Sequence[str], name: str, n: int) -> list[str]:
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} ids but the score matrix has {n} along that axis")
    for i, x in enumerate(ids):
        if not isinstance(x, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(x).__name__}: {x!r:.60}")
    if len(set(ids)) != n:
        seen: set[str] = set()
        dup = next(x for x in ids if x in seen or seen.add(x))
        raise ValueError(f"{name} contains duplicate id {dup!r}")
    return ids


def _top_k(scores_qn: np.ndarray, k: int, tiebreak_n: np.ndarray) -> np.ndarray:
    """Indices of each row's k best documents: score descending, then `tiebreak` descending.

    Exact for ties at the k-th place: everything scoring at least the k-th largest score is
    ranked lexicographically. Returns: [Q, min(k, N)] int64.
    """
    q, n = scores_qn.shape
    k = min(k, n)
    out = np.empty((q, k), np.int64)
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, q, rows):
        s = scores_qn[start : start + rows]
        kth = np.partition(s, n - k, axis=1)[:, n - k : n - k + 1]
        m = int((s >= kth).sum(axis=1).max())
        if m >= n:
            cand = np.broadcast_to(np.arange(n), s.shape)
        else:
            cand = np.argpartition(-s, m - 1, axis=1)[:, :m]
        cs = np.take_along_axis(s, cand, axis=1)
        ct = tiebreak_n[cand]
        order = np.lexsort((-ct, -cs), axis=1)[:, :k]  # last key is the primary one
        out[start : start + rows] = np.take_along_axis(cand, order, axis=1)
    return out


def retrieval_scores_per_query(
    scores_qd,
    qrels: Mapping[str, Mapping[str, int]],
    *,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    relevance_level: int = 1,
    candidates_qd=None,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per-query retrieval measures (trec_eval definitions; see the module docstring).

    Args:
      scores_qd: [Q, D] similarity of every query with every document (higher = better).
      qrels: {query_id: {doc_id: graded relevance (int)}}; judged documents may lie outside
        `doc_ids` (they count towards recall and the ideal DCG, like in trec_eval).
      query_ids, doc_ids: the ids of the rows and columns of `scores_qd`.
      k_values: cutoffs.
      relevance_level: smallest qrel that counts as relevant for the binary measures.
      candidates_qd: optional bool [Q, D]; only True entries are retrieved (reranking).

    Returns:
      (evaluated query ids, {measure: [Q'] float64}) with measures ndcg_at_k, map_at_k,
      recall_at_k, precision_at_k, mrr_at_k and hit_rate_at_k; Q' are the queries present in
      `qrels`, in the order of `query_ids`.
    """
    scores = np.asarray(scores_qd)
    if scores.ndim != 2:
        raise ValueError(f"scores_qd must be 2-D [Q, D], got shape {scores.shape}")
    scores = scores.astype(np.float64)  # exact for float32 input; trec_eval ranks doubles
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores_qd contains NaN or infinite values")
    n_q, n_d = scores.shape
    query_ids = _ids(query_ids, "query_ids", n_q)
    doc_ids = _ids(doc_ids, "doc_ids", n_d)
    k_values = sorted({int(k) for k in k_values})
    if not k_values or k_values[0] < 1:
        raise ValueError(f"k_values must be positive integers, got {k_values}")
    if not isinstance(qrels, Mapping):
        raise TypeError(f"qrels must be a mapping query_id -> {{doc_id: int}}, got {type(qrels)}")

    keep = [i for i, qid in enumerate(query_ids) if qid in qrels]
    if not keep:
        raise ValueError("no query of query_ids appears in qrels; nothing to evaluate")
    scores = scores[keep]
    evaluated = [query_ids[i] for i in keep]
    if candidates_qd is not None:
        cand = np.asarray(candidates_qd, dtype=bool)
        if cand.shape != (n_q, n_d):
            raise ValueError(f"candidates_qd must have shape {(n_q, n_d)}, got {cand.shape}")
        cand = cand[keep]
        scores = np.where(cand, scores, -np.inf)
        n_retrieved = cand.sum(axis=1)
    else:
        n_retrieved = np.full(len(keep), n_d)

    k_max = k_values[-1]
    doc_index = {d: j for j, d in enumerate(doc_ids)}
    rel_qd = np.zeros((len(keep), n_d), np.int64)
    n_rel = np.zeros(len(keep), np.int64)
    ideal_qk = np.zeros((len(keep), k_max), np.float64)
    for row, qid in enumerate(evaluated):
        judged = qrels[qid]
        if not isinstance(judged, Mapping):
            raise TypeError(f"qrels[{qid!r}] must be a mapping doc_id -> int, got {type(judged)}")
        values = []
        for did, rel in judged.items():
            if isinstance(rel, bool) or not isinstance(rel, (int, np.integer)):
                raise TypeError(f"qrels[{qid!r}][{did!r}] must be an int, got {rel!r}")
            values.append(int(rel))
            j = doc_index.get(did)
            if j is not None:
                rel_qd[row, j] = rel
        values = np.asarray(values, np.int64)
        n_rel[row] = int((values >= relevance_level).sum())
        gains = np.sort(values[values > 0])[::-1][:k_max]
        ideal_qk[row, : len(gains)] = gains

    # Ranked relevance of the top k_max, zero-padded beyond what was retrieved.
    top = _top_k(scores, k_max, np.argsort(np.argsort(np.asarray(doc_ids), kind="stable")))
    rel_qk = np.zeros((len(keep), k_max), np.int64)
    rel_qk[:, : top.shape[1]] = np.take_along_axis(rel_qd, top, axis=1)
    rank_k = np.arange(1, k_max + 1)
    rel_qk[rank_k[None, :] > n_retrieved[:, None]] = 0

    hit_qk = rel_qk >= relevance_level
    cum_hits = np.cumsum(hit_qk, axis=1)
    discount = 1.0 / np.log2(rank_k + 1.0)
    dcg = np.cumsum(np.maximum(rel_qk, 0) * discount, axis=1)
    idcg = np.cumsum(ideal_qk * discount, axis=1)
    ap_terms = np.cumsum(np.where(hit_qk, cum_hits / rank_k, 0.0), axis=1)
    first_hit = np.where(hit_qk.any(axis=1), hit_qk.argmax(axis=1) + 1, k_max + 1)

    out: dict[str, np.ndarray] = {}
    safe_rel = np.maximum(n_rel, 1)
    for k in k_values:
        c = k - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"ndcg_at_{k}"] = np.where(idcg[:, c] > 0, dcg[:, c] / idcg[:, c], 0.0)
        out[f"map_at_{k}"] = np.where(n_rel > 0, ap_terms[:, c] / safe_rel, 0.0)
        out[f"recall_at_{k}"] = np.where(n_rel > 0, cum_hits[:, c] / safe_rel, 0.0)
        out[f"precision_at_{k}"] = cum_hits[:, c] / k
        out[f"mrr_at_{k}"] = np.where(first_hit <= k, 1.0 / first_hit, 0.0)
        out[f"hit_rate_at_{k}"] = (cum_hits[:, c] > 0).astype(np.float64)
    return evaluated, out


def retrieval_scores(
    scores_qd,
    qrels: Mapping[str, Mapping[str, int]],
    *,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    relevance_level: int = 1,
    candidates_qd=None,
) -> dict[str, float]:
    """Mean retrieval measures over the queries in `qrels`: {"ndcg_at_10": ..., ...}.

    See `retrieval_scores_per_query` for the arguments and the module docstring for the exact
    definitions (trec_eval's `ndcg_cut`, `map_cut`, `recall`, `P`, `success`; MTEB's MRR@k).
    """
    _, per_query = retrieval_scores_per_query(
        scores_qd,
        qrels,
        query_ids=query_ids,
        doc_ids=doc_ids,
        k_values=k_values,
        relevance_level=relevance_level,
        candidates_qd=candidates_qd,
    )
    return {name: float(values.mean()) for name, values in per_query.items()}


def reranking_scores(
    scores_qd,
    qrels: Mapping[str, Mapping[str, int]],
    *,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    candidates_qd,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    relevance_level: int = 1,
) -> dict[str, float]:
    """Reranking as MTEB (v2) scores it: retrieval over each query's own candidate documents.

    `candidates_qd` (bool [Q, D]) marks the documents to rerank for each query; everything else
    is as in `retrieval_scores` (main score: map_at_1000, MTEB's for reranking).
    """
    if candidates_qd is None:
        raise ValueError("reranking_scores needs candidates_qd (bool [Q, D])")
    return retrieval_scores(
        scores_qd,
        qrels,
        query_ids=query_ids,
        doc_ids=doc_ids,
        k_values=k_values,
        relevance_level=relevance_level,
        candidates_qd=candidates_qd,
    )


# --------------------------------------------------------------------------------------------
# STS, summarization, pair classification
# --------------------------------------------------------------------------------------------


def sts_scores(emb1_ne, emb2_ne, gold_n) -> dict[str, float]:
    """STS: Pearson and Spearman correlation of the pairs' cosine similarity with gold scores.

    (MTEB also min-max normalises gold scores; correlations are invariant to that.)
    """
    cos = paired_cosine(emb1_ne, emb2_ne)
    gold = np.asarray(gold_n, dtype=np.float64)
    if gold.shape != cos.shape:
        raise ValueError(f"gold scores have shape {gold.shape}, expected {cos.shape}")
    return {
        "cosine_pearson": float(pearson(gold, cos)),
        "cosine_spearman": float(spearman(gold, cos)),
    }


def summarization_scores(
    machine_embs: Sequence[np.ndarray],
    human_embs: Sequence[np.ndarray],
    gold: Sequence[Sequence[float]],
) -> dict[str, float]:
    """Summarization as MTEB scores it.

    For each source text i: every machine summary (rows of machine_embs[i], [M_i, E]) is scored
    by its highest cosine similarity to the human summaries (human_embs[i], [H_i, E]); Spearman
    and Pearson of those scores with gold[i] ([M_i]) are averaged over texts. Texts whose gold or
    predicted scores are all equal are skipped (as MTEB does).
    """
    if not (len(machine_embs) == len(human_embs) == len(gold)):
        raise ValueError(
            f"got {len(machine_embs)} machine, {len(human_embs)} human and {len(gold)} gold lists"
        )
    spearmans, pearsons = [], []
    for i, (m, h, g) in enumerate(zip(machine_embs, human_embs, gold, strict=True)):
        g = np.asarray(g, dtype=np.float64)
        pred = cosine_similarity_matrix(m, h).max(axis=1).astype(np.float64)
        if g.shape != pred.shape:
            raise ValueError(f"text {i}: {len(pred)} machine summaries but {len(g)} gold scores")
        if np.unique(g).size == 1 or np.unique(pred).size == 1:
            continue
        spearmans.append(spearman(g, pred))
        pearsons.append(pearson(g, pred))
    if not spearmans:
        raise ValueError("summarization: every text has constant gold or predicted scores")
    return {
        "cosine_spearman": float(np.mean(spearmans)),
        "cosine_pearson": float(np.mean(pearsons)),
    }


def _best_threshold_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """MTEB's best accuracy / F1 over thresholds placed between consecutive distinct scores."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.int64)
    n, n_pos = len(y), int(y.sum())
    i = np.arange(n - 1)
    split_ok = s[:-1] != s[1:]  # a threshold cannot split tied scores
    pos_above = np.cumsum(y)[:-1]
    neg_below = (n - n_pos) - ((i + 1) - pos_above)
    acc = np.where(split_ok, (pos_above + neg_below) / n, 0.0)
    out = {"cosine_accuracy": 0.0, "cosine_accuracy_threshold": -1.0}
    if acc.size and acc.max() > 0:
        b = int(np.argmax(acc))
        out = {
            "cosine_accuracy": float(acc[b]),
            "cosine_accuracy_threshold": float((s[b] + s[b + 1]) / 2),
        }
    precision = pos_above / (i + 1)
    recall = pos_above / max(n_pos, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(split_ok & (pos_above > 0), 2 * precision * recall / (precision + recall), 0)
    out.update(cosine_f1=0.0, cosine_precision=0.0, cosine_recall=0.0, cosine_f1_threshold=0.0)
    if f1.size and f1.max() > 0:
        b = int(np.argmax(f1))
        out.update(
            cosine_f1=float(f1[b]),
            cosine_precision=float(precision[b]),
            cosine_recall=float(recall[b]),
            cosine_f1_threshold=float((s[b] + s[b + 1]) / 2),
        )
    return out


def pair_classification_scores(emb1_ne, emb2_ne, labels_n) -> dict[str, float]:
    """Pair classification: average precision of the pairs' cosine similarity (main score), and
    MTEB's best-threshold accuracy, F1, precision and recall."""
    cos = paired_cosine(emb1_ne, emb2_ne)
    labels = np.asarray(labels_n)
    if labels.shape != cos.shape:
        raise ValueError(f"labels have shape {labels.shape}, expected {cos.shape}")
    return {"cosine_ap": average_precision(labels, cos), **_best_threshold_metrics(cos, labels)}


# --------------------------------------------------------------------------------------------
# Classification, clustering, bitext mining
# --------------------------------------------------------------------------------------------


def _undersample(labels: Sequence, samples_per_label: int, seed: int, n_experiments: int):
    """MTEB's few-shot draw: the index list is shuffled in place by a fresh RandomState(seed) once
    per experiment (so experiment i sees it shuffled i + 1 times), then the first
    `samples_per_label` indices of each label are kept, in that shuffled order."""
    idxs = list(range(len(labels)))
    draws = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(idxs)
        counts: dict = {}
        chosen = []
        for i in idxs:
            if counts.get(labels[i], 0) < samples_per_label:
                chosen.append(i)
                counts[labels[i]] = counts.get(labels[i], 0) + 1
        draws.append(chosen)
    return draws


def classification_scores(
    train_ne,
    train_labels: Sequence,
    test_ne,
    test_labels: Sequence,
    *,
    samples_per_label: int | None = 8,
    n_experiments: int = 10,
    max_iter: int = 100,
    seed: int = 42,
) -> dict[str, float]:
    """Logistic-regression probe on embeddings, as MTEB's classification tasks run it.

    For each of `n_experiments` draws of `samples_per_label` training examples per label (MTEB's
    defaults: 8 and 10; `samples_per_label=None` trains on all of `train` once), fit
    `LogisticRegression(max_iter=max_iter, random_state=seed)` and score the test predictions;
    the scores are averaged over experiments. Returns accuracy (main score), f1 (macro) and
    f1_weighted.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    x_train = _as_2d(train_ne, "train embeddings")
    x_test = _as_2d(test_ne, "test embeddings")
    train_labels, test_labels = list(train_labels), list(test_labels)
    if len(train_labels) != len(x_train) or len(test_labels) != len(x_test):
        raise ValueError(
            f"labels/embeddings mismatch: train {len(train_labels)}/{len(x_train)}, "
            f"test {len(test_labels)}/{len(x_test)}"
        )
    if samples_per_label is None:
        draws = [list(range(len(train_labels)))]
    else:
        draws = _undersample(train_labels, samples_per_label, seed, n_experiments)
    runs = []
    for chosen in draws:
        clf = LogisticRegression(max_iter=max_iter, random_state=seed)
        clf.fit(x_train[chosen], [train_labels[i] for i in chosen])
        pred = clf.predict(x_test)
        runs.append(
            {
                "accuracy": accuracy_score(test_labels, pred),
                "f1": f1_score(test_labels, pred, average="macro"),
                "f1_weighted": f1_score(test_labels, pred, average="weighted"),
            }
        )
    return {name: float(np.mean([r[name] for r in runs])) for name in runs[0]}


def clustering_scores(emb_ne, labels: Sequence, *, seed: int = 42, batch_size: int = 500) -> dict:
    """Mini-batch k-means with k = number of distinct labels, scored by V-measure against the
    labels (MTEB's ClusteringEvaluator: batch_size=500, n_init="auto", random_state=seed)."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    x = _as_2d(emb_ne, "embeddings")
    labels = list(labels)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} embeddings")
    model = MiniBatchKMeans(
        n_clusters=len(set(labels)), batch_size=batch_size, n_init="auto", random_state=seed
    )
    model.fit(x)
    return {"v_measure": float(v_measure_score(labels, model.labels_))}


def bitext_mining_scores(emb1_ne, emb2_ne) -> dict[str, float]:
    """Bitext mining: row i of `emb1` should find row i of `emb2` as its cosine nearest neighbour.

    Scores as MTEB (sklearn with average="weighted", zero_division=0, over the gold classes):
    accuracy, precision, recall and f1 (main score). Ties go to the lowest index.
    """
    sims = cosine_similarity_matrix(emb1_ne, emb2_ne)
    n = sims.shape[0]
    if sims.shape[1] != n:
        raise ValueError(f"bitext sides differ in length: {sims.shape[0]} vs {sims.shape[1]}")
    pred = sims.argmax(axis=1)
    correct = (pred == np.arange(n)).astype(np.float64)
    # Each gold class i has support 1: recall_i = correct_i; precision_i = correct_i / times i was
    # predicted. Weighted averages are plain means over the gold classes.
    times_predicted = np.bincount(pred, minlength=n)
    precision = np.where(times_predicted > 0, correct / np.maximum(times_predicted, 1), 0.0)
    with np.errstate(invalid="ignore"):
        f1 = np.where(correct > 0, 2 * precision * correct / (precision + correct), 0.0)
    return {
        "accuracy": float(correct.mean()),
        "precision": float(precision.mean()),
        "recall": float(correct.mean()),
        "f1": float(f1.mean()),
    }
