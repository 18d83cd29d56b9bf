"""Optimizer: schedule shape, weight-decay mask, gradient accumulation, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from embeddinggemma_jax.model import ModelConfig, init_params
from embeddinggemma_jax.train.optimizer import decay_mask, make_optimizer, make_schedule


def test_warmup_then_cosine_and_linear():
    cfg = dict(learning_rate=1.0, warmup_steps=4, decay="cosine", end_learning_rate_fraction=0.1)
    lr = make_schedule(cfg, total_updates=14)
    values = np.array([float(lr(i)) for i in range(14)])
    np.testing.assert_allclose(values[:4], [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
    assert values[4] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1)
    assert np.all(np.diff(values[4:]) <= 1e-7)  # monotone decay
    mid = 4 + (14 - 4 - 1) / 2
    assert float(lr(mid)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)  # cosine midpoint
    linear = make_schedule({**cfg, "decay": "linear"}, total_updates=14)
    assert float(linear(mid)) == pytest.approx(0.55, rel=1e-5)
    constant = make_schedule({**cfg, "decay": "constant"}, total_updates=14)
    assert float(constant(13)) == pytest.approx(1.0)


def test_no_decay_on_norm_scales():
    params = init_params(ModelConfig.tiny(), jax.random.key(0))
    mask = decay_mask(params)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    names = {jax.tree_util.keystr(p): m for p, m in flat}
    scales = [k for k in names if k.endswith("['scale']")]
    assert scales and not any(names[k] for k in scales)
    assert names["['encoder']['layer_0']['attn']['q']['w']"]
    assert names["['encoder']['embedder']['embedding']"]
    # Decay really skips them: zero gradients move weights, not norm scales.
    tx, _ = make_optimizer(dict(learning_rate=0.1, weight_decay=0.5, clip_norm=0), 10)
    params = jax.tree.map(lambda x: x + 1.0, params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    u = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(updates)[0]}
    assert float(jnp.abs(u["['encoder']['final_norm']['scale']"]).max()) == 0.0
    assert float(jnp.abs(u["['encoder']['layer_0']['attn']['q']['w']"]).max()) > 0.0


def test_gradient_accumulation_averages_micro_batches():
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    g1, g2 = {"w": jnp.array([1.0, 0.0, -1.0])}, {"w": jnp.array([3.0, 2.0, 1.0])}
    cfg = dict(learning_rate=0.1, weight_decay=0.0, clip_norm=0, warmup_steps=0, decay="constant")
    acc, lr_fn = make_optimizer({**cfg, "grad_accum_steps": 2}, 4)
    plain, _ = make_optimizer(cfg, 2)
    s = acc.init(params)
    u1, s = acc.update(g1, s, params)
    assert float(jnp.abs(u1["w"]).max()) == 0.0  # no update on the first micro-batch
    u2, s = acc.update(g2, s, params)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    want, _ = plain.update(mean, plain.init(params), params)
    np.testing.assert_allclose(u2["w"], want["w"], rtol=1e-6)
    assert float(lr_fn(3)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"decay": "step"}, "optimizer.decay"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"grad_accum_steps": 0}, "grad_accum_steps"),
        ({"momentum": 0.9}, "unknown keys"),
    ],
)
def test_bad_optimizer_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(bad, 10)


def test_clipping_bounds_the_update_norm():
    tx, _ = make_optimizer(
        dict(learning_rate=1.0, weight_decay=0.0, clip_norm=1e-3, b1=0.0, b2=0.0, eps=0.0), 10
    )
    params = {"w": jnp.ones(4)}
    grads = {"w": jnp.full(4, 100.0)}
    state = tx.init(params)
    assert isinstance(state, tuple)
    updates, _ = tx.update(grads, state, params)
    assert np.isfinite(np.asarray(updates["w"])).all()
    assert optax.global_norm(updates) > 0


def test_trainable_rules_freeze_bit_identically_then_train():
    from embeddinggemma_jax.errors import LocatedError

    params = jax.tree.map(lambda x: x + 1.0, init_params(ModelConfig.tiny(), jax.random.key(0)))
    rules = [("encoder/layer_0/.*", 1, 3), ("head/.*", 0, 0)]  # layer 0: updates 1, 2; head: never
    cfg = dict(learning_rate=0.1, weight_decay=0.5, clip_norm=1.0, trainable=rules)
    tx, _ = make_optimizer(cfg, 10)
    state, update = tx.init(params), jax.jit(tx.update)
    grads = jax.tree.map(jnp.ones_like, params)

    def group(path):
        name = "/".join(str(k.key) for k in path)
        return "layer_0" if name.startswith("encoder/layer_0/") else name.split("/")[0]

    for count in range(4):
        updates, state = update(grads, state, params)
        new = optax.apply_updates(params, updates)
        moved = {}
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(new)[0], jax.tree.leaves(params)
        ):
            moved.setdefault(group(path), []).append(bool(np.any(np.asarray(a) != np.asarray(b))))
        assert not any(moved["head"]), count
        assert all(moved["layer_0"]) == (1 <= count < 3) and any(moved["layer_0"]) == (
            1 <= count < 3
        )
        assert all(moved["encoder"]), count  # no rule: always trains
        params = new
    with pytest.raises(
        LocatedError, match=r"config.optimizer.trainable\[0\].*matches no parameter"
    ):
        bad, _ = make_optimizer(dict(trainable=[("nothing/.*", 0, 1)]), 10)
        bad.init(params)
