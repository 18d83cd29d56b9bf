"""Rotary position embeddings (rotate-half layout, as Gemma 3 in transformers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def inverse_frequencies(head_dim: int, base: float, scale: float = 1.0) -> np.ndarray:
    """[H/2] float32; rounded once from float64 so it is bit-identical to the reference's."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    return (1.0 / (base**exponents) / scale).astype(np.float32)


def rope_angles(
    positions_bt: jax.Array, head_dim: int, base: float, scale: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """(sin, cos) of position * inverse frequency, [B, T, 1, H/2] float32.

    Computed once per forward and shared by every layer with the same base: recomputing the
    transcendentals inside each layer's fused RoPE cost ~9% of a CPU forward.
    """
    inv_freq = jnp.asarray(inverse_frequencies(head_dim, base, scale))
    angles_bth = positions_bt.astype(jnp.float32)[..., None] * inv_freq
    return jnp.sin(angles_bth)[..., None, :], jnp.cos(angles_bth)[..., None, :]


def rotate(x_btnh: jax.Array, sin_bt1h: jax.Array, cos_bt1h: jax.Array) -> jax.Array:
    """Rotates pairs (i, i + H/2) by the angles of `rope_angles`, in float32.

    Returns: same shape and dtype as x_btnh.
    """
    half = x_btnh.shape[-1] // 2
    x = x_btnh.astype(jnp.float32)
    first, second = x[..., :half], x[..., half:]
    rotated = jnp.concatenate(
        [first * cos_bt1h - second * sin_bt1h, second * cos_bt1h + first * sin_bt1h], axis=-1
    )
    return rotated.astype(x_btnh.dtype)


def apply_rope(
    x_btnh: jax.Array, positions_bt: jax.Array, base: float, scale: float = 1.0
) -> jax.Array:
    """`rotate` by the angles of `positions_bt`. Returns: same shape and dtype as x_btnh."""
    return rotate(x_btnh, *rope_angles(positions_bt, x_btnh.shape[-1], base, scale))
