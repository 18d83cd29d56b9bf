"""Real checkpoint: our GGUF exports run by llama.cpp (llama-cpp-python) and the quantized
sentence-transformers export, against sentence-transformers and our own quantized forward."""

import numpy as np
import pytest
from texts import LONG_TEXT_600, SHORT_TEXTS, ZEN_OF_PYTHON

pytestmark = pytest.mark.slow

# >= 20 varied texts with the model's prompts; LONG_TEXT_600 is longer than the 257-token window.
_TEXTS = [t for t in SHORT_TEXTS if t.strip()][:18] + [ZEN_OF_PYTHON, LONG_TEXT_600]
_PROMPTS = ("query", "document", "STS", "Classification")


@pytest.fixture(scope="module")
def embedder(real_checkpoint):
    from embeddinggemma_jax.embedder import Embedder

    return Embedder.from_pretrained(real_checkpoint)


@pytest.fixture(scope="module")
def quantized(embedder):
    """quant -> (the fake-quantized Embedder, its embeddings of the prompted texts), made once:
    the Q4_0 llama.cpp test and the quantized export test compare with the same ones."""
    from embeddinggemma_jax.embedder import Embedder

    made = {}

    def get(quant):
        if quant not in made:
            model = Embedder(
                embedder.config.replace(quant=quant),
                embedder.params,
                embedder.tokenizer,
                prompts=embedder.prompts,
                max_length=embedder.max_length,
                tokenizer_files=embedder.tokenizer_files,
            )
            made[quant] = model, model.encode(_prompted(embedder))
        return made[quant]

    return get


def _prompted(embedder):
    names = [_PROMPTS[i % len(_PROMPTS)] for i in range(len(_TEXTS))]
    return [embedder.prompts[n] + t for n, t in zip(names, _TEXTS)]


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def _llama_cpp(path, texts):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(
        model_path=str(path),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=2048,
        n_batch=2048,
        n_ubatch=2048,
        verbose=False,
    )
    return np.asarray([llm.embed(t) for t in texts], np.float32)


@pytest.mark.parametrize("quant,floor", [("f32", 0.99999), ("q8_0", 0.999), ("q4_0", 0.99)])
def test_llama_cpp_runs_our_gguf(embedder, quantized, tmp_path, quant, floor):
    import jax

    from embeddinggemma_jax.interop.gguf_export import write_gguf

    texts = _prompted(embedder)
    path = write_gguf(
        tmp_path / f"m-{quant}.gguf",
        jax.device_get(embedder.params),
        embedder.config,
        tokenizer_file=embedder.tokenizer.path,
        quant=quant,
        progress=False,
    )
    ours = _llama_cpp(path, texts)
    if quant == "f32":
        from sentence_transformers import SentenceTransformer

        ref = SentenceTransformer(str(embedder.tokenizer_files), device="cpu").encode(texts)
    else:
        ref = quantized(quant)[1]
    cos = _cos(ours, ref)
    print(f"{quant}: min cosine {cos.min():.6f} over {len(texts)} texts")
    assert cos.min() >= floor, cos


def test_quantized_sentence_transformers_export_equals_quantized_forward(
    embedder, quantized, tmp_path
):
    from sentence_transformers import SentenceTransformer

    model, want = quantized("q4_0")
    folder = model.save_pretrained(tmp_path / "st-q4_0")
    got = SentenceTransformer(str(folder), device="cpu").encode(_prompted(embedder))
    assert _cos(got, want).min() >= 0.99999


def test_real_weights_quantize_as_gguf(embedder):
    import gguf
    import jax

    from embeddinggemma_jax.quant import fake_quant

    hf_like = {
        "attn_q": np.asarray(embedder.params["encoder"]["layer_0"]["attn"]["q"]["w"])
        .reshape(768, -1)
        .T,
        "ffn_down": np.asarray(embedder.params["encoder"]["layer_5"]["mlp"]["down"]["w"]).T,
        "dense_2": np.asarray(embedder.params["head"]["dense_0"]["w"]).T,
    }
    for name, qtype in (
        ("q8_0", gguf.GGMLQuantizationType.Q8_0),
        ("q4_0", gguf.GGMLQuantizationType.Q4_0),
    ):
        for key, w in hf_like.items():
            w = np.ascontiguousarray(w, np.float32)
            ref = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype)
            ours = np.asarray(jax.jit(lambda x, n=name: fake_quant(n, x))(w))
            mismatches = int((ours != ref).sum())
            print(f"{name} {key} {w.shape}: {mismatches} mismatches of {w.size}")
            if name == "q8_0":
                assert mismatches == 0
            else:
                assert mismatches < 1e-6 * w.size
