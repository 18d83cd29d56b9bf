"""Gemma 3 weights in Hugging Face layout (transformers state-dict names) <-> our Transformer params.

Works for Gemma3TextModel (the embedder's encoder), Gemma3ForCausalLM and the text part of
Gemma3ForConditionalGeneration; the key prefix is detected. Pure numpy: no torch at runtime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from embeddinggemma_jax.model.config import ModelConfig

_PREFIXES = ("", "model.", "model.language_model.", "language_model.model.", "language_model.")
_NORMS = {
    "input_layernorm": "pre_attention_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "pre_ffw_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def read_safetensors(folder: str | Path, stem: str = "model") -> dict[str, np.ndarray]:
    """All tensors of `stem.safetensors` or its sharded `stem.safetensors.index.json` in folder."""
    folder = Path(folder)
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        files = [
            folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))
        ]
    else:
        raise FileNotFoundError(f"no {single.name} or {index.name} in {folder}")
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def _prefix(state: Mapping[str, np.ndarray]) -> str:
    for prefix in sorted(_PREFIXES, key=len, reverse=True):
        if f"{prefix}embed_tokens.weight" in state:
            return prefix
    raise KeyError(
        "no Gemma 3 embedding table found (looked for "
        + ", ".join(f"'{p}embed_tokens.weight'" for p in _PREFIXES)
        + ")"
    )


def transformer_params_from_hf(
    state: Mapping[str, np.ndarray], config: ModelConfig
) -> dict[str, dict]:
    """HF state dict -> params of `Transformer(config)` (float32 numpy)."""
    p = _prefix(state)
    d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = p + name
        if key not in state:
            raise KeyError(f"missing weight {key!r} in checkpoint")
        w = np.asarray(state[key], np.float32)
        if w.shape != shape:
            raise ValueError(f"weight {key!r} has shape {w.shape}, expected {shape} for {config}")
        return w

    params: dict[str, dict] = {
        "embedder": {"embedding": get("embed_tokens.weight", (config.vocab_size, d))},
        "final_norm": {"scale": get("norm.weight", (d,))},
    }
    for i in range(config.num_layers):
        a, m = f"layers.{i}.self_attn.", f"layers.{i}.mlp."
        layer = {
            ours: {"scale": get(f"layers.{i}.{hf}.weight", (d,))} for hf, ours in _NORMS.items()
        }
        layer["attn"] = {
            "q": {"w": get(a + "q_proj.weight", (n * h, d)).T.reshape(d, n, h)},
            "kv": {
                "w": np.stack(
                    [get(a + f"{x}_proj.weight", (k * h, d)).T.reshape(d, k, h) for x in "kv"]
                )
            },
            "o": {"w": get(a + "o_proj.weight", (d, n * h)).T.reshape(n, h, d)},
            "q_norm": {"scale": get(a + "q_norm.weight", (h,))},
            "k_norm": {"scale": get(a + "k_norm.weight", (h,))},
        }
        layer["mlp"] = {
            "gating": {
                "w": np.stack(
                    [get(m + f"{x}_proj.weight", (config.mlp_dim, d)).T for x in ("gate", "up")]
                )
            },
            "down": {"w": get(m + "down_proj.weight", (d, config.mlp_dim)).T},
        }
        params[f"layer_{i}"] = layer
    return params


def transformer_params_to_hf(params: Mapping, config: ModelConfig) -> dict[str, np.ndarray]:
    """Inverse of `transformer_params_from_hf`, Gemma3TextModel names (no prefix), float32."""
    d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim

    def arr(x) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(x, np.float32))

    state = {
        "embed_tokens.weight": arr(params["embedder"]["embedding"]),
        "norm.weight": arr(params["final_norm"]["scale"]),
    }
    for i in range(config.num_layers):
        layer = params[f"layer_{i}"]
        for hf, ours in _NORMS.items():
            state[f"layers.{i}.{hf}.weight"] = arr(layer[ours]["scale"])
        a, m, attn, mlp = f"layers.{i}.self_attn.", f"layers.{i}.mlp.", layer["attn"], layer["mlp"]
        kv = np.asarray(attn["kv"]["w"])
        state[a + "q_proj.weight"] = arr(np.asarray(attn["q"]["w"]).reshape(d, n * h).T)
        state[a + "k_proj.weight"] = arr(kv[0].reshape(d, k * h).T)
        state[a + "v_proj.weight"] = arr(kv[1].reshape(d, k * h).T)
        state[a + "o_proj.weight"] = arr(np.asarray(attn["o"]["w"]).reshape(n * h, d).T)
        state[a + "q_norm.weight"] = arr(attn["q_norm"]["scale"])
        state[a + "k_norm.weight"] = arr(attn["k_norm"]["scale"])
        gating = np.asarray(mlp["gating"]["w"])
        state[m + "gate_proj.weight"] = arr(gating[0].T)
        state[m + "up_proj.weight"] = arr(gating[1].T)
        state[m + "down_proj.weight"] = arr(np.asarray(mlp["down"]["w"]).T)
    return state


def load_hf_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no config.json in {folder}")
    return json.loads(path.read_text())


def load_gemma3(folder: str | Path, **config_overrides) -> tuple[ModelConfig, dict]:
    """A Hugging Face Gemma 3 folder -> (ModelConfig, Transformer params)."""
    config = ModelConfig.from_hf_config(load_hf_config(folder), **config_overrides)
    return config, transformer_params_from_hf(read_safetensors(folder), config)


def save_gemma3(folder: str | Path, params: Mapping, config: ModelConfig) -> None:
    """Writes config.json and model.safetensors of a transformers Gemma3TextModel."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_hf_config(), indent=2) + "\n")
    save_file(
        transformer_params_to_hf(params, config),
        str(folder / "model.safetensors"),
        {"format": "pt"},
    )
