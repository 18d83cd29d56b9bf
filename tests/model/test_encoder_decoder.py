"""T5Gemma encoder-decoder: initialisation from a decoder-only model, agreement with the plain
Gemma 3 stack, padded vs packed batches, the unbalanced setting."""

import functools

import jax
import numpy as np
import pytest
from conftest import random_params
from decoder_only import decoder_only_logits, tiny_ul2_config

from embeddinggemma_jax.data.ul2 import corrupt, pack_batch, pad_batch
from embeddinggemma_jax.model import GLOBAL, LOCAL, ModelConfig, Transformer, param_shapes
from embeddinggemma_jax.model.encoder_decoder import (
    CROSS_ATTENTION_KEYS,
    EncoderDecoder,
    EncoderDecoderConfig,
    cross_attention_mask,
    encoder_decoder_param_shapes,
    t5gemma_init,
)

LENGTHS = (23, 17, 5)
# Two layers (one local, one global) keep compile times small; logits soft-capped as in Gemma 2.
CAUSAL = ModelConfig.tiny(
    bidirectional=False, num_layers=2, layer_types=(LOCAL, GLOBAL), final_logit_softcap=5.0
)


@functools.cache
def _apply(config: EncoderDecoderConfig, method: str = "__call__"):
    """Jitted EncoderDecoder(config).apply (one compile per config, method and shapes)."""
    model = EncoderDecoder(config)
    return jax.jit(functools.partial(model.apply, method=getattr(EncoderDecoder, method)))


def _decoder_only(config: ModelConfig, seed: int = 0) -> dict:
    """Random decoder-only params with large weights everywhere, norms included."""
    return random_params(param_shapes(config)["encoder"], 0.3, seed)  # the Transformer's params


def _tokens(config: ModelConfig, lengths=LENGTHS, seed: int = 1):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), max(lengths)), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(1, config.vocab_size, n)
    return tokens, tokens != 0


@pytest.fixture(scope="module")
def balanced():
    config = EncoderDecoderConfig.balanced(CAUSAL)
    decoder_only = _decoder_only(CAUSAL)
    return CAUSAL, config, decoder_only, t5gemma_init(decoder_only, config)


def _leaves(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_t5gemma_init_copies_the_decoder_only_model(balanced):
    causal, config, decoder_only, params = balanced
    assert config.encoder.bidirectional and not config.decoder.bidirectional
    # Step 0: the encoder's params equal the decoder-only params, leaf for leaf.
    assert jax.tree.structure(params["encoder"]) == jax.tree.structure(decoder_only)
    for (path, a), b in zip(_leaves(params["encoder"]), jax.tree.leaves(decoder_only)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # The decoder: every non-cross-attention param from the decoder-only model...
    decoder = params["decoder"]
    for name, value in decoder_only.items():
        own = {k: v for k, v in decoder[name].items() if k not in CROSS_ATTENTION_KEYS}
        for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(value)):
            np.testing.assert_array_equal(a, b)
    # ...and each layer's cross-attention equals its self-attention (norms included).
    for i in range(config.decoder.num_layers):
        layer = decoder[f"layer_{i}"]
        for cross, own in [
            ("cross_attn", "attn"),
            ("pre_cross_attention_norm", "pre_attention_norm"),
            ("post_cross_attention_norm", "post_attention_norm"),
        ]:
            assert jax.tree.structure(layer[cross]) == jax.tree.structure(layer[own])
            for a, b in zip(jax.tree.leaves(layer[cross]), jax.tree.leaves(layer[own])):
                np.testing.assert_array_equal(a, b)
    # Independent buffers: no leaf aliases another (safe to donate, to update in place).
    leaves = jax.tree.leaves(params)
    assert all(not np.shares_memory(a, b) for i, a in enumerate(leaves) for b in leaves[i + 1 :])
    assert all(a.dtype == np.float32 for a in leaves)
    # Shapes are the model's.
    shapes = encoder_decoder_param_shapes(config)
    assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape, shapes)


def test_encoder_is_the_bidirectional_transformer(balanced):
    _, config, _, params = balanced
    tokens, mask = _tokens(config.encoder)
    ours = _apply(config, "encode")({"params": params}, tokens)
    ref = jax.jit(Transformer(config.encoder).apply)({"params": params["encoder"]}, tokens, mask)
    np.testing.assert_allclose(np.asarray(ours)[mask], np.asarray(ref)[mask], atol=1e-5)
    assert np.abs(np.asarray(ref)[mask]).mean() > 0.1


def test_decoder_without_cross_attention_is_the_decoder_only_model(balanced):
    """With the cross-attention output projection zeroed the decoder is the causal decoder-only
    model (self-attention, MLP, tied and soft-capped logits all shared)."""
    causal, config, decoder_only, params = balanced
    zeroed = jax.tree.map(np.copy, params)
    for i in range(config.decoder.num_layers):
        zeroed["decoder"][f"layer_{i}"]["cross_attn"]["o"]["w"][...] = 0.0
    enc_tokens, _ = _tokens(config.encoder, (9, 4, 7), seed=5)
    dec_tokens, dec_mask = _tokens(config.decoder)
    forward = _apply(config)
    logits = forward({"params": zeroed}, enc_tokens, dec_tokens)
    ref = decoder_only_logits(causal, decoder_only, dec_tokens, dec_mask)
    np.testing.assert_allclose(np.asarray(logits)[dec_mask], np.asarray(ref)[dec_mask], atol=1e-4)
    assert np.abs(np.asarray(ref)[dec_mask]).mean() > 0.1
    # With cross-attention on, the encoder input matters.
    full = forward({"params": params}, enc_tokens, dec_tokens)
    other = forward({"params": params}, enc_tokens[::-1], dec_tokens)
    assert np.abs(np.asarray(full) - np.asarray(other))[dec_mask].max() > 1e-3


