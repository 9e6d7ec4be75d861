"""Wall time and model tokens per pipeline stage, accumulated for ``timings.json``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["TOKEN_KINDS", "StageTimes"]

# the kinds of tokens a watched model's forward passes take in:
# - "forward": positions of passes with more than one new position per row (prompt prefill, teacher-forced scoring,
#   activation collection, gate decisions), padding included;
# - "decode": positions of one-token decoding steps (rows x steps), rows that already ended included;
# - "padding": of both, the positions holding the tokenizer's padding id (left padding, rows past their end).
TOKEN_KINDS = ("forward", "decode", "padding")


class StageTimes:
    """Wall time per pipeline stage (``with times("select"): ...``), and the tokens the watched model processed in
    each stage, accumulated for ``timings.json``.

    Attributes:
        seconds: stage name -> wall seconds (rounded to 0.01 s).
        tokens: stage name -> :data:`TOKEN_KINDS` counts of the watched model's input positions; empty until
            :meth:`watch` is called. Passes of other models (a judge's reader, the relevance embedder) and of a vLLM
            engine are not counted.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.tokens: dict[str, dict[str, int]] = {}
        self._totals = dict.fromkeys(TOKEN_KINDS, 0)
        # padding counts still on the model's device: read once per stage, not once per decoding step (reading a
        # GPU tensor on the host waits for the GPU)
        self._pending_padding: dict[torch.device, torch.Tensor] = {}
        self._handle: Any = None

    def watch(self, model: nn.Module, pad_id: int | None) -> None:
        """Count the input positions of every forward pass of ``model`` from now on (a pre-hook on its input
        embeddings, so adapters, ``generate`` and direct calls are all seen).

        Args:
            model: a transformers model (``get_input_embeddings()``).
            pad_id: the tokenizer's padding id (positions holding it also count as ``"padding"``), or ``None``.
        """
        if self._handle is not None:
            self._handle.remove()
        totals = self._totals

        def count(module: nn.Module, args: tuple[Any, ...]) -> None:
            ids = args[0] if args else None
            if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
                return
            totals["decode" if ids.shape[1] == 1 else "forward"] += ids.numel()
            if pad_id is not None:
                pads = (ids == pad_id).sum()
                pending = self._pending_padding.get(pads.device)
                self._pending_padding[pads.device] = pads if pending is None else pending + pads

        self._handle = model.get_input_embeddings().register_forward_pre_hook(count)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        self._flush_padding()
        before = dict(self._totals)
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 2)
            if self._handle is not None:
                self._flush_padding()
                counts = self.tokens.setdefault(stage, dict.fromkeys(TOKEN_KINDS, 0))
                for kind in TOKEN_KINDS:
                    counts[kind] += self._totals[kind] - before[kind]

    def _flush_padding(self) -> None:
        """Add the padding counts still on a device to the host totals."""
        for pads in self._pending_padding.values():
            self._totals["padding"] += int(pads)
        self._pending_padding.clear()
