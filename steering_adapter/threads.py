"""How many CPU threads torch uses: one intra-op thread per physical core this process may run on, never more.

On CPU, two threads per core (hyper-threads) or two busy processes with all-core thread pools each run several times
slower than one thread per core; the default avoids both for a single process. Override it with ``--threads N`` on
the command line or the environment variable ``STEERING_ADAPTER_THREADS`` (e.g. ``1`` when another heavy process
shares the machine).
"""

from __future__ import annotations

import os
from pathlib import Path

THREADS_ENV = "STEERING_ADAPTER_THREADS"

__all__ = ["THREADS_ENV", "configure_threads", "physical_cores"]


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


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else ``$STEERING_ADAPTER_THREADS``, else :func:`physical_cores`.

    Returns:
        The number of threads set.

    Raises:
        ValueError: for a count below 1 or an environment value that is not an integer.
    """
    import torch

    if threads is None:
        env = os.environ.get(THREADS_ENV)
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"{THREADS_ENV} must be an integer, got {env!r}") from None
    if threads is None:
        threads = physical_cores()
    if threads < 1:
        raise ValueError(f"the number of threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
