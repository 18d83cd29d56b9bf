"""The task interface the trainer is generic over, and the jitted, sharded train step.

A `TrainTask` supplies the model (parameter shapes, logical axes, initial parameters, compute
dtype), the data (global batch size, a checkpointable iterator of host batches and how a host batch
becomes device arrays), the objective (``value_and_grad``), which metrics the progress line shows,
optimizer freezing rules it needs, its evaluation, and what is saved beside the checkpoints
(tokenizer, export info). The trainer supplies everything else: mesh, shardings, optimizer,
checkpoints, logging, evaluation scheduling. Preparing data before a task exists (e.g. building a
dataset and a tokenizer) is the config's ``prepare`` step, which the trainer runs first.

Tasks are found by name in `TASKS` (``config.task``); adding one is one entry there.

The train step::

    state, metrics = step(state, batch, frozen)

is ``jax.jit`` with ``in_shardings`` (state as `state.state_shardings`, every batch leaf split on
its leading axis over the mesh's batch axes, frozen params as the task says), ``out_shardings``
(the same state shardings, replicated metrics) and the state donated. It is traced under the mesh
and the logical-axis rules, so the model's activation constraints apply.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from embeddinggemma_jax import parallel
from embeddinggemma_jax.train.state import TrainState

Metrics = dict[str, jax.Array]


class CheckpointableIterator(Iterator[dict[str, Any]]):
    """What `TrainTask.data_iterator` returns (a Grain ``DatasetIterator`` is one)."""

    def get_state(self) -> dict[str, Any]: ...  # JSON-able

    def set_state(self, state: Mapping[str, Any]) -> None: ...


# config.task -> "module:class" of its TrainTask, imported only when used.
TASKS: dict[str, str] = {
    "contrastive": "embeddinggemma_jax.train.contrastive:ContrastiveTask",
    "ul2": "embeddinggemma_jax.train.ul2:UL2Task",
    "causal_lm": "embeddinggemma_jax.train.causal_lm:CausalLMTask",
}


def task_class(name: str) -> type[TrainTask]:
    """The `TrainTask` class registered as `name` in `TASKS`; LocatedError (config.task) if none."""
    from embeddinggemma_jax.errors import LocatedError, did_you_mean

    if name not in TASKS:
        raise LocatedError(
            f"unknown task {name!r} (known: {', '.join(sorted(TASKS))}){did_you_mean(name, TASKS)}",
            where="config.task",
        )
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


class TrainTask(abc.ABC):
    """A training task: model, data and objective, plugged into the generic `Trainer`.

    Constructed as ``Task(config, batch_shards=n)`` (n: the mesh's batch shards). Besides the
    methods below, the trainer reads these attributes:

      name: the task's name (logs, export info).
      global_batch_size: rows of one global batch (None: not checked against the mesh).
      compute_dtype: the model's compute dtype ("float32", "bfloat16"; the MFU peak's column).
      shown_metrics: metrics the stdout log line shows, in order (everything is logged to
        TensorBoard and metrics.jsonl; the step adds "loss", "grad_norm", "learning_rate").
    """

    name: str = "task"
    global_batch_size: int | None = None
    compute_dtype: str = "float32"
    shown_metrics: tuple[str, ...] = ("loss", "grad_norm")

    # -- model --------------------------------------------------------------------------------
    @abc.abstractmethod
    def param_shapes(self) -> Any:
        """ShapeDtypeStruct pytree of the trained parameters (float32)."""

    @abc.abstractmethod
    def param_logical_axes(self) -> Any:
        """PartitionSpec pytree of logical axis names, same structure as `param_shapes`."""

    @abc.abstractmethod
    def initial_params(self, rng: jax.Array, shardings: Any) -> Any:
        """Parameters to start from (random, or loaded weights), placed with `shardings`."""

    def trainable(self) -> Sequence[tuple[str, int | None, int | None]]:
        """Freezing / warm-up rules the task adds after ``config.optimizer.trainable`` (same form:
        ``(path regex, from update, until update)``; see `train.optimizer`)."""
        return ()

    def frozen_params(self) -> tuple[Any, Any]:
        """(params, logical axes) of frozen models the step needs (e.g. a teacher), or (None, None)."""
        return None, None

    # -- data ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def data_iterator(self, start_step: int = 0) -> CheckpointableIterator:
        """Opens (and validates) the training data; host batches from `start_step` on."""

    def device_batch(self, host_batch: Mapping[str, Any], sharding: NamedSharding) -> Any:
        """The global batch the step consumes, from this process's host batch: a pytree of
        ``jax.Array`` with the batch as leading axis, split by `sharding` (default: every numpy
        array of the host batch, via ``jax.make_array_from_process_local_data``)."""
        n = jax.process_count()

        def put(x):
            return jax.make_array_from_process_local_data(
                sharding, x, (x.shape[0] * n, *x.shape[1:])
            )

        arrays = {k: v for k, v in host_batch.items() if _has_arrays(v)}
        return jax.tree.map(put, arrays)

    def batch_stats(self, host_batch: Mapping[str, Any]) -> dict[str, float]:
        """Host-side counts of a batch: ``tokens`` (real tokens) and ``flops`` (model FLOPs of the
        train step: forward + backward, recomputation not counted; 0 if unknown)."""
        tokens = sum(
            int(np.sum(v["mask"]))
            for v in host_batch.values()
            if isinstance(v, Mapping) and "mask" in v
        )
        return {"tokens": tokens, "flops": 0.0}

    # -- objective ----------------------------------------------------------------------------
    @abc.abstractmethod
    def value_and_grad(
        self, params: Any, batch: Any, rng: jax.Array, frozen: Any
    ) -> tuple[tuple[jax.Array, Metrics], Any]:
        """((loss, metrics), grads), pure; traced inside the jitted step."""

    # -- evaluation and export ----------------------------------------------------------------
    def evaluate(self, params: Any, step: int) -> dict[str, float] | None:
        """Periodic evaluation on the host (None: the task has none)."""
        return None

    def export_info(self) -> dict[str, Any]:
        """JSON-able description stored with every checkpoint (model config, prompts, ...)."""
        return {}

    def tokenizer_file(self):
        """A file to copy into the workdir beside the checkpoints (the tokenizer), or None."""
        return None


def _has_arrays(x: Any) -> bool:
    return any(isinstance(leaf, (np.ndarray, jax.Array)) for leaf in jax.tree.leaves(x))


def make_train_step(
    task: TrainTask,
    tx: optax.GradientTransformation,
    lr_fn: Callable[[Any], jax.Array],
    mesh: Mesh,
    rules,
    state_shardings: TrainState,
    frozen_shardings: Any = None,
    *,
    donate: bool = True,
    skip_nonfinite: bool = True,
) -> Callable[[TrainState, Any, Any], tuple[TrainState, Metrics]]:
    """The jitted, sharded train step ``(state, batch, frozen) -> (state, metrics)``.

    Metrics: the task's, plus ``loss``, ``grad_norm`` (of this micro-batch's gradient, before
    clipping) and ``learning_rate`` (of this step's update). With `skip_nonfinite`, a step whose
    loss or gradient is not finite keeps the old params and optimizer state (the step counter
    still advances) and reports ``nonfinite`` = 1 (else 0).
    """

    def train_step(state: TrainState, batch: Any, frozen: Any):
        (loss, metrics), grads = task.value_and_grad(state.params, batch, state.step_rng(), frozen)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        metrics = dict(metrics)
        if skip_nonfinite:  # a NaN / inf never reaches the parameters or the optimizer state
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            params, opt_state = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old),
                (params, opt_state),
                (state.params, state.opt_state),
            )
            metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        metrics.update(loss=loss, grad_norm=grad_norm, learning_rate=lr_fn(state.step))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    batch_sharding = NamedSharding(mesh, PartitionSpec(parallel.batch_axes(mesh)))
    jitted = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding, frozen_shardings),
        out_shardings=(state_shardings, parallel.replicated(mesh)),
        donate_argnums=(0,) if donate else (),
    )

    def step(state: TrainState, batch: Any, frozen: Any = None):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jitted(state, batch, frozen)

    step.jitted = jitted  # for AOT inspection (lower/compile) in benchmarks
    return step
