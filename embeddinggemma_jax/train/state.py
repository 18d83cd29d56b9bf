"""The train state (step, float32 params, optimizer state, rng) and its shardings."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from embeddinggemma_jax import parallel


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes.

    Attributes:
      step: int32 scalar, train steps (micro-batches) done.
      params: float32 parameter pytree.
      opt_state: the optax state for `params`.
      rng: uint32 [2] raw PRNG key; the step's key is ``fold_in(rng, step)`` so a resumed run
        draws exactly what an uninterrupted one would.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array

    def step_rng(self) -> jax.Array:
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def check_float32(params: Any, where: str = "params") -> None:
    """Parameters are kept in float32 (the compute dtype is the model config's)."""
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.dtype(x.dtype) != jnp.float32:
            raise TypeError(
                f"{where}{jax.tree_util.keystr(path)} is {x.dtype}; parameters must be float32 "
                "(set the compute dtype with config.model.dtype)"
            )


def state_shardings(
    tx: optax.GradientTransformation, params_shapes: Any, params_shardings: Any, mesh: Mesh
) -> TrainState:
    """TrainState of NamedShardings: params as given, optimizer moments like their parameter,
    step / rng / counts replicated."""
    abstract_opt = jax.eval_shape(tx.init, params_shapes)
    rep = parallel.replicated(mesh)
    return TrainState(
        step=rep,
        params=params_shardings,
        opt_state=parallel.shardings_like_params(
            abstract_opt, params_shardings, params_shapes, mesh
        ),
        rng=rep,
    )


def abstract_state(
    tx: optax.GradientTransformation, params_shapes: Any, shardings: TrainState
) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the whole state: the restore target."""
    params = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        params_shapes,
        shardings.params,
    )
    opt = jax.eval_shape(tx.init, params_shapes)
    opt = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), opt, shardings.opt_state
    )
    return TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32, sharding=shardings.step),
        params=params,
        opt_state=opt,
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=shardings.rng),
    )


def create_state(
    params: Any,
    tx: optax.GradientTransformation,
    shardings: TrainState,
    seed: int,
    step: int = 0,
) -> TrainState:
    """A fresh state (new optimizer state) around `params`, placed on the mesh."""
    check_float32(params)
    params = jax.device_put(params, shardings.params)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    rng = jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32)
    return TrainState(
        step=jax.device_put(jnp.asarray(step, jnp.int32), shardings.step),
        params=params,
        opt_state=opt_state,
        rng=jax.device_put(rng, shardings.rng),
    )
