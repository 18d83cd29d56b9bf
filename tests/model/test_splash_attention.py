"""Splash attention (TPU) tested on CPU.

There is no TPU here. Two things are checked:
  - the splash mask objects (LocalMask / FullMask / CausalMask inside a MultiHeadMask), materialised
    as NumPy arrays, equal our `_structure` for local and global layers, bidirectional and causal;
  - the Splash kernel itself, run through Pallas interpret mode on CPU (`interpret=True`, which
    jax 0.10.2 supports for splash), equals the masked XLA reference on real query rows (max abs
    <= 1e-5, float32) with padding, GQA and MQA, T a multiple of 128 and not; so do its gradients
    and a whole tiny model.
Interpret mode checks the kernel's arithmetic, masking and our wrapper, not Mosaic's TPU lowering
or speed: those need a TPU run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model.attention_inputs import random_qkv, reference

from embeddinggemma_jax.model import GLOBAL, LOCAL, EmbeddingGemma, ModelConfig, init_params
from embeddinggemma_jax.model.attention import (
    _splash_mask,
    _structure,
    attention,
)


def _config(bidirectional: bool, num_heads: int, num_kv_heads: int) -> ModelConfig:
    """Window 64 both ways: bidirectional |i - j| < 126 // 2 + 1, causal 0 <= i - j < 64."""
    return ModelConfig.tiny(
        bidirectional=bidirectional,
        sliding_window=126 if bidirectional else 64,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        attention_impl="splash",
    )


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layer_type", [LOCAL, GLOBAL])
@pytest.mark.parametrize("preset", ["embeddinggemma_300m", "tiny"])
def test_splash_mask_equals_structure(preset, layer_type, bidirectional):
    config = getattr(ModelConfig, preset)(bidirectional=bidirectional)
    t = 640  # > 2 windows of the 300m model (257), a multiple of 128
    mask = _splash_mask(config, layer_type, t, config.num_heads)
    dense = np.asarray(mask[:, :, :])
    assert dense.shape == (config.num_heads, t, t) and dense.dtype == np.bool_
    pos = jnp.arange(t)
    expected = np.asarray(_structure(config, layer_type, pos, pos))
    for head in dense:
        np.testing.assert_array_equal(head, expected)
    np.testing.assert_array_equal(expected, config.attends(layer_type, np.arange(t), np.arange(t)))


@pytest.mark.parametrize(
    "layer_type, bidirectional, heads, t",
    [
        (LOCAL, True, (3, 1), 256),  # MQA kernel
        (LOCAL, False, (4, 2), 200),  # GQA through the MHA kernel; T padded to 256 inside
        (GLOBAL, True, (4, 2), 256),
        (GLOBAL, False, (3, 1), 200),
    ],
)
def test_splash_equals_masked_reference(layer_type, bidirectional, heads, t):
    config = _config(bidirectional, *heads)
    lengths = [t, t - 70, 1]  # no padding, padding, a single token
    q, k, v, mask = random_qkv(config, t, lengths)
    out = np.asarray(attention(q, k, v, mask, config=config, layer_type=layer_type))
    ref = np.asarray(reference(q, k, v, mask, config, layer_type))
    assert out.shape == q.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out[mask], ref[mask], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out[~mask], 0.0)  # padding query rows are zeros
    assert np.abs(ref[mask]).max() > 0.1  # the comparison is not between near-zeros


def test_splash_gradients_equal_reference():
    config = _config(True, 4, 2)
    t = 200
    q, k, v, mask = random_qkv(config, t, [t, 77], seed=1)
    w = np.random.default_rng(2).normal(size=q.shape).astype(np.float32) * mask[:, :, None, None]

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

    splash = loss(lambda q, k, v: attention(q, k, v, mask, config=config, layer_type=LOCAL))
    ref = loss(lambda q, k, v: reference(q, k, v, mask, config, LOCAL))
    got = jax.jit(jax.grad(splash, argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(ref, argnums=(0, 1, 2))(q, k, v)
    for name, g, r in zip("qkv", got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=0, err_msg=name)


def test_tiny_model_with_splash_equals_xla():
    # window 6 < lengths (xla's local mask is banded), padding on two rows
    config = ModelConfig.tiny(num_layers=2, layer_types=(LOCAL, GLOBAL))
    lengths = (23, 17, 5)
    rng = np.random.default_rng(3)
    tokens = np.zeros((len(lengths), max(lengths)), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(1, config.vocab_size, n)
    mask = tokens != 0
    params = init_params(config, jax.random.key(0))

    def token_states(impl):
        model = EmbeddingGemma(config.replace(attention_impl=impl))
        apply = jax.jit(lambda p, t, m: model.apply({"params": p}, t, m, method=model.token_states))
        return np.asarray(apply(params, tokens, mask))

    states = {impl: token_states(impl) for impl in ("xla", "splash")}
    np.testing.assert_allclose(states["splash"][mask], states["xla"][mask], atol=1e-5, rtol=0)
