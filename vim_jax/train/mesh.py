"""The device mesh and the logical-axis rules that lay parameters, optimizer state and batches on it.

The mesh has two axes: ``data`` (pure data parallelism: every device holds whole parameters) and
``fsdp`` (fully-sharded data parallelism: parameters and optimizer state are split over it, and
XLA gathers them for each use). Batches are split over both axes together.

Model parameters name their dimensions with logical axes (``layers``, ``embed``, ``mlp``,
``direction``, ``state``, ``conv``, ``classes``; see ``vim_jax.models.layers.param``). Rules map
those names to mesh axes; a dimension that a mesh axis does not divide stays unsplit, so any
model fits any mesh (a two-block test model on eight devices, say).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis, tried in order: a parameter's first dimension that can be split over
# `fsdp` is split, the others stay whole (one mesh axis may split one dimension only). The width
# of the mixer (`mlp`, 2 x embed) comes first because it is the largest dimension of most weights.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("mlp", "fsdp"),
    ("embed", "fsdp"),
    ("classes", "fsdp"),
    ("layers", None),
    ("direction", None),
    ("state", None),
    ("conv", None),
)


def initialize_distributed(config) -> None:
    """Joins this process to a multi-host run when ``config.distributed`` (before any JAX work).

    On TPU pods, SLURM and Open MPI ``jax.distributed.initialize`` finds the coordinator, the
    number of processes and this process's id itself; elsewhere every process is given
    ``config.coordinator_address`` (host:port of process 0), ``config.num_processes`` and its own
    ``config.process_id``. A field left at None is auto-detected.
    """
    if config.distributed:
        jax.distributed.initialize(coordinator_address=config.coordinator_address,
                                   num_processes=config.num_processes, process_id=config.process_id)


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh; one size may be -1 (all remaining devices).

    A mesh smaller than the device count uses the first devices, so that ``{'data': 1, 'fsdp': 1}``
    runs on one device of many (the reference run of the sharding tests).
    """
    devices = list(jax.devices() if devices is None else devices)
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh axes must be {MESH_AXES}, got unknown {sorted(unknown)}")
    sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(shape)}")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not split into a mesh {dict(shape)}")
        sizes[sizes.index(-1)] = len(devices) // known
    if any(s < 1 for s in sizes) or math.prod(sizes) > len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
                         f"{len(devices)} are available")
    if math.prod(sizes) < len(devices) and jax.process_count() > 1:
        raise ValueError("on several hosts the mesh must use every device")
    grid = np.asarray(devices[: math.prod(sizes)], dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def logical_to_spec(logical_axes: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES) -> PartitionSpec:
    """The PartitionSpec of one array from its logical axis names.

    Rules are tried in order; each mesh axis splits at most one dimension, and only a dimension
    its size divides (otherwise the dimension is kept whole: replication costs memory, never
    correctness). Axes of size 1 split nothing and are left out.
    """
    if not logical_axes:
        return PartitionSpec()
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
    spec: list[str | None] = [None] * len(shape)
    used: set[str] = set()
    for logical, mesh_axis in rules:
        if mesh_axis is None or mesh_axis in used or logical not in logical_axes or mesh.shape[mesh_axis] == 1:
            continue
        dim = list(logical_axes).index(logical)
        if spec[dim] is None and shape[dim] % mesh.shape[mesh_axis] == 0:
            spec[dim] = mesh_axis
            used.add(mesh_axis)
    return PartitionSpec(*spec)


def logical_axes_of(abstract_state: nnx.State) -> dict:
    """Nested dict (like ``nnx.to_pure_dict``) of each variable's logical axes (None if unnamed)."""
    axes = jax.tree.map(lambda v: v.get_metadata().get("out_sharding"), abstract_state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(axes) if isinstance(axes, nnx.State) else axes


def state_shardings(abstract_state: nnx.State, mesh: Mesh,
                    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES) -> dict:
    """NamedShardings for a model state (abstract or concrete), as a pure nested dict."""
    def sharding(variable: nnx.Variable) -> NamedSharding:
        value = variable.get_value()
        axes = variable.get_metadata().get("out_sharding")
        return NamedSharding(mesh, logical_to_spec(axes, value.shape, mesh, rules))

    shardings = jax.tree.map(sharding, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(shardings)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every mesh axis."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def num_batch_shards(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)
