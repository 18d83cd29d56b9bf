"""EmbeddingGemma -> a GGUF file that llama.cpp runs (architecture `gemma-embedding`).

Laid out as llama.cpp's own converter writes the released model: Hugging Face `[out, in]`
matrices (numpy order; GGUF lists dimensions fastest-first), every norm stored as 1 + scale
(llama.cpp multiplies by the stored weight, Gemma by 1 + scale), the two sentence-transformers
Dense layers as `dense_2` / `dense_3`, mean pooling, the SentencePiece vocabulary with its piece
types and BOS/EOS added. Quantized types hold gguf-py's quantization of the float weights, which
`quant.quantizers` reproduces bit for bit: the file computes what the fake-quantized model did.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embeddinggemma_jax.cache import atomic_path
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.interop.gguf import _BLOCK_NAMES, _gguf
from embeddinggemma_jax.interop.huggingface import transformer_params_to_hf
from embeddinggemma_jax.model.config import ModelConfig, layer_pattern

ARCHITECTURE = "gemma-embedding"
GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0")
_HF_TO_GGUF = {hf: g for g, hf in _BLOCK_NAMES.items()}
_BOS, _EOS, _UNK, _PAD = 2, 1, 3, 0


def _check_quant(quant: str) -> None:
    if quant == "mixed":
        raise UserError(
            "--quant mixed: the per-channel int4/int8 scheme has no GGUF tensor type; export it "
            "with --to sentence-transformers (dequantized weights), or pick q8_0 / q4_0"
        )
    if quant not in GGUF_TYPES:
        raise UserError(f"--quant {quant!r}: GGUF types are {', '.join(GGUF_TYPES)}")


def _check(config: ModelConfig, quant: str) -> None:
    _check_quant(quant)
    if config.layer_types != layer_pattern(config.num_layers):
        raise UserError("GGUF: llama.cpp's gemma-embedding fixes the pattern 5 local + 1 global")
    if config.rope_global_scale != 1.0 or config.rope_local_base != 10_000.0:
        raise UserError("GGUF: llama.cpp's gemma-embedding fixes local RoPE base 10000, no scaling")
    if len(config.head_dims) != 2:
        raise UserError("GGUF: gemma-embedding has exactly two dense layers after pooling")


def _tensors(params: Mapping, config: ModelConfig) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array (numpy order), norms already shifted by +1."""
    out = {}
    for name, w in transformer_params_to_hf(params["encoder"], config).items():
        if name == "embed_tokens.weight":
            key = "token_embd.weight"
        elif name == "norm.weight":
            key = "output_norm.weight"
        else:
            _, i, rest = name.split(".", 2)
            key = f"blk.{i}.{_HF_TO_GGUF[rest.removesuffix('.weight')]}.weight"
        out[key] = w + np.float32(1.0) if key.endswith("norm.weight") else w
    for i, gname in enumerate(("dense_2", "dense_3")):
        w = np.asarray(params["head"][f"dense_{i}"]["w"], np.float32)
        out[f"{gname}.weight"] = np.ascontiguousarray(w.T)  # [out, in], as ST's Linear stores it
    return out


def _vocab(tokenizer_file: Path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(tokenizer_file).read_bytes())
    # SentencePiece's piece types (NORMAL=1 .. BYTE=6) are numbered as GGUF's token types.
    pieces = [p.piece.encode("utf-8") for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]
    return pieces, scores, types, proto.normalizer_spec


def write_gguf(
    path: str | Path,
    params: Mapping,
    config: ModelConfig,
    *,
    tokenizer_file: str | Path,
    quant: str = "f32",
    name: str = "embeddinggemma",
    progress: bool = True,
) -> Path:
    """Writes `path` (through a temporary name, renamed when complete). Returns the path."""
    gguf = _gguf()
    _check(config, quant)
    path = Path(path)
    pieces, scores, types, normalizer = _vocab(Path(tokenizer_file))
    tensors = _tensors(params, config)
    table = tensors["token_embd.weight"]
    if len(pieces) > table.shape[0]:
        raise UserError(f"tokenizer has {len(pieces)} pieces, the embedding {table.shape[0]} rows")
    tensors["token_embd.weight"] = table[: len(pieces)]  # rows past the vocabulary never run
    qtype = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
        "q4_0": gguf.GGMLQuantizationType.Q4_0,
    }[quant]
    file_type = {"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2}[quant]  # llama_ftype

    tmp = path.with_name(path.name + ".tmp")  # <output>.tmp, as export.py names its folder
    writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(config.max_length)
    writer.add_embedding_length(config.embed_dim)
    writer.add_feed_forward_length(config.mlp_dim)
    writer.add_block_count(config.num_layers)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_global_base)
    writer.add_sliding_window(config.sliding_window)  # the stored value, as the converter writes
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    dims = (config.embed_dim, *config.head_dims)
    for gname, d_in, d_out in zip(("dense_2", "dense_3"), dims[:-1], dims[1:]):
        writer.add_dense_features_dims(gname, d_in, d_out)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(_BOS)
    writer.add_eos_token_id(_EOS)
    writer.add_unk_token_id(_UNK)
    writer.add_pad_token_id(_PAD)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_add_space_prefix(False)
    writer.add_remove_extra_whitespaces(bool(normalizer.remove_extra_whitespaces))

    with atomic_path(path, tmp):
        for key, w in tqdm(tensors.items(), desc=f"GGUF {quant}", disable=not progress):
            if w.ndim == 1 or quant == "f32":  # norms stay float32, as in llama.cpp's files
                writer.add_tensor(key, np.ascontiguousarray(w, np.float32))
            elif quant == "f16":
                writer.add_tensor(key, w.astype(np.float16))
            else:
                data = gguf.quants.quantize(w, qtype)
                writer.add_tensor(key, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
