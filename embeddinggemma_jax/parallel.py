"""Device mesh, logical-axis rules and shardings.

The model names every parameter axis (and its key activations) with a *logical* name: ``vocab``,
``embed``, ``heads``, ``kv_heads``, ``head_dim``, ``mlp``, ``batch``, ``length``. One rules table
maps logical names to the mesh axes ``data`` (pure data parallelism), ``fsdp`` (data parallelism
whose parameters and optimizer state are sharded too) and ``tensor`` (tensor parallelism)::

    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})       # -1: all remaining devices
    rules = DEFAULT_RULES
    shardings = param_shardings(param_logical_axes(cfg), param_shapes(cfg), mesh, rules)

A dimension whose size the assigned mesh axes do not divide is replicated instead (the tiny test
model's odd sizes, the 300m model's 3 heads on a tensor axis of 2): the same rules serve every
model and every mesh. Rules are tried in order, and a mesh axis is used at most once per array, so
``batch -> (data, fsdp)`` first and ``embed -> fsdp`` later shards activations [B, T, D] over the
batch only, while weights [D, F] get their ``embed`` axis sharded over ``fsdp``.

Multi-host: call `initialize_distributed` before anything touches a jax backend. Besides the
clusters JAX detects itself (TPU pods, SLURM, Open MPI, Kubernetes), a launcher may set
``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID`` (e.g. two processes on one machine: ``JAX_PLATFORMS=cpu``; CPU collectives
are JAX's default, gloo).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch is split over

# (logical name, mesh axis / axes / None), in priority order.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv_heads", None),
    ("head_dim", None),
    ("length", None),
)

Rules = Sequence[tuple[str, Any]]


# -- multi-process ------------------------------------------------------------------------------
_DISTRIBUTED_ENV = (
    "JAX_COORDINATOR_ADDRESS",  # explicit
    "COORDINATOR_ADDRESS",
)


def _looks_multi_process() -> bool:
    if any(os.environ.get(k) for k in _DISTRIBUTED_ENV):
        return True
    # TPU VM pods list their workers; SLURM and Open MPI give a task count.
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        try:
            if int(os.environ.get(key, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def initialize_distributed(mode: str | bool = "auto") -> bool:
    """Calls ``jax.distributed.initialize()`` when running as several processes.

    Args:
      mode: ``"auto"`` (when the environment shows several processes: TPU pod workers, SLURM,
        Open MPI, or ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` /
        ``JAX_PROCESS_ID``), ``True``/``"on"`` (always) or
        ``False``/``"off"`` (never).
    Returns: whether it initialised (False when already initialised or single-process).
    """
    if isinstance(mode, str):
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"distributed must be 'auto', 'on' or 'off', got {mode!r}")
        mode = {"auto": None, "on": True, "off": False}[mode]
    if mode is False or (mode is None and not _looks_multi_process()):
        return False
    if jax.distributed.is_initialized():
        return False
    # JAX reads JAX_COORDINATOR_ADDRESS itself, but the process count and id only from the
    # clusters it detects; these two let any launcher (or a test) start the processes.
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(count) if count else None, process_id=int(index) if index else None
    )
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def preemption_service() -> bool:
    """Whether jax.distributed's preemption service runs (several processes): it catches
    SIGTERM in every process, and ``multihost_utils.reached_preemption_sync_point(step)`` then
    turns True in all of them at the same step."""
    if jax.process_count() == 1:
        return False
    from jax._src import distributed  # no public accessor for the sync manager

    return distributed.global_state.preemption_sync_manager is not None


# -- mesh ---------------------------------------------------------------------------------------
def mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Resolves the one -1 entry (if any) so the sizes multiply to `num_devices`."""
    axes = {str(k): int(v) for k, v in dict(axes).items()}
    unknown = set(axes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)} (expected {MESH_AXES})")
    sizes = {a: axes.get(a, 1) for a in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {free}")
    for a, s in sizes.items():
        if s != -1 and s < 1:
            raise ValueError(f"mesh.{a} must be a positive size or -1, got {s}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {sizes}: {num_devices} devices are not divisible by the fixed axes' "
                f"product {fixed}"
            )
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(
            f"mesh {sizes} has {math.prod(sizes.values())} devices, but {num_devices} are "
            "available (set one axis to -1 to use all)"
        )
    return sizes


def make_mesh(
    axes: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all devices of all processes).

    Uses `jax.make_mesh`'s topology-aware device order (ICI/NVLink-local ``tensor``) with Auto
    axis types, so sharding follows ``in_shardings`` and logical constraints.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(axes or {"data": -1}, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    try:
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
    except Exception:  # odd device subsets the topology helper refuses: plain order
        return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """Mesh axes the batch dimension is split over (those of BATCH_AXES in the mesh)."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_shards(mesh: Mesh) -> int:
    """How many ways the batch is split (the global batch must be a multiple of it)."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


# -- logical axes -> shardings ------------------------------------------------------------------
def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
    """Normalises a rules table from a config (lists from JSON, None for the default)."""
    if rules is None or (isinstance(rules, (list, tuple)) and not rules):
        return DEFAULT_RULES
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, (list, tuple)) or len(rule) != 2:
            raise ValueError(
                f"logical_axis_rules[{i}]: expected (logical name, mesh axes), got {rule!r}"
            )
        name, target = rule
        if isinstance(target, list):
            target = tuple(target)
        targets = target if isinstance(target, tuple) else (target,)
        for t in targets:
            if t is not None and t not in MESH_AXES:
                raise ValueError(
                    f"logical_axis_rules[{i}]: {t!r} is not a mesh axis (expected {MESH_AXES})"
                )
        out.append((str(name), target))
    return tuple(out)


def _axis_size(mesh: Mesh, target) -> int:
    if target is None:
        return 1
    targets = target if isinstance(target, tuple) else (target,)
    return math.prod(mesh.shape[t] for t in targets)


def logical_to_spec(
    logical: PartitionSpec | Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
) -> PartitionSpec:
    """Mesh PartitionSpec for an array of `shape` with logical axis names `logical`.

    Mesh axes that do not divide their dimension (or are not in the mesh) are dropped: that
    dimension is replicated.
    """
    if logical is None or len(logical) == 0:
        return PartitionSpec()
    if len(logical) != len(shape):
        raise ValueError(f"logical axes {tuple(logical)} do not match shape {tuple(shape)}")
    mesh_axes = nn.logical_to_mesh_axes(tuple(logical), rules)
    out = []
    for dim, target in zip(shape, mesh_axes):
        if target is not None:
            targets = target if isinstance(target, tuple) else (target,)
            targets = tuple(t for t in targets if t in mesh.axis_names and mesh.shape[t] > 1)
            target = None if not targets else (targets[0] if len(targets) == 1 else targets)
        if target is not None and dim % _axis_size(mesh, target):
            target = None
        out.append(target)
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec) or x is None


def param_shardings(logical_axes: Any, shapes: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedSharding pytree for parameters: `logical_axes` (PartitionSpecs of logical names, as
    `model.param_logical_axes` returns) and `shapes` (arrays or ShapeDtypeStructs) share a tree."""
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, logical_to_spec(spec, x.shape, mesh, rules)),
        logical_axes,
        shapes,
        is_leaf=_is_spec,
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shardings_like_params(tree: Any, params_shardings: Any, params_shapes: Any, mesh: Mesh):
    """Shardings for a pytree that embeds copies of the parameter tree (optimizer state: Adam's
    moments, MultiSteps' accumulators, ...): a leaf whose key path ends with a parameter's path
    and has its shape gets that parameter's sharding; every other leaf (counts, scalars) is
    replicated."""
    by_path: dict[tuple[str, ...], tuple[tuple[int, ...], NamedSharding]] = {}
    flat_sh = jax.tree_util.tree_flatten_with_path(params_shardings)[0]
    flat_shape = jax.tree.leaves(params_shapes)
    for (path, sh), x in zip(flat_sh, flat_shape):
        by_path[tuple(map(str, path))] = (tuple(x.shape), sh)
    rep = replicated(mesh)

    def pick(path, leaf):
        keys = tuple(map(str, path))
        shape = tuple(getattr(leaf, "shape", ()))
        for i in range(len(keys)):
            hit = by_path.get(keys[i:])
            if hit is not None and hit[0] == shape:
                return hit[1]
        return rep

    return jax.tree_util.tree_map_with_path(pick, tree)


def describe(mesh: Mesh) -> str:
    kinds = sorted({d.device_kind for d in mesh.devices.flat})
    sizes = ", ".join(f"{a}={mesh.shape[a]}" for a in mesh.axis_names)
    return f"mesh({sizes}) over {mesh.devices.size} x {'/'.join(kinds)}"
