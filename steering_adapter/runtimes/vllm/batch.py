"""Which request each row of vLLM's flattened batch belongs to: a logits processor that only watches the batch.

vLLM runs the tokens of every scheduled request of a step as one flat ``[tokens, hidden]`` batch. Condition-gated
and per-request steering need, for each token row, its request, the request's prompt length and the gate decided
for it. vLLM tells logits processors (a supported extension point, ``logits_processors=[...]`` /
``--logits-processors``) about every change of its persistent batch before each forward pass: requests added (with
their prompt token ids and sampling parameters), removed and moved. :class:`SteeringBatchTracker` keeps that
mirror of the batch, per worker process, and changes no logits. The token rows of batch slot ``i`` are
``query_start_loc[i]:query_start_loc[i + 1]`` of the step's attention metadata (see
:func:`step_layout`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm.forward_context import get_forward_context, is_forward_context_available
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

__all__ = [
    "REQUEST_ADAPTERS_ENV",
    "RequestState",
    "SteeringBatchTracker",
    "TRACKER_QUALNAME",
    "current_tracker",
    "request_adapter_specs",
    "step_layout",
]

TRACKER_QUALNAME = "steering_adapter.runtimes.vllm.batch:SteeringBatchTracker"
# Adapters that requests may name (``SamplingParams.extra_args`` / the API's ``vllm_xargs``): a JSON list of
# ``{"name", "path", "scale", "revision"}``. An environment variable, because vLLM's API server process (which
# validates requests) and its workers (which steer) both see it.
REQUEST_ADAPTERS_ENV = "STEERING_ADAPTER_VLLM_REQUEST_ADAPTERS"
REQUEST_ADAPTER_KEY = "steering_adapter"
REQUEST_SCALE_KEY = "steering_scale"


def request_adapter_specs() -> list[dict[str, Any]]:
    """The request-selectable adapters declared in :data:`REQUEST_ADAPTERS_ENV` (``[]`` when unset).

    Raises:
        ValueError: not a JSON list of objects each with a ``name`` and a ``path``.
    """
    raw = os.environ.get(REQUEST_ADAPTERS_ENV, "").strip()
    if not raw:
        return []
    try:
        specs = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{REQUEST_ADAPTERS_ENV} is not JSON: {exc}") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) and "name" in s and "path" in s for s in specs):
        raise ValueError(f"{REQUEST_ADAPTERS_ENV} must be a JSON list of {{'name': ..., 'path': ...}} objects")
    return specs


# A request that leaves the batch without finishing (not scheduled for a step) keeps its gate decisions for when it
# comes back; at most this many such requests are remembered. A request that was forgotten can only come back
# through a full prefill (preemption recomputes it), which decides its gates again.
_PARKED_LIMIT = 65536

_TRACKERS: list[SteeringBatchTracker] = []
# Orders request arrivals and adapter attachments in this process (see RequestState.arrival).
CLOCK = itertools.count()


@dataclass
class RequestState:
    """What the steering hooks know about one running request.

    Attributes:
        prompt_len: number of prompt tokens.
        adapter: the request-selected adapter (``extra_args["steering_adapter"]``), or ``None``.
        scale: the request's α for it (``extra_args["steering_scale"]``), or ``None`` for the adapter's own.
        decisions: gate decisions ``{adapter name: steer}`` taken during its prompt's forward pass.
        arrival: when the request first entered the batch (:data:`CLOCK`); a gate attached later has no decision
            for it.
        steering_id: its row in the compiled mode's per-request buffers (see
            :mod:`steering_adapter.runtimes.vllm.slots`), given at its first step.
    """

    prompt_len: int
    adapter: str | None
    scale: float | None
    output_ids: list[int] = field(repr=False)
    decisions: dict[str, bool] = field(default_factory=dict)
    arrival: int = field(default_factory=lambda: next(CLOCK))
    steering_id: int | None = None


class SteeringBatchTracker(LogitsProcessor):
    """A logits processor that mirrors vLLM's persistent batch for the steering hooks; logits pass unchanged."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.slots: list[RequestState | None] = []
        self._parked: OrderedDict[int, RequestState] = OrderedDict()
        _TRACKERS.append(self)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuse a request whose steering fields are malformed or name an adapter that was not declared (vLLM
        answers HTTP 400 with this message)."""
        extra = getattr(sampling_params, "extra_args", None) or {}
        name, scale = extra.get(REQUEST_ADAPTER_KEY), extra.get(REQUEST_SCALE_KEY)
        if name is None:
            if scale is not None:
                raise ValueError(f"{REQUEST_SCALE_KEY} needs {REQUEST_ADAPTER_KEY} (the adapter to scale)")
            return
        known = [spec["name"] for spec in request_adapter_specs()]
        if name not in known:
            raise ValueError(
                f"unknown steering adapter {name!r}: this server accepts {known or 'none'} "
                f"(declared with {REQUEST_ADAPTERS_ENV})"
            )
        if scale is not None and (
            isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale)
        ):
            raise ValueError(f"{REQUEST_SCALE_KEY} must be a finite number, got {scale!r}")

    def is_argmax_invariant(self) -> bool:
        return True

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        size = max(batch_update.batch_size, len(self.slots))
        self.slots.extend([None] * (size - len(self.slots)))
        for index in batch_update.removed:
            self._park(self.slots[index])
            self.slots[index] = None
        for index, params, prompt_ids, output_ids in batch_update.added:
            if index >= len(self.slots):
                self.slots.extend([None] * (index + 1 - len(self.slots)))
            self._park(self.slots[index])
            state = self._parked.pop(id(output_ids), None)
            if state is None or state.output_ids is not output_ids:
                extra = getattr(params, "extra_args", None) or {}
                scale = extra.get(REQUEST_SCALE_KEY)
                state = RequestState(
                    prompt_len=len(prompt_ids) if prompt_ids is not None else -1,
                    adapter=extra.get(REQUEST_ADAPTER_KEY),
                    scale=None if scale is None else float(scale),
                    output_ids=output_ids,
                )
            self.slots[index] = state
        for first, second, direction in batch_update.moved:
            if direction == MoveDirectionality.SWAP:
                self.slots[first], self.slots[second] = self.slots[second], self.slots[first]
            else:
                self.slots[second], self.slots[first] = self.slots[first], None
        del self.slots[batch_update.batch_size :]

    def _park(self, state: RequestState | None) -> None:
        if state is None:
            return
        self._parked[id(state.output_ids)] = state
        while len(self._parked) > _PARKED_LIMIT:
            self._parked.popitem(last=False)

    def forget_parked(self, count: int) -> list[RequestState]:
        """Forget the ``count`` requests that left the batch longest ago (finished ones, mostly) and return them; one
        that comes back later is a new request to the steering (its gates undecided)."""
        forgotten = []
        while self._parked and len(forgotten) < count:
            forgotten.append(self._parked.popitem(last=False)[1])
        return forgotten

    def known(self) -> list[RequestState]:
        """Every request the mirror holds: the batch's and those that left it and may come back."""
        return [state for state in self.slots if state is not None] + list(self._parked.values())

    def requests(self, count: int) -> list[RequestState]:
        """The states of batch slots ``0..count-1`` (the requests of the current step, in row order).

        Raises:
            RuntimeError: the mirror does not hold ``count`` requests (it cannot tell rows from requests).
        """
        states = self.slots[:count]
        if len(states) != count or any(state is None for state in states):
            raise RuntimeError(
                f"steering: the batch mirror holds {len(self.slots)} slots but the step has {count} requests"
            )
        return states  # type: ignore[return-value]


