"""Tokenizer and task prompts."""

from embeddinggemma_jax.text.prompts import (
    DEFAULT_PROMPTS,
    apply_document_prompts,
    apply_prompt,
    document_prompt,
    load_prompts,
    resolve_prompt,
)
from embeddinggemma_jax.text.tokenizer import Tokenizer

__all__ = [
    "DEFAULT_PROMPTS",
    "Tokenizer",
    "apply_document_prompts",
    "apply_prompt",
    "document_prompt",
    "load_prompts",
    "resolve_prompt",
]
