"""T5Gemma-style encoder-decoder from Gemma 3 stacks: the model of the UL2 adaptation stage.

  encoder  the Gemma 3 stack with bidirectional attention (local layers see |i - j| < window, as
           `ModelConfig.window` defines it for the embedder, so the adapted encoder drops into
           `EmbeddingGemma` unchanged). Its parameters have exactly `Transformer`'s layout.
  decoder  the Gemma 3 stack with causal self-attention and, in every layer, cross-attention to
           the encoder output (global, no RoPE, with QK-norm like Gemma 3's self-attention),
           between self-attention and the MLP, with its own pre- and post-norms. Output logits
           are tied to the decoder's input embedding (and soft-capped if the config says so).

Parameters::

    {"encoder": Transformer params,
     "decoder": {"embedder", "final_norm", "layer_i": {pre_attention_norm, attn,
                 post_attention_norm, pre_cross_attention_norm, cross_attn,
                 post_cross_attention_norm, pre_ffw_norm, mlp, post_ffw_norm}}}

Both stacks take segment ids and positions, so padded and packed batches (`data.ul2.pad_batch` /
`pack_batch`) are handled alike: a query attends to keys of its own segment only (segment 0 is
padding), at distances measured in per-segment positions. Attention here is the dense masked
kernel (`attention.py`'s reference), O(T * S) memory per layer.

T5Gemma initialisation (`t5gemma_init`): encoder and decoder both from the decoder-only weights;
in the balanced configuration (same shape both sides) each decoder layer's cross-attention and its
norms are copies of that layer's self-attention and norms. Unbalanced (e.g. a smaller decoder from
a smaller decoder-only model): cross-attention starts from scratch, and `cross_attention_mask`
selects the parameters to warm up alone for the first K steps (see `train.ul2`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from embeddinggemma_jax.model.attention import _masked_softmax_attention, _structure
from embeddinggemma_jax.model.config import ModelConfig
from embeddinggemma_jax.model.layers import Einsum, Embed, RMSNorm
from embeddinggemma_jax.model.rope import apply_rope
from embeddinggemma_jax.model.transformer import MLP, REMAT_POLICIES, rope_base

CROSS_ATTENTION_KEYS = ("pre_cross_attention_norm", "cross_attn", "post_cross_attention_norm")
# The same parameters as a path regex (`train.optimizer` rules): decoder/.../<key>/...
CROSS_ATTENTION_PATTERN = "decoder/(.*/)?(" + "|".join(CROSS_ATTENTION_KEYS) + ")(/.*)?"
_CROSS_FROM_SELF = {
    "cross_attn": "attn",
    "pre_cross_attention_norm": "pre_attention_norm",
    "post_cross_attention_norm": "post_attention_norm",
}
CROSS_ATTENTION_INITS = ("self_attention", "scratch")


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
    """Shapes of both stacks. `encoder` must be bidirectional, `decoder` causal; one vocabulary."""

    encoder: ModelConfig
    decoder: ModelConfig

    def __post_init__(self):
        if not self.encoder.bidirectional:
            raise ValueError("EncoderDecoderConfig.encoder must have bidirectional=True")
        if self.decoder.bidirectional:
            raise ValueError("EncoderDecoderConfig.decoder must have bidirectional=False (causal)")
        for field in ("vocab_size", "pad_id"):
            a, b = getattr(self.encoder, field), getattr(self.decoder, field)
            if a != b:
                raise ValueError(f"encoder.{field}={a} differs from decoder.{field}={b}")

    @classmethod
    def balanced(cls, decoder_only: ModelConfig, **overrides) -> EncoderDecoderConfig:
        """Encoder and decoder of the decoder-only model's shape (T5Gemma's balanced setting)."""
        base = decoder_only.replace(**overrides)
        return cls(base.replace(bidirectional=True), base.replace(bidirectional=False))

    @classmethod
    def unbalanced(
        cls, encoder_source: ModelConfig, decoder_source: ModelConfig, **overrides
    ) -> EncoderDecoderConfig:
        """Encoder shaped like `encoder_source`, decoder like (usually smaller) `decoder_source`."""
        return cls(
            encoder_source.replace(bidirectional=True, **overrides),
            decoder_source.replace(bidirectional=False, **overrides),
        )

    @property
    def is_balanced(self) -> bool:
        """True when cross-attention has self-attention's shapes (can be initialised from it)."""
        return self.encoder.embed_dim == self.decoder.embed_dim

    def replace(self, **changes) -> EncoderDecoderConfig:
        return dataclasses.replace(self, **changes)


