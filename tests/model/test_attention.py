"""Attention kernels: banded local attention equals the masked reference; the chooser picks what
it should per backend and length. (Splash attention: tests/model/test_splash_attention.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model.attention_inputs import random_qkv, reference

from embeddinggemma_jax.model import GLOBAL, LOCAL, ModelConfig
from embeddinggemma_jax.model.attention import (
    _banded,
    _masked_softmax_attention,
    _structure,
    choose_impl,
)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("t", [3, 5, 6, 7, 12, 13, 31])
def test_banded_equals_masked_reference(t, bidirectional):
    config = ModelConfig.tiny(bidirectional=bidirectional)  # window 6 (bidirectional) / 10 (causal)
    lengths = [t, max(1, t - 4), 1]
    q, k, v, mask = random_qkv(config, t, lengths)
    ref = reference(q, k, v, mask, config, LOCAL)
    out = _banded(q, k, v, mask, config)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=0)


@pytest.mark.parametrize("t", [6, 13, 31])
def test_banded_with_segments_equals_masked_reference(t):
    """Packed rows: a key is visible only within its own segment (texts of 1 to 12 tokens, so
    shorter than, at and beyond the window of 6), with padding after the last text."""
    config = ModelConfig.tiny()
    q, k, v, _ = random_qkv(config, t, [t, t])
    rng = np.random.default_rng(t)
    segments = np.zeros((2, t), np.int32)
    for row in range(2):
        start, seg = 0, 1
        while start < t - 2:  # the last position or more stays padding
            n = min(int(rng.integers(1, min(13, t // 2 + 1))), t - 1 - start)
            segments[row, start : start + n] = seg
            start, seg = start + n, seg + 1
    mask = segments > 0
    assert segments.max() >= 2 and not mask.all()
    pos = jnp.arange(t)
    full_mask = (
        _structure(config, LOCAL, pos, pos)[None]
        & mask[:, None, :]
        & (segments[:, :, None] == segments[:, None, :])
    )
    ref = _masked_softmax_attention(q, k, v, full_mask, config)
    out = _banded(q, k, v, mask, config, jnp.asarray(segments))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=0)


def test_structure_matches_config_rule():
    config = ModelConfig.embeddinggemma_300m()
    assert config.window == 257  # from sliding_window=512, as transformers derives it
    pos = np.arange(600)
    ours = np.asarray(_structure(config, LOCAL, jnp.asarray(pos), jnp.asarray(pos)))
    np.testing.assert_array_equal(ours, config.attends(LOCAL, pos, pos))
    assert ours[0, 256] and not ours[0, 257] and ours[300, 44] and not ours[300, 43]
    assert np.asarray(_structure(config, GLOBAL, jnp.asarray(pos), jnp.asarray(pos))).all()


def test_chooser():
    cfg = ModelConfig.embeddinggemma_300m()
    bf16 = cfg.replace(dtype="bfloat16")
    assert choose_impl(bf16, GLOBAL, 512, "gpu") == "cudnn"
    assert choose_impl(bf16, LOCAL, 256, "gpu") == "cudnn"  # within the window local == global
    assert choose_impl(bf16, LOCAL, 2048, "gpu") == "banded"
    assert choose_impl(cfg, GLOBAL, 512, "gpu") == "xla"  # cuDNN needs bf16
    assert choose_impl(cfg, LOCAL, 2048, "cpu") == "banded"
    assert choose_impl(cfg, LOCAL, 512, "cpu") == "xla"
    assert choose_impl(cfg, GLOBAL, 2048, "cpu") == "xla"
    for layer_type in (GLOBAL, LOCAL):  # TPU: Splash for every layer and length, any dtype
        for length in (16, 512, 2048):
            assert choose_impl(cfg, layer_type, length, "tpu") == "splash"
            assert choose_impl(bf16, layer_type, length, "tpu") == "splash"
    assert choose_impl(cfg.replace(bidirectional=False), LOCAL, 2048, "tpu") == "splash"
    capped = cfg.replace(attn_logit_softcap=50.0)  # Splash is not used with a softcap
    assert choose_impl(capped, GLOBAL, 2048, "tpu") == "xla"
    assert choose_impl(capped, LOCAL, 2048, "tpu") == "banded"
    assert choose_impl(capped, LOCAL, 512, "tpu") == "xla"
    with pytest.raises(ValueError, match="softcap"):
        choose_impl(capped.replace(attention_impl="splash"), LOCAL, 512, "tpu")
    for backend in ("cpu", "gpu", "tpu"):  # an explicit choice is honoured
        assert choose_impl(cfg.replace(attention_impl="splash"), GLOBAL, 8, backend) == "splash"
    assert choose_impl(cfg.replace(attention_impl="banded"), GLOBAL, 2048, "cpu") == "xla"
    # Packed rows (segment ids): cuDNN takes padding masks only, so never for them.
    assert choose_impl(bf16, GLOBAL, 512, "gpu", packed=True) == "xla"
    assert choose_impl(bf16, LOCAL, 256, "gpu", packed=True) == "xla"
    assert choose_impl(bf16, LOCAL, 2048, "gpu", packed=True) == "banded"
    assert choose_impl(cfg, LOCAL, 512, "tpu", packed=True) == "splash"
    explicit = bf16.replace(attention_impl="cudnn")
    assert choose_impl(explicit, GLOBAL, 512, "gpu") == "cudnn"
    assert choose_impl(explicit, GLOBAL, 512, "gpu", packed=True) == "xla"
    assert choose_impl(explicit, LOCAL, 512, "gpu", packed=True) == "banded"
    assert choose_impl(bf16.replace(attention_impl="banded"), GLOBAL, 512, "gpu") == "cudnn"
    assert choose_impl(bf16.replace(attention_impl="banded"), GLOBAL, 512, "gpu", True) == "xla"
    with pytest.raises(ValueError, match="attention_impl"):
        choose_impl(cfg.replace(attention_impl="flash"), LOCAL, 8, "cpu")
    assert jax.default_backend() == "cpu"
