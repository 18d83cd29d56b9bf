"""Shared by the attention tests: random q, k, v with padded rows, and the masked reference."""

import jax.numpy as jnp
import numpy as np

from embeddinggemma_jax.model import ModelConfig
from embeddinggemma_jax.model.attention import _masked_softmax_attention, _structure


def random_qkv(config: ModelConfig, t: int, lengths, seed: int = 0):
    """q [B, t, N, H], k and v [B, t, K, H] normal float32, and the mask of rows `lengths` long."""
    rng = np.random.default_rng(seed)
    b, n, k, h = len(lengths), config.num_heads, config.num_kv_heads, config.head_dim
    q = rng.normal(size=(b, t, n, h)).astype(np.float32)
    kk = rng.normal(size=(b, t, k, h)).astype(np.float32)
    v = rng.normal(size=(b, t, k, h)).astype(np.float32)
    mask = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
    return q, kk, v, mask


def reference(q, k, v, mask, config: ModelConfig, layer_type: str):
    """Softmax attention over the full [B, T, T] mask of `layer_type` and the padding `mask`."""
    pos = jnp.arange(q.shape[1])
    full = _structure(config, layer_type, pos, pos)[None] & mask[:, None, :]
    return _masked_softmax_attention(q, k, v, full, config)
