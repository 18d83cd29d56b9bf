"""Test helper: next-token logits of a decoder-only Gemma 3 (the parity tests' side of ours)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from embeddinggemma_jax.model.config import ModelConfig
from embeddinggemma_jax.model.transformer import Transformer


def decoder_only_logits(
    config: ModelConfig, params: Mapping, tokens_bt: Any, mask_bt: Any | None = None
) -> jax.Array:
    """Next-token logits [B, T, V] float32 of a decoder-only model run causally (jitted)."""
    if config.bidirectional:
        raise ValueError("decoder_only_logits needs a causal config (bidirectional=False)")
    tokens_bt = jnp.asarray(tokens_bt)
    mask_bt = tokens_bt != config.pad_id if mask_bt is None else jnp.asarray(mask_bt, bool)
    return _decoder_only_logits(config, params, tokens_bt, mask_bt)


@functools.partial(jax.jit, static_argnums=0)
def _decoder_only_logits(config, params, tokens_bt, mask_bt):
    model = Transformer(config)
    x_btd = model.apply({"params": params}, tokens_bt, mask_bt)
    return model.apply({"params": params}, x_btd, method=Transformer.logits)
