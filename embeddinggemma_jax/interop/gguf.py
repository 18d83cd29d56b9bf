"""Gemma 3 GGUF files (llama.cpp) -> our `Transformer` params, dequantised to float32.

Needs the optional `gguf` package (`pip install gguf`); it is imported only when a function here
runs. Layout of a Gemma 3 GGUF as llama.cpp's `convert_hf_to_gguf.py` writes it:

  - tensor names: token_embd, output_norm, blk.N.{attn_norm, attn_q, attn_k, attn_v,
    attn_output, attn_q_norm, attn_k_norm, post_attention_norm, ffn_norm, ffn_gate, ffn_up,
    ffn_down, post_ffw_norm}.weight; no output.weight (the output is tied to token_embd);
  - every `*norm.weight` is stored as 1 + w: Gemma's RMSNorm multiplies by (1 + w) and llama.cpp's
    by the stored weight, so the converter adds 1 (we subtract it again);
  - q and k are NOT permuted: llama.cpp runs Gemma with NeoX-style (rotate-half) RoPE, the layout
    of transformers and of `model.rope`, so matrices keep Hugging Face's [out, in] order (GGUF lists
    dimensions fastest-first, so the file's shape [in, out] is the numpy shape reversed);
  - token_embd may have fewer rows than the Hugging Face table (rows past the tokenizer's
    vocabulary are dropped): the vocab size is the number of rows.

Hyper-parameters not in the file are llama.cpp's fixed Gemma 3 values: every 6th layer global
(unless `gemma3.attention.sliding_window_pattern` is present), local RoPE base 10000 (unless
`gemma3.rope.freq_base_swa` is), and query scaling by head_dim, except the 62-layer 27B model
which scales by embed_dim / num_heads (as Hugging Face's config for it says). The pad id stays 0
(Gemma's), whatever `tokenizer.ggml.padding_token_id` says.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from embeddinggemma_jax.interop.huggingface import transformer_params_from_hf
from embeddinggemma_jax.model.config import GLOBAL, LOCAL, ModelConfig, layer_pattern

SUPPORTED_ARCHITECTURES = ("gemma3",)
_LLAMA_CPP_SWA_PERIOD = 6
_LLAMA_CPP_SWA_ROPE_BASE = 10_000.0
_27B_LAYERS = 62

# GGUF block tensor -> Hugging Face Gemma3 name (under "layers.N.").
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def _gguf():
    try:
        import gguf
    except ImportError as e:  # optional dependency
        raise ImportError(
            "reading GGUF files needs the optional 'gguf' package: pip install gguf "
            "(or this project's 'gguf' extra)"
        ) from e
    return gguf


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    """One tensor's entry: `shape` in numpy order (GGUF's dimension list reversed)."""

    name: str
    shape: tuple[int, ...]
    qtype: int
    offset: int  # absolute byte offset in the file
    nbytes: int


# Scalar value types of the GGUF format (gguf.GGUFValueType numbering).
_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
            10: "<u8", 11: "<i8", 12: "<f8"}  # fmt: skip
_STRUCT = {k: struct.Struct(f) for k, f in {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I",
           5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}.items()}  # fmt: skip
_U64 = _STRUCT[10]
_STRING, _ARRAY, _BOOL = 8, 9, 7
_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# Huge vocabulary arrays are walked over but not kept (the tokenizer comes from tokenizer.model).
_NOT_KEPT = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
             "tokenizer.ggml.merges")  # fmt: skip


class _Cursor:
    """Sequential little-endian reader over the file's bytes."""

    def __init__(self, buf: np.ndarray, path: Path):
        self.buf, self.view, self.pos, self.path = buf, memoryview(buf), 0, path

    def scalar(self, kind: int) -> Any:
        fmt = _STRUCT[kind]
        try:
            (v,) = fmt.unpack_from(self.view, self.pos)
        except struct.error as e:
            raise ValueError(f"{self.path}: truncated GGUF header") from e
        self.pos += fmt.size
        return bool(v) if kind == _BOOL else v

    def string(self, keep: bool = True) -> str | None:
        (n,) = _U64.unpack_from(self.view, self.pos)
        start, self.pos = self.pos + 8, self.pos + 8 + n
        if self.pos > len(self.view):
            raise ValueError(f"{self.path}: truncated GGUF header")
        return (
            bytes(self.view[start : self.pos]).decode("utf-8", errors="replace") if keep else None
        )

    def value(self, kind: int, keep: bool = True) -> Any:
        if kind == _STRING:
            return self.string(keep)
        if kind == _ARRAY:
            sub, n = self.scalar(4), self.scalar(10)
            if sub == _STRING:
                items = [self.string(keep) for _ in range(n)]
                return items if keep else None
            if sub == _ARRAY:
                return [self.value(_ARRAY, keep) for _ in range(n)]
            if sub not in _SCALARS:
                raise ValueError(f"{self.path}: unknown GGUF value type {sub}")
            dt = np.dtype(_SCALARS[sub])
            arr = self.buf[self.pos : self.pos + n * dt.itemsize].view(dt)
            self.pos += n * dt.itemsize
            if not keep:
                return None
            return [bool(x) for x in arr] if sub == _BOOL else arr.tolist()
        if kind not in _SCALARS:
            raise ValueError(f"{self.path}: unknown GGUF value type {kind}")
        return self.scalar(kind)


