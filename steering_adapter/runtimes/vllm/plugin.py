"""The ``vllm.general_plugins`` entry point: registers ``load_format="steering"`` in every vLLM process.

vLLM calls :func:`register` in the API server, the engine core and each worker. It only registers the loader
(:class:`~steering_adapter.runtimes.vllm.worker.SteeringModelLoader`); nothing is attached unless an engine is started
with ``load_format="steering"``.
"""

from __future__ import annotations


def register() -> None:
    """Register the steering model loader with vLLM (idempotent)."""
    from vllm.model_executor.model_loader import register_model_loader  # lazy: vllm is an optional dependency

    from steering_adapter.runtimes.vllm.worker import LOAD_FORMAT, SteeringModelLoader  # lazy: vLLM's own import

    register_model_loader(LOAD_FORMAT)(SteeringModelLoader)
