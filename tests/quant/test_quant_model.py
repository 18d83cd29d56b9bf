"""The schemes on the released model's layout, and the straight-through estimator as wired into the
model: the QAT gradient is the float model's gradient taken at the quantized weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embeddinggemma_jax.model.config import GLOBAL, LOCAL, ModelConfig
from embeddinggemma_jax.model.model import EmbeddingGemma, init_params, param_shapes
from embeddinggemma_jax.quant import SCHEMES, assignments, param_paths, unused_rules
from embeddinggemma_jax.quant.params import quantized_params, weight_layouts

TABLE = {  # the table: what each kind of weight is stored as
    "q4_0": dict(embedding="q4_0", attn="q4_0", mlp="q4_0", dense="q4_0"),
    "q8_0": dict(embedding="q8_0", attn="q8_0", mlp="q8_0", dense="q8_0"),
    "mixed": dict(embedding="int4", attn="int8", mlp="int4", dense="int4"),
}


@pytest.fixture(scope="module")
def layout_300m():
    """Every parameter path of the released model, and those that are matmul / embedding weights."""
    config = ModelConfig.embeddinggemma_300m()
    return param_paths(param_shapes(config)), set(weight_layouts(config))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_rules_cover_every_weight_of_the_300m_layout(scheme, layout_300m):
    paths, weights = layout_300m
    assert len(paths) > 24 * 9  # every layer's weights, not one scanned block
    assert unused_rules(scheme, paths) == []
    for path, q in assignments(scheme, paths).items():
        if path not in weights:
            assert path.endswith("/scale") and q is None, path  # norms stay float
            continue
        kind = next(k for k in ("embedding", "attn", "mlp", "dense") if k in path)
        assert q == TABLE[scheme][kind], path


_CONFIG = ModelConfig.tiny(
    embed_dim=64,
    head_dim=32,
    mlp_dim=96,
    num_layers=2,
    layer_types=(LOCAL, GLOBAL),
    head_dims=(160, 64),
    matryoshka_dims=(64, 32),
)


@functools.cache
def _grad_fn(quant):
    """d/dparams of a fixed linear function of the embeddings (one compilation per scheme)."""
    cfg = _CONFIG.replace(quant=quant)
    tokens = jax.random.randint(jax.random.key(1), (2, 13), 1, cfg.vocab_size)
    target = jax.random.normal(jax.random.key(2), (2, cfg.output_dim))

    def loss(p):
        return jnp.sum(EmbeddingGemma(cfg).apply({"params": p}, tokens) * target)

    return jax.jit(jax.grad(loss))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_qat_gradient_is_the_float_gradient_at_the_quantized_weights(scheme):
    params = init_params(_CONFIG, jax.random.key(0))
    qat = _grad_fn(scheme)(params)
    at_quantized = _grad_fn(None)(quantized_params(params, _CONFIG, scheme))
    at_float = _grad_fn(None)(params)

    def rel(a, b):  # largest difference relative to the gradient's scale
        return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()

    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(qat), jax.tree.leaves(at_quantized)
    ):
        assert rel(a, b) < 1e-3, jax.tree_util.keystr(path)  # float32 rounding only
    # The forward it differentiates is the quantized one, not the float one.
    assert max(rel(a, c) for a, c in zip(jax.tree.leaves(qat), jax.tree.leaves(at_float))) > 1e-2
