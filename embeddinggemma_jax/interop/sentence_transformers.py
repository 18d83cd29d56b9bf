"""Sentence-transformers folders (the released checkpoint's format) <-> our params.

A folder holds the Gemma 3 encoder (config.json, model.safetensors), the tokenizer, modules.json,
1_Pooling (mean), k_Dense (bias-free, identity activation), a Normalize module and
config_sentence_transformers.json (the prompt table). No torch is needed to read or write it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from embeddinggemma_jax.interop.huggingface import (
    load_hf_config,
    read_safetensors,
    save_gemma3,
    transformer_params_from_hf,
)
from embeddinggemma_jax.model.config import ModelConfig

_ST = "sentence_transformers.models."
_IDENTITY = "torch.nn.modules.linear.Identity"
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


@dataclasses.dataclass(frozen=True)
class FolderInfo:
    """What a folder says besides the weights."""

    path: Path
    prompts: dict[str, str]
    max_seq_length: int | None
    tokenizer_file: Path | None


def resolve_model_path(path_or_id: str | Path) -> Path:
    """A local folder, or a hub id fetched with huggingface_hub (honours HF_HUB_OFFLINE / cache)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_id)):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(path_or_id)))
        except Exception as e:  # network, auth or offline-cache miss: say which id and why
            raise FileNotFoundError(
                f"{path_or_id!r} is not a local folder and could not be fetched from the hub "
                f"({type(e).__name__}: {e}). Pass a local path, or pre-download it."
            ) from e
    raise FileNotFoundError(f"{path_or_id!r}: no such folder, and not a hub id (owner/name)")


def _read_json(path: Path, default=None):
    if not path.exists():
        if default is not None:
            return default
        raise FileNotFoundError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def _modules(folder: Path) -> list[dict]:
    """modules.json entries; a bare Hugging Face folder counts as a Transformer with mean pooling."""
    modules = _read_json(folder / "modules.json", default=[])
    if not modules:
        return [{"type": _ST + "Transformer", "path": ""}, {"type": _ST + "Pooling", "path": ""}]
    return modules


def load_sentence_transformer(
    path_or_id: str | Path, **config_overrides
) -> tuple[ModelConfig, dict, FolderInfo]:
    """Reads a sentence-transformers (or plain Gemma 3) folder.

    Returns (ModelConfig, params {"encoder", "head"}, FolderInfo).
    """
    folder = resolve_model_path(path_or_id)
    head_dims: list[int] = []
    head: dict[str, dict] = {}
    normalize = False
    for module in _modules(folder):
        kind, sub = module["type"].removeprefix(_ST), folder / module.get("path", "")
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            pool = _read_json(sub / "config.json", default={"pooling_mode_mean_tokens": True})
            on = sorted(k for k, v in pool.items() if k.startswith("pooling_mode_") and v)
            if on != ["pooling_mode_mean_tokens"] or not pool.get("include_prompt", True):
                raise ValueError(
                    f"{sub / 'config.json'}: only mean pooling over all tokens is supported, got {on}"
                )
        elif kind == "Dense":
            cfg = _read_json(sub / "config.json")
            if cfg.get("bias", True) or cfg.get("activation_function", _IDENTITY) != _IDENTITY:
                raise ValueError(
                    f"{sub / 'config.json'}: only bias-free Dense with identity activation is supported"
                )
            w = read_safetensors(sub)["linear.weight"]
            expected = (cfg["out_features"], cfg["in_features"])
            if w.shape != expected:
                raise ValueError(
                    f"{sub}: linear.weight has shape {w.shape}, config says {expected}"
                )
            head[f"dense_{len(head_dims)}"] = {"w": np.asarray(w, np.float32).T}
            head_dims.append(cfg["out_features"])
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(
                f"{folder / 'modules.json'}: unsupported module type {module['type']!r}"
            )
    if head_dims and not normalize:
        raise ValueError(f"{folder}: expected a Normalize module after the Dense layers")

    st_config = _read_json(folder / "sentence_bert_config.json", default={})
    hf = load_hf_config(folder)
    overrides = dict(head_dims=tuple(head_dims))
    out_dim = head_dims[-1] if head_dims else hf["hidden_size"]
    overrides["matryoshka_dims"] = tuple(
        d for d in ModelConfig.embeddinggemma_300m().matryoshka_dims if d <= out_dim
    ) or (out_dim,)
    overrides.update(config_overrides)
    config = ModelConfig.from_hf_config(hf, **overrides)
    params = {"encoder": transformer_params_from_hf(read_safetensors(folder), config), "head": head}

    from embeddinggemma_jax.text.prompts import load_prompts

    tokenizer = folder / "tokenizer.model"
    info = FolderInfo(
        path=folder,
        prompts=load_prompts(folder),
        max_seq_length=st_config.get("max_seq_length"),
        tokenizer_file=tokenizer if tokenizer.exists() else None,
    )
    return config, params, info


def save_sentence_transformer(
    folder: str | Path,
    params: Mapping,
    config: ModelConfig,
    *,
    prompts: Mapping[str, str],
    max_seq_length: int,
    tokenizer_source: str | Path | None,
) -> Path:
    """Writes a folder that `sentence_transformers.SentenceTransformer(folder)` loads.

    tokenizer_source: a folder with Hugging Face tokenizer files (copied), or a SentencePiece
    tokenizer.model (copied, with a GemmaTokenizer tokenizer_config.json written beside it).
    """
    folder = Path(folder)
    save_gemma3(folder, params["encoder"], config)
    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST + "Transformer"}]
    pool_dir = folder / "1_Pooling"
    pool_dir.mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": config.embed_dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    _write_json(pool_dir / "config.json", pooling)
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST + "Pooling"})
    dims = (config.embed_dim, *config.head_dims)
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        idx = len(modules)
        sub = folder / f"{idx}_Dense"
        sub.mkdir(exist_ok=True)
        dense = {
            "in_features": d_in,
            "out_features": d_out,
            "bias": False,
            "activation_function": _IDENTITY,
        }
        _write_json(sub / "config.json", dense)
        w = np.ascontiguousarray(np.asarray(params["head"][f"dense_{i}"]["w"], np.float32).T)
        save_file({"linear.weight": w}, str(sub / "model.safetensors"))
        modules.append(
            {"idx": idx, "name": str(idx), "path": f"{idx}_Dense", "type": _ST + "Dense"}
        )
    idx = len(modules)
    (folder / f"{idx}_Normalize").mkdir(exist_ok=True)
    modules.append(
        {"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": _ST + "Normalize"}
    )
    _write_json(folder / "modules.json", modules)
    _write_json(
        folder / "sentence_bert_config.json",
        {"max_seq_length": max_seq_length, "do_lower_case": False},
    )
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": dict(prompts),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    _copy_tokenizer(tokenizer_source, folder, max_seq_length)
    return folder


def _copy_tokenizer(source: str | Path | None, folder: Path, max_length: int) -> None:
    if source is None:
        return
    source = Path(source)
    if source.is_dir():
        for name in TOKENIZER_FILES:
            if (source / name).exists() and (source / name).resolve() != (folder / name).resolve():
                shutil.copy2(source / name, folder / name)
        return
    if source.resolve() != (folder / "tokenizer.model").resolve():
        shutil.copy2(source, folder / "tokenizer.model")
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "GemmaTokenizer",
            "add_bos_token": True,
            "add_eos_token": True,
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "padding_side": "right",
            "model_max_length": max_length,
            "clean_up_tokenization_spaces": False,
        },
    )


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