def _ul2_examples(vocab: int, n: int, seed: int = 0):
    cfg = tiny_ul2_config(vocab)
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(3, vocab - 30, int(rng.integers(5, 30))) for _ in range(n)]
    return cfg, [corrupt(s, i, cfg) for i, s in enumerate(seqs)]


def test_packed_batch_equals_padded_batch(balanced):
    _, config, _, params = balanced
    ul2, examples = _ul2_examples(config.encoder.vocab_size, 6)
    enc_len, dec_len = 2 * ul2.encoder_max_length, 2 * ul2.decoder_max_length
    padded = pad_batch(examples, enc_len, dec_len)  # same shapes as the packed batch: one compile
    packed, consumed = pack_batch(examples, len(examples), enc_len, dec_len)

    assert consumed == len(examples) and packed["decoder_segment_ids"].max() >= 2

    def logits(batch):
        keys = ("input_ids", "input_ids", "segment_ids", "segment_ids", "positions", "positions")
        args = [batch[f"{side}_{k}"] for side, k in zip(["encoder", "decoder"] * 3, keys)]
        return np.asarray(_apply(config)({"params": params}, *args))

    a, b = logits(padded), logits(packed)
    for i in range(len(examples)):  # find example i in the packed rows by its targets
        want = a[i][padded["decoder_loss_mask"][i] > 0]
        found = []
        for row in range(packed["decoder_segment_ids"].shape[0]):
            for seg in range(1, packed["decoder_segment_ids"][row].max() + 1):
                sel = packed["decoder_segment_ids"][row] == seg
                if np.array_equal(
                    packed["decoder_target_ids"][row][sel], examples[i].decoder_target_ids
                ) and np.array_equal(
                    packed["encoder_input_ids"][row][packed["encoder_segment_ids"][row] == seg],
                    examples[i].encoder_input_ids,
                ):
                    found.append(b[row][sel])
        assert found, f"example {i} not found in the packed batch"
        np.testing.assert_allclose(found[0], want, atol=1e-4)


def test_unbalanced_cross_attention_from_scratch():
    big = CAUSAL
    small = CAUSAL.replace(
        embed_dim=30, num_layers=1, num_heads=2, head_dim=8, mlp_dim=44, layer_types=(GLOBAL,)
    )
    config = EncoderDecoderConfig.unbalanced(big, small)
    assert not config.is_balanced
    enc_src, dec_src = _decoder_only(big, seed=1), _decoder_only(small, seed=2)
    with pytest.raises(ValueError, match="balanced"):
        t5gemma_init(
            enc_src, config, decoder_source_params=dec_src, cross_attention_init="self_attention"
        )
    params = t5gemma_init(enc_src, config, decoder_source_params=dec_src, rng=jax.random.key(3))
    kv = params["decoder"]["layer_0"]["cross_attn"]["kv"]["w"]
    assert kv.shape == (2, big.embed_dim, small.num_kv_heads, small.head_dim)
    np.testing.assert_array_equal(
        params["encoder"]["layer_0"]["mlp"]["down"]["w"], enc_src["layer_0"]["mlp"]["down"]["w"]
    )
    np.testing.assert_array_equal(
        params["decoder"]["layer_0"]["attn"]["q"]["w"], dec_src["layer_0"]["attn"]["q"]["w"]
    )
    # Fresh cross-attention: random projections, unit-scale (zero) norms.
    assert not np.allclose(kv, 0.0)
    assert np.all(params["decoder"]["layer_0"]["pre_cross_attention_norm"]["scale"] == 0.0)
    tokens, _ = _tokens(big)
    logits = _apply(config)({"params": params}, tokens, tokens[:, :7])
    assert logits.shape == (3, 7, big.vocab_size) and np.isfinite(np.asarray(logits)).all()
    mask = cross_attention_mask(params)
    flat = {jax.tree_util.keystr(k): v for k, v in _leaves(mask)}
    assert flat["['decoder']['layer_0']['cross_attn']['q']['w']"]
    assert flat["['decoder']['layer_0']['post_cross_attention_norm']['scale']"]
    assert not flat["['decoder']['layer_0']['attn']['q']['w']"]
    assert not any(v for k, v in flat.items() if k.startswith("['encoder']"))


def test_config_and_init_errors():
    causal = CAUSAL
    with pytest.raises(ValueError, match="encoder must have bidirectional=True"):
        EncoderDecoderConfig(causal, causal)
    with pytest.raises(ValueError, match="decoder must have bidirectional=False"):
        EncoderDecoderConfig(causal.replace(bidirectional=True), causal.replace(bidirectional=True))
    with pytest.raises(ValueError, match="vocab_size"):
        EncoderDecoderConfig.unbalanced(causal, causal.replace(vocab_size=300))
    config = EncoderDecoderConfig.balanced(causal)
    wrong = _decoder_only(causal.replace(mlp_dim=70))
    with pytest.raises(ValueError, match=r"\['layer_0'\]\['mlp'\]\['down'\]\['w'\] has shape"):
        t5gemma_init(wrong, config)
    with pytest.raises(ValueError, match="cross_attention_init must be one of"):
        t5gemma_init(_decoder_only(causal), config, cross_attention_init="zeros")
