"""Calls into vLLM's workers: a worker extension (``worker_extension_cls``) and a model loader (``load_format``).

Both are vLLM's supported extension points; neither changes vLLM's code.

- :class:`SteeringWorkerExtension` adds ``steering_*`` methods to every worker, called with
  ``LLM.collective_rpc("steering_set_adapters", args=(...,))``: attach / replace / detach adapters, change α, switch
  steering off and on, without restarting the engine (the sampler's base-vs-steered runs and the selection sweep).
  A running ``vllm serve`` started with ``VLLM_SERVER_DEV_MODE=1`` takes the same calls on vLLM's own
  ``POST /collective_rpc`` endpoint (``{"method": "steering_set_adapters", "args": ["[...]"]}``, arguments as JSON
  strings). In compiled mode a change rewrites the steering slots in place: nothing is compiled or captured again.
- :class:`SteeringModelLoader`, registered as ``load_format="steering"`` by the ``vllm.general_plugins`` entry point
  (:func:`steering_adapter.runtimes.vllm.plugin.register`), loads the weights with vLLM's default loader and attaches
  the
  adapters named in ``model_loader_extra_config={"steering_adapters": [...]}`` before the engine serves anything:
  the way ``vllm serve`` gets its adapters. In vLLM's compiled and CUDA-graph modes it first builds the steering
  slots into every decoder block (:mod:`steering_adapter.runtimes.vllm.slots`), sized by
  ``model_loader_extra_config={"steering_slots": ..., "steering_gates": ...}`` or by the adapters it starts with.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from torch import nn
from vllm.config.load import LoadConfig
from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

from steering_adapter.runtimes.vllm.adapters import parse_adapter_specs, read_adapter
from steering_adapter.runtimes.vllm.batch import request_adapter_specs
from steering_adapter.runtimes.vllm.compiled import (
    CACHE_KEY,
    CAPACITY_KEYS,
    capacity_for,
    compiled_mode,
    get_program,
    install_slots,
)
from steering_adapter.runtimes.vllm.runtime import attach, get_runtime

__all__ = ["EXTRA_CONFIG_KEY", "LOAD_FORMAT", "SteeringModelLoader", "SteeringWorkerExtension", "WORKER_EXTENSION"]

LOAD_FORMAT = "steering"
EXTRA_CONFIG_KEY = "steering_adapters"
WORKER_EXTENSION = "steering_adapter.runtimes.vllm.worker.SteeringWorkerExtension"


def _json(value: Any) -> Any:
    """``value``, decoded when it is a JSON string: vLLM's ``/collective_rpc`` endpoint passes string arguments."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value  # a plain path or name


class SteeringWorkerExtension:
    """Methods mixed into vLLM's worker class (``worker_extension_cls``); ``self`` is the worker."""

    def _steering_runtime(self):
        runtime = get_runtime(self.model_runner.model)
        if runtime is None:
            raise ValueError("no steering adapters attached to this engine (steering_set_adapters first)")
        return runtime

    def steering_set_adapters(self, adapters: list[Any] | str) -> list[dict[str, Any]]:
        """Attach ``adapters`` (paths or ``{"path", "name", "scale", "revision"}`` dicts, or that list as a JSON
        string) in order, replacing the attached ones; ``[]`` detaches all. Returns the description of what is
        attached."""
        adapters = _json(adapters)
        specs = parse_adapter_specs([adapters] if isinstance(adapters, (str, dict)) else adapters)
        return attach(self.model_runner.model, self.vllm_config, specs).describe()

    def steering_set_scale(self, name: str, scale: float | str) -> None:
        """Change α of the attached adapter ``name``."""
        self._steering_runtime().set_scale(name, float(_json(scale)))

    def steering_set_enabled(self, enabled: bool | str) -> None:
        """Switch every attached adapter off (``False``: the base model exactly) or back on."""
        value = _json(enabled)
        if not isinstance(value, bool):
            raise ValueError(f"steering_set_enabled expects true or false, got {enabled!r}")
        self._steering_runtime().enabled = value

    def steering_capacity(self) -> dict[str, Any] | None:
        """The steering slots built into the compiled model (``None`` in eager mode): their sizes and the key they
        add to vLLM's compile-cache hash."""
        program = get_program(self.model_runner.model)
        if program is None:
            return None
        capacity = program.slots.capacity
        return {
            "slots": capacity.slots,
            "gates": capacity.gates,
            "ids": capacity.ids,
            "max_tokens": capacity.max_tokens,
            "max_requests": capacity.max_requests,
            "cache_key": self.vllm_config.additional_config.get(CACHE_KEY),
        }

    def steering_describe(self) -> list[dict[str, Any]]:
        """What is attached (name, source, layers, mode, scale, layer scales, gated)."""
        runtime = get_runtime(self.model_runner.model)
        return runtime.describe() if runtime is not None else []


class SteeringModelLoader(DefaultModelLoader):
    """vLLM's default loader, then the steering adapters of ``model_loader_extra_config["steering_adapters"]``."""

    def __init__(self, load_config: LoadConfig) -> None:
        extra = dict(load_config.model_loader_extra_config or {})
        unknown = sorted(set(extra) - {EXTRA_CONFIG_KEY, *CAPACITY_KEYS})
        if unknown:
            raise ValueError(
                f"load_format={LOAD_FORMAT!r}: unknown model_loader_extra_config keys {unknown}; "
                f"expected {sorted([EXTRA_CONFIG_KEY, *CAPACITY_KEYS])}"
            )
        self.specs = parse_adapter_specs(extra.get(EXTRA_CONFIG_KEY, []))
        self.capacity = {key: extra[key] for key in CAPACITY_KEYS if key in extra}
        # The base weights load exactly as with the default format.
        inner = dataclasses.replace(load_config, load_format="auto", model_loader_extra_config={})
        super().__init__(inner)

    def load_model(self, vllm_config: Any, model_config: Any, prefix: str = "") -> nn.Module:
        model = super().load_model(vllm_config, model_config, prefix)
        if compiled_mode(vllm_config):  # before vLLM traces the model: the slots must be in its graph
            text = model_config.hf_text_config
            adapters = [read_adapter(spec, text.hidden_size, text.num_hidden_layers) for spec in self.specs]
            requests = [
                read_adapter(spec, text.hidden_size, text.num_hidden_layers)
                for spec in parse_adapter_specs(request_adapter_specs())
            ]
            install_slots(model, vllm_config, capacity_for(vllm_config, adapters, requests, self.capacity))
        attach(model, vllm_config, self.specs)
        return model
