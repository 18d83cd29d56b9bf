"""Embedding head: mean pooling, bias-free dense projections, L2 normalisation, Matryoshka."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from embeddinggemma_jax.model.config import ModelConfig
from embeddinggemma_jax.model.layers import Einsum, precision_for


def l2_normalize(x: jax.Array, eps: float = 1e-12, *, dtype=jnp.float32) -> jax.Array:
    """x / max(||x||, eps) along the last axis, in `dtype` (as torch.nn.functional.normalize).

    Computed as x * rsqrt(max(sum(x^2), eps^2)): a zero vector stays zero with a finite gradient
    (the losses normalise with it too).
    """
    x = jnp.asarray(x, dtype)
    sumsq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sumsq, jnp.asarray(eps * eps, dtype)))


def truncate(emb_be: jax.Array, dim: int | None) -> jax.Array:
    """Matryoshka: the first `dim` dimensions, re-normalised. Returns [B, dim] float32."""
    if dim is None or dim == emb_be.shape[-1]:
        return l2_normalize(emb_be)
    if not 0 < dim <= emb_be.shape[-1]:
        raise ValueError(f"dim must be in 1..{emb_be.shape[-1]}, got {dim}")
    return l2_normalize(emb_be[..., :dim])


def mean_pool(x_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """Mean over real tokens (prompt included), in float32. Returns [B, D]."""
    m = mask_bt.astype(jnp.float32)[..., None]
    total = jnp.sum(x_btd.astype(jnp.float32) * m, axis=-2)
    return total / jnp.maximum(jnp.sum(m, axis=-2), 1e-9)


def segment_mean_pool(x_btd: jax.Array, segments_bt: jax.Array, num_segments: int) -> jax.Array:
    """Mean over each text of packed rows (segment ids 1..num_segments; 0 = padding), in float32.

    Returns: [B, num_segments, D]; slot s holds segment s + 1 (zeros where a row has fewer).
    """
    onehot_bts = (segments_bt[..., None] == jnp.arange(1, num_segments + 1)).astype(jnp.float32)
    total = jnp.einsum(
        "BTS,BTD->BSD",
        onehot_bts,
        x_btd.astype(jnp.float32),
        precision=precision_for(jnp.float32),
    )
    return total / jnp.maximum(jnp.sum(onehot_bts, axis=1), 1e-9)[..., None]


class EmbeddingHead(nn.Module):
    """Token states [B, T, D] -> embeddings [B, E] float32, L2-normalised; for packed rows
    (segment ids and `num_segments`), [B, num_segments, E]."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        x_btd: jax.Array,
        mask_bt: jax.Array,
        segments_bt: jax.Array | None = None,
        num_segments: int | None = None,
    ) -> jax.Array:
        cfg = self.config
        if segments_bt is None:
            pooled = mean_pool(x_btd, mask_bt)
        else:
            pooled = segment_mean_pool(x_btd, segments_bt, num_segments)
        h = pooled.reshape(-1, cfg.embed_dim).astype(cfg.dtype)
        dims = (cfg.embed_dim, *cfg.head_dims)
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            axes = ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")
            h = Einsum(
                (d_in, d_out), "BD,DE->BE", axes, cfg.dtype, quant=cfg.quant, name=f"dense_{i}"
            )(h)
        return l2_normalize(h).reshape(*pooled.shape[:-1], h.shape[-1])
