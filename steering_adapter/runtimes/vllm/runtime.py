"""Steering inside a vLLM worker: forward hooks on the decoder blocks of vLLM's own model.

vLLM's decoder blocks return ``(hidden_states, residual)`` and the next block (or the final norm) adds the two
before normalising: the residual stream, transformers' block output ``h``, is their sum. A steered block therefore
returns ``(0, steer(hidden_states + residual))``: the next block's fused add sees exactly the steered ``h``, the
same float operations as the PEFT tuner on a transformers model. Blocks that return one tensor are steered directly.

The steps per block are the PEFT tuner's own plan (:func:`~steering_adapter.tuner.layer.build_plan` /
:func:`~steering_adapter.tuner.layer.apply_plan`): adapters in declared order, consecutive adds folded, ablation as
``h - (h.u)u``. Gated adapters select rows of the flattened batch through a :class:`TokenGate`, decided at the
condition block from each request's prompt; request-selected adapters apply, after the engine's adapters, to the
rows of the requests that name them, with each request's own α (see :mod:`steering_adapter.runtimes.vllm.batch` for how
rows map to requests).

In vLLM's eager mode (``enforce_eager=True``) the steps run as plain Python forward hooks. A compiled or
CUDA-graph-captured model never calls a hook attached after it was traced: there the loader builds the steering into
the graph when the model loads (:mod:`steering_adapter.runtimes.vllm.slots`) and the runtime writes the same steps
into its buffers (:class:`~steering_adapter.runtimes.vllm.compiled.SlotProgram`). :func:`attach` refuses a compiled
engine without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from steering_adapter.runtimes.vllm.adapters import AdapterSpec, AdapterVectors, parse_adapter_specs, read_adapter
from steering_adapter.runtimes.vllm.compiled import SlotProgram, compiled_mode, get_program
from steering_adapter.tuner.blocks import find_decoder_blocks
from steering_adapter.tuner.layer import apply_plan, build_plan

__all__ = ["SteeringRuntime", "TokenGate", "attach", "check_engine_config", "get_runtime"]

_RUNTIME_ATTR = "_steering_adapter_runtime"


class TokenGate:
    """The gate of one condition-gated adapter over the rows of the current forward pass.

    Decided at the adapter's condition block from each request's prompt (the last prompt token or the mean over the
    prompt tokens, projected on the unit condition vector and compared with the threshold) and kept, per request,
    for every later step of that request. :func:`~steering_adapter.tuner.layer.apply_plan` reads :meth:`current`.
    """

    def __init__(self, adapter: AdapterVectors) -> None:
        config = adapter.config
        self.name = adapter.name
        self.unit = adapter.condition / torch.linalg.vector_norm(adapter.condition)
        self.threshold = float(config.condition_threshold)
        self.comparator = config.condition_comparator
        self.position = config.condition_position
        self.mask: torch.Tensor | None = None
        self.last_projections: list[float] = []
        from steering_adapter.runtimes.vllm.batch import CLOCK  # lazy: batch.py imports vLLM

        self.attached = next(CLOCK)

    def decide(self, hidden: torch.Tensor, positions: torch.Tensor | None) -> None:
        """Set :attr:`mask` for this forward pass from the condition block's output ``hidden`` ``[tokens, d]``.

        A request whose rows start at position 0 is processing its prompt (fresh, or recomputed after preemption):
        its gate is decided here and stored with the request. Any other request continues a decided sequence; one
        whose prompt ran before this adapter was attached is left alone by it.

        Raises:
            RuntimeError: no batch tracker, a prompt split over several steps (chunked prefill), a continuing request
                with no decision (a prefix-cache hit), or positions missing.
        """
        from steering_adapter.runtimes.vllm.batch import current_tracker, step_layout  # lazy: batch.py imports vLLM

        self.mask = torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        layout = step_layout(hidden.shape[0])
        if layout is None:
            return  # warm-up / profiling pass: no request to steer
        tracker = current_tracker()
        if tracker is None:
            raise RuntimeError("steering: gated adapters need the SteeringBatchTracker logits processor")
        if positions is None:
            raise RuntimeError("steering: the decoder block was called without token positions")
        states = tracker.requests(len(layout))
        first_positions = positions[[start for start, _ in layout]].tolist() if layout else []
        pooled, deciding = [], []
        for (start, end), state, first in zip(layout, states, first_positions, strict=True):
            if first != 0:
                continue
            if state.prompt_len < 1 or end - start < state.prompt_len:
                raise RuntimeError(
                    f"steering: a prompt of {state.prompt_len} tokens was split over several steps ({end - start} "
                    "in this one); gated adapters need chunked prefill disabled"
                )
            rows = hidden[start : start + state.prompt_len].float()
            pooled.append(rows[-1] if self.position == "last" else rows.mean(0))
            deciding.append(state)
        if pooled:
            projections = (torch.stack(pooled) @ self.unit.to(hidden.device)).tolist()
            self.last_projections = projections
            for state, value in zip(deciding, projections, strict=True):
                state.decisions[self.name] = (
                    value > self.threshold if self.comparator == "greater" else (value < self.threshold)
                )
        for (start, end), state in zip(layout, states, strict=True):
            decision = state.decisions.get(self.name)
            if decision is None and state.arrival < self.attached:
                continue  # the request's prompt ran before this adapter was attached: not steered by it
            if decision is None:
                raise RuntimeError(
                    "steering: a request continues without a gate decision (its prompt was not processed in one "
                    "step: disable prefix caching and chunked prefill for gated adapters)"
                )
            if decision:
                self.mask[start:end] = True

    def current(self, rows: int) -> torch.Tensor:
        """The bool ``[rows]`` mask of the current forward pass (rows past the real tokens are never steered)."""
        if self.mask is None:
            raise RuntimeError(f"steering: gate of {self.name!r} used before its condition block ran")
        if rows == self.mask.shape[0]:
            return self.mask
        padded = torch.zeros(rows, dtype=torch.bool, device=self.mask.device)
        padded[: min(rows, self.mask.shape[0])] = self.mask[:rows]
        return padded


class SteeringRuntime:
    """The steering adapters attached to one vLLM model, their hooks and their plans.

    Args:
        model: vLLM's model (``model_runner.model``).
        hidden_size: its hidden size.
        num_hidden_layers: its number of decoder blocks.
        blocks_path: dotted path of its decoder blocks (found automatically when ``None``).
        program: the steering slots installed at load time (vLLM's compiled modes): adapters are written into
            their buffers instead of being run by forward hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        hidden_size: int,
        num_hidden_layers: int,
        blocks_path: str | None = None,
        program: SlotProgram | None = None,
    ) -> None:
        self.blocks = find_decoder_blocks(model, blocks_path)
        if len(self.blocks) != num_hidden_layers:
            raise ValueError(
                f"steering: found {len(self.blocks)} decoder blocks at {self.blocks.path!r} but the model config has "
                f"num_hidden_layers={num_hidden_layers}"
            )
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_hidden_layers)
        self.adapters: list[AdapterVectors] = []
        self.request_adapters: dict[str, AdapterVectors] = {}
        self.program = program
        self._enabled = True
        self._gates: dict[str, TokenGate] = {}
        self._handles: list[Any] = []
        self._plans: dict[tuple[int, torch.dtype, torch.device], list] = {}

    @property
    def enabled(self) -> bool:
        """``False``: every attached adapter is off (the base model exactly)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)
        if self.program is not None:
            self.program.slots.enabled.fill_(1.0 if self._enabled else 0.0)

    # ------------------------------------------------------------------------------------------- adapters
    def read(self, specs: Sequence[AdapterSpec]) -> list[AdapterVectors]:
        """Read and validate ``specs`` for this model (nothing is attached yet)."""
        return [read_adapter(spec, self.hidden_size, self.num_layers) for spec in specs]

    def set_adapters(self, adapters: Sequence[AdapterVectors]) -> list[dict[str, Any]]:
        """Replace the attached adapters by ``adapters`` (applied in this order); ``[]`` detaches everything.

        Returns:
            A description of each attached adapter (name, layers, mode, scale, gated).
        """
        adapters = list(adapters)
        names = [adapter.name for adapter in adapters] + list(self.request_adapters)
        if len(set(names)) != len(names):
            raise ValueError(f"steering adapter names must be unique (request adapters included), got {names}")
        if self.program is not None:  # refuses what does not fit before anything changes
            self.program.write(adapters, list(self.request_adapters.values()), keep_gates=False)
            self.adapters = adapters
            return self.describe()
        self.adapters = adapters
        self._rebuild()
        return self.describe()

    def set_scale(self, name: str, scale: float) -> None:
        """Change α of the attached adapter ``name``."""
        for adapter in self.adapters:
            if adapter.name == name:
                adapter.config.scale = float(scale)
                adapter.config.validate()
                self._plans.clear()
                if self.program is not None:
                    self.program.write(self.adapters, list(self.request_adapters.values()), keep_gates=True)
                return
        raise ValueError(f"no steering adapter named {name!r}; attached: {[a.name for a in self.adapters]}")

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": a.name,
                "source": a.source,
                "layers": list(a.config.layers),
                "mode": a.config.mode,
                "scale": a.config.scale,
                "layer_scales": a.config.layer_scales,
                "gated": a.gated,
            }
            for a in self.adapters
        ]

    def _rebuild(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._plans.clear()
        everything = [*self.adapters, *self.request_adapters.values()]
        self._gates = {adapter.name: TokenGate(adapter) for adapter in everything if adapter.gated}
        layers = set()
        for adapter in everything:
            layers |= set(adapter.vectors)
            if adapter.gated:
                layers.add(adapter.config.condition_layer)
        for layer in sorted(layers):
            block = self.blocks.blocks[layer]
            self._handles.append(block.register_forward_hook(self._hook_for(layer), with_kwargs=True))

    def _plan(self, layer: int, dtype: torch.dtype, device: torch.device) -> list:
        key = (layer, dtype, device)
        if key not in self._plans:
            steps = [
                step
                for adapter in self.adapters
                if (step := adapter.step(layer, self._gates.get(adapter.name))) is not None
            ]
            self._plans[key] = build_plan(steps, dtype, device, layer)
        return self._plans[key]

    # --------------------------------------------------------------------------------------------- hooks
    def _hook_for(self, layer: int):
        everything = [*self.adapters, *self.request_adapters.values()]
        deciding = [self._gates[a.name] for a in everything if a.gated and a.config.condition_layer == layer]
        per_request = [a for a in self.request_adapters.values() if layer in a.vectors]

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if not self.enabled:
                return None
            if isinstance(output, torch.Tensor):
                hidden, residual = output, None
            else:
                hidden, residual = output[0], output[1]
            stream = hidden if residual is None else hidden + residual
            for gate in deciding:
                positions = kwargs.get("positions", args[0] if args else None)
                gate.decide(stream, positions)
            plan = self._plan(layer, stream.dtype, stream.device)
            steered = apply_plan(stream, plan) if plan else stream
            if per_request:
                steered = self._apply_request_adapters(layer, steered, per_request)
            if steered is stream:
                return None
            if residual is None:
                return steered if isinstance(output, torch.Tensor) else (steered, *output[1:])
            return (torch.zeros_like(steered), steered, *output[2:])

        return hook

    def _apply_request_adapters(
        self, layer: int, hidden: torch.Tensor, adapters: Sequence[AdapterVectors]
    ) -> torch.Tensor:
        """Steer the rows of the requests that selected one of ``adapters`` (with their own α), as the tuner's plan
        would: ``h + (α s_i) v_i`` or ``h - (h.u)u`` on those rows, the other rows untouched."""
        from steering_adapter.runtimes.vllm.batch import current_tracker, step_layout  # lazy: batch.py imports vLLM

        layout = step_layout(hidden.shape[0])
        if layout is None:
            return hidden
        states = current_tracker().requests(len(layout))
        for adapter in adapters:
            users = [
                (rows, state) for rows, state in zip(layout, states, strict=True) if state.adapter == adapter.name
            ]
            if not users:
                continue
            gate = self._gates.get(adapter.name)
            allowed = gate.current(hidden.shape[0]) if gate is not None else None
            vector = adapter.vectors[layer].to(device=hidden.device, dtype=torch.float32)
            if adapter.config.mode == "ablate":
                mask = torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
                for (start, end), _ in users:
                    mask[start:end] = True
                if allowed is not None:
                    mask &= allowed
                unit = (vector / torch.linalg.vector_norm(vector)).to(hidden.dtype)
                ablated = hidden - torch.matmul(hidden, unit).unsqueeze(-1) * unit
                hidden = torch.where(mask[:, None], ablated, hidden)
                continue
            by_scale: dict[float, list[tuple[int, int]]] = {}
            for rows, state in users:
                scale = adapter.config.scale if state.scale is None else state.scale
                by_scale.setdefault(scale, []).append(rows)
            for scale, ranges in by_scale.items():
                mask = torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
                for start, end in ranges:
                    mask[start:end] = True
                if allowed is not None:
                    mask &= allowed
                delta = (vector * (scale * adapter.config.layer_scale(layer))).to(hidden.dtype)
                hidden = torch.where(mask[:, None], hidden + delta, hidden)
        return hidden


def get_runtime(model: nn.Module) -> SteeringRuntime | None:
    """The steering runtime attached to vLLM's ``model``, if any."""
    return getattr(model, _RUNTIME_ATTR, None)


