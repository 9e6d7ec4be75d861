"""``SteeringModel``: the PEFT tuner that wraps the text decoder blocks with :class:`SteeringLayer`."""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Iterator

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from steering_adapter.tuner.blocks import find_decoder_blocks, model_dimensions
from steering_adapter.tuner.config import SteeringConfig, check_adapter_name
from steering_adapter.tuner.constants import PREFIX
from steering_adapter.tuner.files import VECTOR_PARAM, direction_problem, validate_vectors
from steering_adapter.tuner.gate import GateState
from steering_adapter.tuner.layer import SteeringLayer

# Runtime attributes set on a config while it is attached (not dataclass fields, so never saved).
_TARGETS_ATTR = "_steering_targets"
_BLOCKS_PATH_ATTR = "_steering_blocks_path"
_GATE_ATTR = "_steering_gate"


def check_model_fits(config: SteeringConfig, model: nn.Module) -> tuple[str, int]:
    """Resolve the decoder blocks for ``config`` on ``model`` and check the dimensions.

    Fills ``hidden_size`` / ``num_hidden_layers`` when the config leaves them empty.

    Returns:
        ``(blocks_path, number_of_blocks)``.

    Raises:
        ValueError: hidden size or depth mismatch (naming both numbers), unknown layer index, no blocks found.
    """
    blocks = find_decoder_blocks(model, config.blocks_path)
    model_hidden, model_layers = model_dimensions(model)
    model_layers = model_layers if model_layers is not None else len(blocks)
    if config.hidden_size is None:
        if model_hidden is None:
            raise ValueError("the model config has no hidden_size; set SteeringConfig.hidden_size explicitly")
        config.hidden_size = int(model_hidden)
    elif model_hidden is not None and config.hidden_size != model_hidden:
        raise ValueError(
            f"steering adapter has hidden_size={config.hidden_size} but the model has hidden_size={model_hidden}: "
            "the vectors were computed on a different model"
        )
    if config.num_hidden_layers is None:
        config.num_hidden_layers = int(model_layers)
    elif config.num_hidden_layers != model_layers or config.num_hidden_layers != len(blocks):
        raise ValueError(
            f"steering adapter has num_hidden_layers={config.num_hidden_layers} but the model has "
            f"num_hidden_layers={model_layers} ({len(blocks)} blocks at {blocks.path!r})"
        )
    if not config.layers:
        raise ValueError("SteeringConfig.layers is empty: name at least one decoder block to steer")
    config.validate()
    return blocks.path, len(blocks)


def set_adapter_scale(model: nn.Module, scale: float, adapter_name: str = "default") -> None:
    """Change the scale α of a steering adapter attached to ``model``, through any flow.

    Works on a ``PeftModel``, on its ``SteeringModel`` and on a transformers model that got the adapter from
    ``load_adapter``. The config is updated too, so saving afterwards records the new scale.

    Raises:
        ValueError: no steering adapter of that name, or a non-finite scale.
    """
    config = _steering_config(model, adapter_name)
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    config.scale = float(scale)
    for module in model.modules():
        if isinstance(module, SteeringLayer) and adapter_name in module.steering_factor:
            module.set_factor(adapter_name, config.effective_scale(module.layer_index))


def gate_state(model: nn.Module, adapter_name: str) -> GateState | None:
    """The per-sequence gate of a condition-gated steering adapter attached to ``model`` (``None``: not gated).

    Raises:
        ValueError: no steering adapter of that name.
    """
    config = _steering_config(model, adapter_name)
    return getattr(config, _GATE_ATTR, None) if config.gated else None


def _steering_config(model: nn.Module, adapter_name: str) -> SteeringConfig:
    """The config of the steering adapter ``adapter_name`` attached to ``model`` (any flow).

    Raises:
        ValueError: no steering adapter of that name.
    """
    configs = getattr(model, "peft_config", None) or {}
    config = configs.get(adapter_name)
    if not isinstance(config, SteeringConfig):
        raise ValueError(f"no steering adapter named {adapter_name!r}; attached: {sorted(configs)}")
    return config


@contextlib.contextmanager
def steering_disabled(model: nn.Module) -> Iterator[None]:
    """Context manager: every steering layer in ``model`` passes its block output through unchanged.

    Works on a ``PeftModel`` and on a transformers model with adapters from ``load_adapter``; restores each layer's
    previous state on exit.
    """
    layers = [module for module in model.modules() if isinstance(module, SteeringLayer)]
    previous = [layer._disable_adapters for layer in layers]
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer, state in zip(layers, previous, strict=True):
            layer._disable_adapters = state


