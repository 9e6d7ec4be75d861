"""Steering adapters in vLLM's compiled modes: what the engine's and the requests' adapters write into the slots.

:class:`~steering_adapter.runtimes.vllm.slots.SteeringSlots` is installed by the ``load_format="steering"`` loader
before vLLM compiles the model (:func:`install_slots`). Attaching, replacing, scaling or switching off adapters then
rewrites its buffers in place (:class:`SlotProgram`), so a running engine changes adapters without compiling or
capturing anything again, as long as they fit the capacity it was started with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from steering_adapter.runtimes.vllm.adapters import AdapterVectors
from steering_adapter.runtimes.vllm.slots import ANONYMOUS, SlotCapacity, SteeringSlots
from steering_adapter.tuner.blocks import find_decoder_blocks
from steering_adapter.tuner.layer import build_plan

__all__ = [
    "CACHE_KEY",
    "CAPACITY_KEYS",
    "SlotProgram",
    "capacity_for",
    "compiled_mode",
    "get_program",
    "install_slots",
]

_SLOTS_ATTR = "_steering_adapter_slots"
CACHE_KEY = "steering_adapter_slots"
# model_loader_extra_config keys that size the slots (the compiled graph depends on them)
SLOTS_KEY, GATES_KEY = "steering_slots", "steering_gates"
CAPACITY_KEYS = (SLOTS_KEY, GATES_KEY)
DEFAULT_SLOTS, DEFAULT_GATES = 4, 1


class _Gate:
    """Identity of one gate for :func:`build_plan` (consecutive adds fold only under the same gate)."""

    def __init__(self, index: int) -> None:
        self.index = index


def compiled_mode(vllm_config: Any) -> bool:
    """Whether vLLM compiles (or graph-captures) the model: then steering must be in the graph from load time."""
    from vllm.config import CompilationMode  # lazy: vllm is an optional dependency

    return not vllm_config.model_config.enforce_eager or vllm_config.compilation_config.mode != CompilationMode.NONE


def get_program(model: nn.Module) -> SlotProgram | None:
    """The steering slots (and what writes them) installed in vLLM's ``model`` at load time, if any."""
    return getattr(model, _SLOTS_ATTR, None)


def _plan_sizes(adapters: Sequence[AdapterVectors], num_layers: int) -> list[int]:
    gates = {a.name: _Gate(i) for i, a in enumerate(adapters) if a.gated}
    sizes = []
    for layer in range(num_layers):
        steps = [s for a in adapters if (s := a.step(layer, gates.get(a.name))) is not None]
        sizes.append(len(build_plan(steps, torch.float32, torch.device("cpu"), layer)) if steps else 0)
    return sizes


def capacity_for(
    vllm_config: Any,
    adapters: Sequence[AdapterVectors],
    request_adapters: Sequence[AdapterVectors],
    extra: Mapping[str, Any],
) -> SlotCapacity:
    """The slot capacity of an engine: ``extra`` (``model_loader_extra_config``) when it sets it, else enough for
    the adapters it starts with and at least :data:`DEFAULT_SLOTS` slots and :data:`DEFAULT_GATES` gates.

    Raises:
        ValueError: a capacity smaller than the adapters the engine starts with.
    """
    num_layers = vllm_config.model_config.hf_text_config.num_hidden_layers
    needed_slots = max(_plan_sizes(adapters, num_layers), default=0) + len(request_adapters)
    needed_gates = sum(a.gated for a in [*adapters, *request_adapters])
    slots = extra.get(SLOTS_KEY, max(needed_slots, DEFAULT_SLOTS))
    gates = extra.get(GATES_KEY, max(needed_gates, DEFAULT_GATES))
    capacity = SlotCapacity(
        slots=slots,
        gates=gates,
        max_tokens=vllm_config.scheduler_config.max_num_batched_tokens,
        max_requests=vllm_config.scheduler_config.max_num_seqs,
    )
    if slots < needed_slots or gates < needed_gates:
        raise ValueError(
            f"{SLOTS_KEY}={slots} / {GATES_KEY}={gates} are too few for the adapters this engine starts with: they "
            f"need {needed_slots} slots per block and {needed_gates} gates"
        )
    return capacity