def _segments(tokens_bt: jax.Array, segment_ids_bt: jax.Array | None, pad_id: int) -> jax.Array:
    """int32 [B, T] segment ids, 0 = padding; a bool mask is read as one segment per row."""
    if segment_ids_bt is None:
        return (tokens_bt != pad_id).astype(jnp.int32)
    return jnp.asarray(segment_ids_bt).astype(jnp.int32)


def _positions(tokens_bt: jax.Array, positions_bt: jax.Array | None) -> jax.Array:
    if positions_bt is None:
        return jnp.broadcast_to(jnp.arange(tokens_bt.shape[-1]), tokens_bt.shape)
    return jnp.asarray(positions_bt).astype(jnp.int32)


def _same_segment(seg_q_bt: jax.Array, seg_k_bs: jax.Array) -> jax.Array:
    """[B, T, S] bool: key is real and in the query's segment."""
    return (seg_q_bt[:, :, None] == seg_k_bs[:, None, :]) & (seg_k_bs[:, None, :] != 0)


def self_attention_masks(
    config: ModelConfig, segment_ids_bt: jax.Array, positions_bt: jax.Array
) -> dict[str, jax.Array]:
    """{"local", "global"} -> [B, T, T] bool: same segment and the layer type's structure
    (causal or not, local window) on per-segment positions."""
    same = _same_segment(segment_ids_bt, segment_ids_bt)
    return {
        t: same & _structure(config, t, positions_bt, positions_bt)
        for t in sorted(set(config.layer_types))
    }


class _Attention(nn.Module):
    """GQA attention with QK-norm; self-attention (RoPE, per layer type) or cross-attention
    (`layer_type=None`: no RoPE, keys/values from a `kv_dim`-wide input). Parameter names are
    those of `transformer.Attention`."""

    config: ModelConfig
    layer_type: str | None
    kv_dim: int | None = None

    @nn.compact
    def __call__(self, x_btd, kv_bsd, q_pos_bt, kv_pos_bs, mask_bts):
        cfg = self.config
        d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_btnh = Einsum(
            (d, n, h), "BTD,DNH->BTNH", ("embed", "heads", "head_dim"), cfg.dtype, name="q"
        )(x_btd)
        kv_bsckh = Einsum(
            (2, self.kv_dim or d, k, h),
            "BSD,CDKH->BSCKH",
            (None, "embed", "kv_heads", "head_dim"),
            cfg.dtype,
            name="kv",
        )(kv_bsd)
        k_bskh, v_bskh = kv_bsckh[:, :, 0], kv_bsckh[:, :, 1]
        q_btnh = RMSNorm(cfg.rms_norm_eps, "head_dim", name="q_norm")(q_btnh)
        k_bskh = RMSNorm(cfg.rms_norm_eps, "head_dim", name="k_norm")(k_bskh)
        if self.layer_type is not None:
            base, scale = rope_base(cfg, self.layer_type)
            q_btnh = apply_rope(q_btnh, q_pos_bt, base, scale)
            k_bskh = apply_rope(k_bskh, kv_pos_bs, base, scale)
        q_btnh = nn.with_logical_constraint(q_btnh, ("batch", "length", "heads", "head_dim"))
        out_btnh = _masked_softmax_attention(q_btnh, k_bskh, v_bskh, mask_bts, cfg)
        return Einsum(
            (n, h, d), "BTNH,NHD->BTD", ("heads", "head_dim", "embed"), cfg.dtype, name="o"
        )(out_btnh)