def _parse(path: str | Path) -> tuple[dict[str, Any], list[GGUFTensor], np.ndarray]:
    """(metadata, tensor entries, the file as a read-only uint8 memmap). Little-endian GGUF v2/v3.

    Parses the header directly: gguf.GGUFReader builds one numpy array per vocabulary string,
    which takes a minute on Gemma's 262k-entry vocabulary."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    gguf = _gguf()
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    if buf.size < 24 or buf[:4].tobytes() != _MAGIC:
        raise ValueError(f"{path}: not a GGUF file (bad magic)")
    cur = _Cursor(buf, path)
    cur.pos = 4
    version = cur.scalar(4)
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version} (big-endian files too)")
    n_tensors, n_kv = cur.scalar(10), cur.scalar(10)
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        kind = cur.scalar(4)
        value = cur.value(kind, keep=key not in _NOT_KEPT)
        if key not in _NOT_KEPT:
            meta[key] = value
    entries = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.scalar(10) for _ in range(cur.scalar(4))]
        qtype, offset = cur.scalar(4), cur.scalar(10)
        entries.append((name, tuple(reversed(dims)), qtype, offset))
    align = int(meta.get("general.alignment", _DEFAULT_ALIGNMENT))
    data_start = -(-cur.pos // align) * align
    tensors = []
    for name, shape, qtype, offset in entries:
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
        except (ValueError, KeyError) as e:
            raise ValueError(f"{path}: tensor {name!r} has unknown type {qtype}") from e
        n = int(np.prod(shape, dtype=np.int64))
        nbytes = n // block * type_size
        if data_start + offset + nbytes > buf.size:
            raise ValueError(f"{path}: tensor {name!r} runs past the end of the file (truncated?)")
        tensors.append(GGUFTensor(name, shape, qtype, data_start + offset, nbytes))
    return meta, tensors, buf


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Key/value metadata (Python scalars and lists) except the tokenizer's vocabulary arrays."""
    return _parse(path)[0]


