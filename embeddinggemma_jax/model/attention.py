"""Attention kernels behind one function, chosen per layer type, length and backend.

All kernels compute the same thing: grouped-query softmax attention where query i may see key j
iff the layer's structure allows it (`ModelConfig.attends`), key j is not padding and, in a packed
row (several texts in one row, told apart by segment ids), both belong to the same text. Rows with
no visible key (padding queries far from any token) return zeros in every kernel.

  xla     masked dense attention, O(T^2); the reference.
  banded  local layers only: blocks of (window - 1) queries attend to their own and the two
          neighbouring key blocks, O(T * window); exactly equal to `xla` on every visible row.
  cudnn   jax.nn.dot_product_attention(implementation="cudnn") for layers whose mask is padding
          only (global layers, local layers no longer than the window; never packed rows); GPU,
          bfloat16.
  splash  TPU Splash attention (Pallas): the layer's structure as a splash mask (local window or
          full, causal for a decoder), padding as segment ids, GQA natively (MQA kernel when
          K == 1); T is padded to a multiple of 128 inside. Padding query rows return zeros.
          No logit softcap. On other backends it runs in Pallas interpret mode (exact, slow: for
          tests only); "auto" picks it on TPU only.

"auto" picks per backend: cudnn / banded / xla on GPU, splash on TPU (xla or banded when a softcap
is set), banded / xla on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from embeddinggemma_jax.model.config import GLOBAL, LOCAL, ModelConfig
from embeddinggemma_jax.model.layers import precision_for

ATTENTION_IMPLS = ("auto", "xla", "banded", "cudnn", "splash")
_SPLASH_LANES = 128  # splash block sizes are multiples of this
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def choose_impl(
    config: ModelConfig,
    layer_type: str,
    length: int,
    backend: str | None = None,
    packed: bool = False,
) -> str:
    """The kernel for one layer at padded length `length` on `backend` (default: jax's), for rows
    holding one text each or, `packed`, several (segment ids)."""
    if config.attention_impl not in ATTENTION_IMPLS:
        raise ValueError(
            f"attention_impl must be one of {ATTENTION_IMPLS}, got {config.attention_impl!r}"
        )
    backend = backend or jax.default_backend()
    padding_only = not packed and (
        layer_type == GLOBAL or (config.bidirectional and length <= config.window)
    )
    if config.attention_impl != "auto":
        impl = config.attention_impl
        if impl == "splash" and config.attn_logit_softcap is not None:
            raise ValueError(
                "attention_impl='splash' does not support attn_logit_softcap "
                f"({config.attn_logit_softcap}); use attention_impl='auto' or 'xla'"
            )
        if impl == "banded" and layer_type != LOCAL:
            return "cudnn" if padding_only and backend == "gpu" and _cudnn_ok(config) else "xla"
        if impl == "cudnn" and not padding_only:
            return "banded" if layer_type == LOCAL else "xla"
        return impl
    if backend == "tpu" and config.attn_logit_softcap is None:
        return "splash"
    if padding_only and backend == "gpu" and _cudnn_ok(config):
        return "cudnn"
    if layer_type == LOCAL and length > 2 * config.window:
        return "banded"
    return "xla"


def _cudnn_ok(config: ModelConfig) -> bool:
    return config.dtype == "bfloat16" and config.attn_logit_softcap is None and config.bidirectional


def attention(
    q_btnh: jax.Array,
    k_bskh: jax.Array,
    v_bskh: jax.Array,
    kv_mask_bs: jax.Array,
    *,
    config: ModelConfig,
    layer_type: str,
    segments_bs: jax.Array | None = None,
) -> jax.Array:
    """Self-attention over one sequence axis (T == S). Returns: [B, T, N, H] in q's dtype.

    segments_bs: [B, S] int segment ids of packed rows (0 on padding): keys of another segment
    are masked too. None: one text per row.
    """
    impl = choose_impl(config, layer_type, q_btnh.shape[1], packed=segments_bs is not None)
    if impl == "banded":
        return _banded(q_btnh, k_bskh, v_bskh, kv_mask_bs, config, segments_bs)
    if impl == "splash":
        interpret = jax.default_backend() != "tpu"
        segments = kv_mask_bs.astype(jnp.int32) if segments_bs is None else segments_bs
        return _splash(q_btnh, k_bskh, v_bskh, kv_mask_bs, segments, config, layer_type, interpret)
    if impl == "cudnn":
        lengths = kv_mask_bs.sum(-1).astype(jnp.int32)
        return jax.nn.dot_product_attention(
            q_btnh,
            k_bskh,
            v_bskh,
            scale=config.query_pre_attn_scalar**-0.5,
            query_seq_lengths=lengths,
            key_value_seq_lengths=lengths,
            implementation="cudnn",
        )
    positions = jnp.arange(q_btnh.shape[1])
    structure_ts = _structure(config, layer_type, positions, positions)
    mask_bts = structure_ts[None] & kv_mask_bs[:, None, :]
    if segments_bs is not None:
        mask_bts &= segments_bs[:, :, None] == segments_bs[:, None, :]
    return _masked_softmax_attention(q_btnh, k_bskh, v_bskh, mask_bts, config)


def _structure(config: ModelConfig, layer_type: str, q_pos, k_pos) -> jax.Array:
    """jnp twin of ModelConfig.attends, usable under jit."""
    dist = q_pos[..., :, None] - k_pos[..., None, :]
    ok = jnp.ones(dist.shape, bool) if config.bidirectional else dist >= 0
    if layer_type == LOCAL:
        ok &= jnp.abs(dist) < config.window
    return ok


def _masked_softmax_attention(q, k, v, mask, config: ModelConfig) -> jax.Array:
    """Dense GQA attention on arbitrary leading axes.

    q: [..., T, N, H]; k, v: [..., S, K, H]; mask: [..., T, S] bool. Returns [..., T, N, H].
    """
    *lead, t, n, h = q.shape
    kv_heads = k.shape[-2]
    q = q.reshape(*lead, t, kv_heads, n // kv_heads, h)
    logits = jnp.einsum(
        "...TKGH,...SKH->...KGTS",
        q,
        k,
        preferred_element_type=jnp.float32,
        precision=precision_for(config.dtype),
    )
    logits = logits * config.query_pre_attn_scalar**-0.5
    if config.attn_logit_softcap is not None:
        cap = config.attn_logit_softcap
        logits = jnp.tanh(logits / cap) * cap
    mask = mask[..., None, None, :, :]
    probs = jax.nn.softmax(jnp.where(mask, logits, _MASKED), axis=-1)
    probs = jnp.where(mask.any(-1, keepdims=True), probs, 0.0).astype(v.dtype)
    out = jnp.einsum("...KGTS,...SKH->...TKGH", probs, v, precision=precision_for(config.dtype))
    return out.reshape(*lead, t, n, h)


def _banded(q_btnh, k_bskh, v_bskh, kv_mask_bs, config: ModelConfig, segments_bs=None):
    """Local attention in blocks of `window - 1`: every key with |i - j| < window lies in the
    query's block or one of its two neighbours (causal: the block or the previous one)."""
    b, t, n, h = q_btnh.shape
    blk = max(config.window - 1, 1)
    nb = -(-t // blk)
    pad = nb * blk - t

    def blocks(x):  # [B, T, ...] -> [B, nb, blk, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape(b, nb, blk, *x.shape[2:])

    def neighbours(x):  # [B, nb, blk, ...] -> [B, nb, 3 * blk, ...]: blocks n-1, n, n+1
        x = jnp.pad(x, [(0, 0), (1, 1)] + [(0, 0)] * (x.ndim - 2))
        return jnp.concatenate([x[:, :-2], x[:, 1:-1], x[:, 2:]], axis=2)

    q = blocks(q_btnh)
    k, v, kv_mask = (neighbours(blocks(x)) for x in (k_bskh, v_bskh, kv_mask_bs))
    block_start = jnp.arange(nb) * blk
    q_pos = block_start[:, None] + jnp.arange(blk)  # [nb, blk]
    k_pos = block_start[:, None] - blk + jnp.arange(3 * blk)  # [nb, 3 blk]
    mask = _structure(config, LOCAL, q_pos, k_pos)[None] & kv_mask[:, :, None, :]
    if segments_bs is not None:
        mask &= blocks(segments_bs)[..., :, None] == neighbours(blocks(segments_bs))[..., None, :]
    out = _masked_softmax_attention(q, k, v, mask, config)
    return out.reshape(b, nb * blk, n, h)[:, :t]


def _splash_module():
    """jax's Splash attention package, imported only when a splash kernel is built (TPU code)."""
    try:
        from jax.experimental.pallas.ops.tpu import splash_attention
    except ImportError as e:  # pragma: no cover - depends on the installed jax
        raise ImportError(
            f"attention_impl='splash' needs jax.experimental.pallas.ops.tpu.splash_attention, "
            f"which jax {jax.__version__} does not provide: {e}"
        ) from e
    return splash_attention


def _splash_mask(config: ModelConfig, layer_type: str, length: int, num_heads: int):
    """The layer's structure over `length` positions as a splash MultiHeadMask [N, T, T].

    LocalMask's window (left, right) admits keys j with i - left <= j <= i + right, so our
    |i - j| < window is (window - 1, window - 1), and causal 0 <= i - j < window is (window - 1, 0).
    """
    sa = _splash_module()
    shape = (length, length)
    if layer_type == LOCAL:
        right = config.window - 1 if config.bidirectional else 0
        mask = sa.LocalMask(shape, (config.window - 1, right), offset=0)
    elif config.bidirectional:
        mask = sa.FullMask(shape)
    else:
        mask = sa.CausalMask(shape)
    return sa.MultiHeadMask([mask] * num_heads)


def _splash_block(length: int) -> int:
    """Largest block (512, 256 or 128) that divides the padded length."""
    return next(b for b in (512, 256, _SPLASH_LANES) if length % b == 0)


def _splash(
    q_btnh,
    k_bskh,
    v_bskh,
    kv_mask_bs,
    segments_bs,
    config: ModelConfig,
    layer_type: str,
    interpret: bool,
) -> jax.Array:
    """Splash attention; padding enters as segment id 0 (texts: 1, or 1.. in packed rows).

    Splash lets query i see key j iff the static mask allows it and the segment ids are equal, so
    real queries never see padding keys, and every row sees at least itself (no empty softmax).
    Padding queries see padding keys; their rows are zeroed after the kernel.
    """
    sa = _splash_module()
    b, t, n, h = q_btnh.shape
    kv_heads = k_bskh.shape[2]
    tp = -(-t // _SPLASH_LANES) * _SPLASH_LANES
    blk = _splash_block(tp)
    block_sizes = sa.BlockSizes(
        block_q=blk,
        block_kv=blk,
        block_kv_compute=blk,
        block_q_dkv=blk,
        block_kv_dkv=blk,
        block_kv_dkv_compute=blk,
        use_fused_bwd_kernel=True,
    )
    make = sa.make_splash_mqa if kv_heads == 1 else sa.make_splash_mha  # MHA kernel does GQA
    kernel = make(
        _splash_mask(config, layer_type, tp, n),
        block_sizes=block_sizes,
        head_shards=1,
        q_seq_shards=1,
        **({"interpret": True} if interpret else {}),
    )

    def to_heads_first(x):  # [B, T, X, H] -> [B, X, Tp, H]
        return jnp.pad(x, [(0, 0), (0, tp - t), (0, 0), (0, 0)]).transpose(0, 2, 1, 3)

    # Splash does not scale the logits: scale q (in float32, then back to q's dtype).
    scale = config.query_pre_attn_scalar**-0.5
    q_bnth = to_heads_first((q_btnh.astype(jnp.float32) * scale).astype(q_btnh.dtype))
    k_bksh, v_bksh = to_heads_first(k_bskh), to_heads_first(v_bskh)
    if kv_heads == 1:
        k_bksh, v_bksh = k_bksh[:, 0], v_bksh[:, 0]  # MQA kernel: k, v are [S, H]
    segments_bs = jnp.pad(segments_bs.astype(jnp.int32), [(0, 0), (0, tp - t)])

    def one(q, k, v, seg):
        return kernel(q, k, v, segment_ids=sa.SegmentIds(q=seg, kv=seg))

    out_btnh = jax.vmap(one)(q_bnth, k_bksh, v_bksh, segments_bs).transpose(0, 2, 1, 3)[:, :t]
    return jnp.where(kv_mask_bs[:, :, None, None], out_btnh, 0).astype(q_btnh.dtype)
