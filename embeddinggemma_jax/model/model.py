"""EmbeddingGemma: the bidirectional Gemma 3 encoder plus the embedding head."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from embeddinggemma_jax.model.config import ModelConfig
from embeddinggemma_jax.model.head import EmbeddingHead
from embeddinggemma_jax.model.transformer import Transformer, token_mask


class EmbeddingGemma(nn.Module):
    """tokens [B, T] (+ mask) -> embeddings [B, E] float32, L2-normalised.

    Packed rows (several texts per row: `segments` 1, 2, ... per text, 0 on padding, `positions`
    restarting at 0 per text, static `num_segments` >= the most texts in a row) give
    [B, num_segments, E], each text embedded exactly as if it had a row of its own.

    Parameters: {"encoder": Transformer params, "head": {"dense_i": {"w"}}}.
    """

    config: ModelConfig

    def setup(self):
        self.encoder = Transformer(self.config)
        self.head = EmbeddingHead(self.config)

    def __call__(
        self,
        tokens_bt: jax.Array,
        mask_bt: jax.Array | None = None,
        segments_bt: jax.Array | None = None,
        positions_bt: jax.Array | None = None,
        num_segments: int | None = None,
    ) -> jax.Array:
        if segments_bt is not None and num_segments is None:
            raise ValueError("packed rows (segments_bt) need a static num_segments")
        mask_bt = token_mask(self.config, tokens_bt, mask_bt, segments_bt)
        x_btd = self.encoder(tokens_bt, mask_bt, segments_bt, positions_bt)
        return self.head(x_btd, mask_bt, segments_bt, num_segments)

    def token_states(self, tokens_bt: jax.Array, mask_bt: jax.Array | None = None) -> jax.Array:
        """Final-normed encoder states [B, T, D] in the compute dtype."""
        return self.encoder(tokens_bt, mask_bt)


def _init(config: ModelConfig, rng: jax.Array):
    tokens = jnp.ones((1, 8), jnp.int32)
    return EmbeddingGemma(config).init(rng, tokens)["params"]


def _abstract_init(config: ModelConfig):
    return jax.eval_shape(functools.partial(_init, config), jax.random.key(0))


def init_params(config: ModelConfig, rng: jax.Array) -> dict:
    """Randomly initialised parameters: a plain pytree of float32 arrays."""
    # Jitted: one compiled program instead of the init forward pass dispatched op by op.
    return nn.meta.unbox(jax.jit(functools.partial(_init, config))(rng))


def param_shapes(config: ModelConfig) -> dict:
    """Parameter shapes (jax.ShapeDtypeStruct pytree) without allocating anything."""
    return nn.meta.unbox(_abstract_init(config))


def param_logical_axes(config: ModelConfig) -> dict:
    """Pytree of PartitionSpecs of logical axis names, matching `init_params`' structure."""
    return nn.get_partition_spec(_abstract_init(config))