def _dequantize(tensor: GGUFTensor, buf: np.ndarray) -> np.ndarray:
    """float32 array in numpy / Hugging Face order."""
    gguf = _gguf()
    qtype = gguf.GGMLQuantizationType(tensor.qtype)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if tensor.shape[-1] % block:
        raise ValueError(f"tensor {tensor.name!r}: rows of {tensor.shape[-1]} are not whole blocks")
    raw = buf[tensor.offset : tensor.offset + tensor.nbytes]
    raw = raw.reshape(*tensor.shape[:-1], tensor.shape[-1] // block * type_size)
    try:
        values = gguf.quants.dequantize(np.asarray(raw), qtype)
    except NotImplementedError as e:
        raise ValueError(
            f"tensor {tensor.name!r}: the gguf package cannot dequantise {qtype.name} ({e})"
        ) from e
    return np.asarray(values, np.float32).reshape(tensor.shape)


def _hf_name(name: str) -> tuple[str, bool]:
    """(Hugging Face Gemma3TextModel name, whether the stored value has +1 to undo)."""
    if name == "token_embd.weight":
        return "embed_tokens.weight", False
    if name == "output_norm.weight":
        return "norm.weight", True
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.weight", m.group(2).endswith("norm")
    raise KeyError(f"unexpected tensor {name!r} in a Gemma 3 GGUF")


def _hf_state(tensors: list[GGUFTensor], buf: np.ndarray) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    output = None
    for tensor in tensors:
        if tensor.name == "output.weight":
            output = tensor
            continue
        if tensor.name == "rope_freqs.weight":
            raise ValueError("GGUF has rope_freqs (per-dimension RoPE factors): not Gemma 3's RoPE")
        name, shifted = _hf_name(tensor.name)
        w = _dequantize(tensor, buf)
        state[name] = w - 1.0 if shifted else w
    if output is not None:  # an untied output layer: only acceptable if it equals the embedding
        if not np.array_equal(_dequantize(output, buf), state.get("embed_tokens.weight")):
            raise ValueError(
                "GGUF has an output.weight that differs from token_embd: untied output "
                "embeddings are not supported (Gemma ties them)"
            )
    return state


def _short_float(x: Any) -> float:
    """GGUF stores float32: 1e-6 reads back as 9.99999997e-07; take the shortest decimal that
    rounds to the same float32 (what the converter was given)."""
    return float(str(np.float32(x)))


def _optional_float(x: Any) -> float | None:
    return None if x is None else _short_float(x)


def _get(meta: dict, key: str, default: Any = None, *, required: bool = False) -> Any:
    if key in meta:
        v = meta[key]
        return v[0] if isinstance(v, list) and len(v) == 1 else v
    if required:
        raise KeyError(f"GGUF metadata has no {key!r}")
    return default


def config_from_gguf(
    meta: dict[str, Any], vocab_size: int | None = None, **overrides
) -> ModelConfig:
    """A causal ModelConfig from GGUF metadata (see the module docstring for llama.cpp's fixed
    values). `vocab_size`: rows of token_embd when the metadata does not say."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported (expected one of "
            f"{SUPPORTED_ARCHITECTURES})"
        )

    def key(k: str, default: Any = None, required: bool = False) -> Any:
        return _get(meta, f"{arch}.{k}", default, required=required)

    n_layers = int(key("block_count", required=True))
    embed_dim = int(key("embedding_length", required=True))
    num_heads = key("attention.head_count", required=True)
    num_kv_heads = key("attention.head_count_kv", num_heads)
    for name, v in (("head_count", num_heads), ("head_count_kv", num_kv_heads)):
        if isinstance(v, list):
            raise ValueError(f"per-layer attention.{name} is not supported: {v}")
    num_heads, num_kv_heads = int(num_heads), int(num_kv_heads)
    head_dim = int(key("attention.key_length", embed_dim // num_heads))
    if int(key("attention.value_length", head_dim)) != head_dim:
        raise ValueError("GGUF attention.value_length differs from key_length: not Gemma 3")
    vocab = key("vocab_size", vocab_size)
    if vocab is None:
        raise KeyError(f"GGUF metadata has no '{arch}.vocab_size' and no vocab_size was given")

    pattern = key("attention.sliding_window_pattern")
    if pattern is None:
        layer_types = layer_pattern(n_layers, _LLAMA_CPP_SWA_PERIOD)
    elif isinstance(pattern, list):  # per layer: True = sliding window
        if len(pattern) != n_layers:
            raise ValueError(f"sliding_window_pattern has {len(pattern)} entries for {n_layers}")
        layer_types = tuple(LOCAL if p else GLOBAL for p in pattern)
    else:
        layer_types = layer_pattern(n_layers, int(pattern))

    scaling = key("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise ValueError(f"unsupported GGUF rope.scaling.type {scaling!r}")
    scale = _short_float(key("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0
    if n_layers == _27B_LAYERS:
        query_scalar = float(embed_dim // num_heads)
    else:
        query_scalar = float(head_dim)
    values = dict(
        vocab_size=int(vocab),
        embed_dim=embed_dim,
        num_layers=n_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        mlp_dim=int(key("feed_forward_length", required=True)),
        layer_types=layer_types,
        sliding_window=int(key("attention.sliding_window", required=True)),
        bidirectional=False,
        query_pre_attn_scalar=query_scalar,
        rope_local_base=_short_float(key("rope.freq_base_swa", _LLAMA_CPP_SWA_ROPE_BASE)),
        rope_global_base=_short_float(key("rope.freq_base", 1_000_000.0)),
        rope_global_scale=scale,
        rms_norm_eps=_short_float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        attn_logit_softcap=_optional_float(key("attn_logit_softcapping")),
        final_logit_softcap=_optional_float(key("final_logit_softcapping")),
        max_length=int(key("context_length", 2048)),
    )
    values.update(overrides)
    return ModelConfig(**values)


def load_gguf(path: str | Path, **config_overrides) -> tuple[ModelConfig, dict]:
    """A Gemma 3 GGUF file -> (causal ModelConfig, float32 `Transformer` params).

    Quantised tensors (Q4_K, Q8_0, ...) are dequantised with `gguf.quants.dequantize`.
    `config_overrides` replace config fields (e.g. query_pre_attn_scalar, dtype).
    """
    meta, tensors, buf = _parse(path)
    config_from_gguf(meta, vocab_size=0)  # architecture and shape errors before dequantising
    state = _hf_state(tensors, buf)
    if "embed_tokens.weight" not in state:
        raise KeyError(f"{path}: no token_embd.weight tensor")
    config = config_from_gguf(meta, state["embed_tokens.weight"].shape[0], **config_overrides)
    try:
        params = transformer_params_from_hf(state, config)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e
    return config, params
