"""Task files: the documented layouts round-trip, malformed files fail with file, line and field
named, `Task.evaluate` equals the metrics computed directly, and the built-in tasks build."""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embeddinggemma_jax.eval import metrics, tasks
from embeddinggemma_jax.text.prompts import apply_document_prompts, document_prompt

# Real text for fixtures: the stdlib's own function names and docstring summaries.
_FUNCS = [getattr(m, n) for m in (textwrap, shutil, json) for n in sorted(dir(m))]
_FUNCS = [
    f for f in _FUNCS if inspect.isfunction(f) and f.__doc__ and not f.__name__.startswith("_")
]
SUMMARIES = {
    f"{f.__module__}.{f.__name__}": inspect.cleandoc(f.__doc__).split("\n\n")[0] for f in _FUNCS
}


class HashingEncoder:
    """A deterministic character-trigram embedding that records how it was called."""

    def __init__(self):
        self.calls: list[tuple[str | None, int, list[str]]] = []

    def __call__(self, texts, prompt_name, dim):
        self.calls.append((prompt_name, dim, list(texts)))
        out = np.full((len(texts), dim), 1e-3, np.float32)
        for i, t in enumerate(texts):
            for j in range(len(t) - 2):
                h = int.from_bytes(hashlib.md5(t[j : j + 3].encode()).digest()[:4], "little")
                out[i, h % dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _retrieval_task(**kw) -> tasks.RetrievalTask:
    ids = sorted(SUMMARIES)
    corpus = {i: (i.split(".")[0], SUMMARIES[i]) for i in ids}
    queries = {f"q-{i}": i.split(".")[-1].replace("_", " ") for i in ids}
    qrels = {f"q-{i}": {i: 1} for i in ids}
    qrels[f"q-{ids[0]}"][ids[1]] = 2  # graded
    return tasks.RetrievalTask(name="fixture", corpus=corpus, queries=queries, qrels=qrels, **kw)


def test_retrieval_evaluate_equals_direct_metrics_and_uses_prompts(tmp_path):
    task = _retrieval_task(query_chunk=3)
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
    again = tasks.load_task(task.save(tmp_path / "t"))
    assert isinstance(again, tasks.RetrievalTask)
    assert again.evaluate(HashingEncoder(), [32])[32] == pytest.approx(got[32])


def test_beir_folder_without_task_json(tmp_path):
    task = _retrieval_task()
    folder = task.save(tmp_path / "beir")
    (folder / "task.json").unlink()
    (folder / "qrels").mkdir()
    (folder / "qrels.tsv").rename(folder / "qrels" / "test.tsv")
    loaded = tasks.load_task(folder)
    assert type(loaded) is tasks.RetrievalTask and loaded.qrels == task.qrels
    assert loaded.name == "beir"


def test_queries_without_qrels_are_dropped(tmp_path):
    task = _retrieval_task()
    folder = task.save(tmp_path / "t")
    with open(folder / "queries.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "extra", "text": SUMMARIES[sorted(SUMMARIES)[0]]}) + "\n")
    assert "extra" not in tasks.load_task(folder).queries


def test_reranking_restricts_to_candidates(tmp_path):
    base = _retrieval_task()
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
    loaded = tasks.load_task(task.save(tmp_path / "rr"))
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
        again = tasks.load_task(task.save(tmp_path / task.name))
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
    assert tasks.load_task(bt.save(tmp_path / "bt")).subsets == modules


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
        again = tasks.load_task(task.save(tmp_path / task.name))
        assert type(again) is type(task) and again.evaluate(enc, [32])[32] == pytest.approx(result)
    assert tasks.load_task(tmp_path / "clf").samples_per_label == 2


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
    assert tasks.load_task(task.save(tmp_path / "s")).evaluate(enc, [24])[24] == pytest.approx(got)


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


# ------------------------------------------------------------------------------------------
# Malformed files
# ------------------------------------------------------------------------------------------


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def _jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


_DOC = {"_id": "d1", "title": "shutil", "text": SUMMARIES["shutil.copyfile"]}
_QUERY = {"_id": "q1", "text": "copyfile"}
_GOOD = {
    "corpus.jsonl": _jsonl(_DOC),
    "queries.jsonl": _jsonl(_QUERY),
    "qrels.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
}

MALFORMED = [
    (
        "bad json",
        {"queries.jsonl": _jsonl(_QUERY, "{not json")},
        r"queries\.jsonl line 2: invalid JSON",
    ),
    (
        "not an object",
        {"corpus.jsonl": _jsonl(["d1"])},
        r"corpus\.jsonl line 1: expected a JSON object",
    ),
    (
        "missing text",
        {"queries.jsonl": _jsonl({"_id": "q1"})},
        r"queries\.jsonl line 1: field 'text': missing",
    ),
    (
        "empty query",
        {"queries.jsonl": _jsonl({"_id": "q1", "text": " "})},
        r"queries\.jsonl line 1: field 'text': is empty",
    ),
    (
        "bad id",
        {"corpus.jsonl": _jsonl(_DOC | {"_id": 1.5})},
        r"corpus\.jsonl line 1: field '_id': expected a non-empty string",
    ),
    (
        "title type",
        {"corpus.jsonl": _jsonl(_DOC | {"title": 3})},
        r"corpus\.jsonl line 1: field 'title': expected a string",
    ),
    (
        "dup id",
        {"corpus.jsonl": _jsonl(_DOC, _DOC)},
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
            "candidates.jsonl": _jsonl({"query-id": "q1", "corpus-ids": ["d1", "d7"]}),
        },
        r"candidates\.jsonl line 1: field 'corpus-ids\[1\]': 'd7' is not a corpus id",
    ),
]


@pytest.mark.parametrize("files,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_retrieval_files(tmp_path, files, message):
    folder = _write(tmp_path / "t", {**_GOOD, **files})
    with pytest.raises(tasks.TaskDataError, match=message):
        tasks.load_task(folder)


def test_good_retrieval_files_load(tmp_path):
    task = tasks.load_task(_write(tmp_path / "t", _GOOD))
    assert task.qrels == {"q1": {"d1": 1}} and task.corpus["d1"] == ("shutil", _DOC["text"])


_S = SUMMARIES["json.dumps"]
MALFORMED_OTHER = [
    (
        "STS",
        {"test.jsonl": _jsonl({"sentence1": _S, "sentence2": _S, "score": "5"})},
        r"test\.jsonl line 1: field 'score': expected a finite number",
    ),
    (
        "STS",
        {"test.jsonl": _jsonl({"sentence1": _S, "score": 1})},
        r"test\.jsonl line 1: field 'sentence2': missing",
    ),
    (
        "PairClassification",
        {"test.jsonl": _jsonl({"sentence1": _S, "sentence2": _S, "label": 2})},
        r"test\.jsonl line 1: field 'label': expected 0 or 1",
    ),
    (
        "PairClassification",
        {"test.jsonl": _jsonl({"sentence1": _S, "sentence2": _S, "label": 0})},
        r"test\.jsonl: field 'label': no pair has label 1",
    ),
    (
        "Clustering",
        {"test.jsonl": _jsonl({"text": _S, "label": "a"}, {"text": _S, "label": 1})},
        r"test\.jsonl: field 'label': labels mix strings and integers",
    ),
    (
        "Clustering",
        {"test.jsonl": _jsonl({"text": _S, "label": [1]})},
        r"test\.jsonl line 1: field 'label': expected a string or integer label",
    ),
    (
        "Classification",
        {
            "train.jsonl": _jsonl({"text": _S, "label": "a"}),
            "test.jsonl": _jsonl({"text": _S, "label": "b"}),
        },
        r"test\.jsonl: field 'label': test labels never seen in train: \['b'\]",
    ),
    (
        "BitextMining",
        {"test.jsonl": _jsonl({"sentence1": _S, "sentence2": ""})},
        r"test\.jsonl line 1: field 'sentence2': is empty",
    ),
    (
        "Summarization",
        {
            "test.jsonl": _jsonl(
                {"human_summaries": [_S], "machine_summaries": [_S, _S], "relevance": [1]}
            )
        },
        r"test\.jsonl line 1: field 'relevance': 1 scores for 2 machine summaries",
    ),
    (
        "Summarization",
        {
            "test.jsonl": _jsonl(
                {"human_summaries": [_S, 3], "machine_summaries": [_S], "relevance": [1]}
            )
        },
        r"test\.jsonl line 1: field 'human_summaries\[1\]': must be a non-empty string",
    ),
]


@pytest.mark.parametrize("task_type,files,message", MALFORMED_OTHER)
def test_malformed_task_files(tmp_path, task_type, files, message):
    folder = _write(tmp_path / "t", {"task.json": json.dumps({"type": task_type}), **files})
    with pytest.raises(tasks.TaskDataError, match=message):
        tasks.load_task(folder)


def test_missing_folder_and_unknown_task(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        tasks.load_task(_write(tmp_path / "t", {"task.json": json.dumps({"type": "Retrieval"})}))
    with pytest.raises(KeyError, match="unknown task 'nope'.*humanize-bitext"):
        tasks.get_task("nope")


# ------------------------------------------------------------------------------------------
# Built-in tasks
# ------------------------------------------------------------------------------------------


def test_builtin_humanize_bitext():
    task = tasks.get_task("humanize-bitext")
    subsets = sorted(set(task.subsets))
    assert len(subsets) >= 5 and all(s.startswith("en-") for s in subsets)
    for s in subsets:  # within a subset, neither side repeats (mining is well defined)
        idx = [i for i, x in enumerate(task.subsets) if x == s]
        assert (
            len({task.sentence1[i] for i in idx})
            == len(idx)
            == len({task.sentence2[i] for i in idx})
        )
    got = task.evaluate(HashingEncoder(), [32])[32]
    assert 0 <= got["f1"] <= 1 and got["main_score"] == got["f1"]


def test_builtin_stdlib_docstring_tasks():
    clf = tasks.get_task("stdlib-docstring-classification")
    clu = tasks.get_task("stdlib-docstring-clustering")
    assert len(set(clf.labels)) == 12 and set(clf.train_labels) == set(clf.labels)
    assert not set(clf.texts) & set(clf.train_texts)  # split by function, summaries unique
    assert sorted(clu.texts) == sorted(clf.texts)
    rows = tasks.stdlib_docstrings()
    assert len({r[2] for r in rows}) == len(rows)
    # quick end-to-end run on a few labels with the toy encoder
    got = tasks.ClassificationTask(
        name="small",
        texts=clf.texts[:200],
        labels=clf.labels[:200],
        train_texts=clf.train_texts,
        train_labels=clf.train_labels,
        n_experiments=2,
    ).evaluate(HashingEncoder(), [16])[16]
    assert 0 <= got["accuracy"] <= 1
