"""Fake quantizers against gguf-py's reference quantizers, the STE, the scheme tables, and the
quantized forward pass (tiny model)."""

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embeddinggemma_jax.model.config import GLOBAL, LOCAL, ModelConfig
from embeddinggemma_jax.model.model import EmbeddingGemma, init_params, param_shapes
from embeddinggemma_jax.quant import (
    SCHEMES,
    assignments,
    contraction_axes,
    fake_quant,
    param_paths,
    unused_rules,
)
from embeddinggemma_jax.quant.params import quantized_params, weight_layouts

TYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def _config(**kw):
    # Contraction dims divisible by GGUF's block of 32; otherwise odd, distinct sizes.
    return ModelConfig.tiny(
        embed_dim=64,
        head_dim=32,
        mlp_dim=96,
        head_dims=(160, 64),
        matryoshka_dims=(64, 32),
        **kw,
    )


def _matrix(seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((37, 256)) * 0.05).astype(np.float32)
    w[0, :32] = 0.0  # an all-zero block (d = 0)
    w[1, :32] = np.linspace(-1, 1, 32, dtype=np.float32)  # ties and a negative extreme
    w[2, 32:64] = np.float32(0.5) * (np.arange(32) % 3 - 1)  # repeated magnitudes
    return w


@pytest.mark.parametrize("name", ["q8_0", "q4_0"])
def test_block_quantizers_equal_gguf_reference(name):
    w = _matrix()
    ref = gguf.quants.dequantize(gguf.quants.quantize(w, TYPES[name]), TYPES[name])
    ours = np.asarray(jax.jit(lambda x: fake_quant(name, x))(w))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name,levels", [("int8", 255), ("int4", 15)])
def test_per_channel_quantizers_are_symmetric_per_row(name, levels):
    w = _matrix(1)
    q = np.asarray(fake_quant(name, w))
    qmax = (levels - 1) // 2
    for row, qrow in zip(w, q):
        scale = np.abs(row).max() / qmax
        steps = qrow / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
        assert np.abs(steps).max() <= qmax + 1e-4
        assert len(np.unique(qrow)) <= levels
        np.testing.assert_allclose(qrow, row, atol=scale / 2 + 1e-7)


@pytest.mark.parametrize("name", ["q8_0", "q4_0", "int8", "int4"])
def test_straight_through_gradient_is_identity(name):
    w = jnp.asarray(_matrix(2))
    cotangent = jnp.asarray(np.random.default_rng(3).standard_normal(w.shape), jnp.float32)
    g = jax.grad(lambda x: jnp.sum(fake_quant(name, x) * cotangent))(w)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(cotangent))


def test_contraction_axes():
    assert contraction_axes("BTD,DNH->BTNH") == (0,)
    assert contraction_axes("BTD,CDKH->BTCKH") == (1,)
    assert contraction_axes("BTNH,NHD->BTD") == (0, 1)


def test_schemes_cover_every_weight_and_match_their_table():
    config = _config()
    paths = param_paths(param_shapes(config))
    expected = {
        "q4_0": dict(embedding="q4_0", attn="q4_0", mlp="q4_0", dense="q4_0"),
        "q8_0": dict(embedding="q8_0", attn="q8_0", mlp="q8_0", dense="q8_0"),
        "mixed": dict(embedding="int4", attn="int8", mlp="int4", dense="int4"),
    }
    for scheme in SCHEMES:
        assert unused_rules(scheme, paths) == []
        for path, q in assignments(scheme, paths).items():
            if path.endswith("/scale"):  # norms stay float
                assert q is None, path
                continue
            kind = next(k for k in ("embedding", "attn", "mlp", "dense") if k in path)
            assert q == expected[scheme][kind], path


def test_unused_rule_is_reported():
    assert unused_rules("q4_0", ["encoder/final_norm/scale"]) == [p for p, _ in SCHEMES["q4_0"]]


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_quantized_forward_equals_float_forward_of_quantized_params(scheme):
    # A repeating pattern so scan_layers takes the scanned path (blocks see relative paths).
    config = _config(num_layers=4, layer_types=(LOCAL, GLOBAL) * 2)
    params = init_params(config, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 21), 1, config.vocab_size)

    def run(cfg, p):
        return jax.jit(lambda p, t: EmbeddingGemma(cfg).apply({"params": p}, t))(p, tokens)

    quant = run(config.replace(quant=scheme), params)
    scanned = run(config.replace(quant=scheme, scan_layers=True), params)
    dequant = run(config, quantized_params(params, config, scheme))
    float_ = run(config, params)
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(quant), atol=1e-6)
    np.testing.assert_allclose(np.asarray(dequant), np.asarray(quant), atol=1e-6)
    assert np.abs(np.asarray(float_) - np.asarray(quant)).max() > 1e-4  # it does quantize


def test_quant_keeps_params_a_plain_float_tree():
    config = _config()
    plain = jax.tree.map(lambda x: (x.shape, x.dtype), param_shapes(config))
    for scheme in SCHEMES:
        assert (
            jax.tree.map(lambda x: (x.shape, x.dtype), param_shapes(config.replace(quant=scheme)))
            == plain
        )
    assert set(weight_layouts(config)) == {
        p for p in param_paths(param_shapes(config)) if not p.endswith("/scale")
    }


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        _config(quant="q3_k")
