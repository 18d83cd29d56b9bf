"""Built-in tasks build from the real text they are made of, and evaluate."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.util
import math
import random
import re

import numpy as np
import pytest
from evalkit import HashingEncoder

from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.eval import builtin, tasks
from embeddinggemma_jax.eval.registry import get_task


def test_builtin_humanize_bitext():
    task = get_task("humanize-bitext")
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
    clf = get_task("stdlib-docstring-classification")
    clu = get_task("stdlib-docstring-clustering")
    assert len(set(clf.labels)) == 12 and set(clf.train_labels) == set(clf.labels)
    assert not set(clf.texts) & set(clf.train_texts)  # split by function, summaries unique
    assert sorted(clu.texts) == sorted(clf.texts)
    rows = builtin.stdlib_docstrings()
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


def _tfidf_encoder(texts, prompt_name, dim):
    """Hashed bag of words weighted by tf-idf over the texts of the call: a classic baseline that
    agrees with human similarity ratings of news articles (Lee et al. 2005: r ~ 0.4)."""
    words = [re.findall(r"[a-z]+", t.lower()) for t in texts]
    df = collections.Counter(w for ws in words for w in set(ws))
    out = np.zeros((len(texts), dim), np.float32)
    for i, ws in enumerate(words):
        for w, c in collections.Counter(ws).items():
            h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little") % dim
            out[i, h] += (1 + math.log(c)) * math.log(len(texts) / df[w])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_builtin_lee_sts_on_gensims_files():
    task = get_task("lee-sts")
    docs = sorted(set(task.sentence1) | set(task.sentence2))
    assert len(docs) == 50 and len(task.scores) == 50 * 49 // 2
    assert all(0.2 <= s <= 1.0 for s in task.scores)  # ratings 1..5 scaled: 0.2..1
    assert any("£3,000" in d for d in docs)  # the one Windows-1252 character decoded
    got = task.evaluate(_tfidf_encoder, [2048])[2048]
    assert got["main_score"] == got["cosine_spearman"] > 0.1 and got["cosine_pearson"] > 0.3
    # The same documents with their ratings shifted to other pairs no longer agree: the
    # agreement above is the ratings' pairing, not a property of the documents.
    shifted = dataclasses.replace(task, scores=task.scores[600:] + task.scores[:600])
    assert abs(shifted.evaluate(_tfidf_encoder, [2048])[2048]["cosine_pearson"]) < 0.1


def test_builtin_task_names_its_missing_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gensim" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"'lee-sts'.*pip package 'gensim'.*pip install gensim"):
        builtin.lee_sts.__wrapped__()


def test_builtin_fortune_clustering_on_the_debian_package():
    if not all((builtin.FORTUNES_DIR / c).is_file() for c in builtin.FORTUNE_CATEGORIES):
        pytest.skip("the optional Debian package 'fortunes' is not installed")
    task = get_task("fortune-clustering")
    assert set(task.labels) == set(builtin.FORTUNE_CATEGORIES)
    assert max(collections.Counter(task.labels).values()) == 60
    assert len(set(task.texts)) == len(task.texts) and all(40 <= len(t) <= 300 for t in task.texts)
    again = builtin.fortune_clustering.__wrapped__()  # rebuilt, not the cached object
    assert again.texts == task.texts and again.labels == task.labels
    got = task.evaluate(_tfidf_encoder, [2048])[2048]["v_measure"]
    shuffled = random.Random(0).sample(list(task.labels), len(task.labels))
    control = dataclasses.replace(task, labels=shuffled).evaluate(_tfidf_encoder, [2048])[2048]
    assert got > control["v_measure"] + 0.02  # the files' subjects are in the words


def test_fortune_clustering_names_its_missing_package(tmp_path):
    with pytest.raises(UserError, match=r"Debian package 'fortunes'.*apt-get install fortunes"):
        builtin.fortune_clustering.__wrapped__(folder=str(tmp_path))
