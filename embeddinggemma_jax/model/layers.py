"""Building blocks: RMSNorm, the one projection layer (Einsum) and the token embedding table.

Every parameterised matmul in the model goes through `Einsum`, so quantization-aware training and
other weight transforms have exactly one place to hook into.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from embeddinggemma_jax.quant.quantizers import contraction_axes, fake_quant, fake_quant_weight
from embeddinggemma_jax.quant.schemes import quantizer_for

Initializer = nn.initializers.Initializer


def precision_for(dtype) -> jax.lax.Precision:
    """Full float32 matmuls when computing in float32 (TPU/GPU would otherwise use bf16 passes)."""
    return (
        jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT
    )


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: x / rms(x) * (1 + scale), computed in float32, returned in x's dtype."""

    eps: float = 1e-6
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.axis_name,)),
            (x.shape[-1],),
            jnp.float32,
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + scale)).astype(x.dtype)


class Einsum(nn.Module):
    """A bias-free projection `jnp.einsum(eqn, x, w)` with a float32 weight `w` of `shape`.

    Attributes:
      shape: weight shape, e.g. (D, N, H).
      eqn: einsum string, input first, e.g. 'BTD,DNH->BTNH'.
      axes: logical axis name per weight dimension (None: replicated).
      dtype: compute dtype; the weight is cast to it.
      quant: a `quant.SCHEMES` name: the weight is fake-quantized by the scheme's rule for this
        parameter's path (blocks along the contraction axes), straight-through gradient.
    """

    shape: Sequence[int]
    eqn: str
    axes: Sequence[str | None]
    dtype: str = "float32"
    init_std: float = 0.02
    quant: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param(
            "w",
            nn.with_logical_partitioning(
                nn.initializers.normal(stddev=self.init_std), tuple(self.axes)
            ),
            tuple(self.shape),
            jnp.float32,
        )
        quantizer = quantizer_for(self.quant, "/".join(self.scope.path) + "/w")
        if quantizer is not None:
            w = fake_quant_weight(quantizer, w, contraction_axes(self.eqn))
        return jnp.einsum(
            self.eqn,
            x.astype(self.dtype),
            w.astype(self.dtype),
            precision=precision_for(self.dtype),
        )


class Embed(nn.Module):
    """Token embedding table [V, D]; `encode` scales by sqrt(D) in the compute dtype (as Gemma does),
    `decode` gives tied output logits."""

    vocab_size: int
    embed_dim: int
    dtype: str = "float32"
    quant: str | None = None  # a quant.SCHEMES name: gathered rows are fake-quantized

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
            (self.vocab_size, self.embed_dim),
            jnp.float32,
        )

    def encode(self, tokens_bt: jax.Array) -> jax.Array:
        """Returns: [B, T, D] in the compute dtype."""
        x_btd = jnp.take(self.embedding, tokens_bt, axis=0)
        # Every quantizer works row by row (blocks or one scale per token row), so quantizing
        # the gathered rows equals gathering from the quantized table, without the V x D pass.
        quantizer = quantizer_for(self.quant, "/".join(self.scope.path) + "/embedding")
        if quantizer is not None:
            x_btd = fake_quant(quantizer, x_btd.reshape(-1, self.embed_dim)).reshape(x_btd.shape)
        x_btd = x_btd.astype(self.dtype)
        return x_btd * jnp.asarray(math.sqrt(self.embed_dim), self.dtype)

    def decode(self, x_btd: jax.Array) -> jax.Array:
        """Returns: [B, T, V] logits (float32 accumulation)."""
        return jnp.einsum(
            "BTD,VD->BTV",
            x_btd,
            self.embedding.astype(self.dtype),
            preferred_element_type=jnp.float32,
            precision=precision_for(self.dtype),
        )
