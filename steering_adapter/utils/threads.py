"""How many CPU threads torch uses: one intra-op thread per physical core this process may run on and that other
processes are not already keeping busy, never more.

On CPU, two threads per core (hyper-threads) or busy processes whose thread pools add up to more than the cores run
many times slower than one thread per free core: measured here, a LoRA training step of SmolLM2-135M took 32 s with 2
threads beside another busy process on 2 cores, and 4 s with 1 thread. The default therefore takes the physical
cores and subtracts the cores other processes keep busy at start (rounded, leaving at least one thread): measured
over 0.2 s from ``/proc/stat`` where there is one, else the 1-minute load average. The load average is a poor
signal right after other work ends: it decays over minutes, so the README's main job, started right after
``scripts/bootstrap.sh``, ran on one thread of an idle two-core machine (55.9 s against 40.5 s on two). Override it
with ``--threads N`` on the command line or the environment variable ``STEERING_ADAPTER_THREADS``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

THREADS_ENV = "STEERING_ADAPTER_THREADS"

__all__ = ["THREADS_ENV", "busy_cores", "configure_threads", "default_threads", "physical_cores"]


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


def busy_cores(stat: str | os.PathLike = "/proc/stat", interval: float = 0.2) -> float | None:
    """How many cores' worth of CPU time the machine spends now, from two readings of ``stat`` ``interval`` seconds
    apart (this process sleeps in between, so it counts the others); ``None`` where ``stat`` cannot be read.

    Args:
        stat: the kernel's CPU counters (Linux ``/proc/stat``: its first line sums every CPU's ticks by state).
        interval: seconds between the two readings.

    Returns:
        Busy time ÷ elapsed time over all CPUs × the number of CPUs, e.g. ``1.0`` while one process keeps one core
        of two busy.
    """

    def ticks() -> tuple[int, int, int] | None:
        try:
            lines = Path(stat).read_text().splitlines()
        except OSError:
            return None
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        fields = lines[0].split() if lines else []
        if not fields or fields[0] != "cpu" or len(fields) < 5 or not cpus:
            return None
        values = [int(value) for value in fields[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values[:8]), idle, cpus  # user .. steal; guest time is already inside user

    first = ticks()
    if first is None:
        return None
    time.sleep(interval)
    second = ticks()
    if second is None:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return 0.0
    return (total - idle) / total * second[2]


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """Physical cores minus the cores other processes keep busy: ``cores − round(load)``, at least 1.

    Args:
        cores: physical cores (default :func:`physical_cores`).
        load: the cores other processes keep busy (default :func:`busy_cores`, measured now; where it cannot be
            measured, the 1-minute load average ``os.getloadavg()[0]``; both taken before this process starts
            working, so they count the others).
    """
    cores = physical_cores() if cores is None else cores
    if load is None:
        load = busy_cores()
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
