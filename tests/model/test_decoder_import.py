"""Decoder-only Gemma 3 import: tiny random transformers Gemma3ForCausalLM /
Gemma3ForConditionalGeneration folders -> our Transformer run causally, logits compared."""

import json

import jax
import numpy as np
import pytest
import torch
from decoder_only import decoder_only_logits, random_batch
from transformers import (
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
)

from embeddinggemma_jax.interop import load_gemma3
from embeddinggemma_jax.interop.huggingface import gemma3_text_config, load_decoder_only
from embeddinggemma_jax.model import ModelConfig

LENGTHS = (23, 17, 5)  # longest > 2 * window (banded kernel), padding on two rows


def _randomize(model: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # large random weights, norms included
            p.normal_(0.0, 0.3)
    model.eval()


def _batch(config: ModelConfig, seed: int = 1):
    return random_batch(config, LENGTHS, seed)


def _causal_lm(config: ModelConfig, folder, seed: int = 0):
    hf = {**config.to_hf_config(), "architectures": ["Gemma3ForCausalLM"]}
    model = Gemma3ForCausalLM(Gemma3TextConfig.from_dict({**hf, "attn_implementation": "eager"}))
    _randomize(model, seed)
    model.save_pretrained(folder)
    return model


def _reference_logits(model, tokens, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(tokens).long(),
            attention_mask=torch.from_numpy(mask).long(),
        )
    return out.logits.float().numpy()


@pytest.mark.parametrize("impl, final_softcap", [("xla", 3.0), ("banded", None)])
def test_causal_lm_logits_match_transformers(tmp_path, impl, final_softcap):
    config = ModelConfig.tiny(bidirectional=False, final_logit_softcap=final_softcap)
    assert config.window == config.sliding_window < max(LENGTHS)
    model = _causal_lm(config, tmp_path)
    tokens, mask = _batch(config)
    ref = _reference_logits(model, tokens, mask)

    loaded, params = load_decoder_only(tmp_path, attention_impl=impl)
    assert loaded == config.replace(
        attention_impl=impl, head_dims=loaded.head_dims, matryoshka_dims=loaded.matryoshka_dims
    )
    ours = np.asarray(decoder_only_logits(loaded, params, tokens, mask))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)
    assert np.abs(ref[mask]).mean() > 0.1  # logits are O(1): the comparison is sharp

    # The plain loader reads the same causal config from the config.json.
    config2, params2 = load_gemma3(tmp_path, attention_impl=impl)
    assert config2 == loaded
    for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_window_and_causality_are_exercised(tmp_path):
    """Widening the local window or making the stack bidirectional changes the logits."""
    config = ModelConfig.tiny(bidirectional=False)
    _causal_lm(config, tmp_path)
    loaded, params = load_decoder_only(tmp_path)
    tokens, mask = _batch(config)
    base = np.asarray(decoder_only_logits(loaded, params, tokens, mask))
    wide = np.asarray(
        decoder_only_logits(loaded.replace(sliding_window=4 * max(LENGTHS)), params, tokens, mask)
    )
    assert np.abs(base - wide)[mask].max() > 1e-3
    # Causal: a token's logits do not depend on later tokens.
    cut = 9
    short = np.asarray(decoder_only_logits(loaded, params, tokens[:, :cut], mask[:, :cut]))
    np.testing.assert_allclose(short[mask[:, :cut]], base[:, :cut][mask[:, :cut]], atol=1e-5)


def test_conditional_generation_text_part(tmp_path):
    config = ModelConfig.tiny(bidirectional=False)
    v = config.vocab_size
    hf = Gemma3Config(
        text_config=config.to_hf_config(),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        mm_tokens_per_image=4,
        image_token_index=v - 1,
        boi_token_index=v - 2,
        eoi_token_index=v - 3,
    )
    hf._attn_implementation = "eager"
    model = Gemma3ForConditionalGeneration(hf)
    _randomize(model, seed=2)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gemma3"

    tokens, mask = _batch(config)
    tokens = np.where(tokens >= v - 3, 5, tokens)  # no image tokens: text only
    ref = _reference_logits(model, tokens, mask)
    loaded, params = load_decoder_only(tmp_path)
    assert not loaded.bidirectional and loaded.num_layers == config.num_layers
    ours = np.asarray(decoder_only_logits(loaded, params, tokens, mask))
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)


def test_partial_text_config_gets_transformers_defaults():
    """Released Gemma3ForConditionalGeneration configs omit text_config keys equal to the
    defaults (e.g. num_attention_heads, head_dim): fill them as transformers does."""
    partial = {
        "hidden_size": 48,
        "intermediate_size": 72,
        "model_type": "gemma3_text",
        "num_hidden_layers": 7,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 10,
    }
    ours = ModelConfig.from_hf_config(
        gemma3_text_config({"model_type": "gemma3", "text_config": partial})
    )
    reference = ModelConfig.from_hf_config(Gemma3TextConfig(**partial).to_dict())
    assert ours == reference
    # ...which the plain config reader cannot do on its own (head_dim would be D / N).
    assert reference.head_dim != partial["hidden_size"] // reference.num_heads


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a Hugging Face folder nor a .gguf"):
        load_decoder_only(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a Gemma 3 config"):
        gemma3_text_config({"model_type": "llama"})
    with pytest.raises(ValueError, match="causal"):
        decoder_only_logits(ModelConfig.tiny(), {}, np.ones((1, 2), np.int32))
