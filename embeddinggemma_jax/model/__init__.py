"""The EmbeddingGemma model: config, Gemma 3 stack, embedding head."""

from embeddinggemma_jax.model.config import GLOBAL, LOCAL, ModelConfig, check_dtype
from embeddinggemma_jax.model.head import l2_normalize, mean_pool, truncate
from embeddinggemma_jax.model.model import (
    EmbeddingGemma,
    init_params,
    param_logical_axes,
    param_shapes,
)
from embeddinggemma_jax.model.transformer import Transformer

__all__ = [
    "GLOBAL",
    "LOCAL",
    "EmbeddingGemma",
    "ModelConfig",
    "Transformer",
    "check_dtype",
    "init_params",
    "l2_normalize",
    "mean_pool",
    "param_logical_axes",
    "param_shapes",
    "truncate",
]
