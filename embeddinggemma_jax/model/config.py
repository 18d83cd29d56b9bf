"""Model shape: a frozen dataclass with named presets.

Layer types are "local" (sliding window) or "global" (full attention). `sliding_window` is the value
the Hugging Face config stores; what a local layer may attend to is derived from it exactly as
transformers does (see `ModelConfig.attends`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

LOCAL, GLOBAL = "local", "global"
_HF_LAYER_TYPES = {LOCAL: "sliding_attention", GLOBAL: "full_attention"}
_SUPPORTED_DTYPES = ("float32", "bfloat16")


# The ModelConfig fields that change how the model runs, not its shape or weights: a training
# config or a loader may override them on any checkpoint.
EXECUTION_FIELDS = ("dtype", "attention_impl", "remat", "scan_layers", "quant")


def check_dtype(dtype: Any) -> str:
    """Normalises a compute dtype name; refuses float16 with the reason."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name == "float16":
        raise ValueError(
            "dtype float16 is not supported: EmbeddingGemma's activations overflow float16 "
            "(as Gemma 3's do); use 'bfloat16' on accelerators or 'float32'."
        )
    if name not in _SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of {_SUPPORTED_DTYPES}, got {dtype!r}")
    return name


def layer_pattern(num_layers: int, period: int = 6) -> tuple[str, ...]:
    """Gemma 3's pattern: every `period`-th layer global, the others local."""
    return tuple(GLOBAL if (i + 1) % period == 0 else LOCAL for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of a Gemma 3 encoder (or decoder) and of the embedding head."""

    vocab_size: int  # V
    embed_dim: int  # D
    num_layers: int
    num_heads: int  # N
    num_kv_heads: int  # K
    head_dim: int  # H
    mlp_dim: int  # F
    layer_types: tuple[str, ...]
    sliding_window: int = 512  # as stored in the Hugging Face config
    bidirectional: bool = True  # False: causal (decoder-only Gemma 3)
    query_pre_attn_scalar: float = 256.0
    rope_local_base: float = 10_000.0
    rope_global_base: float = 1_000_000.0
    rope_global_scale: float = 1.0  # linear RoPE scaling factor on global layers
    rms_norm_eps: float = 1e-6
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    max_length: int = 2048
    pad_id: int = 0
    # Embedding head: dense projections after pooling (bias-free), then L2 normalisation.
    head_dims: tuple[int, ...] = (3072, 768)
    matryoshka_dims: tuple[int, ...] = (768, 512, 256, 128)
    # Execution (not shape; EXECUTION_FIELDS): compute dtype, attention kernel,
    # rematerialisation, and whether the repeating layer pattern runs as a lax.scan (compiles one
    # period of layers instead of all of them; same results).
    dtype: str = "float32"
    attention_impl: str = "auto"  # see model.attention.ATTENTION_IMPLS
    remat: str = "none"  # none | full | dots_saveable
    scan_layers: bool = False
    # Fake quantization of the weights in the forward pass (QAT, PTQ, quantized inference): a
    # quant.SCHEMES name ("q4_0", "q8_0", "mixed") or None. Parameters stay float.
    quant: str | None = None

    def __post_init__(self):
        check_dtype(self.dtype)
        if self.quant is not None:
            from embeddinggemma_jax.quant.schemes import check_scheme

            check_scheme(self.quant)
        if len(self.layer_types) != self.num_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
            )
        bad = set(self.layer_types) - {LOCAL, GLOBAL}
        if bad:
            raise ValueError(f"layer_types must be {LOCAL!r} or {GLOBAL!r}, got {sorted(bad)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        for d in self.matryoshka_dims:
            if d > self.output_dim:
                raise ValueError(f"matryoshka dim {d} exceeds the output dim {self.output_dim}")

    # -- derived -----------------------------------------------------------------------------
    @property
    def output_dim(self) -> int:  # E
        return self.head_dims[-1] if self.head_dims else self.embed_dim

    @property
    def window(self) -> int:
        """Exclusive bound on key distance for local layers.

        Bidirectional: attend iff |i - j| < sliding_window // 2 + 1 (257 for the 300m checkpoint),
        the rule transformers applies to the stored value. Causal: attend iff 0 <= i - j < window.
        """
        return self.sliding_window // 2 + 1 if self.bidirectional else self.sliding_window

    def attends(self, layer_type: str, q_pos: np.ndarray, k_pos: np.ndarray) -> np.ndarray:
        """Boolean [.., T, S] of which key positions a query may see (before padding)."""
        dist = q_pos[..., :, None] - k_pos[..., None, :]
        ok = np.ones(dist.shape, bool) if self.bidirectional else dist >= 0
        if layer_type == LOCAL:
            ok &= np.abs(dist) < self.window
        return ok

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # -- presets -----------------------------------------------------------------------------
    @classmethod
    def embeddinggemma_300m(cls, **overrides) -> ModelConfig:
        return cls(
            vocab_size=262_144,
            embed_dim=768,
            num_layers=24,
            num_heads=3,
            num_kv_heads=1,
            head_dim=256,
            mlp_dim=1152,
            layer_types=layer_pattern(24),
            **overrides,
        )

    @classmethod
    def tiny(cls, **overrides) -> ModelConfig:
        """Odd, distinct sizes so a transposed axis cannot pass; window smaller than test lengths."""
        values = dict(
            vocab_size=263,
            embed_dim=48,
            num_layers=4,
            num_heads=3,
            num_kv_heads=1,
            head_dim=16,
            mlp_dim=72,
            layer_types=(LOCAL, LOCAL, GLOBAL, LOCAL),
            sliding_window=10,  # local layers see |i - j| < 6
            query_pre_attn_scalar=16.0,
            max_length=64,
            head_dims=(80, 40),
            matryoshka_dims=(40, 24, 12),
        )
        values.update(overrides)
        return cls(**values)

    # -- Hugging Face config.json ------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], **overrides) -> ModelConfig:
        """Reads a Gemma 3 text config.json (old `rope_theta` keys or new `rope_parameters`)."""
        if hf.get("model_type") not in ("gemma3_text", "gemma3", None):
            raise ValueError(f"not a Gemma 3 text config: model_type={hf.get('model_type')!r}")
        if "text_config" in hf:  # Gemma3ForConditionalGeneration
            hf = {**hf["text_config"], "model_type": "gemma3_text"}
        n = hf["num_hidden_layers"]
        if hf.get("layer_types"):
            inverse = {v: k for k, v in _HF_LAYER_TYPES.items()}
            layer_types = tuple(inverse[t] for t in hf["layer_types"])
        else:
            layer_types = layer_pattern(n, hf.get("sliding_window_pattern", 6))
        local_base, global_base, global_scale = _hf_rope(hf)
        values = dict(
            vocab_size=hf["vocab_size"],
            embed_dim=hf["hidden_size"],
            num_layers=n,
            num_heads=hf["num_attention_heads"],
            num_kv_heads=hf["num_key_value_heads"],
            head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
            mlp_dim=hf["intermediate_size"],
            layer_types=layer_types,
            sliding_window=hf.get("sliding_window") or 4096,
            bidirectional=bool(hf.get("use_bidirectional_attention", False)),
            query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
            rope_local_base=local_base,
            rope_global_base=global_base,
            rope_global_scale=global_scale,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            attn_logit_softcap=hf.get("attn_logit_softcapping"),
            final_logit_softcap=hf.get("final_logit_softcapping"),
            max_length=hf.get("max_position_embeddings", 2048),
            pad_id=hf.get("pad_token_id", 0) or 0,
        )
        values.update(overrides)  # overrides win, e.g. bidirectional=False for a decoder
        return cls(**values)

    def to_hf_config(self) -> dict[str, Any]:
        """The config.json of a transformers Gemma3TextModel with these weights."""
        rope_scaling = (
            None
            if self.rope_global_scale == 1.0
            else {"rope_type": "linear", "factor": self.rope_global_scale}
        )
        return {
            "architectures": ["Gemma3TextModel"],
            "model_type": "gemma3_text",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "attn_logit_softcapping": self.attn_logit_softcap,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": self.pad_id,
            "final_logit_softcapping": self.final_logit_softcap,
            "head_dim": self.head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": self.embed_dim,
            "initializer_range": 0.02,
            "intermediate_size": self.mlp_dim,
            "layer_types": [_HF_LAYER_TYPES[t] for t in self.layer_types],
            "max_position_embeddings": self.max_length,
            "num_attention_heads": self.num_heads,
            "num_hidden_layers": self.num_layers,
            "num_key_value_heads": self.num_kv_heads,
            "query_pre_attn_scalar": _int_if_whole(self.query_pre_attn_scalar),
            "rms_norm_eps": self.rms_norm_eps,
            "rope_local_base_freq": self.rope_local_base,
            "rope_scaling": rope_scaling,
            "rope_theta": self.rope_global_base,
            "sliding_window": self.sliding_window,
            "use_bidirectional_attention": self.bidirectional,
            "use_cache": False,
            "vocab_size": self.vocab_size,
            "dtype": "float32",
        }


def _int_if_whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def _hf_rope(hf: dict[str, Any]) -> tuple[float, float, float]:
    """(local base, global base, global linear scale) from either config format."""
    params = hf.get("rope_parameters")
    if params and "full_attention" in params:
        glob, loc = params["full_attention"], params.get("sliding_attention") or {}
        scale = glob.get("factor", 1.0) if glob.get("rope_type", "default") == "linear" else 1.0
        if glob.get("rope_type", "default") not in ("default", "linear"):
            raise ValueError(f"unsupported rope_type {glob.get('rope_type')!r}")
        return (
            float(loc.get("rope_theta", 10_000.0)),
            float(glob.get("rope_theta", 1_000_000.0)),
            float(scale),
        )
    scaling = hf.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ("default", "linear"):
        raise ValueError(f"unsupported rope_scaling {scaling!r}")
    return (
        float(hf.get("rope_local_base_freq", 10_000.0)),
        float(hf.get("rope_theta", 1_000_000.0)),
        float(scaling.get("factor", 1.0)) if kind == "linear" else 1.0,
    )
