"""Logical axis names -> mesh layouts: each mesh axis splits one dimension, and only one it divides."""

from __future__ import annotations

import jax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from vim_jax.train.mesh import logical_to_spec, make_mesh

MESH = AbstractMesh((2, 4), ("data", "fsdp"))


def test_first_divisible_rule_wins_and_an_axis_is_used_once():
    assert logical_to_spec(("layers", "embed", "mlp"), (24, 192, 768), MESH) == PartitionSpec(None, None, "fsdp")
    assert logical_to_spec(("embed", "classes"), (192, 1000), MESH) == PartitionSpec("fsdp", None)
    assert logical_to_spec(("classes",), (1000,), MESH) == PartitionSpec("fsdp")
    assert logical_to_spec(("layers", "mlp"), (2, 6), MESH) == PartitionSpec(None, None)  # 6 % 4 != 0
    assert logical_to_spec(None, (3,), MESH) == PartitionSpec()
    data_only = AbstractMesh((8, 1), ("data", "fsdp"))
    assert logical_to_spec(("layers", "embed", "mlp"), (24, 192, 768), data_only) == PartitionSpec(None, None, None)
    with pytest.raises(ValueError, match="do not match"):
        logical_to_spec(("embed",), (4, 4), MESH)


def test_make_mesh_sizes_and_errors():
    mesh = make_mesh({"data": -1, "fsdp": 1})
    assert mesh.shape == {"data": jax.device_count(), "fsdp": 1}
    assert make_mesh({"data": 1, "fsdp": 1}).devices.size == 1
    with pytest.raises(ValueError, match="needs"):
        make_mesh({"data": jax.device_count() + 1, "fsdp": 1})
    with pytest.raises(ValueError, match="unknown"):
        make_mesh({"model": 2})
