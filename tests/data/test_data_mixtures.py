"""Mixtures: one dataset per global batch, chosen by weight from (seed, step), deterministically."""

import json

import numpy as np
import pytest
from data.datalib import WordTokenizer
from scipy.stats import chisquare

from embeddinggemma_jax.data import DataConfig, DataPipeline, DatasetConfig, Mixture
from embeddinggemma_jax.data.mixtures import (
    dirichlet_mixtures,
    seed_mixture,
    task_group,
    with_weights,
)


@pytest.mark.parametrize(
    "weights, seed", [([0.5, 0.3, 0.2], 0), ([1.0, 1.0], 7), ([5.0, 1.0, 3.0, 1.0], 123)]
)
def test_mixture_follows_the_weights_chi_square(weights, seed):
    draws = 2000
    counts = np.bincount(Mixture(weights, seed).choices(np.arange(draws)), minlength=len(weights))
    expected = np.asarray(weights) / np.sum(weights) * draws
    assert chisquare(counts, f_exp=expected).pvalue > 0.01


def test_mixture_is_deterministic_and_seeded():
    steps = np.arange(2000)
    a, b = Mixture([0.5, 0.3, 0.2], 11), Mixture([0.5, 0.3, 0.2], 11)
    assert np.array_equal(a.choices(steps), b.choices(steps))
    # Any step alone (another host, or after a restart) gives the same choice as the whole sequence.
    assert [a.choice(int(s)) for s in steps[::97]] == a.choices(steps[::97]).tolist()
    assert not np.array_equal(a.choices(steps), Mixture([0.5, 0.3, 0.2], 12).choices(steps))
    assert np.array_equal(Mixture([3.0], 5).choices(steps), np.zeros(2000, np.int64))


def test_locate_counts_earlier_choices():
    mixture = Mixture([0.6, 0.3, 0.1], 2)
    steps = np.arange(9000)  # crosses the cached block boundaries
    chosen = mixture.choices(steps)
    for step in [0, 1, 2, 4095, 4096, 4097, 8191, 8192, 8999, *range(100, 9000, 701)]:
        dataset, cursor = mixture.locate(step)
        assert dataset == chosen[step]
        assert cursor == np.count_nonzero(chosen[:step] == dataset)
    # A fresh mixture asked out of order agrees (the cache is not order-dependent).
    assert Mixture([0.6, 0.3, 0.1], 2).locate(8999) == mixture.locate(8999)


def test_bad_weights():
    for weights in ([], [1.0, 0.0], [1.0, -2.0], [float("nan")]):
        with pytest.raises(ValueError):
            Mixture(weights, 0)


def test_each_global_batch_comes_from_one_dataset(tmp_path):
    datasets = []
    for name, weight, n in (("a", 3.0, 17), ("b", 1.0, 11), ("c", 1.0, 9)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"query": f"{name} q{i}", "positive": f"{name} p{i}"}) + "\n"
                for i in range(n)
            )
        )
        datasets.append(DatasetConfig(path=str(path), name=name, weight=weight))
    config = DataConfig(
        datasets=tuple(datasets),
        global_batch_size=4,
        seed=9,
        query_max_length=8,
        doc_max_length=8,
        min_bucket=4,
    )
    processes = [
        DataPipeline(config, WordTokenizer(), process_index=p, process_count=2) for p in range(2)
    ]
    counts = np.zeros(3, int)
    for step in range(40):
        per_process = [p.records(step) for p in processes]
        dataset = per_process[0][0]
        assert (
            dataset == per_process[1][0] == processes[0].mixture.choice(step)
        )  # same on every host
        names = {
            r.where.rsplit("/", 1)[-1].split(".")[0] for _, records in per_process for r in records
        }
        assert names == {datasets[dataset].name}
        assert processes[0].batch(step)["dataset"] == dataset
        counts[dataset] += 1
    assert counts.min() > 0


def test_dirichlet_mixtures_are_seeded_deterministic_and_on_the_simplex():
    names = ["stdlib", "sympy", "catalogs", "definitions"]
    a = dirichlet_mixtures(names, 10, seed=3)
    assert a == dirichlet_mixtures(names, 10, seed=3)
    assert a[:4] == dirichlet_mixtures(names, 4, seed=3)  # prefix-stable
    assert a != dirichlet_mixtures(names, 10, seed=4)
    assert len(a) == 10 and len({tuple(m.values()) for m in a}) == 10
    for m in a + dirichlet_mixtures(names, 20, seed=0, alpha=0.05):
        assert list(m) == names
        assert abs(sum(m.values()) - 1.0) < 1e-12
        assert min(m.values()) > 0
        Mixture(list(m.values()), 0)  # a valid mixture
    # alpha = 1 is uniform on the simplex: each weight has mean 1/4 (std of the mean ~0.005).
    means = np.mean([list(m.values()) for m in dirichlet_mixtures(names, 2000, seed=1)], axis=0)
    assert np.allclose(means, 0.25, atol=0.02)
    sparse = np.array([list(m.values()) for m in dirichlet_mixtures(names, 500, 1, alpha=0.1)])
    assert np.mean(sparse.max(axis=1)) > 0.8  # small alpha: one dataset dominates
    assert dirichlet_mixtures(names, 0, seed=0) == []
    for bad in (dict(names=[], n=1), dict(names=["a", "a"], n=1), dict(names=["a"], n=-1)):
        with pytest.raises(ValueError):
            dirichlet_mixtures(**bad, seed=0)
    with pytest.raises(ValueError):
        dirichlet_mixtures(names, 1, seed=0, alpha=0.0)


def test_seed_mixture_and_with_weights_round_trip():
    datasets = [
        dict(path="data/stdlib/train.jsonl", name="stdlib", weight=3.0),
        DatasetConfig(path="data/catalogs/train.jsonl", name="catalogs", weight=1.0),
    ]
    assert seed_mixture(datasets) == {"stdlib": 0.75, "catalogs": 0.25}
    updated = with_weights(datasets, {"catalogs": 3.0, "stdlib": 1.0})
    assert [d["weight"] for d in updated] == [0.25, 0.75]
    assert updated[0]["path"] == "data/stdlib/train.jsonl" and datasets[0]["weight"] == 3.0
    assert seed_mixture(updated) == {"stdlib": 0.25, "catalogs": 0.75}
    DataConfig.from_mapping({"datasets": updated, "global_batch_size": 4})  # still valid config
    with pytest.raises(ValueError, match="differ"):
        with_weights(datasets, {"stdlib": 1.0})
    with pytest.raises(ValueError, match="twice"):
        seed_mixture([dict(path="a/x", weight=1.0), dict(path="b/x", weight=1.0)])
    assert task_group("catalogs") == "language" and task_group("nope") is None
