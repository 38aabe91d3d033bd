"""Multi-process start-up: `jax.distributed.initialize` from the config or the environment.

Call `initialize` before anything else touches JAX devices. Sources, first match wins:

1. `DistributedConfig.coordinator_address` with `num_processes` and `process_id`;
2. the environment: TVAD_COORDINATOR_ADDRESS, TVAD_NUM_PROCESSES, TVAD_PROCESS_ID;
3. `auto_detect=True`: JAX's own cluster detection (SLURM, Open MPI, Kubernetes, Cloud TPU);
4. otherwise a single process, and nothing is initialized.

On CPU, cross-process collectives use gloo (JAX's default), so several processes on one machine
(`127.0.0.1:<port>`) behave like several hosts.
"""
from __future__ import annotations

import dataclasses
import os

import jax
from jax.experimental import multihost_utils


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Where the coordinator is and who this process is; empty/negative = not set."""

    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    auto_detect: bool = False
    initialization_timeout_s: int = 300


def _settings(config: DistributedConfig) -> tuple[str, int, int] | None:
    address = config.coordinator_address or os.environ.get("TVAD_COORDINATOR_ADDRESS", "")
    if not address:
        return None
    num = config.num_processes or int(os.environ.get("TVAD_NUM_PROCESSES", "0"))
    pid = config.process_id if config.process_id >= 0 else int(
        os.environ.get("TVAD_PROCESS_ID", "-1"))
    if num < 1 or not 0 <= pid < num:
        raise ValueError(f"coordinator {address!r} given but num_processes={num}, "
                         f"process_id={pid} are not a valid pair")
    return address, num, pid


def initialize(config: DistributedConfig = DistributedConfig()) -> bool:
    """Join the multi-process job if one is configured; returns whether one was joined
    (also when an earlier call joined it: a sweep joins once, its runs call this again)."""
    if jax.distributed.is_initialized():
        return True
    settings = _settings(config)
    if settings is not None:
        address, num, pid = settings
        if num == 1:
            return False
        jax.distributed.initialize(address, num, pid,
                                   initialization_timeout=config.initialization_timeout_s)
        return True
    if config.auto_detect:
        jax.distributed.initialize(initialization_timeout=config.initialization_timeout_s)
        return jax.process_count() > 1
    return False


def configured(config: DistributedConfig = DistributedConfig()) -> bool:
    """Whether the config or the environment names a multi-process job to join."""
    return bool(config.coordinator_address or os.environ.get("TVAD_COORDINATOR_ADDRESS")
                or config.auto_detect)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
