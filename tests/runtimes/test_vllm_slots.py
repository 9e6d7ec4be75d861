"""The graph-safe steering slots (steering_adapter.runtimes.vllm.slots / compiled; no vLLM needed) against a
hand-written per-row reference: vLLM-shaped blocks that return ``(hidden, residual)`` over a flat batch of several
requests, the engine's adapters in declared order (adds, an ablation, layer scales), a condition gate decided from
each prompt and kept for its continuation, and request-selected adapters with their own α. The same steps traced by
``torch.compile(fullgraph=True)`` give the same rows: nothing in them reads a value back to the host (a CUDA-graph
capture would need exactly that), and the gate decision written inside the graph reaches the buffer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from steering_adapter.runtimes.vllm import AdapterSpec, read_adapter, write_adapter
from steering_adapter.runtimes.vllm.compiled import SlotProgram
from steering_adapter.runtimes.vllm.slots import SlotCapacity, SteeringSlots

HIDDEN, LAYERS = 16, 4
COND_LAYER = 1


class Block(nn.Module):
    """A vLLM-style decoder block: ``(positions, hidden, residual) -> (hidden, residual)``; the residual stream is
    their sum."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(seed)
            self.linear.weight.copy_(torch.randn(HIDDEN, HIDDEN, generator=generator) / HIDDEN**0.5)

    def forward(self, positions, hidden, residual):
        stream = hidden if residual is None else hidden + residual
        return torch.tanh(self.linear(stream)), stream


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(i) for i in range(LAYERS))

    def forward(self, positions, hidden):
        residual = None
        for block in self.layers:
            hidden, residual = block(positions, hidden, residual)
        return hidden + residual


class Tracker:
    """The batch tracker's interface that SlotProgram uses."""

    def __init__(self, states) -> None:
        self.slots = list(states)
        self.parked: list = []

    def requests(self, count):
        return self.slots[:count]

    def known(self):
        return [*self.slots, *self.parked]

    def forget_parked(self, count):
        forgotten, self.parked = self.parked[:count], self.parked[count:]
        return forgotten


def _state(prompt_len, adapter=None, scale=None):
    return SimpleNamespace(prompt_len=prompt_len, adapter=adapter, scale=scale, steering_id=None)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("slots")
    g = torch.Generator().manual_seed(1)
    vec = lambda: {layer: torch.randn(HIDDEN, generator=g) for layer in (1, 2, 3)}  # noqa: E731
    shape = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS)
    condition = torch.randn(HIDDEN, generator=g)
    folders = {
        "add": write_adapter(root / "add", vec(), scale=1.5, layer_scales={"2": -0.5}, **shape),
        "ablate": write_adapter(root / "ablate", vec(), mode="ablate", **shape),
        "gated": write_adapter(
            root / "gated",
            vec(),
            scale=2.0,
            condition=condition,
            condition_layer=COND_LAYER,
            condition_threshold=-0.25,  # between the three prompts' projections (-0.51, -0.19, -0.28): one opens
            **shape,
        ),
        "req": write_adapter(root / "req", vec(), scale=3.0, **shape),
    }
    return {
        name: read_adapter(AdapterSpec(path=str(folder), name=name), HIDDEN, LAYERS)
        for name, folder in folders.items()
    }


def _reference(model, positions, hidden, layout, states, engine, requests, decided):
    """Each request alone through the blocks' own forward (no hooks), steered by hand; ``decided`` holds the gate
    decisions per request (filled by a request's prompt step, read by its later steps)."""
    outputs = []
    for index, ((start, end), state) in enumerate(zip(layout, states, strict=True)):
        h_in, pos, residual = hidden[start:end], positions[start:end], None
        for layer, block in enumerate(model.layers):
            out, res = block.forward(pos, h_in, residual)
            stream = out + res
            chosen = [a for a in requests if a.name == state.adapter]
            for adapter in [*engine, *chosen]:  # the gate sees the block's own output, before any steering
                if adapter.gated and layer == adapter.config.condition_layer and int(pos[0]) == 0:
                    unit = adapter.condition / adapter.condition.norm()
                    value = float(stream[state.prompt_len - 1] @ unit)
                    decided[index] = value > adapter.config.condition_threshold
            for adapter in [*engine, *chosen]:
                if layer not in adapter.vectors or (adapter.gated and not decided[index]):
                    continue
                vector = adapter.vectors[layer]
                if adapter.config.mode == "ablate":
                    unit = vector / vector.norm()
                    stream = stream - (stream @ unit)[:, None] * unit
                else:
                    scale = state.scale if adapter in chosen and state.scale is not None else adapter.config.scale
                    stream = stream + scale * adapter.config.layer_scale(layer) * vector
            h_in, residual = torch.zeros_like(stream), stream
        outputs.append(h_in + residual)
    return torch.cat(outputs)


