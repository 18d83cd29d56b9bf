"""EmbeddingGemma in JAX/Flax."""
