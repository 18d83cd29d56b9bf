"""GradCache gives the full-batch loss and parameter gradients (float32, rtol 1e-5), with hard
negatives and distillation on and sub-batch sizes that do not divide the batch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embeddinggemma_jax.losses import embeddinggemma_loss, embeddinggemma_loss_fn
from embeddinggemma_jax.model import GLOBAL, LOCAL, EmbeddingGemma, ModelConfig, init_params
from embeddinggemma_jax.train.gradcache import (
    embed_batch,
    full_batch_value_and_grad,
    gradcache_value_and_grad,
)

B, M = 5, 3
# Cheaper XLA compiles (the tests are compile-bound on a small CPU); numerics stay float32.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(f, **kw):
    return jax.jit(f, compiler_options=FAST, **kw)


def make_role(rng, lead, t, vocab):
    """Right-padded random tokens with at least one real token per row."""
    lens = rng.integers(1, t + 1, lead)
    mask = np.arange(t) < lens[..., None]
    tokens = np.where(mask, rng.integers(3, vocab, lead + (t,)), 0).astype(np.int32)
    return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


def assert_grads_close(got, want, rtol=1e-5):
    """Per leaf: rtol 1e-5, with an absolute floor of 1e-5 of the leaf's largest entry (entries that
    cancel to ~0 have no meaningful relative error in float32)."""
    flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        w = np.asarray(flat_want[path])
        scale = float(np.max(np.abs(w)))
        assert scale > 0, jax.tree_util.keystr(path)
        np.testing.assert_allclose(
            np.asarray(g), w, rtol=rtol, atol=rtol * scale, err_msg=jax.tree_util.keystr(path)
        )


def reference(embed_fn, params, batch, extra, loss_kwargs):
    """Plain autodiff through the encoder over the whole batch, written independently of GradCache."""

    def total(params):
        q = embed_fn(params, batch["query"])
        p = embed_fn(params, batch["positive"])
        neg = batch["negative"]
        b, m, t = neg["tokens"].shape
        n = embed_fn(params, {k: v.reshape(b * m, t) for k, v in neg.items()}).reshape(b, m, -1)
        teacher = extra["teacher"]
        return embeddinggemma_loss(
            q, p, n, q_ids=extra["q_ids"], p_ids=extra["p_ids"], teacher_q=teacher["query"],
            teacher_p=teacher["positive"], teacher_n=teacher["negative"], **loss_kwargs,
        )  # fmt: skip

    return fast_jit(jax.value_and_grad(total, has_aux=True))(params)


# ----------------------------------------------------------------------------------------------
# A small Flax encoder (fast to compile): roles with different lengths, many chunk sizes
# ----------------------------------------------------------------------------------------------
class TinyEncoder(nn.Module):
    vocab: int = 50
    width: int = 12
    out: int = 10

    @nn.compact
    def __call__(self, tokens_bt, mask_bt):
        x_btd = nn.Embed(self.vocab, self.width)(tokens_bt)
        x_btd = jnp.tanh(nn.Dense(self.width)(x_btd))
        m = mask_bt[..., None].astype(x_btd.dtype)
        pooled_bd = jnp.sum(x_btd * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        return nn.Dense(self.out)(pooled_bd)


@pytest.fixture(scope="module")
def tiny_mlp():
    enc = TinyEncoder()
    rng = np.random.default_rng(0)
    batch = {
        "query": make_role(rng, (B,), 4, enc.vocab),
        "positive": make_role(rng, (B,), 7, enc.vocab),
        "negative": make_role(rng, (B, M), 6, enc.vocab),
    }
    params = fast_jit(enc.init)(
        jax.random.key(0), batch["query"]["tokens"], batch["query"]["mask"]
    )["params"]
    extra = {
        "q_ids": jnp.asarray([0, 1, 2, 1, 3], jnp.int32),
        "p_ids": jnp.asarray([0, 1, 2, 3, 2], jnp.int32),
        "teacher": {  # precomputed Matryoshka teacher: E_t = 13 > E_s = 10, truncated
            "query": jnp.asarray(rng.standard_normal((B, 13)), jnp.float32),
            "positive": jnp.asarray(rng.standard_normal((B, 13)), jnp.float32),
            "negative": jnp.asarray(rng.standard_normal((B, M, 13)), jnp.float32),
        },
    }

    def embed_fn(p, x):
        return enc.apply({"params": p}, x["tokens"], x["mask"])

    return embed_fn, params, batch, extra


MLP_LOSS = dict(
    temperature=0.05, hard_negative_alpha=5.0, spread_out_weight=0.7, distill_weight=0.4,
    matryoshka_dims=(10, 6), include_positive_in_denominator=False,
)  # fmt: skip


def test_gradcache_equals_full_batch_mlp(tiny_mlp):
    embed_fn, params, batch, extra = tiny_mlp
    (ref_loss, ref_met), ref_g = reference(embed_fn, params, batch, extra, MLP_LOSS)
    loss_fn = embeddinggemma_loss_fn(**MLP_LOSS)
    assert float(ref_met["distill"]) > 0 and "hard_negative_cosine" in ref_met
    # 2 and 4 divide neither B = 5 nor B·M = 15.
    for chunk in (2, 4):
        (loss, met), g = fast_jit(gradcache_value_and_grad(embed_fn, loss_fn, chunk))(
            params, batch, extra
        )
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
        for k in ref_met:
            np.testing.assert_allclose(float(met[k]), float(ref_met[k]), rtol=1e-5, atol=1e-6)
        assert_grads_close(g, ref_g)
    (loss, _), g = fast_jit(full_batch_value_and_grad(embed_fn, loss_fn))(params, batch, extra)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    assert_grads_close(g, ref_g)


def test_embed_batch_chunked_equals_unchunked(tiny_mlp):
    embed_fn, params, batch, _ = tiny_mlp
    whole = embed_batch(embed_fn, params, batch)
    chunked = fast_jit(lambda p, b: embed_batch(embed_fn, p, b, chunk_size=4))(params, batch)
    assert chunked["negative"].shape == (B, M, 10) and chunked["query"].shape == (B, 10)
    for role in batch:
        np.testing.assert_allclose(chunked[role], whole[role], rtol=1e-6, atol=1e-6)


def test_gradcache_rejects_bad_input(tiny_mlp):
    embed_fn, params, batch, extra = tiny_mlp
    loss_fn = embeddinggemma_loss_fn()
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        gradcache_value_and_grad(embed_fn, loss_fn, 0)
    bad = dict(
        batch, query={"tokens": batch["query"]["tokens"], "mask": batch["query"]["mask"][:2]}
    )
    with pytest.raises(ValueError, match=r"batch\['query'\]\['mask'\]"):
        gradcache_value_and_grad(embed_fn, loss_fn, 2)(params, bad, extra)


# ----------------------------------------------------------------------------------------------
# The real model (tiny config)
# ----------------------------------------------------------------------------------------------
def test_gradcache_equals_full_batch_real_tiny_model():
    cfg = ModelConfig.tiny(num_layers=2, layer_types=(LOCAL, GLOBAL))
    model = EmbeddingGemma(cfg)
    params = fast_jit(init_params, static_argnums=0)(cfg, jax.random.key(1))

    def embed_fn(p, x):
        return model.apply({"params": p}, x["tokens"], x["mask"])

    rng = np.random.default_rng(1)
    t = 9  # all roles share T: GradCache embeds them as one stream of B + B + B·M = 25 rows
    batch = {
        "query": make_role(rng, (B,), t, cfg.vocab_size),
        "positive": make_role(rng, (B,), t, cfg.vocab_size),
        "negative": make_role(rng, (B, 2), t, cfg.vocab_size),
    }
    e = cfg.head_dims[-1]
    e_t = e + 9  # a larger Matryoshka teacher, truncated to E_s by the loss
    extra = {
        "q_ids": jnp.asarray([0, 1, 2, 0, 3], jnp.int32),
        "p_ids": jnp.asarray([0, 1, 1, 2, 3], jnp.int32),
        "teacher": {
            "query": jnp.asarray(rng.standard_normal((B, e_t)), jnp.float32),
            "positive": jnp.asarray(rng.standard_normal((B, e_t)), jnp.float32),
            "negative": jnp.asarray(rng.standard_normal((B, 2, e_t)), jnp.float32),
        },
    }
    loss_kwargs = dict(
        spread_out_weight=0.5, distill_weight=2.0, matryoshka_dims=(e, e // 2),
        hard_negative_alpha=5.0, temperature=0.05,
    )  # fmt: skip
    (ref_loss, ref_met), ref_g = reference(embed_fn, params, batch, extra, loss_kwargs)
    assert float(ref_met["distill"]) > 0
    gc = fast_jit(gradcache_value_and_grad(embed_fn, embeddinggemma_loss_fn(**loss_kwargs), 4))
    (loss, met), g = gc(params, batch, extra)  # 4 divides neither 5 nor 25
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    np.testing.assert_allclose(float(met["top1_accuracy"]), float(ref_met["top1_accuracy"]))
    assert_grads_close(g, ref_g)