def _run(adapters, compiled):
    torch.manual_seed(0)
    model = Model()
    engine = [adapters["add"], adapters["ablate"], adapters["gated"]]
    requests = [adapters["req"]]
    capacity = SlotCapacity(slots=4, gates=1, max_tokens=64, max_requests=4)
    slots = SteeringSlots(LAYERS, HIDDEN, capacity, torch.float32, torch.device("cpu"))
    slots.install(model.layers)
    program = SlotProgram(slots)
    program.write(engine, requests, keep_gates=False)
    # three requests with prompts of different lengths, two selecting "req" (one with its own α)
    states = [_state(5), _state(3, "req", -2.0), _state(4, "req")]
    tracker = Tracker(states)
    forward = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
    generator = torch.Generator().manual_seed(2)
    steps = []
    # step 1: every prompt whole (the gate is decided); step 2: one token each, continuing (the gate is kept)
    for lengths, first in (([5, 3, 4], [0, 0, 0]), ([1, 1, 1], [5, 3, 4])):
        bounds = torch.tensor([0, *lengths]).cumsum(0).tolist()
        layout = list(zip(bounds[:-1], bounds[1:], strict=True))
        rows = bounds[-1] + 2  # two padded rows, as a CUDA-graph size would add
        pieces = [torch.arange(f, f + n) for f, n in zip(first, lengths, strict=True)]
        positions = torch.cat([*pieces, torch.zeros(2, dtype=torch.long)])
        hidden = torch.randn(rows, HIDDEN, generator=generator)
        program.prepare_step(tracker, layout, rows)
        with torch.no_grad():
            got = forward(positions, hidden)
        steps.append((got, positions, hidden, layout, list(states)))
    return model, engine, requests, steps, slots


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_slots_steer_every_row_as_its_request_alone(adapters, compiled):
    model, engine, requests, steps, slots = _run(adapters, compiled)
    decided: dict[int, bool] = {}
    for got, positions, hidden, layout, states in steps:
        real = layout[-1][1]
        with torch.no_grad():
            expected = _reference(model, positions, hidden, layout, states, engine, requests, decided)
        assert torch.allclose(got[:real], expected, atol=1e-5), (got[:real] - expected).abs().max()
        stored = slots.decision[0, [s.steering_id for s in states]].tolist()
        assert stored == [float(decided[i]) for i in range(len(states))]  # written inside the (compiled) graph
    assert set(decided.values()) == {True, False}, "the gate should open for some prompts and not others"


def test_compiled_and_eager_rows_are_identical(adapters):
    eager = _run(adapters, compiled=False)[3]
    compiled = _run(adapters, compiled=True)[3]
    for (a, *_), (b, *_) in zip(eager, compiled, strict=True):
        assert torch.equal(a, b)


def test_rows_no_adapter_touches_keep_the_blocks_own_output(adapters):
    """With nothing written into the slots, every block returns exactly what it computed (bit for bit)."""
    torch.manual_seed(0)
    model = Model()
    plain = Model()
    plain.load_state_dict(model.state_dict())
    slots = SteeringSlots(LAYERS, HIDDEN, SlotCapacity(4, 1, 64, 4), torch.float32, torch.device("cpu"))
    slots.install(model.layers)
    SlotProgram(slots).prepare_step(Tracker([_state(6)]), [(0, 6)], 6)
    positions, hidden = torch.arange(6), torch.randn(6, HIDDEN)
    with torch.no_grad():
        assert torch.equal(model(positions, hidden), plain(positions, hidden))


def test_capacity_and_id_errors_name_the_problem(adapters):
    slots = SteeringSlots(LAYERS, HIDDEN, SlotCapacity(2, 0, 8, 2, ids=4), torch.float32, torch.device("cpu"))
    program = SlotProgram(slots)
    with pytest.raises(
        ValueError, match="1 condition-gated adapters but the engine was started with steering_gates=0"
    ):
        program.write([adapters["gated"]], [], keep_gates=False)
    with pytest.raises(ValueError, match=r"block 1 needs 3 steering slots \(2 for the engine's adapters, 1 request"):
        program.write([adapters["add"], adapters["ablate"]], [adapters["req"]], keep_gates=False)
    with pytest.raises(RuntimeError, match="a step of 9 token rows exceeds max_tokens=8"):
        program.prepare_step(None, None, 9)
    with pytest.raises(RuntimeError, match="a step of 3 requests exceeds max_requests=2"):
        slots.prepare_step([(0, 1), (1, 2), (2, 3)], [2, 2, 2], [1, 1, 1], 3)
    # ids: 2 usable; requests the tracker forgot give theirs back
    program.write([adapters["add"]], [], keep_gates=False)
    first = [_state(1), _state(1)]
    tracker = Tracker(first)
    program.prepare_step(tracker, [(0, 1), (1, 2)], 2)
    kept, freed = first[0].steering_id, first[1].steering_id
    tracker.slots, tracker.parked = [_state(1)], first[:1]  # one left for good, one parked
    program.prepare_step(tracker, [(0, 1)], 1)
    assert tracker.slots[0].steering_id == freed and first[1].steering_id is None and first[0].steering_id == kept
    tracker.slots = [tracker.slots[0], _state(1)]
    program.prepare_step(tracker, [(0, 1), (1, 2)], 2)  # no free id, all known: the parked request is forgotten
    assert first[0].steering_id is None and tracker.slots[1].steering_id == kept
