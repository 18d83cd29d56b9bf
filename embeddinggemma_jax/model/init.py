"""Initialisation options: a Gemma 3 stack trained from scratch (``config.random_init``), and a
fresh head's whitened start (``config.head_init.whiten``).

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


def whitening(pooled_nd: Any, eps: float = 0.1) -> Any:
    """[D, D] float64 matrix that maps pooled states to whitened ones: their mean direction
    projected out, the rest scaled to unit variance per principal axis (each axis's variance
    floored at `eps` x the mean variance, so near-empty axes are not blown up)."""
    import numpy as np

    p = np.asarray(pooled_nd, np.float64)
    mean = p.mean(0)
    u = mean / max(np.linalg.norm(mean), 1e-12)
    project = np.eye(len(u)) - np.outer(u, u)
    q = (p - mean) @ project
    values, vectors = np.linalg.eigh(q.T @ q / len(q))
    values = np.maximum(values, 0.0) + eps * max(values.mean(), 1e-12)
    return project @ vectors @ np.diag(values**-0.5) @ vectors.T


def whiten_head(params: dict, config: Any, tokens_bt: Any, mask_bt: Any) -> dict:
    """`params` with the head's first projection preceded by the `whitening` of the encoder's
    pooled states on the given texts (its Frobenius norm kept). A language model's pooled states
    are anisotropic (the recipe's UL2 encoder: mean cosine 0.7 between texts, its top principal
    axis ~450x the median variance); a fresh head passes that on, and contrastive training spends
    its first steps undoing it (BERT-whitening, Su et al. 2021; all-but-the-top, Mu & Viswanath
    2018). Every host must compute the same params, so the hosts' samples are pooled."""
    import numpy as np

    from embeddinggemma_jax.model.head import mean_pool
    from embeddinggemma_jax.model.model import EmbeddingGemma

    @jax.jit
    def pooled(params, tokens, mask):
        x = EmbeddingGemma(config).apply({"params": params}, tokens, mask,
                                         method=EmbeddingGemma.token_states)  # fmt: skip
        return mean_pool(x, mask).astype(jnp.float32)

    p = pooled(params, jnp.asarray(tokens_bt), jnp.asarray(mask_bt, bool))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        p = multihost_utils.process_allgather(p, tiled=True)
    w = np.asarray(params["head"]["dense_0"]["w"], np.float64)
    new = whitening(p) @ w
    new *= np.linalg.norm(w) / max(np.linalg.norm(new), 1e-12)
    dense_0 = {**params["head"]["dense_0"], "w": jnp.asarray(new, jnp.float32)}
    return {**params, "head": {**params["head"], "dense_0": dense_0}}
