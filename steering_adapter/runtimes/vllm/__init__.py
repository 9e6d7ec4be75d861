"""vLLM integration: a sampling backend and steered generation / serving with steering adapters.

Needs vLLM (``pip install 'steering-adapter[vllm]'``, or ``bash scripts/bootstrap.sh --vllm`` for the tested CPU
build in ``.venv-vllm``). Offline::

    from steering_adapter.runtimes.vllm import VllmSampler
    sampler = VllmSampler("Qwen/Qwen3-4B-Instruct-2507", adapters=["org/no-political-refusal"])

or any ``vllm.LLM`` / ``vllm serve`` with :func:`engine_kwargs` (see ``docs/vllm.md``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from steering_adapter.runtimes.vllm.adapters import (
    AdapterSpec,
    AdapterVectors,
    parse_adapter_specs,
    read_adapter,
    write_adapter,
)

__all__ = [
    "AdapterSpec",
    "AdapterVectors",
    "VllmSampler",
    "engine_kwargs",
    "parse_adapter_specs",
    "read_adapter",
    "require_vllm",
    "write_adapter",
]


def require_vllm(option: str) -> None:
    """Check that vLLM is installed before anything loads.

    Args:
        option: what asked for the vLLM backend (``--backend vllm``, ``sampling.backend: vllm``), for the message.

    Raises:
        ValueError: vLLM is not installed (one line naming ``option`` and how to install it).
    """
    if importlib.util.find_spec("vllm") is None:
        raise ValueError(
            f"{option}: needs vLLM, which is not installed here: pip install 'steering-adapter[vllm]' "
            "(or bash scripts/bootstrap.sh --vllm for the tested CPU build in .venv-vllm)"
        )


def __getattr__(name: str) -> Any:
    # The engine-side modules import vLLM; the adapter reader does not.
    if name in ("VllmSampler", "engine_kwargs"):
        from steering_adapter.runtimes.vllm import sampler  # lazy: the sampler imports vLLM, the reader does not

        return getattr(sampler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
