"""Mixtures: one dataset per global batch, chosen by weight from (seed, step), deterministically."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

from embeddinggemma_jax.data import DataConfig, DataPipeline, DatasetConfig, Mixture


class LengthTokenizer:
    pad_id = 0

    def encode(self, texts, max_length=None):
        return [
            np.array([2] + [3 + len(w) for w in t.split()][: max_length - 2] + [1], np.int32)
            for t in texts
        ]


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
        DataPipeline(config, LengthTokenizer(), process_index=p, process_count=2) for p in range(2)
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
