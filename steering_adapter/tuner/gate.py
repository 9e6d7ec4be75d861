"""Per-sequence gates of condition-gated steering adapters.

A :class:`GateState` belongs to one gated adapter on one model. A forward pre-hook on the model records the inputs
of each call and tells a new prompt from the continuation of the previous one: a decoding step with a KV cache, or
a call whose every row extends one of the prompt's rows (a no-cache decoding step, or a teacher-forced pass over
prompt + answer for some or all of the rows, in any order). During the prompt's forward pass the condition block
decides the gate of every sequence in the batch; every later call on those sequences reuses their decisions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from steering_adapter.tuner.token_positions import last_token_index


class GateState:
    """The current per-sequence decision of one gated adapter.

    Attributes:
        gate: bool ``[batch]`` — steer this sequence — once decided for the current prompt, else ``None``.
        pending: a new prompt is being processed and the condition block has not decided yet.
        last_projection: float ``[batch]`` projections that produced ``gate`` (for inspection and tests).
    """

    def __init__(self) -> None:
        self.gate: torch.Tensor | None = None
        self.pending = False
        self._decided: torch.Tensor | None = None  # the gate of the prompt batch, row for row
        self.last_projection: torch.Tensor | None = None
        self._prompt_ids: torch.Tensor | None = None
        self._attention_mask: torch.Tensor | None = None
        self._handle: Any = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module) -> None:
        """Watch ``model``'s forward calls (idempotent)."""
        if self._handle is None:
            self._handle = model.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    def detach(self) -> None:
        """Stop watching the model (on unload / delete)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def reset(self) -> None:
        """Forget the current decision: the next forward pass is taken as a new prompt."""
        self.gate = None
        self._decided = None
        self._prompt_ids = None

    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        past = kwargs.get("past_key_values")
        past_length = past.get_seq_length() if past is not None and hasattr(past, "get_seq_length") else 0
        if self.gate is not None and past_length > 0:
            return  # decoding step with a cache: same sequences
        rows = self._prompt_rows(input_ids) if self._decided is not None else None
        if rows is not None:
            self.gate = self._decided[rows.to(self._decided.device)]  # the same sequences, all or some, continued
            return
        self.gate = None
        self._decided = None
        self.pending = True
        self._prompt_ids = input_ids.detach() if input_ids is not None else None
        mask = kwargs.get("attention_mask")
        self._attention_mask = mask.detach() if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None

    def _prompt_rows(self, input_ids: torch.Tensor | None) -> torch.Tensor | None:
        """For each row of ``input_ids``, the index of the prompt row it extends; ``None`` unless every row does."""
        prompt = self._prompt_ids
        if input_ids is None or prompt is None or input_ids.ndim != 2 or input_ids.shape[1] < prompt.shape[1]:
            return None
        head = input_ids[:, : prompt.shape[1]].to(prompt.device)
        if head.shape[0] == prompt.shape[0] and torch.equal(head, prompt):
            return torch.arange(prompt.shape[0], device=prompt.device)
        matches = (head[:, None, :] == prompt[None, :, :]).all(-1)  # [rows, prompt rows]
        if not bool(matches.any(-1).all()):
            return None
        return matches.to(torch.int8).argmax(-1)

    # ------------------------------------------------------------------------------------------- decision
    def decide(
        self, hidden: torch.Tensor, condition: torch.Tensor, threshold: float, comparator: str, position: str
    ) -> None:
        """Decide the gate of each sequence from the condition block's output ``hidden`` ``[batch, seq, d]``."""
        mask = self._attention_mask
        if mask is None or mask.shape != hidden.shape[:2]:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        mask = mask.to(hidden.device)
        unit = (condition / torch.linalg.vector_norm(condition)).to(device=hidden.device, dtype=torch.float32)
        if position == "last":
            last = last_token_index(mask)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
        else:
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        projection = pooled @ unit
        self.last_projection = projection
        self.gate = projection > threshold if comparator == "greater" else projection < threshold
        self._decided = self.gate
        self.pending = False

    def current(self, batch: int) -> torch.Tensor:
        """The decided gate for a batch of ``batch`` sequences.

        Raises:
            RuntimeError: no decision yet, or a batch of another size than the prompt's.
        """
        if self.gate is None:
            raise RuntimeError(
                "gated steering: no gate decided for this forward pass (the condition block did not run)"
            )
        if self.gate.shape[0] != batch:
            raise RuntimeError(f"gated steering: gate decided for {self.gate.shape[0]} sequences, got {batch}")
        return self.gate
