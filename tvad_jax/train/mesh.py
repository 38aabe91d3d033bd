"""The device mesh and the one table that maps logical axis names to mesh axes.

Models annotate parameters with logical names (`nn.with_logical_partitioning(init,
("embed", "mlp"))`) and activations with `nn.with_logical_constraint(x, ("batch", "mlp"))`;
they never name mesh axes. `LOGICAL_AXIS_RULES` is the only place where a logical name meets a
mesh axis. The mesh has three named axes:

  data    pure data parallelism (params replicated along it)
  fsdp    data parallelism whose params and optimizer state are also sharded along it
  tensor  model parallelism inside a layer (mlp, heads, vocab dimensions)

Batches are split over `data` and `fsdp` together. Axes are `AxisType.Auto`: sharding is set by
`jax.jit` in/out shardings and by logical constraints, and the compiler propagates the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or axes, or None = replicated). Rules are tried in order and a mesh
# axis is used at most once per array, so an activation ("batch", "embed") takes ("data", "fsdp")
# for batch and leaves embed replicated, while a parameter ("embed", "mlp") is sharded over
# ("fsdp", "tensor").
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("frames", None),
    ("tubelets", None),
    ("tokens", None),
    ("length", None),
    ("state", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; exactly one may be -1, meaning all remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


def mesh_shape(config: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes with -1 resolved; fails unless they multiply to num_devices."""
    sizes = [config.data, config.fsdp, config.tensor]
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(AXES, sizes))}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1, got {dict(zip(AXES, sizes))}")
    fixed = math.prod(s for s in sizes if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"{num_devices} devices cannot be split into {dict(zip(AXES, sizes))}")
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, have {num_devices}")
    return tuple(sizes)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all devices of all processes) with Auto axes."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config, len(devices))
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES),
                             devices=devices)
    # A subset of devices (e.g. a single-device reference run): plain reshape.
    return Mesh(np.asarray(devices).reshape(shape), AXES,
                axis_types=(AxisType.Auto,) * len(AXES))


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Iterator[Mesh]:
    """Makes `mesh` and the logical rules current, so that models' logical constraints apply."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield mesh


def logical_to_sharding(logical: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """NamedShardings for a tree of boxed params (`nn.LogicallyPartitioned`) or logical specs.

    Unannotated array leaves are replicated.
    """
    specs = nn.get_partition_spec(logical)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> NamedSharding:
    """Sharding of a batch leaf: the leading (batch) dimension over the data-parallel axes."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways a batch is split (the product of the batch axes)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def shard_batch(local_batch: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """Global arrays from this process's slice of the batch (host numpy -> sharded jax.Array).

    Every process passes the rows of the global batch that its devices hold: with the batch
    axes spanning the processes (the usual layout: `jax.make_mesh` orders devices by process),
    process i passes rows [i * b, (i + 1) * b) and the global batch is the concatenation over
    processes in process order. JAX infers the global shape from the sharding.
    """
    sharding = batch_sharding(mesh, rules)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
