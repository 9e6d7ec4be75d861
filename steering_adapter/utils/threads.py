"""How many CPU threads torch uses: one intra-op thread per physical core this process may run on and that other
processes are not already keeping busy, never more.

On CPU, two threads per core (hyper-threads) or busy processes whose thread pools add up to more than the cores run
many times slower than one thread per free core: measured here, a LoRA training step of SmolLM2-135M took 32 s with 2
threads beside another busy process on 2 cores, and 4 s with 1 thread. The default therefore takes the physical
cores and subtracts the 1-minute load average at start (rounded, leaving at least one thread). Override it with
``--threads N`` on the command line or the environment variable ``STEERING_ADAPTER_THREADS``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

THREADS_ENV = "STEERING_ADAPTER_THREADS"

__all__ = ["THREADS_ENV", "configure_threads", "default_threads", "physical_cores"]


def physical_cores(cpus: set[int] | None = None, sysfs: str | os.PathLike = "/sys/devices/system/cpu") -> int:
    """Number of distinct physical cores among ``cpus`` (default: the CPUs this process may run on).

    Reads each CPU's ``topology/physical_package_id`` and ``topology/core_id``; CPUs without topology information
    count as one core each.
    """
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(sysfs) / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            package, core = "cpu", str(cpu)
        cores.add((package, core))
    return max(1, len(cores))


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """Physical cores minus the cores other processes keep busy: ``cores − round(load)``, at least 1.

    Args:
        cores: physical cores (default :func:`physical_cores`).
        load: the 1-minute load average (default ``os.getloadavg()[0]``; taken before this process starts working,
            so it counts the others).
    """
    cores = physical_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            load = 0.0
    return max(1, min(cores, cores - int(load + 0.5)))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else ``$STEERING_ADAPTER_THREADS``, else :func:`default_threads`.

    Returns:
        The number of threads set.

    Raises:
        ValueError: for a count below 1 or an environment value that is not an integer.
    """

    if threads is None:
        env = os.environ.get(THREADS_ENV)
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"{THREADS_ENV} must be an integer, got {env!r}") from None
    if threads is None:
        threads = default_threads()
    if threads < 1:
        raise ValueError(f"the number of threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
