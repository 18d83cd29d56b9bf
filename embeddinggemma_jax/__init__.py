"""EmbeddingGemma in JAX/Flax: exact-parity model, training recipe, evaluation."""

__all__ = ["EmbeddingGemma", "Embedder", "ModelConfig"]


def __getattr__(name: str):
    # Imported on first use: a command line that fails on its input answers before jax loads.
    if name == "Embedder":
        from embeddinggemma_jax.embedder import Embedder

        return Embedder
    if name in ("EmbeddingGemma", "ModelConfig"):
        from embeddinggemma_jax import model

        return getattr(model, name)
    raise AttributeError(f"module 'embeddinggemma_jax' has no attribute {name!r}")
