"""Graph-safe steering: the steering step of every decoder block as tensor operations on persistent buffers.

vLLM's compiled modes trace the model's forward once (``torch.compile(fullgraph=True)``, every guard dropped) and, on
GPUs, capture it in CUDA graphs: a forward hook attached after start-up is never called, and Python inside the
traced region runs only while tracing. :class:`SteeringSlots` is therefore installed when the model is loaded, before
vLLM compiles it: one hook per decoder block, traced into the graph, whose work depends only on buffers of fixed
shape. What the hooks do is changed by writing into those buffers, never by changing the graph, the way vLLM's own
LoRA support maps tokens to adapter slots:

- ``steering_slots`` **slots per block**. Slot ``k`` of block ``l`` holds an ablation unit vector ``u`` (zero for an
  add) and an add vector ``w`` (zero for an ablation) and steers a token row with coefficient ``c``::

      h <- h - ((h . u) c) u + (c w)        (rows with c = 0 keep h exactly)

  The engine's adapters fill the first slots with the PEFT tuner's own plan
  (:func:`~steering_adapter.tuner.layer.build_plan`: declared order, consecutive adds folded, ``c = 1``); each
  request-selectable adapter takes one more slot, with ``c = α s_l`` (its request's α) on the rows of the requests
  that name it, ``0`` elsewhere.
- ``steering_gates`` **gates**. A gate is decided at its condition block, inside the graph, for each request whose
  whole prompt is in the step (its first row at position 0): the last prompt row or the prompt mean, projected on
  the unit condition vector, compared with the threshold; the decision is written into a per-request buffer and
  kept for every later step of that request. A gated slot multiplies ``c`` by its request's decision.
- Coefficients and decisions are stored per request **id** (a row of the per-request buffers that a request keeps
  while it lives, whichever batch slot it moves to). Before each step, :meth:`SteeringSlots.prepare_step` (a
  forward pre-hook on the model, outside the compiled region) writes the token → id map and the rows that decide
  gates; nothing inside the traced region reads a value back to the host.

Rows a step pads (CUDA-graph sizes) map to an id whose coefficients are all zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["SlotCapacity", "SteeringSlots"]

# Per-request ids: ANONYMOUS steers with the engine's ungated adapters only (an engine without the batch tracker),
# PADDING steers nothing (rows a step pads, and requests in warm-up passes).
ANONYMOUS, PADDING = 0, 1
_FIRST_ID = 2


class SlotCapacity:
    """The fixed sizes of the steering buffers (chosen at load time; the compiled graph depends on them).

    Args:
        slots: steering slots per decoder block (engine adapters' plan steps plus one per request adapter).
        gates: condition gates (engine and request adapters together).
        max_tokens: the most token rows of one step (vLLM's ``max_num_batched_tokens``).
        max_requests: the most requests of one step (vLLM's ``max_num_seqs``).
        ids: per-request ids (running requests, plus requests that left the batch and may come back).
    """

    def __init__(self, slots: int, gates: int, max_tokens: int, max_requests: int, ids: int | None = None) -> None:
        for name, value in (("slots", slots), ("gates", gates), ("max_tokens", max_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"steering capacity: {name} must be a non-negative integer, got {value!r}")
        if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
            raise ValueError(f"steering capacity: max_requests must be a positive integer, got {max_requests!r}")
        self.slots = slots
        self.gates = gates
        self.max_tokens = max_tokens
        self.max_requests = max_requests
        self.ids = ids if ids is not None else _FIRST_ID + 4 * max_requests

    def __repr__(self) -> str:
        return (
            f"SlotCapacity(slots={self.slots}, gates={self.gates}, max_tokens={self.max_tokens}, "
            f"max_requests={self.max_requests}, ids={self.ids})"
        )


class SteeringSlots:
    """The persistent steering buffers of one vLLM model and the traced per-block step.

    Args:
        num_layers: decoder blocks of the model.
        hidden_size: its hidden size.
        capacity: the buffers' sizes.
        dtype: the dtype of the residual stream.
        device: the model's device.
    """

    def __init__(
        self, num_layers: int, hidden_size: int, capacity: SlotCapacity, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.capacity = capacity
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.dtype = dtype
        self.device = device
        L, S, G, N = num_layers, capacity.slots, capacity.gates, capacity.ids  # noqa: N806
        T = max(capacity.max_tokens, 1)  # noqa: N806
        f32 = dict(dtype=torch.float32, device=device)
        index = dict(dtype=torch.long, device=device)
        # per slot
        self.unit = torch.zeros(L, S, hidden_size, dtype=dtype, device=device)
        self.add = torch.zeros(L, S, hidden_size, **f32)
        self.slot_gate = torch.full((L, S), G, **index)  # row G of `decision` is all ones: ungated
        # per slot and request id
        self.coef = torch.zeros(L, S, N, **f32)
        self.enabled = torch.ones(1, **f32)
        # per gate
        self.gate_unit = torch.zeros(G, hidden_size, **f32)
        self.gate_threshold = torch.zeros(G, dtype=torch.float64, device=device)
        self.gate_sign = torch.ones(G, dtype=torch.float64, device=device)
        self.gate_mean = torch.zeros(G, **f32)
        self.gate_layer = torch.full((G,), -1, **index)
        self.decision = torch.zeros(G + 1, N, **f32)
        self.decision[G] = 1.0
        # per step (written by prepare_step; the graph reads the first `rows` entries). A request has at least one
        # row, so the per-request entries of a step also fit in `rows`: nothing is sized by max_requests.
        self.token_id = torch.full((T,), PADDING, **index)
        self.token_request = torch.zeros(T, **index)  # the request row a prompt token is pooled into
        self.token_pool = torch.zeros(T, **f32)
        self.request_id = torch.full((T,), PADDING, **index)
        self.request_first = torch.zeros(T, **index)
        self.request_last = torch.zeros(T, **index)
        self.request_deciding = torch.zeros(T, **f32)
        self._written: tuple | None = None
        self._free = list(range(capacity.ids - 1, _FIRST_ID - 1, -1))
        self._handles: list[Any] = []

    # -------------------------------------------------------------------------------------------- in the graph
    def decide(self, layer: int, stream: torch.Tensor, positions: torch.Tensor) -> None:
        """Decide the gates whose condition block is ``layer`` for the requests whose whole prompt is in this step;
        ``stream`` ``[tokens, d]`` is the residual stream after the block, ``positions`` ``[tokens]``.

        Every row is projected on every gate's unit first (one ``[tokens, d] @ [d, gates]`` product); the prompt mean
        is then pooled from those scalar projections (the projection of the mean, up to float rounding), so nothing
        of size ``[tokens, d]`` is written."""
        rows = stream.shape[0]
        request_id = self.request_id[:rows]
        projection = stream.float() @ self.gate_unit.T  # [rows, G]
        pooled_mean = torch.zeros_like(projection).index_add(
            0, self.token_request[:rows], projection * self.token_pool[:rows, None]
        )
        pooled = torch.where(self.gate_mean > 0, pooled_mean, projection[self.request_last[:rows]]).double()
        steer = (pooled * self.gate_sign > self.gate_threshold * self.gate_sign).float()  # [rows, G]
        fresh = self.request_deciding[:rows] * (positions[self.request_first[:rows]] == 0).float()  # [rows]
        here = fresh[:, None] * (self.gate_layer == layer).float()  # [rows, G]
        gates = torch.arange(self.capacity.gates, device=stream.device)
        old = self.decision[gates[None, :], request_id[:, None]]  # [rows, G]
        self.decision.index_put_(
            (gates[None, :].expand_as(old), request_id[:, None].expand_as(old)), torch.where(here > 0, steer, old)
        )

    def steer(self, layer: int, stream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The steered residual stream ``[tokens, d]`` of block ``layer`` and the bool ``[tokens]`` rows it changed.

        A row whose coefficient is 0 keeps its values exactly through a slot (``h - 0 u + 0 w = h`` for finite h).
        Projections are elementwise products summed over the hidden size, which the compiler fuses with the update
        (a matrix-vector product would be a separate library call per slot)."""
        rows = stream.shape[0]
        ids = self.token_id[:rows]
        coef = self.coef[layer][:, ids] * self.decision[self.slot_gate[layer][:, None], ids[None, :]]  # [S, rows]
        coef = coef * self.enabled
        hidden = stream
        for slot in range(self.capacity.slots):
            unit = self.unit[layer, slot]
            c = coef[slot].to(hidden.dtype)[:, None]
            projection = (hidden * unit).sum(-1, keepdim=True) * c
            delta = (self.add[layer, slot][None, :] * coef[slot][:, None]).to(hidden.dtype)
            hidden = hidden - projection * unit + delta
        return hidden, (coef != 0).any(0)

    def install(self, blocks: Sequence[nn.Module]) -> None:
        """Add the traced steering hook to each of ``blocks`` (before vLLM compiles the model)."""
        for layer, block in enumerate(blocks):
            self._handles.append(block.register_forward_hook(self._hook(layer), with_kwargs=True))

    def _hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            fused = not isinstance(output, torch.Tensor)
            hidden, residual = (output[0], output[1]) if fused else (output, None)
            stream = hidden if residual is None else hidden + residual
            if self.capacity.gates:
                positions = kwargs.get("positions", args[0] if args else None)
                self.decide(layer, stream, positions)
            if not self.capacity.slots:
                return None
            steered, touched = self.steer(layer, stream)
            if residual is None:
                return steered if not fused else (steered, *output[1:])
            # rows no slot touched keep vLLM's own (hidden, residual) pair: bit-identical to the unsteered engine
            keep = touched[:, None]
            return (
                torch.where(keep, torch.zeros_like(hidden), hidden),
                torch.where(keep, steered, residual),
                *output[2:],
            )

        return hook

    # ---------------------------------------------------------------------------------------- outside the graph
    def free_ids(self) -> int:
        """How many per-request ids are free."""
        return len(self._free)

    def allocate(self) -> int:
        """A free per-request id (its coefficients still to be written with :meth:`write_request`).

        Raises:
            RuntimeError: every id is taken.
        """
        if not self._free:
            raise RuntimeError(
                f"steering: all {self.capacity.ids - _FIRST_ID} per-request ids are in use (raise steering_ids)"
            )
        return self._free.pop()

    def release(self, request: int) -> None:
        """Give ``request``'s id back (its coefficients and decisions are cleared)."""
        self.coef[:, :, request] = 0.0
        self.decision[:-1, request] = 0.0
        self._free.append(request)

    def write_request(self, request: int, column: torch.Tensor) -> None:
        """Write the coefficients ``[layers, slots]`` of request id ``request``."""
        self.coef[:, :, request].copy_(column)

    def prepare_step(
        self, layout: list[tuple[int, int]] | None, requests: Sequence[int], prompt_lens: Sequence[int], rows: int
    ) -> None:
        """Write the per-step buffers for a forward pass of ``rows`` token rows.

        Args:
            layout: row range of each request of the step (``None``: a warm-up pass, nothing is steered).
            requests: the per-request id of each request of ``layout``.
            prompt_lens: the prompt length of each (``< 1``: unknown, its gates are never decided here).
            rows: token rows of the pass (padding included).

        Raises:
            RuntimeError: more rows or requests than the buffers hold.
        """
        capacity = self.capacity
        if rows > self.token_id.shape[0]:
            raise RuntimeError(f"steering: a step of {rows} token rows exceeds max_tokens={capacity.max_tokens}")
        if layout is not None and len(layout) > capacity.max_requests:
            raise RuntimeError(
                f"steering: a step of {len(layout)} requests exceeds max_requests={capacity.max_requests}"
            )
        deciding = capacity.gates > 0
        key = (
            rows,
            None if layout is None else tuple(layout),
            tuple(requests),
            tuple(
                n if deciding and n >= 1 and end - start >= n else 0
                for (start, end), n in zip(layout or [], prompt_lens, strict=True)
            ),
        )
        if key == self._written:  # steady decoding: the same requests, one row each, nothing to decide
            return
        token_id = np.full(rows, PADDING, dtype=np.int64)
        token_request = np.zeros(rows, dtype=np.int64)
        token_pool = np.zeros(rows, dtype=np.float32)
        request_id = np.full(rows, PADDING, dtype=np.int64)
        request_first = np.zeros(rows, dtype=np.int64)
        request_last = np.zeros(rows, dtype=np.int64)
        request_deciding = np.zeros(rows, dtype=np.float32)
        for index, ((start, end), request, prompt_len) in enumerate(zip(layout or [], requests, key[3], strict=True)):
            token_id[start:end] = request
            request_id[index] = request
            request_first[index] = start
            if prompt_len:
                token_request[start : start + prompt_len] = index
                token_pool[start : start + prompt_len] = 1.0 / prompt_len
                request_last[index] = start + prompt_len - 1
                request_deciding[index] = 1.0
        for buffer, values in (
            (self.token_id, token_id),
            (self.token_request, token_request),
            (self.token_pool, token_pool),
            (self.request_id, request_id),
            (self.request_first, request_first),
            (self.request_last, request_last),
            (self.request_deciding, request_deciding),
        ):
            buffer[:rows].copy_(torch.from_numpy(values), non_blocking=True)
        self._written = key
