"""The Gemma 3 stack: bidirectional for the embedder's encoder, causal for a decoder-only LM."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from embeddinggemma_jax.model.attention import attention
from embeddinggemma_jax.model.config import GLOBAL, ModelConfig
from embeddinggemma_jax.model.layers import Einsum, Embed, RMSNorm
from embeddinggemma_jax.model.rope import apply_rope

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _constrain(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    return nn.with_logical_constraint(x, axes)


class Attention(nn.Module):
    """Grouped-query self-attention with QK-norm and per-layer-type RoPE."""

    config: ModelConfig
    layer_type: str

    @nn.compact
    def __call__(self, x_btd, positions_bt, kv_mask_bt):
        cfg = self.config
        d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_btnh = Einsum(
            (d, n, h), "BTD,DNH->BTNH", ("embed", "heads", "head_dim"), cfg.dtype, name="q"
        )(x_btd)
        kv_cbtkh = Einsum(
            (2, d, k, h),
            "BTD,CDKH->CBTKH",
            (None, "embed", "kv_heads", "head_dim"),
            cfg.dtype,
            name="kv",
        )(x_btd)
        k_btkh, v_btkh = kv_cbtkh[0], kv_cbtkh[1]
        q_btnh = RMSNorm(cfg.rms_norm_eps, "head_dim", name="q_norm")(q_btnh)
        k_btkh = RMSNorm(cfg.rms_norm_eps, "head_dim", name="k_norm")(k_btkh)
        if self.layer_type == GLOBAL:
            base, scale = cfg.rope_global_base, cfg.rope_global_scale
        else:
            base, scale = cfg.rope_local_base, 1.0
        q_btnh = apply_rope(q_btnh, positions_bt, base, scale)
        k_btkh = apply_rope(k_btkh, positions_bt, base, scale)
        q_btnh = _constrain(q_btnh, ("batch", "length", "heads", "head_dim"))
        out_btnh = attention(
            q_btnh, k_btkh, v_btkh, kv_mask_bt, config=cfg, layer_type=self.layer_type
        )
        return Einsum(
            (n, h, d), "BTNH,NHD->BTD", ("heads", "head_dim", "embed"), cfg.dtype, name="o"
        )(out_btnh)


class MLP(nn.Module):
    """GeGLU feed-forward with tanh-approximated GELU."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x_btd):
        cfg = self.config
        gate_cbtf = Einsum(
            (2, cfg.embed_dim, cfg.mlp_dim),
            "BTD,CDF->CBTF",
            (None, "embed", "mlp"),
            cfg.dtype,
            name="gating",
        )(x_btd)
        h_btf = jax.nn.gelu(gate_cbtf[0], approximate=True) * gate_cbtf[1]
        h_btf = _constrain(h_btf, ("batch", "length", "mlp"))
        return Einsum(
            (cfg.mlp_dim, cfg.embed_dim), "BTF,FD->BTD", ("mlp", "embed"), cfg.dtype, name="down"
        )(h_btf)


class Block(nn.Module):
    """Pre- and post-norms around attention and around the MLP, residual in the compute dtype."""

    config: ModelConfig
    layer_type: str

    @nn.compact
    def __call__(self, x_btd, positions_bt, kv_mask_bt):
        eps = self.config.rms_norm_eps
        h = RMSNorm(eps, name="pre_attention_norm")(x_btd)
        h = Attention(self.config, self.layer_type, name="attn")(h, positions_bt, kv_mask_bt)
        x_btd = x_btd + RMSNorm(eps, name="post_attention_norm")(h)
        h = RMSNorm(eps, name="pre_ffw_norm")(x_btd)
        h = MLP(self.config, name="mlp")(h)
        x_btd = x_btd + RMSNorm(eps, name="post_ffw_norm")(h)
        return _constrain(x_btd, ("batch", "length", "embed"))


class Transformer(nn.Module):
    """Token ids -> final-normed token states. Causal or bidirectional per `config.bidirectional`."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embedder = Embed(cfg.vocab_size, cfg.embed_dim, cfg.dtype)
        policy = REMAT_POLICIES[cfg.remat]
        block = Block if cfg.remat == "none" else nn.remat(Block, policy=policy, prevent_cse=False)
        self.layers = [block(cfg, t, name=f"layer_{i}") for i, t in enumerate(cfg.layer_types)]
        self.final_norm = RMSNorm(cfg.rms_norm_eps)

    def __call__(self, tokens_bt: jax.Array, mask_bt: jax.Array | None = None) -> jax.Array:
        """tokens_bt: [B, T] int; mask_bt: [B, T] bool (True = real token; default tokens != pad).

        Returns: [B, T, D] in the compute dtype.
        """
        if mask_bt is None:
            mask_bt = tokens_bt != self.config.pad_id
        mask_bt = mask_bt.astype(bool)
        positions_bt = jnp.broadcast_to(jnp.arange(tokens_bt.shape[-1]), tokens_bt.shape)
        x_btd = _constrain(self.embedder.encode(tokens_bt), ("batch", "length", "embed"))
        for layer in self.layers:
            x_btd = layer(x_btd, positions_bt, mask_bt)
        return self.final_norm(x_btd)

    def logits(self, x_btd: jax.Array) -> jax.Array:
        """Tied output logits [B, T, V] float32, soft-capped when the config says so."""
        logits = self.embedder.decode(x_btd)
        cap = self.config.final_logit_softcap
        return logits if cap is None else jnp.tanh(logits / cap) * cap