class _Block(nn.Module):
    """Gemma 3 block; with `cross_kv_dim` set, a cross-attention sub-block after self-attention."""

    config: ModelConfig
    layer_type: str
    cross_kv_dim: int | None = None

    @nn.compact
    def __call__(self, x_btd, positions_bt, self_mask_btt, enc_bsd=None, cross_mask_bts=None):
        eps = self.config.rms_norm_eps
        h = RMSNorm(eps, name="pre_attention_norm")(x_btd)
        h = _Attention(self.config, self.layer_type, name="attn")(
            h, h, positions_bt, positions_bt, self_mask_btt
        )
        x_btd = x_btd + RMSNorm(eps, name="post_attention_norm")(h)
        if self.cross_kv_dim is not None:
            h = RMSNorm(eps, name="pre_cross_attention_norm")(x_btd)
            h = _Attention(self.config, None, self.cross_kv_dim, name="cross_attn")(
                h, enc_bsd.astype(h.dtype), None, None, cross_mask_bts
            )
            x_btd = x_btd + RMSNorm(eps, name="post_cross_attention_norm")(h)
        h = RMSNorm(eps, name="pre_ffw_norm")(x_btd)
        h = MLP(self.config, name="mlp")(h)
        x_btd = x_btd + RMSNorm(eps, name="post_ffw_norm")(h)
        return nn.with_logical_constraint(x_btd, ("batch", "length", "embed"))


