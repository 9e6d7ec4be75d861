"""``SteeringLayer``: the module wrapper that steers the output of one decoder block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from steering_adapter.tuner.files import direction_problem
from steering_adapter.tuner.gate import GateState

if TYPE_CHECKING:  # annotations only: the layer reads a config's fields, it never builds one
    from steering_adapter.tuner.config import SteeringConfig

# One step of the steering plan applied to a block's output: ("add", delta[d], gate) or ("ablate", unit[d], gate),
# where gate is the GateState of a condition-gated adapter (steer only the sequences it selects) or None.
PlanStep = tuple[str, torch.Tensor, "GateState | None"]


def _first_parameter(module: nn.Module) -> torch.Tensor | None:
    return next(module.parameters(), None)


def split_block_output(output: Any) -> tuple[torch.Tensor, Any]:
    """Return the hidden states of a decoder block's output and a function-free description to rebuild it.

    Blocks return a tensor (most transformers 5 decoder layers), a tuple whose first item is the hidden states
    (GPT-2, GPT-NeoX, older releases), or a ``ModelOutput``.
    """
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, tuple):
        return output[0], output
    if hasattr(output, "to_tuple") and hasattr(output, "keys"):
        return output[next(iter(output.keys()))], output
    raise TypeError(f"cannot steer a decoder block that returns {type(output).__name__}")


def join_block_output(hidden: torch.Tensor, rest: Any) -> Any:
    """Inverse of :func:`split_block_output` with new hidden states."""
    if rest is None:
        return hidden
    if isinstance(rest, tuple) and not hasattr(rest, "keys"):
        return (hidden, *rest[1:])
    rest[next(iter(rest.keys()))] = hidden
    return rest


def apply_plan(hidden: torch.Tensor, plan: list[PlanStep]) -> torch.Tensor:
    """Apply steering steps to hidden states ``[batch, seq, d]`` (or ``[tokens, d]``) in order.

    A gated step edits only the rows its gate selects: ``gate.current(hidden.shape[0])`` is a bool ``[rows]`` mask
    (per sequence here, per token in vLLM's flattened batches).
    """
    for op, tensor, gate in plan:
        if op == "add":
            steered = hidden + tensor
        else:  # ablate: h - (h . u) u
            steered = hidden - torch.matmul(hidden, tensor).unsqueeze(-1) * tensor
        if gate is None:
            hidden = steered
        else:
            selected = gate.current(hidden.shape[0]).to(hidden.device).view(-1, *([1] * (hidden.ndim - 1)))
            hidden = torch.where(selected, steered, hidden)
    return hidden


def build_plan(
    steps: list[tuple[str, torch.Tensor, str, float, Any]], dtype: torch.dtype, device: torch.device, layer_index: int
) -> list[PlanStep]:
    """The steering plan of one block from its active adapters, in activation order.

    Args:
        steps: ``(adapter name, vector [d], mode, factor, gate)`` per active adapter; ``factor`` is ``scale * s_i``
            and ``gate`` the adapter's gate object (``None``: ungated).
        dtype: dtype of the hidden states the plan is applied to.
        device: their device.
        layer_index: the block's index (for error messages).

    Returns:
        The plan for :func:`apply_plan`: consecutive ``add`` steps under the same gate folded into one add, ``ablate``
        steps as unit vectors.

    Raises:
        ValueError: a non-finite vector (never loaded), or a zero vector to ablate.
    """
    plan: list[PlanStep] = []
    pending: torch.Tensor | None = None
    pending_gate: GateState | None = None
    for name, vector, mode, factor, gate in steps:
        if not torch.isfinite(vector).all():
            raise ValueError(
                f"steering vector of adapter {name!r} for block {layer_index} is not finite: it was never "
                "loaded (missing from the adapter file?) or holds NaN/Inf"
            )
        if mode == "add":
            delta = vector.to(device=device, dtype=torch.float32) * factor
            if pending is not None and gate is pending_gate:
                pending = pending + delta  # consecutive adds under the same gate fold into one add
                continue
            if pending is not None:
                plan.append(("add", pending.to(dtype), pending_gate))
            pending, pending_gate = delta, gate
            continue
        if pending is not None:
            plan.append(("add", pending.to(dtype), pending_gate))
            pending = None
        problem = direction_problem(vector)
        if problem is not None:
            raise ValueError(
                f"cannot ablate the steering vector of adapter {name!r} on block {layer_index}: it {problem}"
            )
        norm = torch.linalg.vector_norm(vector)
        plan.append(("ablate", (vector.to(device=device, dtype=torch.float32) / norm).to(dtype), gate))
    if pending is not None:
        plan.append(("add", pending.to(dtype), pending_gate))
    return plan


class SteeringLayer(nn.Module, BaseTunerLayer):
    """Wraps a decoder block and edits its output hidden states with the active steering adapters.

    For each active adapter (in activation order), with ``h`` the block output ``[batch, seq, hidden]``:
    ``add`` mode computes ``h + scale * s_i * v_i``; ``ablate`` mode computes ``h - (h . u) u``, ``u = v / ||v||``.
    The effective deltas are computed once per (vectors, scales, dtype, device) and cached; runs of consecutive
    ``add`` adapters are folded into a single add per block per step.

    The edit runs as the *first* forward hook of the wrapped block rather than after the call, so every other hook
    on the block (transformers' ``output_hidden_states`` recorder, user probes) sees the steered states.

    Args:
        base_layer: the decoder block.
        adapter_name: name of the first adapter.
        layer_index: 0-based index of the block in the decoder.
        config: the adapter's :class:`SteeringConfig`.
    """

    adapter_layer_names = ("steering_vector", "steering_condition")
    other_param_names = ("steering_mode", "steering_factor", "steering_gate", "steering_gate_rule")

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        layer_index: int,
        config: SteeringConfig,
        gate: GateState | None = None,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.layer_index = layer_index
        self.steering_vector = nn.ParameterDict({})
        self.steering_mode: dict[str, str] = {}
        self.steering_factor: dict[str, float] = {}
        # condition-gated adapters: condition vector (on the condition block), shared gate, (threshold, comparator,
        # position) rule
        self.steering_condition = nn.ParameterDict({})
        self.steering_gate: dict[str, GateState] = {}
        self.steering_gate_rule: dict[str, tuple[float, str, str]] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self._plan_key: tuple | None = None
        self._plan: list[PlanStep] = []
        self._plan_trainable = False
        self._hook_handle = base_layer.register_forward_hook(self._steer_output, prepend=True)
        self.update_layer(adapter_name, config, gate)

    # ----------------------------------------------------------------------------------------------- adapters
    def update_layer(
        self,
        adapter_name: str,
        config: SteeringConfig,
        gate: GateState | None = None,
        vector: torch.Tensor | None = None,
    ) -> None:
        """Create (or reset) what ``adapter_name`` keeps on this block.

        Args:
            adapter_name: adapter name.
            config: its configuration (mode, scale, layer scale, hidden size, initial value, condition).
            gate: the adapter's shared :class:`GateState` when it is condition-gated.
            vector: optional initial vector ``[hidden_size]``; otherwise NaN (``init_vectors="unset"``) or zeros.
        """
        if self.layer_index in config.layers:
            self.steering_vector[adapter_name] = self._new_parameter(config, vector)
            self.steering_mode[adapter_name] = config.mode
            self.steering_factor[adapter_name] = config.effective_scale(self.layer_index)
        if config.gated:
            if gate is None:
                raise ValueError(f"adapter {adapter_name!r} is condition-gated but no gate state was given")
            self.steering_gate[adapter_name] = gate
            if self.layer_index == config.condition_layer:
                self.steering_condition[adapter_name] = self._new_parameter(config, None)
                self.steering_gate_rule[adapter_name] = (
                    float(config.condition_threshold),
                    config.condition_comparator,
                    config.condition_position,
                )
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)
        self.invalidate_cache()

    def _new_parameter(self, config: SteeringConfig, vector: torch.Tensor | None) -> nn.Parameter:
        reference = _first_parameter(self.base_layer)
        device = reference.device if reference is not None else None
        if vector is not None:
            data = vector.detach().to(device=device, dtype=torch.float32).clone()
        else:
            if config.hidden_size is None:
                raise ValueError("SteeringConfig.hidden_size must be known before vectors are created")
            fill = float("nan") if config.init_vectors == "unset" else 0.0
            data = torch.full((config.hidden_size,), fill, dtype=torch.float32, device=device)
        return nn.Parameter(data, requires_grad=False)

    def set_factor(self, adapter_name: str, factor: float) -> None:
        """Set ``scale * s_i`` for one adapter on this block."""
        self.steering_factor[adapter_name] = float(factor)
        self.invalidate_cache()

    def set_adapter(self, adapter_names: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_names, inference_mode=inference_mode)
        self.invalidate_cache()

    def delete_adapter(self, adapter_name: str) -> None:
        gate = self.steering_gate.get(adapter_name)
        if gate is not None:
            gate.detach()
        super().delete_adapter(adapter_name)
        self.invalidate_cache()

    def invalidate_cache(self) -> None:
        """Forget the cached deltas (they are rebuilt lazily at the next forward)."""
        self._plan_key = None
        self._plan = []
        self._plan_trainable = False

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device: torch.device | None = None) -> None:
        # Vectors stay float32 (deltas are cast per dtype when cached); only the device follows the block.
        reference = _first_parameter(self.base_layer)
        target = device if device is not None else (reference.device if reference is not None else None)
        if target is None:
            return
        for store in (self.steering_vector, self.steering_condition):
            parameter = store[adapter_name] if adapter_name in store else None
            if parameter is not None and parameter.device != target and parameter.device.type != "meta":
                store[adapter_name] = nn.Parameter(parameter.data.to(target), parameter.requires_grad)
        self.invalidate_cache()

    # ---------------------------------------------------------------------------------------------- forward
    def _active_steps(self) -> list[tuple[str, nn.Parameter, str, float, GateState | None]]:
        return [
            (
                name,
                self.steering_vector[name],
                self.steering_mode[name],
                self.steering_factor[name],
                self.steering_gate.get(name),
            )
            for name in self.active_adapters
            if name in self.steering_vector
        ]

    def _plan_is_current(self, dtype: torch.dtype, device: torch.device) -> bool:
        # Hot path (every block, every decoding step): the cached plan stays valid while the hidden dtype/device are
        # the same and every vector it was built from is the same Parameter object at the same version (a load or an
        # in-place edit bumps the version; a replaced Parameter changes the object). Everything else that changes
        # the plan (active adapters, factors, modes) calls invalidate_cache().
        key = self._plan_key
        if key is None or key[0] is not dtype or key[1] != device:
            return False
        parameters = self.steering_vector._parameters
        for name, parameter, version in key[2]:
            if parameters.get(name) is not parameter or parameter._version != version:
                return False
        return True

    def steering_plan(self, dtype: torch.dtype, device: torch.device) -> list[PlanStep]:
        """The steps applied to this block's output for hidden states of ``dtype`` on ``device`` (cached)."""
        if self._plan_is_current(dtype, device) and not (torch.is_grad_enabled() and self._plan_trainable):
            return self._plan
        steps = self._active_steps()
        trainable = any(step[1].requires_grad for step in steps)
        if torch.is_grad_enabled() and trainable:
            return build_plan(steps, dtype, device, self.layer_index)  # training: keep the graph, no cache
        with torch.no_grad(), torch.inference_mode(False):
            self._plan = build_plan(steps, dtype, device, self.layer_index)
        self._plan_key = (dtype, device, tuple((name, vector, vector._version) for name, vector, *_ in steps))
        self._plan_trainable = trainable
        return self._plan

    def _decide_gates(self, hidden: torch.Tensor) -> None:
        """On the condition block of gated adapters: decide each sequence's gate while a new prompt is processed."""
        for name in self.active_adapters:
            if name not in self.steering_condition or not self.steering_gate[name].pending:
                continue
            condition = self.steering_condition[name]
            if not torch.isfinite(condition).all() or not torch.any(condition != 0):
                raise ValueError(
                    f"condition vector of adapter {name!r} on block {self.layer_index} is not set: it was never "
                    "loaded (missing from the adapter file?), holds NaN/Inf or is zero"
                )
            self.steering_gate[name].decide(hidden, condition.detach(), *self.steering_gate_rule[name])

    def _steer_output(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self._disable_adapters:
            return None
        if type(output) is torch.Tensor and not self.steering_condition:  # the common case, kept short
            plan = self.steering_plan(output.dtype, output.device)
            return apply_plan(output, plan) if plan else None
        if not (self.steering_vector or self.steering_condition):
            return None
        hidden, rest = split_block_output(output)
        if self.steering_condition:
            self._decide_gates(hidden)
        plan = self.steering_plan(hidden.dtype, hidden.device)
        if not plan:
            return None
        return join_block_output(apply_plan(hidden, plan), rest)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_layer(*args, **kwargs)

    def unload_and_optionally_merge_module(
        self, merge: bool, safe_merge: bool, adapter_names: list[str] | None
    ) -> nn.Module:
        """Detach the steering hook and give back the original block (called by ``unload()``)."""
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        self._hook_handle.remove()
        for gate in self.steering_gate.values():
            gate.detach()
        return self.get_base_layer()

    # ------------------------------------------------------------------------------------------------ merge
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "steering adapters edit activations and cannot be merged into weights; keep the adapter attached, or "
            "call unload() to get the base model back"
        )

    def unmerge(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"steering.{super().__repr__()}"
