"""Interop with Hugging Face / sentence-transformers folders (no torch at runtime)."""

from embeddinggemma_jax.interop.huggingface import (
    load_gemma3,
    read_safetensors,
    save_gemma3,
    transformer_params_from_hf,
    transformer_params_to_hf,
)
from embeddinggemma_jax.interop.sentence_transformers import (
    FolderInfo,
    load_sentence_transformer,
    resolve_model_path,
    save_sentence_transformer,
)

__all__ = [
    "FolderInfo",
    "load_gemma3",
    "load_sentence_transformer",
    "read_safetensors",
    "resolve_model_path",
    "save_gemma3",
    "save_sentence_transformer",
    "transformer_params_from_hf",
    "transformer_params_to_hf",
]