class Stack(nn.Module):
    """One Gemma 3 stack over segment ids and positions; `Transformer`'s parameter layout (plus
    cross-attention when `cross_kv_dim` is set)."""

    config: ModelConfig
    cross_kv_dim: int | None = None

    def setup(self):
        cfg = self.config
        self.embedder = Embed(cfg.vocab_size, cfg.embed_dim, cfg.dtype)
        block = _Block
        if cfg.remat != "none":
            block = nn.remat(_Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
        self.layers = [
            block(cfg, t, self.cross_kv_dim, name=f"layer_{i}")
            for i, t in enumerate(cfg.layer_types)
        ]
        self.final_norm = RMSNorm(cfg.rms_norm_eps)

    def __call__(
        self,
        tokens_bt: jax.Array,
        segment_ids_bt: jax.Array,
        positions_bt: jax.Array,
        enc_bsd: jax.Array | None = None,
        enc_segment_ids_bs: jax.Array | None = None,
    ) -> jax.Array:
        """Returns: final-normed states [B, T, D] in the compute dtype."""
        masks = self_attention_masks(self.config, segment_ids_bt, positions_bt)
        cross_mask_bts = None
        if self.cross_kv_dim is not None:
            if enc_bsd is None or enc_segment_ids_bs is None:
                raise ValueError("the decoder needs the encoder output and its segment ids")
            cross_mask_bts = _same_segment(segment_ids_bt, enc_segment_ids_bs)
        x_btd = nn.with_logical_constraint(
            self.embedder.encode(tokens_bt), ("batch", "length", "embed")
        )
        for layer, layer_type in zip(self.layers, self.config.layer_types):
            x_btd = layer(x_btd, positions_bt, masks[layer_type], enc_bsd, cross_mask_bts)
        return self.final_norm(x_btd)

    def logits(self, x_btd: jax.Array) -> jax.Array:
        """Tied output logits [B, T, V] float32, soft-capped when the config says so."""
        logits = self.embedder.decode(x_btd)
        cap = self.config.final_logit_softcap
        return logits if cap is None else jnp.tanh(logits / cap) * cap


class EncoderDecoder(nn.Module):
    """(encoder tokens [B, S], decoder input tokens [B, T]) -> decoder logits [B, T, V] float32.

    Segment ids default to `tokens != pad_id` (pass them explicitly when the decoder start token
    is the pad id, and always for packed batches); positions default to 0..len-1.
    """

    config: EncoderDecoderConfig

    def setup(self):
        cfg = self.config
        self.encoder = Stack(cfg.encoder)
        self.decoder = Stack(cfg.decoder, cross_kv_dim=cfg.encoder.embed_dim)

    def encode(
        self,
        tokens_bs: jax.Array,
        segment_ids_bs: jax.Array | None = None,
        positions_bs: jax.Array | None = None,
    ) -> jax.Array:
        """Encoder states [B, S, D_enc] (final-normed, compute dtype)."""
        seg = _segments(tokens_bs, segment_ids_bs, self.config.encoder.pad_id)
        return self.encoder(tokens_bs, seg, _positions(tokens_bs, positions_bs))

    def decode(
        self,
        enc_bsd: jax.Array,
        enc_segment_ids_bs: jax.Array,
        tokens_bt: jax.Array,
        segment_ids_bt: jax.Array | None = None,
        positions_bt: jax.Array | None = None,
    ) -> jax.Array:
        """Decoder logits [B, T, V] float32."""
        seg = _segments(tokens_bt, segment_ids_bt, self.config.decoder.pad_id)
        x_btd = self.decoder(
            tokens_bt,
            seg,
            _positions(tokens_bt, positions_bt),
            enc_bsd,
            jnp.asarray(enc_segment_ids_bs).astype(jnp.int32),
        )
        return self.decoder.logits(x_btd)

    def __call__(
        self,
        encoder_input_ids: jax.Array,
        decoder_input_ids: jax.Array,
        encoder_segment_ids: jax.Array | None = None,
        decoder_segment_ids: jax.Array | None = None,
        encoder_positions: jax.Array | None = None,
        decoder_positions: jax.Array | None = None,
    ) -> jax.Array:
        enc_seg = _segments(encoder_input_ids, encoder_segment_ids, self.config.encoder.pad_id)
        enc_bsd = self.encode(encoder_input_ids, enc_seg, encoder_positions)
        return self.decode(
            enc_bsd, enc_seg, decoder_input_ids, decoder_segment_ids, decoder_positions
        )


# -- parameters ---------------------------------------------------------------------------------
def _init(config: EncoderDecoderConfig, rng: jax.Array):
    enc = jnp.ones((1, 4), jnp.int32)
    dec = jnp.ones((1, 3), jnp.int32)
    return EncoderDecoder(config).init(rng, enc, dec)["params"]


def init_encoder_decoder_params(config: EncoderDecoderConfig, rng: jax.Array) -> dict:
    """Randomly initialised parameters (plain pytree of float32 arrays)."""
    return nn.meta.unbox(jax.jit(functools.partial(_init, config))(rng))


def _init_cross_attention(config: EncoderDecoderConfig, rng: jax.Array) -> dict:
    """Fresh params of one decoder layer's cross-attention and its two norms."""
    dec, d_enc = config.decoder, config.encoder.embed_dim
    x = jnp.zeros((1, 1, dec.embed_dim), jnp.float32)
    kv = jnp.zeros((1, 1, d_enc), jnp.float32)
    attn = _Attention(dec, None, d_enc).init(rng, x, kv, None, None, jnp.ones((1, 1, 1), bool))
    norm = RMSNorm(dec.rms_norm_eps).init(rng, x)
    return nn.meta.unbox(
        {
            "cross_attn": attn["params"],
            "pre_cross_attention_norm": norm["params"],
            "post_cross_attention_norm": norm["params"],
        }
    )


def encoder_decoder_param_shapes(config: EncoderDecoderConfig) -> dict:
    """jax.ShapeDtypeStruct pytree of the parameters, nothing allocated."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_init, config), jax.random.key(0)))


def encoder_decoder_logical_axes(config: EncoderDecoderConfig) -> dict:
    """PartitionSpecs of logical axis names, matching `init_encoder_decoder_params`."""
    return nn.get_partition_spec(
        jax.eval_shape(functools.partial(_init, config), jax.random.key(0))
    )


def cross_attention_mask(params: Mapping) -> Any:
    """Pytree of bools like `params`: True on the decoder's cross-attention parameters (and their
    norms), the ones trained alone during an unbalanced model's warm-up."""

    def is_cross(path, _):
        keys = [getattr(p, "key", None) for p in path]
        return bool(keys) and keys[0] == "decoder" and any(k in CROSS_ATTENTION_KEYS for k in keys)

    return jax.tree_util.tree_map_with_path(is_cross, params)


