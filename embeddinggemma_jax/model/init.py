"""Random-init options for a Gemma 3 stack trained from scratch (``config.random_init``).

Gemma scales token embeddings by sqrt(D), so its 0.02 table std gives unit-RMS token vectors only
at D ~ 2500; and full-size residual branches at step 0 bury the tokens' identity under random
mixing. A tiny model from scratch learns several times faster from its skip path (SkipInit /
ReZero): the post-norms' scales set so each branch starts multiplied by `residual_scale`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def apply_random_init(
    stack: dict, rng: jax.Array, embedding_std: float | None, residual_scale: float | None
) -> dict:
    """`stack` (a `Transformer`'s params: ``embedder`` + ``layer_*``) with a new token table of
    std `embedding_std` and residual branches scaled by `residual_scale` (None: left as is)."""
    stack = dict(stack)
    if embedding_std is not None:
        table = stack["embedder"]["embedding"]
        key = jax.random.fold_in(rng, 0x656D62)
        new = embedding_std * jax.random.normal(key, table.shape, table.dtype)
        stack["embedder"] = {**stack["embedder"], "embedding": new}
    if residual_scale is not None:  # post-norms multiply by (1 + scale)
        for name, layer in stack.items():
            if name.startswith("layer_"):
                layer = dict(layer)
                for norm in ("post_attention_norm", "post_ffw_norm"):
                    s = layer[norm]["scale"]
                    layer[norm] = {**layer[norm], "scale": jnp.full_like(s, residual_scale - 1.0)}
                stack[name] = layer
    return stack


def random_init_options(config: Any) -> tuple[float | None, float | None]:
    """(embedding_std, residual_scale) of ``config.random_init`` (absent: None, None)."""
    r = config.get("random_init") if hasattr(config, "get") else None
    if r is None:
        return None, None
    return r.get("embedding_std"), r.get("residual_scale")
