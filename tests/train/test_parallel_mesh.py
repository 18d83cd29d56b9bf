"""Mesh shapes and the logical-axis rules (no devices needed beyond one CPU)."""

import jax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from embeddinggemma_jax import parallel
from embeddinggemma_jax.model import ModelConfig, param_logical_axes, param_shapes


def test_mesh_shape_resolves_minus_one_and_checks_sizes():
    assert parallel.mesh_shape({"data": -1}, 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert parallel.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == {
        "data": 2,
        "fsdp": 2,
        "tensor": 2,
    }
    with pytest.raises(ValueError, match="at most one axis"):
        parallel.mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="not divisible"):
        parallel.mesh_shape({"data": -1, "tensor": 3}, 8)
    with pytest.raises(ValueError, match="unknown axes"):
        parallel.mesh_shape({"model": 2}, 2)
    with pytest.raises(ValueError, match="available"):
        parallel.mesh_shape({"data": 2}, 8)


def test_single_device_mesh():
    mesh = parallel.make_mesh({"data": -1}, jax.devices()[:1])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert parallel.batch_shards(mesh) == 1


def _abstract(data=1, fsdp=1, tensor=1):
    return AbstractMesh((data, fsdp, tensor), parallel.MESH_AXES)


def test_rules_shard_weights_and_replicate_what_does_not_divide():
    mesh = _abstract(data=2, fsdp=4, tensor=2)
    rules = parallel.DEFAULT_RULES
    # [D, F] MLP weight: embed over fsdp, mlp over tensor.
    assert parallel.logical_to_spec(("embed", "mlp"), (48, 72), mesh, rules) == PartitionSpec(
        "fsdp", "tensor"
    )
    # 3 heads cannot be split over tensor=2: replicated; the embed axis still over fsdp.
    assert parallel.logical_to_spec(
        ("embed", "heads", "head_dim"), (48, 3, 16), mesh, rules
    ) == PartitionSpec("fsdp")
    # Activations: the batch takes data and fsdp, so embed stays unsharded.
    assert parallel.logical_to_spec(("batch", "length", "embed"), (8, 5, 48), mesh, rules) == (
        PartitionSpec(("data", "fsdp"))
    )
    # Odd vocab (263) is replicated rather than failing.
    assert parallel.logical_to_spec(("vocab", "embed"), (263, 48), mesh, rules) == PartitionSpec(
        None, "fsdp"
    )


def test_param_shardings_cover_the_model():
    cfg = ModelConfig.tiny()
    mesh = parallel.make_mesh({"data": -1}, jax.devices()[:1])
    shardings = parallel.param_shardings(param_logical_axes(cfg), param_shapes(cfg), mesh)
    assert jax.tree.structure(shardings) == jax.tree.structure(param_shapes(cfg))


def test_rules_from_config():
    assert parallel.rules_from_config(None) == parallel.DEFAULT_RULES
    rules = parallel.rules_from_config([["batch", ["data", "fsdp"]], ["mlp", "tensor"]])
    assert rules == (("batch", ("data", "fsdp")), ("mlp", "tensor"))
    with pytest.raises(ValueError, match="not a mesh axis"):
        parallel.rules_from_config([["mlp", "model"]])
