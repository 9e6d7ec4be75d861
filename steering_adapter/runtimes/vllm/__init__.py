"""vLLM integration: a sampling backend and steered generation / serving with steering adapters.

Needs vLLM (``pip install 'steering-adapter[vllm]'``, or ``bash scripts/bootstrap.sh --vllm`` for the tested CPU
build in ``.venv-vllm``). Offline::

    from steering_adapter.runtimes.vllm import VllmSampler
    sampler = VllmSampler("Qwen/Qwen3-4B-Instruct-2507", adapters=["org/no-political-refusal"])

or any ``vllm.LLM`` / ``vllm serve`` with :func:`engine_kwargs` (see ``docs/vllm.md``).
"""

from __future__ import annotations

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
    "write_adapter",
]


def __getattr__(name: str) -> Any:
    # The engine-side modules import vLLM; the adapter reader does not.
    if name in ("VllmSampler", "engine_kwargs"):
        from steering_adapter.runtimes.vllm import sampler  # lazy: the sampler imports vLLM, the reader does not

        return getattr(sampler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
