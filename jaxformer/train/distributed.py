"""Multi-process start-up: one call before any JAX computation, on one host or many.

`initialize` wraps ``jax.distributed.initialize`` (https://docs.jax.dev/en/latest/
multi_process.html). Three ways to say who is who:

1. Explicit arguments: ``initialize(coordinator_address="10.0.0.1:1234", num_processes=2,
   process_id=0)``.
2. Environment variables (a launcher of your own):
   ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself), ``JAX_NUM_PROCESSES`` and
   ``JAX_PROCESS_ID`` (read here, since JAX reads them only through its cluster plug-ins), and
   optionally ``JAX_LOCAL_DEVICE_IDS`` (read by JAX).
3. Nothing: JAX detects SLURM (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``,
   ``SLURM_PROCID``, ``SLURM_LOCALID``: one process per GPU), Open MPI and Cloud TPU pod
   slices (one process per host, from the TPU metadata server).

On CPU, cross-process collectives need an implementation (gloo), chosen before the backend
starts; `initialize` sets it when the platform is CPU. Each process then sees
``jax.devices()`` (all processes' devices) and ``jax.local_devices()`` (its own); one
`jax.sharding.Mesh` over ``jax.devices()`` spans them all, and `process_batch_rows` says which
rows of a global batch this process reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np

ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {value!r}") from None


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               local_device_ids: int | Sequence[int] | None = None,
               cpu_collectives: str | None = "gloo",
               initialization_timeout: int = 300) -> None:
    """Join this process to the others (``jax.distributed.initialize``).

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator; default
        ``$JAX_COORDINATOR_ADDRESS`` or auto-detection (SLURM, Open MPI, TPU).
      num_processes, process_id: default ``$JAX_NUM_PROCESSES`` / ``$JAX_PROCESS_ID`` or
        auto-detection.
      local_device_ids: the local devices this process uses (default: JAX's choice).
      cpu_collectives: collectives implementation for the CPU backend (``"gloo"``; None leaves
        JAX's setting). Ignored on GPU and TPU.
      initialization_timeout: seconds to wait for every process to join.
    """
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes: expected an int >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not (
            0 <= process_id < num_processes):
        raise ValueError(f"process_id: expected 0 <= process_id < num_processes = "
                         f"{num_processes}, got {process_id}")
    if cpu_collectives is not None:
        # Must precede backend start-up; GPU and TPU backends ignore it.
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids,
                               initialization_timeout=initialization_timeout)


def process_batch_rows(global_batch: int, *, process_index: int | None = None,
                       process_count: int | None = None) -> np.ndarray:
    """The rows ``[start, start + B / P)`` of a global batch of `global_batch` rows that this
    process reads (each process loads only its own slice; `global_batch` must divide evenly)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if global_batch % count:
        raise ValueError(f"global_batch: expected a multiple of the {count} processes, got "
                         f"{global_batch}")
    per = global_batch // count
    return np.arange(index * per, (index + 1) * per)


def global_batch(local: dict[str, np.ndarray], sharding: jax.sharding.NamedSharding
                 ) -> dict[str, jax.Array]:
    """One global `jax.Array` per leaf from each process's own rows (`process_batch_rows`),
    laid out by `sharding` (its leading axis split over the batch axis): no process ever holds
    the other processes' rows."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)
