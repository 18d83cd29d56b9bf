"""Our GGUF writer, run by llama.cpp (llama-cpp-python) on a small random model with Gemma's
tokenizer: the same ids, and the embeddings of our forward (F32) / quantized forward (Q8_0, Q4_0),
on a text longer than the local window."""

import jax
import numpy as np
import pytest
from conftest import gguf_model_config

from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.interop.gguf_export import write_gguf
from embeddinggemma_jax.model.model import init_params
from embeddinggemma_jax.text.tokenizer import Tokenizer

TEXTS = [
    "hello world",
    "task: search result | query: how to sort a dict by value",
    "title: none | text: " + "a much longer text that crosses the local window " * 6,
]


@pytest.fixture(scope="module")
def model():
    cfg = gguf_model_config()
    params = jax.device_get(init_params(cfg, jax.random.key(0)))
    # Larger weights than the init so every layer moves the result.
    return cfg, jax.tree.map(lambda x: np.asarray(x) * (30 if x.ndim > 1 else 1), params)


def _write(tmp_path, model, tokenizer_file, quant):
    cfg, params = model
    return write_gguf(
        tmp_path / "m.gguf", params, cfg, tokenizer_file=tokenizer_file, quant=quant, progress=False
    )


def _llama(llama_cpp, path):
    """llama.cpp's embedding model of the GGUF file at `path`, mean-pooled, 512 tokens."""
    return llama_cpp.Llama(
        model_path=str(path),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        verbose=False,
    )


def _embed(llm):
    """llama.cpp's embeddings of TEXTS, unit length."""
    got = np.asarray([llm.embed(t) for t in TEXTS], np.float32)
    return got / np.linalg.norm(got, axis=-1, keepdims=True)


@pytest.mark.parametrize("quant,floor", [("f32", 0.99999), ("q8_0", 0.999), ("q4_0", 0.999)])
def test_llama_cpp_runs_our_gguf(model, gemma_tokenizer_model, tmp_path, quant, floor):
    llama_cpp = pytest.importorskip("llama_cpp")
    cfg, params = model
    path = _write(tmp_path, model, gemma_tokenizer_model, quant)
    llm = _llama(llama_cpp, path)
    ours = Embedder(
        cfg.replace(quant=None if quant == "f32" else quant),
        params,
        Tokenizer(gemma_tokenizer_model),
        max_length=512,
    )
    ids = ours.tokenizer.encode(TEXTS)
    assert [llm.tokenize(t.encode()) for t in TEXTS] == [list(map(int, x)) for x in ids]
    assert len(ids[-1]) > 2 * cfg.window
    cos = np.sum(_embed(llm) * ours.encode(TEXTS), axis=-1)
    assert cos.min() >= floor, cos


def test_mixed_is_refused_for_gguf(model, gemma_tokenizer_model, tmp_path):
    cfg, params = model
    with pytest.raises(UserError, match="no GGUF tensor type"):
        write_gguf(
            tmp_path / "m.gguf", params, cfg, tokenizer_file=gemma_tokenizer_model, quant="mixed"
        )
    assert not list(tmp_path.iterdir())


def test_llama_cpp_runs_our_f16_gguf(model, gemma_tokenizer_model, tmp_path):
    """F16: every matrix stored as F16 (norms F32), and llama.cpp close to our float forward."""
    import gguf

    llama_cpp = pytest.importorskip("llama_cpp")
    cfg, params = model
    path = _write(tmp_path, model, gemma_tokenizer_model, "f16")
    types = {t.name: (t.tensor_type, len(t.shape)) for t in gguf.GGUFReader(path).tensors}
    assert {n for n, (_, ndim) in types.items() if ndim > 1} >= {
        "token_embd.weight", "blk.0.attn_q.weight", "blk.5.ffn_down.weight", "dense_2.weight",
        "dense_3.weight",
    }  # fmt: skip
    for name, (qtype, ndim) in types.items():
        expected = gguf.GGMLQuantizationType.F16 if ndim > 1 else gguf.GGMLQuantizationType.F32
        assert qtype == expected, name
    ours = Embedder(cfg, params, Tokenizer(gemma_tokenizer_model), max_length=512)
    cos = np.sum(_embed(_llama(llama_cpp, path)) * ours.encode(TEXTS), axis=-1)
    print(f"f16: min cosine {cos.min():.7f}")
    assert cos.min() >= 0.9999, cos  # measured 1.000000 to 6 places; F16 rounding alone
