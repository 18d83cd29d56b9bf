"""Task prompts of EmbeddingGemma.

EmbeddingGemma was trained with a task prefix on every input; sentence-transformers prepends the
prompt string to the text (`prompt + text`) before tokenizing, and the pooled mean includes the
prompt's tokens. `DEFAULT_PROMPTS` is the table of the released checkpoint's
`config_sentence_transformers.json` (kept in code so nothing here needs the checkpoint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from embeddinggemma_jax.text.tokenizer import check_texts

__all__ = [
    "DEFAULT_PROMPTS",
    "apply_document_prompts",
    "PROMPTS_FILENAME",
    "apply_prompt",
    "document_prompt",
    "load_prompts",
    "resolve_prompt",
]

PROMPTS_FILENAME = "config_sentence_transformers.json"

_QUERY = "task: search result | query: "
_DOCUMENT = "title: none | text: "

DEFAULT_PROMPTS: dict[str, str] = {
    "query": _QUERY,
    "document": _DOCUMENT,
    "BitextMining": _QUERY,
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": _QUERY,
    "Retrieval": _QUERY,
    "Retrieval-query": _QUERY,
    "Retrieval-document": _DOCUMENT,
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}


def load_prompts(folder: str | os.PathLike) -> dict[str, str]:
    """The prompt table of a sentence-transformers folder.

    Reads `folder/config_sentence_transformers.json`; a folder without that file, or a file
    without a "prompts" entry, gets a copy of `DEFAULT_PROMPTS`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {str(folder)!r}")
    path = folder / PROMPTS_FILENAME
    if not path.is_file():
        return dict(DEFAULT_PROMPTS)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    prompts = config.get("prompts") if isinstance(config, dict) else None
    if prompts is None:
        return dict(DEFAULT_PROMPTS)
    if not isinstance(prompts, dict):
        raise ValueError(f"{path}: 'prompts' must be an object, got {type(prompts).__name__}")
    for name, prompt in prompts.items():
        if not isinstance(prompt, str):
            raise ValueError(
                f"{path}: prompts[{name!r}] must be a string, got {type(prompt).__name__}"
            )
    return dict(prompts)


def document_prompt(title: str | None = None) -> str:
    """The document prompt with a title: "title: {title} | text: " ("none" for no title).

    A title that is None, empty or only whitespace counts as no title.
    """
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be str or None, got {type(title).__name__}: {title!r:.80}")
    if title is None or not title.strip():
        title = "none"
    return f"title: {title} | text: "


def resolve_prompt(
    prompts: Mapping[str, str],
    prompt_name: str | None = None,
    prompt: str | None = None,
    default_prompt_name: str | None = None,
) -> str:
    """The prompt string to prepend: `prompt` itself, else `prompts[prompt_name]`, else
    `prompts[default_prompt_name]`, else "" (no prompt).

    Passing both `prompt` and `prompt_name` is an error (sentence-transformers would silently
    ignore the name).
    """
    if prompt is not None and prompt_name is not None:
        raise ValueError(
            f"pass either prompt_name ({prompt_name!r}) or prompt ({prompt!r}), not both"
        )
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be str, got {type(prompt).__name__}")
        return prompt
    name = prompt_name if prompt_name is not None else default_prompt_name
    if name is None:
        return ""
    if name not in prompts:
        available = ", ".join(sorted(prompts)) or "(none)"
        raise KeyError(f"unknown prompt_name {name!r}; available prompt names: {available}")
    return prompts[name]


def apply_prompt(prompt: str, texts: Sequence[str]) -> list[str]:
    """`[prompt + text for text in texts]`, checking the inputs are strings."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be str, got {type(prompt).__name__}")
    check_texts(texts)
    return [prompt + text for text in texts]


def apply_document_prompts(
    texts: Sequence[str], titles: Sequence[str | None] | None = None
) -> list[str]:
    """Each text prefixed with `document_prompt(its title)`; titles=None means no titles."""
    check_texts(texts)
    if titles is None:
        return apply_prompt(document_prompt(None), texts)
    if isinstance(titles, (str, bytes)):
        raise TypeError(f"titles must be a sequence, got a single {type(titles).__name__}")
    if len(titles) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(titles)} titles")
    return [document_prompt(title) + text for text, title in zip(texts, titles, strict=True)]