def _copy(tree: Any) -> Any:
    """Plain nested dicts of independent float32 host copies (no two leaves share a buffer)."""
    if isinstance(tree, Mapping):
        return {k: _copy(v) for k, v in tree.items()}
    return np.array(tree, np.float32)


def _check_shapes(what: str, got: Any, want: Any) -> None:
    got_flat = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    want_flat = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    if set(got_flat) != set(want_flat):
        missing = sorted(jax.tree_util.keystr(k) for k in set(want_flat) - set(got_flat))
        extra = sorted(jax.tree_util.keystr(k) for k in set(got_flat) - set(want_flat))
        raise ValueError(f"{what}: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, w in want_flat.items():
        if tuple(np.shape(got_flat[key])) != tuple(w.shape):
            raise ValueError(
                f"{what}{jax.tree_util.keystr(key)} has shape {np.shape(got_flat[key])}, "
                f"expected {tuple(w.shape)}"
            )


def t5gemma_init(
    decoder_only_params: Mapping,
    config: EncoderDecoderConfig,
    *,
    decoder_source_params: Mapping | None = None,
    cross_attention_init: str | None = None,
    rng: jax.Array | None = None,
) -> dict:
    """Encoder-decoder parameters from decoder-only Gemma 3 (`Transformer`) parameters.

    Args:
      decoder_only_params: `Transformer` params of the model the encoder comes from (and the
        decoder too, unless `decoder_source_params` is given).
      config: shapes; `config.encoder` must match `decoder_only_params`, `config.decoder` the
        decoder source.
      decoder_source_params: unbalanced setting: `Transformer` params of the (smaller) model the
        decoder comes from.
      cross_attention_init: "self_attention" (copy each layer's self-attention and its norms;
        needs `config.is_balanced`) or "scratch" (fresh random init from `rng`, unit norms).
        Default: "self_attention" when balanced, else "scratch".
      rng: key for the from-scratch cross-attention (default key 0).

    Returns: {"encoder", "decoder"} float32 numpy arrays, no two leaves sharing memory.
    """
    if cross_attention_init is None:
        cross_attention_init = "self_attention" if config.is_balanced else "scratch"
    if cross_attention_init not in CROSS_ATTENTION_INITS:
        raise ValueError(
            f"cross_attention_init must be one of {CROSS_ATTENTION_INITS}, "
            f"got {cross_attention_init!r}"
        )
    if cross_attention_init == "self_attention" and not config.is_balanced:
        raise ValueError(
            "cross_attention_init='self_attention' needs a balanced config (encoder and decoder "
            f"embed_dim equal); got {config.encoder.embed_dim} vs {config.decoder.embed_dim}: "
            "use 'scratch'"
        )
    shapes = encoder_decoder_param_shapes(config)
    source = decoder_only_params if decoder_source_params is None else decoder_source_params
    _check_shapes("decoder_only_params", decoder_only_params, shapes["encoder"])
    self_shapes = {
        k: {n: v for n, v in layer.items() if n not in CROSS_ATTENTION_KEYS}
        if k.startswith("layer_")
        else layer
        for k, layer in shapes["decoder"].items()
    }
    _check_shapes("decoder_source_params", source, self_shapes)

    decoder = _copy(source)
    rng = jax.random.key(0) if rng is None else rng
    fresh = jax.jit(functools.partial(_init_cross_attention, config))
    for i in range(config.decoder.num_layers):
        layer = decoder[f"layer_{i}"]
        if cross_attention_init == "self_attention":
            layer.update({cross: _copy(layer[own]) for cross, own in _CROSS_FROM_SELF.items()})
        else:
            layer.update(_copy(fresh(jax.random.fold_in(rng, i))))
    return {"encoder": _copy(decoder_only_params), "decoder": decoder}
