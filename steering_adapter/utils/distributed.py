"""Data parallelism over processes with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc-per-node N -m steering_adapter.cli run RECIPE`` (or ``torchrun ... $(which steering-adapter) run
RECIPE``) starts N copies of the same command; :func:`init_from_environment` joins them into one process group
(``gloo`` on CPU, ``nccl`` when the model runs on CUDA, each process on ``cuda:LOCAL_RANK``). Every process then runs
the same program (SPMD); the heavy work is split and merged at two places only:

- **activation statistics** (:class:`~steering_adapter.directions.collection.ActivationCollector`): batch ``b`` is
  forwarded by
  rank ``b mod N``, and the float64 sums are added across processes with ``all_reduce`` — the statistics are sums,
  so the merge is exact up to float64 reassociation;
- **sampling and judging** (:func:`~steering_adapter.measure.scored_runs.score_prompts`): chunk ``c`` of prompts is
  sampled and
  judged by rank ``c mod N``; after each round of N chunks every process receives every record, and rank 0 alone
  appends them to the run's JSONL files (the resumable records are the same as a single process writes).

Everything else (selection arithmetic, KL, reports) runs on every process with identical inputs; files are written by
rank 0 only (the other ranks write into a private scratch folder), and decisions that depend on files already on disk
(resumed records, cached directions) are taken by rank 0 and broadcast. A process that dies makes ``torchrun`` stop
the others and exit non-zero; running the same command again resumes from rank 0's records.

Multi-node is the same code with torchrun's rendezvous flags, e.g. on each of 2 nodes::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id run1 \\
        -m steering_adapter.cli run RECIPE

(only the node of rank 0 needs the output folder). Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every helper here
is a no-op for a single process. Only ``run`` splits its work (the other commands refuse to start under several
processes); from Python, call :func:`init_from_environment` before :func:`~steering_adapter.run.pipeline.run_recipe` or
a collection, as the CLI does.
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "all_reduce_sum_",
    "broadcast_object",
    "check_same",
    "from_main",
    "init_from_environment",
    "is_distributed",
    "is_main",
    "launched_by_torchrun",
    "local_device",
    "local_world_size",
    "owned",
    "rank",
    "scratch_dir",
    "shutdown",
    "world_size",
]

T = TypeVar("T")

# How long a collective waits for the other processes before failing (a dead peer is normally noticed by torchrun
# much sooner, which then stops every process).
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """Whether a process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def local_world_size() -> int:
    """Processes on this node (``LOCAL_WORLD_SIZE`` from torchrun, else 1)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched_by_torchrun() else 1


def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or device in ("auto", "balanced", "balanced_low_0", "sequential")


def init_from_environment(device: str = "cpu", timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> bool:
    """Join the process group torchrun describes in the environment (nothing happens for a single process).

    Args:
        device: the model's device setting (``"cpu"``, ``"cuda"``, ``"auto"``, ...): ``nccl`` when it names CUDA and
            CUDA is available (the process then uses ``cuda:LOCAL_RANK``), else ``gloo``.
        timeout: how long collectives wait for the other processes.

    Returns:
        Whether a multi-process group is active.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return is_distributed()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build; run a single process")
    backend = "gloo"
    if _wants_cuda(device) and torch.cuda.is_available():
        backend = "nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return is_distributed()


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: str) -> str:
    """The device this process uses for a model configured on ``device``: ``"cuda"`` becomes ``cuda:LOCAL_RANK`` under
    torchrun (one GPU per process); anything else is returned unchanged."""
    if device == "cuda" and launched_by_torchrun():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def owned(index: int) -> bool:
    """Whether work item ``index`` (a batch, a chunk) belongs to this process (round robin: ``index mod N``)."""
    return index % world_size() == rank()


def _communication_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place (a no-op for one process).

    The tensor may live on any device (e.g. a block's GPU of a ``device_map`` model): it is copied to the backend's
    device (CPU for gloo, this process's GPU for nccl) when needed, reduced, and copied back.

    Returns:
        ``tensor``.
    """
    if not is_distributed():
        return tensor
    device = _communication_device()
    if tensor.device == device:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor
    staged = tensor.to(device)
    dist.all_reduce(staged, op=dist.ReduceOp.SUM)
    tensor.copy_(staged)
    return tensor


def broadcast_object(value: T, src: int = 0) -> T:
    """``value`` of rank ``src`` on every process (pickled; a no-op for one process)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, device=_communication_device())
    return box[0]


def from_main(compute: Callable[[], T]) -> T:
    """Run ``compute`` on rank 0 only and give its result to every process (for decisions that depend on files)."""
    return broadcast_object(compute() if is_main() else None)


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (``[value]`` for one process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def check_same(value: Any, what: str) -> None:
    """Fail loudly when the processes disagree about ``value`` (they would otherwise mix unrelated work).

    Raises:
        RuntimeError: naming ``what`` and the ranks' values.
    """
    values = all_gather_objects(value)
    if any(other != values[0] for other in values[1:]):
        shown = ", ".join(f"rank {i}: {str(v)[:80]}" for i, v in enumerate(values))
        raise RuntimeError(f"the processes diverged on {what} ({shown}); they must run the same recipe and settings")


def scratch_dir(prefix: str = "steering-adapter-rank") -> Path:
    """A fresh private folder for the files a process other than rank 0 writes; removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{rank()}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