def current_tracker() -> SteeringBatchTracker | None:
    """The tracker of this worker process (``None`` when the engine was started without it)."""
    return _TRACKERS[-1] if _TRACKERS else None


def step_layout(rows: int) -> list[tuple[int, int]] | None:
    """Row range ``(start, end)`` of each request of the current forward pass, in batch-slot order.

    Returns:
        ``None`` outside a real step (vLLM's warm-up and profiling passes have no attention metadata).

    Raises:
        RuntimeError: micro-batched steps (several metadata lists), or metadata without ``query_start_loc``.
    """
    if not is_forward_context_available():
        return None
    metadata = get_forward_context().attn_metadata
    if metadata is None:
        return None
    if isinstance(metadata, list):
        raise RuntimeError("steering: gated or per-request adapters do not support micro-batching (ubatching)")
    first = next(iter(metadata.values())) if isinstance(metadata, dict) else metadata
    starts = getattr(first, "query_start_loc", None)
    if starts is None:
        raise RuntimeError(f"steering: attention metadata {type(first).__name__} has no query_start_loc")
    bounds = starts.tolist()
    if bounds[-1] > rows:
        raise RuntimeError(f"steering: the step has {bounds[-1]} tokens but the block output has {rows} rows")
    return list(zip(bounds[:-1], bounds[1:], strict=True))
