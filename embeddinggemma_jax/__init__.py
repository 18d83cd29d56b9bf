"""EmbeddingGemma in JAX/Flax: exact-parity model, training recipe, evaluation."""

from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.model import EmbeddingGemma, ModelConfig

__all__ = ["EmbeddingGemma", "Embedder", "ModelConfig"]
