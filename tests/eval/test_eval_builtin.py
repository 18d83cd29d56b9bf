"""Built-in tasks build from the real text they are made of, and evaluate."""

from __future__ import annotations

from evalkit import HashingEncoder

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
