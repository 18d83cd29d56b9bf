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
from embeddinggemma_jax.model import EmbeddingGemma, ModelConfig

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


def _batch(config: ModelConfig, seed: int = 1):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(LENGTHS), max(LENGTHS)), np.int32)
    for row, n in enumerate(LENGTHS):
        tokens[row, :n] = rng.integers(1, config.vocab_size, n)
    return tokens, tokens != 0


@pytest.mark.parametrize("impl", ["auto", "xla", "banded"])
def test_matches_transformers_and_sentence_transformers(impl):
    config = ModelConfig.tiny(attention_impl=impl)
    assert config.window == config.sliding_window // 2 + 1 < max(LENGTHS)
    hf, head, params = _reference(config)
    tokens, mask = _batch(config)
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
    ref_states = out.last_hidden_state.numpy()
    ref_emb = features["sentence_embedding"].numpy()

    model = EmbeddingGemma(config)
    states = model.apply({"params": params}, tokens, mask, method=EmbeddingGemma.token_states)
    emb = model.apply({"params": params}, tokens, mask)
    np.testing.assert_allclose(np.asarray(states)[mask], ref_states[mask], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(emb), ref_emb, atol=1e-5, rtol=0)
    # The comparison is sharp: token states are O(1) and differ between rows.
    assert np.abs(ref_states[mask]).mean() > 0.1


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
