"""Tiny random Gemma 3 encoder: ours vs transformers' Gemma3TextModel (bidirectional) plus the
sentence-transformers Pooling/Dense/Normalize modules, from the same weights."""

import dataclasses

import jax
import numpy as np
import pytest
import torch
from sentence_transformers.models import Dense, Normalize, Pooling
from transformers import Gemma3TextConfig, Gemma3TextModel

from embeddinggemma_jax.interop import transformer_params_from_hf
from embeddinggemma_jax.model import GLOBAL, LOCAL, EmbeddingGemma, ModelConfig
from embeddinggemma_jax.model.transformer import layer_period
from embeddinggemma_jax.text.packing import best_fit_decreasing, pack_rows

LENGTHS = (23, 17, 5)  # longest > 2 * window (banded kernel), padding on two rows


def _reference(config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    hf = Gemma3TextModel(
        Gemma3TextConfig.from_dict({**config.to_hf_config(), "attn_implementation": "eager"})
    )
    with torch.no_grad():
        for p in hf.parameters():  # large random weights, norms included, so nothing is trivial
            p.normal_(0.0, 0.3)
    hf.eval()
    dims = (config.embed_dim, *config.head_dims)
    dense = [
        Dense(i, o, bias=False, activation_function=torch.nn.Identity())
        for i, o in zip(dims, dims[1:])
    ]
    with torch.no_grad():
        for d in dense:
            d.linear.weight.normal_(0.0, 0.2)
    head = [Pooling(config.embed_dim, pooling_mode="mean"), *dense, Normalize()]
    params = {
        "encoder": transformer_params_from_hf(
            {k: v.numpy() for k, v in hf.state_dict().items()}, config
        ),
        "head": {
            f"dense_{i}": {"w": d.linear.weight.detach().numpy().T} for i, d in enumerate(dense)
        },
    }
    return hf, head, params


def _batch(config: ModelConfig, seed: int = 1, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), max(lengths)), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(1, config.vocab_size, n)
    return tokens, tokens != 0


def _reference_outputs(hf, head, tokens, mask):
    """(token states [B, T, D], sentence embeddings [B, E]) of the torch reference."""
    with torch.no_grad():
        out = hf(
            input_ids=torch.from_numpy(tokens).long(), attention_mask=torch.from_numpy(mask).long()
        )
        features = {
            "token_embeddings": out.last_hidden_state,
            "attention_mask": torch.from_numpy(mask).long(),
        }
        for module in head:
            features = module(features)
    return out.last_hidden_state.numpy(), features["sentence_embedding"].numpy()


@pytest.mark.parametrize("impl", ["auto", "xla", "banded"])
def test_matches_transformers_and_sentence_transformers(impl):
    config = ModelConfig.tiny(attention_impl=impl)
    assert config.window == config.sliding_window // 2 + 1 < max(LENGTHS)
    hf, head, params = _reference(config)
    tokens, mask = _batch(config)
    ref_states, ref_emb = _reference_outputs(hf, head, tokens, mask)

    model = EmbeddingGemma(config)
    states = model.apply({"params": params}, tokens, mask, method=EmbeddingGemma.token_states)
    emb = model.apply({"params": params}, tokens, mask)
    np.testing.assert_allclose(np.asarray(states)[mask], ref_states[mask], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(emb), ref_emb, atol=1e-5, rtol=0)
    # The comparison is sharp: token states are O(1) and differ between rows.
    assert np.abs(ref_states[mask]).mean() > 0.1


@pytest.mark.parametrize("impl", ["auto", "xla", "banded", "splash"])
def test_packed_rows_match_the_reference_per_text(impl):
    """Several texts per row (segment ids, per-text positions): each text's embedding equals the
    reference's for that text alone, for texts shorter than, at and beyond the local window and
    rows of 1-4 texts (splash runs in Pallas interpret mode off TPU)."""
    config = ModelConfig.tiny(attention_impl=impl)
    lengths = (23, 17, 5, 9, 2, 12, 7, 6, 30)
    assert min(lengths) < config.window < max(lengths) and config.window in lengths
    hf, head, params = _reference(config)
    tokens, mask = _batch(config, lengths=lengths)
    _, ref_emb = _reference_outputs(hf, head, tokens, mask)

    texts = [list(row[:n]) for row, n in zip(tokens, lengths)]
    rows = best_fit_decreasing(lengths, 32)
    assert max(len(r) for r in rows) >= 3 and len(rows) < len(lengths)
    packed, segments, positions = pack_rows(texts, rows, 32, num_rows=len(rows) + 1)
    emb = EmbeddingGemma(config).apply(
        {"params": params}, packed, segments_bt=segments, positions_bt=positions, num_segments=4
    )
    emb = np.asarray(emb)
    assert emb.shape == (len(rows) + 1, 4, config.output_dim)
    for r, row in enumerate(rows):
        for slot, i in enumerate(row):
            np.testing.assert_allclose(emb[r, slot], ref_emb[i], atol=1e-5, rtol=0)
        assert not emb[r, len(row) :].any()  # empty slots are zeros