class SteeringModel(BaseTuner):
    """PEFT tuner for steering adapters (``peft_type="STEERING"``).

    Wraps decoder block ``i`` (for ``i`` in ``config.layers``) of the text model in a :class:`SteeringLayer`. Saved
    keys are ``base_model.model.<blocks path>.<i>.steering_vector`` as the format contract requires.

    Example:

    ```py
    >>> import steering_adapter
    >>> from peft import PeftModel
    >>> model = PeftModel.from_pretrained(base_model, "path/or/repo-of-steering-adapter")
    ```
    """

    prefix: str = PREFIX
    tuner_layer_cls = SteeringLayer
    target_module_mapping: dict[str, list[str]] = {}

    # ------------------------------------------------------------------------------------------- injection
    def inject_adapter(self, model: nn.Module, adapter_name: str, *args, **kwargs) -> None:
        check_adapter_name(adapter_name)
        super().inject_adapter(model, adapter_name, *args, **kwargs)

    def _check_new_adapter_config(self, config: SteeringConfig) -> None:
        if not isinstance(config, SteeringConfig):
            raise TypeError(f"expected a SteeringConfig, got {type(config).__name__}")
        config.validate()

    def _prepare_adapter_config(self, peft_config: SteeringConfig, model_config: dict) -> SteeringConfig:
        return peft_config

    def _prepare_model(self, peft_config: SteeringConfig, model: nn.Module) -> None:
        try:
            blocks_path, _ = check_model_fits(peft_config, model)
        except ValueError as exc:
            source = getattr(peft_config, "_steering_config_file", None)
            raise ValueError(f"{source}: {exc}" if source else str(exc)) from None
        setattr(peft_config, _BLOCKS_PATH_ATTR, blocks_path)
        targets = {f"{blocks_path}.{layer}": layer for layer in peft_config.target_layers()}
        setattr(peft_config, _TARGETS_ATTR, targets)
        if peft_config.gated and getattr(peft_config, _GATE_ATTR, None) is None:
            gate = GateState()
            gate.attach(model)
            setattr(peft_config, _GATE_ATTR, gate)
        # A regex over exactly these block names, for PEFT code that reads ``target_modules``.
        peft_config.target_modules = "|".join(re.escape(name) for name in getattr(peft_config, _TARGETS_ATTR))

    @staticmethod
    def _check_target_module_exists(peft_config: SteeringConfig, key: str) -> bool:
        return key in getattr(peft_config, _TARGETS_ATTR, {})

    def _create_and_replace(
        self,
        peft_config: SteeringConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
    ) -> None:
        layer_index = getattr(peft_config, _TARGETS_ATTR)[current_key]
        gate = getattr(peft_config, _GATE_ATTR, None)
        if isinstance(target, SteeringLayer):
            target.update_layer(adapter_name, peft_config, gate)
            return
        new_module = SteeringLayer(target, adapter_name, layer_index, peft_config, gate)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        # Decoder blocks have no ``weight``; the vectors are already on the block's device.
        setattr(parent, child_name, new_module)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        for name, parameter in model.named_parameters():
            if f"{VECTOR_PARAM}." not in name:
                parameter.requires_grad = False

    # --------------------------------------------------------------------------------------- state dicts
    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: SteeringConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        blocks_path = getattr(config, _BLOCKS_PATH_ATTR, None)
        if blocks_path is None:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            blocks_path = find_decoder_blocks(base, config.blocks_path).path
        validate_vectors(
            state_dict,
            config.layers,
            blocks_path,
            config.hidden_size,
            source=getattr(config, "_steering_weights_file", None) or f"steering adapter {adapter_name!r}",
            condition_layer=config.condition_layer,
            mode=config.mode,
        )
        return super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)

    # ------------------------------------------------------------------------------------------ helpers
    def _steering_layers(self) -> list[SteeringLayer]:
        return [module for module in self.model.modules() if isinstance(module, SteeringLayer)]

    def get_vectors(self, adapter_name: str = "default") -> dict[int, torch.Tensor]:
        """The adapter's vectors as ``{layer: tensor[hidden_size]}`` (float32 copies)."""
        self._require_adapter(adapter_name)
        return {
            layer.layer_index: layer.steering_vector[adapter_name].detach().float().cpu().clone()
            for layer in self._steering_layers()
            if adapter_name in layer.steering_vector
        }

    def set_vectors(self, vectors: dict[int, torch.Tensor], adapter_name: str = "default") -> None:
        """Set the adapter's vectors from ``{layer: tensor[hidden_size]}``; every configured layer is required.

        Raises:
            ValueError: missing or extra layer, wrong shape, NaN/Inf values, a zero or near-zero vector in ``ablate``
                mode (see :func:`steering_adapter.tuner.files.min_direction_norm`).
        """
        config = self._require_adapter(adapter_name)
        vectors = {int(layer): vector for layer, vector in vectors.items()}
        missing = sorted(set(config.layers) - set(vectors))
        extra = sorted(set(vectors) - set(config.layers))
        if missing or extra:
            raise ValueError(
                f"vectors must cover exactly layers {config.layers} of adapter {adapter_name!r}: "
                f"missing {missing}, unknown {extra}"
            )
        for layer in self._steering_layers():
            if adapter_name not in layer.steering_vector:
                continue
            vector = torch.as_tensor(vectors[layer.layer_index])
            if vector.shape != (config.hidden_size,):
                raise ValueError(
                    f"vector for layer {layer.layer_index} has shape {tuple(vector.shape)}, expected "
                    f"({config.hidden_size},) (the model's hidden size)"
                )
            if not torch.isfinite(vector).all():
                raise ValueError(f"vector for layer {layer.layer_index} contains NaN or Inf")
            problem = direction_problem(vector) if config.mode == "ablate" else None
            if problem is not None:
                raise ValueError(f"vector for layer {layer.layer_index} {problem}: mode 'ablate' needs a direction")
            with torch.no_grad():
                layer.steering_vector[adapter_name].copy_(vector.to(torch.float32))
            layer.invalidate_cache()

    def set_condition(self, condition: torch.Tensor, adapter_name: str = "default") -> None:
        """Set the condition vector ``[hidden_size]`` of a condition-gated adapter.

        Raises:
            ValueError: the adapter is not gated, wrong shape, zero, NaN/Inf.
        """
        config = self._require_adapter(adapter_name)
        if not config.gated:
            raise ValueError(f"adapter {adapter_name!r} has no condition_layer: it is not condition-gated")
        condition = torch.as_tensor(condition)
        if condition.shape != (config.hidden_size,):
            raise ValueError(f"condition vector has shape {tuple(condition.shape)}, expected ({config.hidden_size},)")
        if not torch.isfinite(condition).all() or not torch.any(condition != 0):
            raise ValueError("condition vector must be finite and non-zero")
        for layer in self._steering_layers():
            if adapter_name in layer.steering_condition:
                with torch.no_grad():
                    layer.steering_condition[adapter_name].copy_(condition.to(torch.float32))

    def get_condition(self, adapter_name: str = "default") -> torch.Tensor | None:
        """The condition vector of a gated adapter (``None`` when it is not gated)."""
        self._require_adapter(adapter_name)
        for layer in self._steering_layers():
            if adapter_name in layer.steering_condition:
                return layer.steering_condition[adapter_name].detach().float().cpu().clone()
        return None

    def set_scale(self, scale: float, adapter_name: str = "default") -> None:
        """Change the global multiplier α of an attached adapter (kept in its config, so it is saved too)."""
        set_adapter_scale(self, scale, adapter_name)

    def add_weighted_adapter(
        self, adapters: list[str], weights: list[float], adapter_name: str, scale: float = 1.0
    ) -> SteeringConfig:
        """Combine ``add``-mode adapters into a new adapter whose vector on block ``i`` is
        ``sum_k weights[k] * scale_k * s_{k,i} * v_{k,i} / scale`` (over the union of their layers).

        Activating the new adapter alone then equals activating the parts at once with their weights.

        Returns:
            The new adapter's config (``layers`` = union, ``scale`` as given, provenance of the parts recorded).
        """
        if len(adapters) != len(weights) or not adapters:
            raise ValueError("adapters and weights must be non-empty and of equal length")
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists")
        if scale == 0:
            raise ValueError("scale of the combined adapter must be non-zero")
        configs = [self._require_adapter(name) for name in adapters]
        for name, config in zip(adapters, configs, strict=True):
            if config.gated:
                raise ValueError(f"adapter {name!r} is condition-gated; gated adapters cannot be summed into one")
            if config.mode != "add":
                raise ValueError(f"adapter {name!r} is in {config.mode!r} mode; only 'add' adapters can be combined")
        sizes = {config.hidden_size for config in configs}
        if len(sizes) != 1:
            raise ValueError(f"adapters have different hidden sizes {sorted(sizes)}")
        combined: dict[int, torch.Tensor] = {}
        for name, config, weight in zip(adapters, configs, weights, strict=True):
            for layer, vector in self.get_vectors(name).items():
                part = vector.double() * (float(weight) * config.effective_scale(layer) / float(scale))
                combined[layer] = combined[layer] + part if layer in combined else part
        new_config = copy.deepcopy(configs[0])
        for attr in (_TARGETS_ATTR, _BLOCKS_PATH_ATTR, _GATE_ATTR):
            if hasattr(new_config, attr):
                delattr(new_config, attr)
        new_config.layers = sorted(combined)
        new_config.scale = float(scale)
        new_config.layer_scales = None
        new_config.init_vectors = "unset"
        new_config.steering_metadata = {
            "method": "weighted_combination",
            "parts": [
                {"adapter": name, "weight": float(weight), "steering_metadata": config.steering_metadata}
                for name, config, weight in zip(adapters, configs, weights, strict=True)
            ],
        }
        self.peft_config[adapter_name] = new_config
        self.inject_adapter(self.model, adapter_name)
        self.set_vectors({layer: vector.float() for layer, vector in combined.items()}, adapter_name)
        return new_config

    def _require_adapter(self, adapter_name: str) -> SteeringConfig:
        if adapter_name not in self.peft_config:
            raise ValueError(f"no adapter named {adapter_name!r}; attached: {sorted(self.peft_config)}")
        return self.peft_config[adapter_name]

    def _set_adapter_layers(self, enabled: bool = True) -> None:
        for module in self.model.modules():
            if isinstance(module, BaseTunerLayer):
                module.enable_adapters(enabled)

    def enable_adapter_layers(self) -> None:
        """Turn steering back on."""
        self._set_adapter_layers(enabled=True)

    def disable_adapter_layers(self) -> None:
        """Turn steering off (the base model's outputs, exactly)."""
        self._set_adapter_layers(enabled=False)
