"""Test helpers for the decoder-only and UL2 tests: next-token logits of a decoder-only Gemma 3
(the parity tests' side of ours), random padded batches, a tiny UL2 data config."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


def random_batch(config: ModelConfig, lengths, seed: int = 1):
    """(tokens [B, T] int32, mask [B, T] bool): random ids (never pad 0), row b `lengths[b]` long."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), max(lengths)), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(1, config.vocab_size, n)
    return tokens, tokens != 0


def tiny_ul2_config(vocab: int):
    """A `data.ul2.UL2Config` for tiny models: the last 24 ids as sentinels, the 3 below as mode
    tokens, 24 / 20 encoder / decoder tokens, eos 1, decoder start 2."""
    from embeddinggemma_jax.data.ul2 import UL2Config

    return UL2Config(
        sentinel_ids=tuple(range(vocab - 1, vocab - 25, -1)),
        decoder_start_id=2,
        nlu_id=vocab - 26,
        nlg_id=vocab - 27,
        s2s_id=vocab - 28,
        encoder_max_length=24,
        decoder_max_length=20,
        eos_id=1,
    )