def test_local_window_changes_output():
    """A wider window must change the result: the window rule is really exercised."""
    config = ModelConfig.tiny()
    hf, _, params = _reference(config)
    tokens, mask = _batch(config)
    model = EmbeddingGemma(config)
    wide = EmbeddingGemma(dataclasses.replace(config, sliding_window=4 * max(LENGTHS)))
    a = model.apply({"params": params}, tokens, mask)
    b = wide.apply({"params": params}, tokens, mask)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_padding_does_not_change_embeddings():
    config = ModelConfig.tiny()
    _, _, params = _reference(config)
    tokens, mask = _batch(config)
    model = EmbeddingGemma(config)
    full = model.apply({"params": params}, tokens, mask)
    n = LENGTHS[2]
    alone = model.apply({"params": params}, tokens[2:, :n], mask[2:, :n])
    np.testing.assert_allclose(np.asarray(full)[2], np.asarray(alone)[0], atol=1e-6)


def test_bfloat16_close_to_float32():
    config = ModelConfig.tiny()
    _, _, params = _reference(config)
    tokens, mask = _batch(config)
    f32 = EmbeddingGemma(config).apply({"params": params}, tokens, mask)
    bf16 = EmbeddingGemma(dataclasses.replace(config, dtype="bfloat16")).apply(
        {"params": params}, tokens, mask
    )
    assert bf16.dtype == np.float32
    cos = np.sum(np.asarray(f32) * np.asarray(bf16), -1)
    assert cos.min() > 0.99


def test_float16_refused():
    with pytest.raises(ValueError, match="float16.*overflow"):
        ModelConfig.tiny(dtype="float16")


def test_jit_and_grad_are_finite():
    config = ModelConfig.tiny()
    _, _, params = _reference(config)
    tokens, mask = _batch(config)
    model = EmbeddingGemma(config)
    loss = lambda p: model.apply({"params": p}, tokens, mask).sum()  # noqa: E731
    grads = jax.jit(jax.grad(loss))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_layer_period():
    assert layer_period((LOCAL,) * 5 + (GLOBAL,)) == 6
    assert layer_period(((LOCAL,) * 5 + (GLOBAL,)) * 4) == 6
    assert layer_period((LOCAL, GLOBAL) * 3) == 2
    assert layer_period((LOCAL, LOCAL, GLOBAL, LOCAL)) == 4  # nothing repeats
    assert layer_period((GLOBAL,)) == 1


@pytest.mark.parametrize("remat", ["none", "full"])
def test_scanned_layers_equal_unrolled(remat):
    """scan_layers runs the same computation: embeddings (padded and packed) and gradients."""
    unrolled = ModelConfig.tiny(layer_types=(LOCAL, GLOBAL) * 2, remat=remat)
    scanned = unrolled.replace(scan_layers=True)
    _, _, params = _reference(unrolled)
    tokens, mask = _batch(unrolled)
    a, b = EmbeddingGemma(unrolled), EmbeddingGemma(scanned)
    np.testing.assert_allclose(
        np.asarray(b.apply({"params": params}, tokens, mask)),
        np.asarray(a.apply({"params": params}, tokens, mask)),
        atol=1e-6,
        rtol=0,
    )
    rows = best_fit_decreasing(list(LENGTHS), 32)
    packed = pack_rows([list(r[:n]) for r, n in zip(tokens, LENGTHS)], rows, 32)
    kw = dict(segments_bt=packed[1], positions_bt=packed[2], num_segments=2)
    np.testing.assert_allclose(
        np.asarray(b.apply({"params": params}, packed[0], **kw)),
        np.asarray(a.apply({"params": params}, packed[0], **kw)),
        atol=1e-6,
        rtol=0,
    )

    def grads(model):
        loss = lambda p: (model.apply({"params": p}, tokens, mask) ** 3).sum()  # noqa: E731
        return jax.tree.leaves(jax.jit(jax.grad(loss))(params))

    for ga, gb in zip(grads(a), grads(b)):
        np.testing.assert_allclose(np.asarray(gb), np.asarray(ga), atol=1e-5, rtol=1e-5)
