"""Gemma 3 weights in Hugging Face layout (transformers state-dict names) <-> our Transformer params.

Works for Gemma3TextModel (the embedder's encoder), Gemma3ForCausalLM and the text part of
Gemma3ForConditionalGeneration; the key prefix is detected. Pure numpy: no torch at runtime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def load_gemma3_text(folder: str | Path, **config_overrides) -> tuple[ModelConfig, dict]:
    """`load_gemma3` for any Gemma 3 text config (`gemma3_text_config`: also the text part of a
    Gemma3ForConditionalGeneration folder, missing keys at transformers' defaults)."""
    config = ModelConfig.from_hf_config(
        gemma3_text_config(load_hf_config(folder)), **config_overrides
    )
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


# -- decoder-only Gemma 3 (the UL2 stage's starting point) ------------------------------------
# transformers' Gemma3TextConfig defaults: released Gemma3ForConditionalGeneration config.json
# files omit every text_config key that equals them (e.g. num_attention_heads, head_dim).
GEMMA3_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
    "pad_token_id": 0,
}


def gemma3_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The Gemma 3 text config of a config.json (Gemma3ForCausalLM / Gemma3TextModel, or the
    text_config of Gemma3ForConditionalGeneration), missing keys filled with transformers'
    defaults."""
    hf = dict(hf)
    if "text_config" in hf:
        hf = {**(hf["text_config"] or {}), "model_type": "gemma3_text"}
    if hf.get("model_type") not in ("gemma3_text", "gemma3", None):
        raise ValueError(f"not a Gemma 3 config: model_type={hf.get('model_type')!r}")
    out = {**GEMMA3_TEXT_DEFAULTS, **hf, "model_type": "gemma3_text"}
    if "rope_parameters" in hf:  # the new rope format: the old keys' defaults must not mix in
        for key in ("rope_theta", "rope_local_base_freq"):
            if key not in hf:
                del out[key]
    return out


def load_decoder_only(path: str | Path, **config_overrides) -> tuple[ModelConfig, dict]:
    """A decoder-only Gemma 3 -> (causal ModelConfig, `Transformer` params, float32 numpy).

    `path`: a Hugging Face folder (Gemma3ForCausalLM, or Gemma3ForConditionalGeneration whose
    text part is taken), a `.gguf` file (dequantised; needs the optional `gguf` package), or a
    run directory / step folder of our causal_lm stage (`train.causal_lm.load_causal_lm`).
    """
    from embeddinggemma_jax import checkpoint

    overrides = {"bidirectional": False, **config_overrides}
    if Path(str(path)).is_file() and str(path).lower().endswith(".gguf"):
        from embeddinggemma_jax.interop.gguf import load_gguf

        return load_gguf(Path(path), **overrides)
    if checkpoint.is_run_path(path):  # one resolver for run directories (local or a URL)
        from embeddinggemma_jax.train.causal_lm import load_causal_lm

        return load_causal_lm(path, **overrides)
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is neither a Hugging Face folder nor a .gguf file (nor a causal_lm run)"
        )
    return load_gemma3_text(path, **overrides)
