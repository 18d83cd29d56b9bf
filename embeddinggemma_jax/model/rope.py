"""Rotary position embeddings (rotate-half layout, as Gemma 3 in transformers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def inverse_frequencies(head_dim: int, base: float, scale: float = 1.0) -> np.ndarray:
    """[H/2] float32; rounded once from float64 so it is bit-identical to the reference's."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    return (1.0 / (base**exponents) / scale).astype(np.float32)


def apply_rope(
    x_btnh: jax.Array, positions_bt: jax.Array, base: float, scale: float = 1.0
) -> jax.Array:
    """Rotates pairs (i, i + H/2) by position * inverse frequency, in float32.

    Returns: same shape and dtype as x_btnh.
    """
    half = x_btnh.shape[-1] // 2
    inv_freq = jnp.asarray(inverse_frequencies(x_btnh.shape[-1], base, scale))
    angles_bth = positions_bt.astype(jnp.float32)[..., None] * inv_freq
    sin = jnp.sin(angles_bth)[..., None, :]  # [B, T, 1, H/2]
    cos = jnp.cos(angles_bth)[..., None, :]
    x = x_btnh.astype(jnp.float32)
    first, second = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x_btnh.dtype)
