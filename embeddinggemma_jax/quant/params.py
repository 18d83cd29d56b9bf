"""A scheme applied to a parameter pytree once: the dequantized float params that a model with
`ModelConfig.quant` computes with, for exports (the sentence-transformers folder of a quantized
model) and for checks. Each weight's contraction axes are read from the `Einsum` that uses it,
so this cannot disagree with the forward pass."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from embeddinggemma_jax.model.config import ModelConfig
from embeddinggemma_jax.model.layers import Einsum, Embed
from embeddinggemma_jax.model.model import EmbeddingGemma
from embeddinggemma_jax.quant.quantizers import contraction_axes, fake_quant_weight
from embeddinggemma_jax.quant.schemes import quantizer_for


def weight_layouts(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter path -> contraction axes, for every Einsum weight and the embedding table."""
    found: dict[str, tuple[int, ...]] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        path = "/".join(module.scope.path)
        if isinstance(module, Einsum) and context.method_name == "__call__":
            found[path + "/w"] = contraction_axes(module.eqn)
        elif isinstance(module, Embed) and context.method_name == "encode":
            found[path + "/embedding"] = (1,)  # one row per token; blocks along D
        return next_fun(*args, **kwargs)

    model = EmbeddingGemma(config.replace(quant=None, scan_layers=False, remat="none"))
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32)))
    return found


def quantized_params(params, config: ModelConfig, scheme: str):
    """The float pytree the `scheme`-quantized forward computes with (norms unchanged)."""
    layouts = weight_layouts(config)
    quantize = jax.jit(fake_quant_weight, static_argnums=(0, 2))

    def one(path, leaf):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        quantizer = quantizer_for(scheme, name)
        if quantizer is None:
            return leaf
        return np.asarray(quantize(quantizer, jnp.asarray(leaf, jnp.float32), layouts[name]))

    return jax.tree_util.tree_map_with_path(one, params)
