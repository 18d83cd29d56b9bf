"""model.init: the whitened start of a fresh embedding head (``config.head_init.whiten``)."""

import sys
from pathlib import Path

import jax
import numpy as np

from embeddinggemma_jax.model.init import whitening

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from trainlib import tiny_config  # noqa: E402


def _anisotropic(n=400, d=16, seed=0):
    """Pooled-state-like samples: a large shared mean and one dominant axis."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:, 0] *= 30.0
    return x + 5.0 * rng.normal(size=d)


def test_whitening_removes_the_mean_direction_and_equalises_the_axes():
    x = _anisotropic()
    w = whitening(x, eps=0.1)
    mean = x.mean(0)
    assert np.linalg.norm(mean @ w) < 1e-8 * np.linalg.norm(mean)  # the shared part is gone
    u = mean / np.linalg.norm(mean)
    q = (x - mean) @ (np.eye(len(u)) - np.outer(u, u))
    cov = lambda a: a.T @ a / len(a)  # noqa: E731
    before = np.linalg.eigvalsh(cov(q))
    after = np.linalg.eigvalsh(cov(q @ w))
    assert before[-1] / before[-2] > 100  # one axis dominates before
    # Each axis's variance v becomes v / (v + 0.1 mean(v)): the dominant axis ~1, the rest equal.
    np.testing.assert_allclose(after, before / (before + 0.1 * before.mean()), atol=1e-9)
    assert after[-1] / after[-2] < 10


def _mean_sq_cosine(e):
    s = e @ e.T
    n = len(e)
    return float((np.sum(s**2) - n) / (n * (n - 1)))


def test_task_whitens_only_the_heads_first_projection(tmp_path):
    from embeddinggemma_jax.model.model import EmbeddingGemma
    from embeddinggemma_jax.train.contrastive import ContrastiveTask

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = {}
    for whiten in (False, True):
        task = ContrastiveTask(tiny_config(tmp_path, **{"head_init.whiten": whiten}))
        shardings = jax.tree.map(lambda _: device, task.param_shapes())
        params[whiten] = jax.tree.map(np.asarray, task.initial_params(jax.random.key(0), shardings))
    plain, white = params[False], params[True]
    changed = [
        jax.tree_util.keystr(k)
        for (k, a), b in zip(jax.tree_util.tree_flatten_with_path(plain)[0], jax.tree.leaves(white))
        if not np.array_equal(a, b)
    ]
    assert changed == ["['head']['dense_0']['w']"]
    np.testing.assert_allclose(
        np.linalg.norm(white["head"]["dense_0"]["w"]),
        np.linalg.norm(plain["head"]["dense_0"]["w"]),
        rtol=1e-5,
    )
    # On the batch it was measured on, the embeddings start closer to isotropic.
    batch = next(iter(task.data_iterator(0)))["positive"]
    model = EmbeddingGemma(task.model_config)
    spread = {
        k: _mean_sq_cosine(np.asarray(model.apply({"params": p}, batch["tokens"], batch["mask"])))
        for k, p in params.items()
    }
    assert spread[True] < 0.5 * spread[False], spread
