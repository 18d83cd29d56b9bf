"""Model FLOPs and peak FLOP/s for the MFU estimate.

Forward FLOPs of one sequence of L real tokens through the encoder (matmuls only)::

    2 * P_matmul * L                             # q, kv, o, gating, down of every layer
  + sum over layers of 4 * N * H * L * keys(L)   # QK^T and PV; keys = L (global) or the local
                                                 # window's reach min(L, 2 * window - 1)
  + 2 * P_head                                   # dense projections, once per sequence

The embedding lookup is not a matmul and is not counted. A train step is 3x the forward of the
trained model (forward + backward); GradCache's re-forward is recomputation and not counted, a
frozen teacher's forward is. MFU = model FLOP/s / (peak FLOP/s per device x devices).
"""

from __future__ import annotations

import jax
import numpy as np

from embeddinggemma_jax.model import GLOBAL, ModelConfig

# Dense (no sparsity) peak FLOP/s per device by jax device_kind substring and compute dtype.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float32": 30e12},
    "TPU v6": {"bfloat16": 918e12},
    "TPU v5p": {"bfloat16": 459e12},
    "TPU v5 lite": {"bfloat16": 197e12},
    "TPU v5e": {"bfloat16": 197e12},
    "TPU v4": {"bfloat16": 275e12},
}


def peak_flops_per_device(
    dtype: str, configured: float | None = None, device: jax.Device | None = None
) -> float | None:
    """`configured` if given, else the table's entry for the device kind (None: unknown, e.g. CPU)."""
    if configured:
        return float(configured)
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return None
    kind = device.device_kind
    for key, by_dtype in PEAK_FLOPS.items():
        if key.lower() in kind.lower():
            return by_dtype.get(dtype)
    return None


def matmul_params(cfg: ModelConfig) -> tuple[int, int]:
    """(encoder matmul parameters, head parameters); embeddings and norms excluded."""
    d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    per_layer = d * n * h + 2 * d * k * h + n * h * d + 2 * d * f + f * d
    dims = (d, *cfg.head_dims)
    head = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return per_layer * cfg.num_layers, head


def forward_flops(cfg: ModelConfig, lengths) -> float:
    """Forward FLOPs of sequences with these real lengths (any array of ints)."""
    lengths = np.asarray(lengths, np.float64).reshape(-1)
    if lengths.size == 0:
        return 0.0
    p_matmul, p_head = matmul_params(cfg)
    reach = 2 * cfg.window - 1 if cfg.bidirectional else cfg.window
    attn = 0.0
    for t in cfg.layer_types:
        keys = lengths if t == GLOBAL else np.minimum(lengths, reach)
        attn += float(np.sum(4.0 * cfg.num_heads * cfg.head_dim * lengths * keys))
    return 2.0 * p_matmul * float(lengths.sum()) + attn + 2.0 * p_head * lengths.size
