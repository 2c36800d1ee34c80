"""Data-parallel training across devices and hosts with ``jax.sharding``.

The batch is split along its first axis over a 1-D device :class:`~jax.sharding.Mesh`
(axis ``"batch"``); params and optimiser state are replicated. Under ``jit`` every device
runs the forward pass and the hand-written BPTT on its slice, and XLA inserts the
all-reduce that sums the weight gradients (the loss is a mean over the whole batch, so the
update equals the single-device one up to float rounding).

On several hosts (or several processes on one), call :func:`initialize` (or
``jax.distributed.initialize()``) first in every process: ``jax.devices()`` then lists
every process's devices, :func:`batch_mesh` spans them all, and :func:`shard_batch`
assembles the global batch from each process's local rows. :func:`gather_json` lets the
processes compare what they were told to do before they do it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jrnn._src.compat import explicit_axes
from jrnn.batch import Batch
from jrnn.model import ModelParams
from jrnn.train import Metrics, make_train_step

__all__ = [
    "BATCH_AXIS",
    "batch_mesh",
    "batch_sharding",
    "cluster_processes",
    "gather_json",
    "initialize",
    "make_sharded_train_step",
    "replicate",
    "replicated",
    "shard_batch",
]

BATCH_AXIS = "batch"


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_s: int = 30,
) -> None:
    """Starts JAX's multi-controller runtime in this process (``jax.distributed.initialize``).

    Call it in every process of the job before anything else touches JAX. Arguments left
    ``None`` are found by JAX on the clusters it knows (Slurm, Open MPI, Kubernetes,
    Cloud TPU); elsewhere give all three.

    Args:
        coordinator: ``"host:port"`` of process 0, where it serves the coordination service.
        num_processes: processes in the job.
        process_id: this process's index, ``0 <= process_id < num_processes``.
        heartbeat_timeout_s: a process silent this long counts as dead: JAX then stops the
            others (they exit with SIGABRT and a message that another task died) instead
            of letting them wait in a collective forever. JAX's own default is 100 s. It
            also bounds the barrier a process waits in at exit for the others (JAX's
            default 300 s): a process that stops alone, on an error, exits within it.

    Raises:
        ValueError: an argument out of range, or what JAX could not find by itself.
    """
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be at least 1; got {num_processes}")
    if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
        raise ValueError(f"process_id must be in [0, {num_processes}); got {process_id}")
    if heartbeat_timeout_s < 1:
        raise ValueError(f"heartbeat_timeout_s must be at least 1; got {heartbeat_timeout_s}")
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
        shutdown_timeout_seconds=heartbeat_timeout_s,
    )


def cluster_processes() -> int:
    """The process count of the cluster job JAX detects by itself (Slurm, Open MPI,
    Kubernetes, Cloud TPU), or 1 outside one.

    It asks JAX's own cluster detection (the one ``jax.distributed.initialize()`` uses with
    no arguments), a private part of JAX: if that moves, this returns 1 and the job must
    pass its coordinator, process count and id explicitly.
    """
    try:
        from jax._src import clusters

        with warnings.catch_warnings():  # e.g. "install jax[k8s]" in any Kubernetes pod
            warnings.simplefilter("ignore")
            for env in clusters.ClusterEnv._cluster_types:
                if not env.opt_in_only_method and env.is_env_present():
                    return int(env.get_process_count())
    except Exception:  # a private API: any failure means "not detected"
        return 1
    return 1


def gather_json(value: Any) -> list[Any]:
    """Every process's ``value`` (anything JSON can hold), in process order.

    A collective: every process must call it, in the same order as its other collectives.
    With one process it returns ``[value]`` without touching a device.
    """
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int32))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[: int(n)])) for row, n in zip(rows, np.ravel(sizes), strict=True)]


def batch_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"batch"`` over ``devices`` (default: every device of every host)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must hold at least one device")
    return Mesh(np.array(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits an array's first axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts every array of ``tree`` (params, optimiser state) on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def _check_divisible(batch: Batch, size: int, what: str) -> None:
    rows = int(np.shape(batch.inputs)[0])
    if rows % size:
        raise ValueError(
            f"batch.inputs has {rows} rows ({what}), not a multiple of the {size} devices of "
            "the mesh; pick a batch size divisible by the device count"
        )


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Splits a :class:`~jrnn.train.Batch` over the mesh along its batch axis.

    With one process, ``batch`` is the global batch. With several (after
    ``jax.distributed.initialize()``), it is this host's rows, and the global batch is the
    hosts' rows concatenated in process order.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        _check_divisible(batch, mesh.size, "the global batch")
        return jax.device_put(batch, sharding)
    _check_divisible(batch, len(mesh.local_devices), "this host's rows")
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), batch
    )


def _constrain(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` laid out as ``sharding`` says inside a ``jit``: a sharding constraint on a
    mesh of Auto axes, a ``reshard`` on one of Explicit axes (JAX's default meshes since
    0.8, where the layout is part of the type)."""
    if explicit_axes(sharding.mesh):
        return jax.tree.map(lambda a: jax.sharding.reshard(a, sharding), tree)
    return jax.lax.with_sharding_constraint(tree, sharding)


def make_sharded_train_step(
    optimizer: optax.GradientTransformation, mesh: Mesh, *, jit: bool = True, **options: Any
) -> Callable[[ModelParams, Any, Batch], tuple[ModelParams, Any, Metrics]]:
    """:func:`jrnn.train.make_train_step`, data parallel over ``mesh``.

    The returned ``train_step(params, opt_state, batch)`` takes params and state
    replicated (:func:`replicate`) and a batch split over the mesh (:func:`shard_batch`),
    and returns replicated params, state and metrics.

    Args:
        optimizer: any ``optax.GradientTransformation``.
        mesh: a mesh from :func:`batch_mesh`, or ``jax.make_mesh``'s (Explicit axes; its
            batch axis named ``"batch"``).
        jit: ``True``: the step jitted with those shardings. ``False``: the step to call
            inside the caller's own ``jit`` (a ``lax.scan`` over steps that draws each
            batch on the device, as ``jrnn train`` does): it constrains the batch to the
            mesh and the results to replicated, and XLA partitions the rest.
        **options: as :func:`jrnn.train.make_train_step` takes them (``loss``,
            ``activation``, ``return_sequences``, ``remat``, ``impl``, ``grad``, ...);
            ``impl="pallas"`` on a mesh of Explicit axes (one kernel per shard).

    Raises:
        ValueError: ``impl="pallas"`` on a mesh of Auto axes (:func:`batch_mesh`'s). A
            Pallas kernel is one custom call that XLA's partitioner cannot split by batch:
            each device would gather the whole batch.
    """
    if options.get("impl") == "pallas" and not explicit_axes(mesh):
        raise ValueError(
            "data parallel training takes impl='pallas' on a mesh of Explicit axes "
            "(jax.make_mesh's default, where jrnn runs one kernel per shard); this mesh's "
            "axes are Auto, and XLA cannot split a Pallas kernel over them (it would gather "
            "the batch on every device): use jax.make_mesh, or impl='scan' or 'auto'"
        )
    step = make_train_step(optimizer, jit=False, **options)
    rep, split = replicated(mesh), batch_sharding(mesh)
    if jit:
        return jax.jit(step, in_shardings=(rep, rep, split), out_shardings=(rep, rep, rep))

    def sharded_step(params: ModelParams, opt_state: Any, batch: Batch):
        batch = _constrain(batch, split)
        return _constrain(step(params, opt_state, batch), rep)

    return sharded_step
