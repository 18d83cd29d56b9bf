import jax
import numpy as np
import pytest

from embeddinggemma_jax.interop.huggingface import load_hf_config
from embeddinggemma_jax.model import ModelConfig, param_logical_axes, param_shapes


def test_300m_shapes_without_allocation():
    shapes = param_shapes(ModelConfig.embeddinggemma_300m())
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    emb = 262_144 * 768
    assert shapes["encoder"]["layer_0"]["attn"]["q"]["w"].shape == (768, 3, 256)
    assert shapes["encoder"]["layer_5"]["mlp"]["gating"]["w"].shape == (2, 768, 1152)
    assert shapes["head"]["dense_0"]["w"].shape == (768, 3072)
    assert 300e6 < n < 310e6 and n - emb < 110e6


def test_logical_axes_cover_every_param():
    cfg = ModelConfig.tiny()
    axes, shapes = param_logical_axes(cfg), param_shapes(cfg)
    flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    flat_shapes = jax.tree.leaves(shapes)
    assert len(flat_axes) == len(flat_shapes)
    assert all(len(a) == len(s.shape) for a, s in zip(flat_axes, flat_shapes))


def test_layer_pattern_and_errors():
    cfg = ModelConfig.embeddinggemma_300m()
    assert [i for i, t in enumerate(cfg.layer_types) if t == "global"] == [5, 11, 17, 23]
    with pytest.raises(ValueError, match="layer_types"):
        ModelConfig.tiny(num_layers=3)
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelConfig.tiny(num_kv_heads=2)


def test_hf_config_round_trip():
    cfg = ModelConfig.tiny(rope_global_scale=8.0, attn_logit_softcap=50.0)
    assert (
        ModelConfig.from_hf_config(
            cfg.to_hf_config(), head_dims=cfg.head_dims, matryoshka_dims=cfg.matryoshka_dims
        )
        == cfg
    )


@pytest.mark.slow
def test_real_config_is_the_300m_preset(real_checkpoint):
    hf = load_hf_config(real_checkpoint)
    assert ModelConfig.from_hf_config(hf) == ModelConfig.embeddinggemma_300m()
    ours = ModelConfig.embeddinggemma_300m().to_hf_config()
    for key, value in hf.items():
        if key in ours and key not in ("use_cache", "transformers_version"):
            assert ours[key] == value, key
