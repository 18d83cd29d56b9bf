"""The Gemma 3 stack: bidirectional for the embedder's encoder, causal for a decoder-only LM."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from embeddinggemma_jax.model.attention import attention
from embeddinggemma_jax.model.config import GLOBAL, ModelConfig
from embeddinggemma_jax.model.layers import Einsum, Embed, RMSNorm
from embeddinggemma_jax.model.rope import rope_angles, rotate

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _constrain(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    return nn.with_logical_constraint(x, axes)


def _project(cfg: ModelConfig, name: str, x: jax.Array, shape, equation: str, axes) -> jax.Array:
    """`x` through the projection `name` (weight `shape`), in the compute dtype, quantized as
    `cfg.quant` says; called inside a compact method, the parameters are that module's."""
    return Einsum(shape, equation, axes, cfg.dtype, quant=cfg.quant, name=name)(x)


def rope_base(config: ModelConfig, layer_type: str) -> tuple[float, float]:
    """(base, scale) of the layer type's rotary embedding."""
    if layer_type == GLOBAL:
        return config.rope_global_base, config.rope_global_scale
    return config.rope_local_base, 1.0


def layer_period(layer_types: tuple[str, ...]) -> int:
    """Length of the shortest pattern that repeats to make `layer_types` (6 for Gemma 3's
    five local + one global; the layer count when nothing repeats)."""
    n = len(layer_types)
    return next(
        p for p in range(1, n + 1) if n % p == 0 and layer_types == layer_types[:p] * (n // p)
    )


def token_mask(
    config: ModelConfig,
    tokens_bt: jax.Array,
    mask_bt: jax.Array | None = None,
    segments_bt: jax.Array | None = None,
) -> jax.Array:
    """Real tokens [B, T] bool: segment id > 0 in packed rows, else `mask_bt`, else not padding."""
    if segments_bt is not None:
        return segments_bt > 0
    if mask_bt is None:
        return tokens_bt != config.pad_id
    return mask_bt.astype(bool)


class Attention(nn.Module):
    """Grouped-query self-attention with QK-norm and per-layer-type RoPE."""

    config: ModelConfig
    layer_type: str

    @nn.compact
    def __call__(self, x_btd, rope, kv_mask_bt, segments_bt=None):
        """rope: (sin, cos) of `rope_angles` for this layer type; segments_bt: packed rows' ids."""
        cfg = self.config
        d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_btnh = _project(
            cfg, "q", x_btd, (d, n, h), "BTD,DNH->BTNH", ("embed", "heads", "head_dim")
        )
        # Outputs keep B, T leading (here and in the MLP): a leading C made XLA compute the
        # transposed product and copy activations around it (~10% of a CPU forward).
        kv_btckh = _project(
            cfg,
            "kv",
            x_btd,
            (2, d, k, h),
            "BTD,CDKH->BTCKH",
            (None, "embed", "kv_heads", "head_dim"),
        )
        k_btkh, v_btkh = kv_btckh[:, :, 0], kv_btckh[:, :, 1]
        q_btnh = RMSNorm(cfg.rms_norm_eps, "head_dim", name="q_norm")(q_btnh)
        k_btkh = RMSNorm(cfg.rms_norm_eps, "head_dim", name="k_norm")(k_btkh)
        q_btnh = rotate(q_btnh, *rope)
        k_btkh = rotate(k_btkh, *rope)
        q_btnh = _constrain(q_btnh, ("batch", "length", "heads", "head_dim"))
        out_btnh = attention(
            q_btnh,
            k_btkh,
            v_btkh,
            kv_mask_bt,
            config=cfg,
            layer_type=self.layer_type,
            segments_bs=segments_bt,
        )
        return _project(
            cfg, "o", out_btnh, (n, h, d), "BTNH,NHD->BTD", ("heads", "head_dim", "embed")
        )


class MLP(nn.Module):
    """GeGLU feed-forward with tanh-approximated GELU."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x_btd):
        cfg = self.config
        gate_btcf = _project(
            cfg,
            "gating",
            x_btd,
            (2, cfg.embed_dim, cfg.mlp_dim),
            "BTD,CDF->BTCF",
            (None, "embed", "mlp"),
        )
        h_btf = jax.nn.gelu(gate_btcf[:, :, 0], approximate=True) * gate_btcf[:, :, 1]
        h_btf = _constrain(h_btf, ("batch", "length", "mlp"))
        return _project(
            cfg, "down", h_btf, (cfg.mlp_dim, cfg.embed_dim), "BTF,FD->BTD", ("mlp", "embed")
        )


class Block(nn.Module):
    """Pre- and post-norms around attention and around the MLP, residual in the compute dtype."""

    config: ModelConfig
    layer_type: str

    @nn.compact
    def __call__(self, x_btd, rope, kv_mask_bt, segments_bt=None):
        eps = self.config.rms_norm_eps
        h = RMSNorm(eps, name="pre_attention_norm")(x_btd)
        h = Attention(self.config, self.layer_type, name="attn")(h, rope, kv_mask_bt, segments_bt)
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
        self.embedder = Embed(cfg.vocab_size, cfg.embed_dim, cfg.dtype, cfg.quant)
        policy = REMAT_POLICIES[cfg.remat]
        block = Block if cfg.remat == "none" else nn.remat(Block, policy=policy, prevent_cse=False)
        self.block = block
        self.layers = [block(cfg, t, name=f"layer_{i}") for i, t in enumerate(cfg.layer_types)]
        self.final_norm = RMSNorm(cfg.rms_norm_eps)

    def __call__(
        self,
        tokens_bt: jax.Array,
        mask_bt: jax.Array | None = None,
        segments_bt: jax.Array | None = None,
        positions_bt: jax.Array | None = None,
    ) -> jax.Array:
        """tokens_bt: [B, T] int; mask_bt: [B, T] bool (True = real token; default tokens != pad);
        segments_bt: [B, T] int, for packed rows (several texts per row): which text each token
        belongs to (1, 2, ...; 0 = padding), with positions_bt counting from 0 in each text.
        Without them every row is one text at positions 0..T-1.

        Returns: [B, T, D] in the compute dtype.
        """
        cfg = self.config
        if segments_bt is not None and positions_bt is None:
            raise ValueError("packed rows (segments_bt) need their per-text positions_bt")
        mask_bt = token_mask(cfg, tokens_bt, mask_bt, segments_bt)
        if positions_bt is None:
            positions_bt = jnp.broadcast_to(jnp.arange(tokens_bt.shape[-1]), tokens_bt.shape)
        rope = {
            t: rope_angles(positions_bt, cfg.head_dim, *rope_base(cfg, t))
            for t in sorted(set(cfg.layer_types))
        }
        x_btd = _constrain(self.embedder.encode(tokens_bt), ("batch", "length", "embed"))
        period = layer_period(cfg.layer_types)
        if cfg.scan_layers and period < cfg.num_layers and not self.is_initializing():
            x_btd = self._scan(x_btd, period, rope, mask_bt, segments_bt)
        else:
            for layer, layer_type in zip(self.layers, cfg.layer_types):
                x_btd = layer(x_btd, rope[layer_type], mask_bt, segments_bt)
        return self.final_norm(x_btd)

    def _scan(self, x_btd, period, rope, mask_bt, segments_bt):
        """The layers as a lax.scan over repeats of the `period`-layer pattern: the parameters of
        layers j, j + period, ... are stacked (inside the traced function, so params stay one
        plain entry per layer) and one period's blocks are compiled once."""
        params = self.variables["params"]
        types = self.config.layer_types[:period]
        repeats = self.config.num_layers // period
        stacked = [
            jax.tree.map(
                lambda *xs: jnp.stack(xs),
                *(params[f"layer_{r * period + j}"] for r in range(repeats)),
            )
            for j in range(period)
        ]
        blocks = [self.block(self.config, t, parent=None) for t in types]  # unbound: pure functions

        def one_period(x, period_params):
            for block, t, p in zip(blocks, types, period_params):
                x = block.apply({"params": p}, x, rope[t], mask_bt, segments_bt)
            return x, None

        return jax.lax.scan(one_period, x_btd, stacked)[0]

    def logits(self, x_btd: jax.Array) -> jax.Array:
        """Tied output logits [B, T, V] float32, soft-capped when the config says so."""
        logits = self.embedder.decode(x_btd)
        cap = self.config.final_logit_softcap
        return logits if cap is None else jnp.tanh(logits / cap) * cap
