"""Calls into vLLM's workers: a worker extension (``worker_extension_cls``) and a model loader (``load_format``).

Both are vLLM's supported extension points; neither changes vLLM's code.

- :class:`SteeringWorkerExtension` adds ``steering_*`` methods to every worker, called with
  ``LLM.collective_rpc("steering_set_adapters", args=(...,))``: attach / replace / detach adapters, change α, switch
  steering off and on, without restarting the engine (the sampler's base-vs-steered runs and the selection sweep).
- :class:`SteeringModelLoader`, registered as ``load_format="steering"`` by the ``vllm.general_plugins`` entry point
  (:func:`steering_adapter.runtimes.vllm.plugin.register`), loads the weights with vLLM's default loader and attaches
  the
  adapters named in ``model_loader_extra_config={"steering_adapters": [...]}`` before the engine serves anything:
  the way ``vllm serve`` gets its adapters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn
from vllm.config.load import LoadConfig
from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

from steering_adapter.runtimes.vllm.adapters import parse_adapter_specs
from steering_adapter.runtimes.vllm.runtime import attach, get_runtime

__all__ = ["EXTRA_CONFIG_KEY", "LOAD_FORMAT", "SteeringModelLoader", "SteeringWorkerExtension", "WORKER_EXTENSION"]

LOAD_FORMAT = "steering"
EXTRA_CONFIG_KEY = "steering_adapters"
WORKER_EXTENSION = "steering_adapter.runtimes.vllm.worker.SteeringWorkerExtension"


class SteeringWorkerExtension:
    """Methods mixed into vLLM's worker class (``worker_extension_cls``); ``self`` is the worker."""

    def _steering_runtime(self):
        runtime = get_runtime(self.model_runner.model)
        if runtime is None:
            raise ValueError("no steering adapters attached to this engine (steering_set_adapters first)")
        return runtime

    def steering_set_adapters(self, adapters: list[Any]) -> list[dict[str, Any]]:
        """Attach ``adapters`` (paths or ``{"path", "name", "scale", "revision"}`` dicts) in order, replacing the
        attached ones; ``[]`` detaches all. Returns the description of what is attached."""
        return attach(self.model_runner.model, self.vllm_config, parse_adapter_specs(adapters)).describe()

    def steering_set_scale(self, name: str, scale: float) -> None:
        """Change α of the attached adapter ``name``."""
        self._steering_runtime().set_scale(name, scale)

    def steering_set_enabled(self, enabled: bool) -> None:
        """Switch every attached adapter off (``False``: the base model exactly) or back on."""
        self._steering_runtime().enabled = bool(enabled)

    def steering_describe(self) -> list[dict[str, Any]]:
        """What is attached (name, source, layers, mode, scale, layer scales, gated)."""
        runtime = get_runtime(self.model_runner.model)
        return runtime.describe() if runtime is not None else []


class SteeringModelLoader(DefaultModelLoader):
    """vLLM's default loader, then the steering adapters of ``model_loader_extra_config["steering_adapters"]``."""

    def __init__(self, load_config: LoadConfig) -> None:
        extra = dict(load_config.model_loader_extra_config or {})
        unknown = sorted(set(extra) - {EXTRA_CONFIG_KEY})
        if unknown:
            raise ValueError(
                f"load_format={LOAD_FORMAT!r}: unknown model_loader_extra_config keys {unknown}; "
                f"expected {EXTRA_CONFIG_KEY!r}"
            )
        self.specs = parse_adapter_specs(extra.get(EXTRA_CONFIG_KEY, []))
        # The base weights load exactly as with the default format.
        inner = dataclasses.replace(load_config, load_format="auto", model_loader_extra_config={})
        super().__init__(inner)

    def load_model(self, vllm_config: Any, model_config: Any, prefix: str = "") -> nn.Module:
        model = super().load_model(vllm_config, model_config, prefix)
        attach(model, vllm_config, self.specs)
        return model