def check_engine_config(vllm_config: Any, gated: bool, per_request: bool = False, slots: bool = False) -> None:
    """Refuse engine settings under which the adapters would not steer exactly.

    Args:
        slots: the steering slots were installed at load time (``load_format="steering"``), which compiled and
            CUDA-graph modes need.

    Raises:
        ValueError: a compiled / CUDA-graph model without the slots (forward hooks attached later are never called
            by the traced step), or with full CUDA graphs (only piecewise graphs leave the step's buffer writes
            outside the replayed region); for gated adapters also prefix caching, chunked prefill or a missing
            batch tracker; for request-selected adapters prefix caching (a cached prompt may have been computed
            under another adapter) or a missing tracker.
    """
    from steering_adapter.runtimes.vllm.batch import (  # lazy: batch.py imports vLLM
        TRACKER_QUALNAME,
        SteeringBatchTracker,
    )

    model_config = vllm_config.model_config
    if compiled_mode(vllm_config) and not slots:
        raise ValueError(
            "steering adapters in a compiled or CUDA-graph vLLM engine must be built into the model when it loads: "
            "start the engine with load_format='steering' (CLI: --load-format steering), or pass enforce_eager=True "
            "(CLI: --enforce-eager)"
        )
    cudagraphs = getattr(vllm_config.compilation_config, "cudagraph_mode", None)
    if slots and cudagraphs is not None and cudagraphs.has_full_cudagraphs():
        raise ValueError(
            "steering slots are written before each step by a hook on the model, which a full CUDA graph replays "
            f"past (cudagraph_mode={cudagraphs.name}): pass compilation_config={{'cudagraph_mode': 'PIECEWISE'}} "
            "(CLI: -cc.cudagraph_mode=PIECEWISE)"
        )
    if not (gated or per_request):
        return
    problems = []
    if vllm_config.cache_config.enable_prefix_caching:
        problems.append("prefix caching is on (enable_prefix_caching=False / --no-enable-prefix-caching)")
    if gated and vllm_config.scheduler_config.enable_chunked_prefill:
        problems.append("chunked prefill is on (enable_chunked_prefill=False / --no-enable-chunked-prefill)")
    processors = [
        p if isinstance(p, str) else f"{p.__module__}:{p.__qualname__}" for p in (model_config.logits_processors or [])
    ]
    if TRACKER_QUALNAME not in processors and SteeringBatchTracker not in (model_config.logits_processors or []):
        problems.append(f"the batch tracker is missing (logits_processors=['{TRACKER_QUALNAME}'])")
    if problems:
        reason = (
            "condition-gated steering adapters decide each sequence's gate from its whole prompt in one step"
            if gated
            else "request-selected steering adapters steer each request's own prompt"
        )
        raise ValueError(f"{reason}: " + "; ".join(problems))


def attach(model: nn.Module, vllm_config: Any, specs: Sequence[AdapterSpec]) -> SteeringRuntime:
    """Attach ``specs`` (in order) to vLLM's ``model``, replacing what was attached before.

    Raises:
        ValueError: engine settings that cannot steer exactly (:func:`check_engine_config`), or a bad adapter.
    """
    runtime = get_runtime(model)
    if runtime is None:
        text = vllm_config.model_config.hf_text_config
        runtime = SteeringRuntime(model, text.hidden_size, text.num_hidden_layers, program=get_program(model))
        setattr(model, _RUNTIME_ATTR, runtime)
    from steering_adapter.runtimes.vllm.batch import request_adapter_specs  # lazy: batch.py imports vLLM

    adapters = runtime.read(specs)
    per_request = runtime.read(parse_adapter_specs(request_adapter_specs()))
    gated = any(adapter.gated for adapter in [*adapters, *per_request])
    check_engine_config(vllm_config, gated=gated, per_request=bool(per_request), slots=runtime.program is not None)
    runtime.request_adapters = {adapter.name: adapter for adapter in per_request}
    runtime.set_adapters(adapters)
    return runtime