def install_slots(model: nn.Module, vllm_config: Any, capacity: SlotCapacity) -> SlotProgram:
    """Install :class:`SteeringSlots` of ``capacity`` in every decoder block of vLLM's ``model`` (before vLLM
    compiles it) and the forward pre-hook that writes each step's buffers (it runs outside the compiled region)."""
    from steering_adapter.runtimes.vllm.batch import current_tracker, step_layout  # lazy: batch.py imports vLLM

    text = vllm_config.model_config.hf_text_config
    blocks = find_decoder_blocks(model)
    if len(blocks) != text.num_hidden_layers:
        raise ValueError(
            f"steering: found {len(blocks)} decoder blocks at {blocks.path!r} but the model config has "
            f"num_hidden_layers={text.num_hidden_layers}"
        )
    sizes = {"slots": capacity.slots, "gates": capacity.gates, "ids": capacity.ids}
    if not isinstance(vllm_config.additional_config, dict):
        raise ValueError("steering in compiled mode needs vLLM's additional_config to be a dict (or unset)")
    # vLLM caches compiled models under a hash of its config, which leaves the load format out: without this key a
    # steering engine and a plain one (or two with other slot sizes) would load each other's compiled graph.
    vllm_config.additional_config[CACHE_KEY] = sizes
    parameter = next(model.parameters())
    slots = SteeringSlots(
        text.num_hidden_layers, text.hidden_size, capacity, vllm_config.model_config.dtype, parameter.device
    )
    slots.install(blocks.blocks)
    program = SlotProgram(slots)

    def prepare(module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs["inputs_embeds"]
        rows = tokens.shape[0]
        program.prepare_step(current_tracker(), step_layout(rows), rows)

    model.register_forward_pre_hook(prepare, with_kwargs=True)
    setattr(model, _SLOTS_ATTR, program)
    return program


class SlotProgram:
    """Writes the engine's adapters and the request-selectable adapters into :class:`SteeringSlots`, and each step's
    request ids.

    Args:
        slots: the installed slots.
    """

    def __init__(self, slots: SteeringSlots) -> None:
        self.slots = slots
        self.adapters: list[AdapterVectors] = []
        self.request_adapters: list[AdapterVectors] = []
        self._engine_column = torch.zeros(slots.num_layers, slots.capacity.slots)
        self._request_slots: dict[str, dict[int, int]] = {}
        self._columns: dict[tuple[str | None, float | None], torch.Tensor] = {}
        self._live: dict[int, Any] = {}  # request id -> tracker state holding it

    # ------------------------------------------------------------------------------------------- adapters
    def write(
        self, adapters: Sequence[AdapterVectors], request_adapters: Sequence[AdapterVectors], keep_gates: bool
    ) -> None:
        """Write ``adapters`` (the engine's, in order) and ``request_adapters`` into the slots.

        Args:
            keep_gates: keep the gate decisions taken so far (a change of α); otherwise every gate starts undecided.

        Raises:
            ValueError: more plan steps on a block, or more gates, than the engine's capacity.
        """
        slots, capacity = self.slots, self.slots.capacity
        everything = [*adapters, *request_adapters]
        gated = [a for a in everything if a.gated]
        if len(gated) > capacity.gates:
            raise ValueError(
                f"steering: {len(gated)} condition-gated adapters but the engine was started with "
                f"{GATES_KEY}={capacity.gates} (model_loader_extra_config)"
            )
        gates = {a.name: _Gate(i) for i, a in enumerate(gated)}
        L, S, d = slots.num_layers, capacity.slots, slots.hidden_size  # noqa: N806
        unit = torch.zeros(L, S, d, dtype=slots.dtype)
        add = torch.zeros(L, S, d)
        slot_gate = torch.full((L, S), capacity.gates, dtype=torch.long)
        engine = torch.zeros(L, S)
        request_slots: dict[str, dict[int, int]] = {a.name: {} for a in request_adapters}
        for layer in range(L):
            steps = [s for a in adapters if (s := a.step(layer, gates.get(a.name))) is not None]
            plan = build_plan(steps, slots.dtype, torch.device("cpu"), layer) if steps else []
            extra = [a for a in request_adapters if layer in a.vectors]
            if len(plan) + len(extra) > S:
                raise ValueError(
                    f"steering: block {layer} needs {len(plan) + len(extra)} steering slots ({len(plan)} for the "
                    f"engine's adapters, {len(extra)} request adapters) but the engine was started with "
                    f"{SLOTS_KEY}={S} (model_loader_extra_config)"
                )
            for slot, (op, tensor, gate) in enumerate(plan):
                if op == "add":
                    add[layer, slot] = tensor.float()
                else:
                    unit[layer, slot] = tensor
                if gate is not None:
                    slot_gate[layer, slot] = gate.index
                engine[layer, slot] = 1.0
            for slot, adapter in enumerate(extra, start=len(plan)):
                build_plan([adapter.step(layer)], slots.dtype, torch.device("cpu"), layer)  # refuses bad vectors
                vector = adapter.vectors[layer].float()
                if adapter.config.mode == "add":
                    add[layer, slot] = vector
                else:
                    unit[layer, slot] = (vector / torch.linalg.vector_norm(vector)).to(slots.dtype)
                if adapter.name in gates:
                    slot_gate[layer, slot] = gates[adapter.name].index
                request_slots[adapter.name][layer] = slot
        slots.unit.copy_(unit)
        slots.add.copy_(add)
        slots.slot_gate.copy_(slot_gate)
        self._write_gates(gated, keep_gates)
        self.adapters, self.request_adapters = list(adapters), list(request_adapters)
        self._engine_column, self._request_slots, self._columns = engine, request_slots, {}
        slots.write_request(ANONYMOUS, engine)
        for request, state in self._live.items():
            slots.write_request(request, self.column(state))

    def _write_gates(self, gated: Sequence[AdapterVectors], keep: bool) -> None:
        slots, count = self.slots, self.slots.capacity.gates
        unit = torch.zeros(count, slots.hidden_size)
        threshold = torch.zeros(count, dtype=torch.float64)
        sign = torch.ones(count, dtype=torch.float64)
        mean = torch.zeros(count)
        layer = torch.full((count,), -1, dtype=torch.long)
        for index, adapter in enumerate(gated):
            config = adapter.config
            unit[index] = adapter.condition / torch.linalg.vector_norm(adapter.condition)
            threshold[index] = float(config.condition_threshold)
            sign[index] = 1.0 if config.condition_comparator == "greater" else -1.0
            mean[index] = 1.0 if config.condition_position == "mean" else 0.0
            layer[index] = config.condition_layer
        for buffer, values in (
            (slots.gate_unit, unit),
            (slots.gate_threshold, threshold),
            (slots.gate_sign, sign),
            (slots.gate_mean, mean),
            (slots.gate_layer, layer),
        ):
            buffer.copy_(values)
        if not keep:
            slots.decision[:-1].zero_()

    def column(self, state: Any) -> torch.Tensor:
        """The coefficients ``[layers, slots]`` of a request (its adapter and α) under the written adapters."""
        key = (state.adapter, state.scale)
        if key not in self._columns:
            column = self._engine_column.clone()
            chosen = next((a for a in self.request_adapters if a.name == state.adapter), None)
            if chosen is not None:
                scale = chosen.config.scale if state.scale is None else state.scale
                for layer, slot in self._request_slots[chosen.name].items():
                    column[layer, slot] = (
                        scale * chosen.config.layer_scale(layer) if chosen.config.mode == "add" else 1.0
                    )
            self._columns[key] = column
        return self._columns[key]

    # ---------------------------------------------------------------------------------------------- steps
    def prepare_step(self, tracker: Any, layout: list[tuple[int, int]] | None, rows: int) -> None:
        """Give each request of the step an id (writing its coefficients the first time) and write the step's
        buffers; ``tracker`` is the batch tracker (``None``: every request steers with the engine's ungated adapters
        only)."""
        if layout is None:
            self.slots.prepare_step(None, [], [], rows)
            return
        if tracker is None:
            self.slots.prepare_step(layout, [ANONYMOUS] * len(layout), [-1] * len(layout), rows)
            return
        states = tracker.requests(len(layout))
        for state in states:
            if state.steering_id is None:
                state.steering_id = self._allocate(tracker)
                self._live[state.steering_id] = state
                self.slots.write_request(state.steering_id, self.column(state))
        self.slots.prepare_step(layout, [s.steering_id for s in states], [s.prompt_len for s in states], rows)

    def _allocate(self, tracker: Any) -> int:
        """A free request id; when none is left, the ids of requests the tracker no longer holds are given back,
        then those of the requests that left the batch longest ago."""
        if not self.slots.free_ids():
            known = {id(state) for state in tracker.known()}
            self._release([state for state in self._live.values() if id(state) not in known])
        if not self.slots.free_ids():
            self._release(tracker.forget_parked(self.slots.capacity.max_requests))
        return self.slots.allocate()

    def _release(self, states: Sequence[Any]) -> None:
        for state in states:
            if state.steering_id is not None and self._live.get(state.steering_id) is state:
                del self._live[state.steering_id]
                self.slots.release(state.steering_id)
            state.steering_id = None
