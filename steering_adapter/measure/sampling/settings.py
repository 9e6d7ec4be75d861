"""The sampling settings that decide which answers a prompt gets, and so key every answer record.

:class:`SamplingSettings` holds the keyword arguments of :func:`~steering_adapter.measure.sampling.sample_answers`
that change the samples (not ``batch_size``, ``progress`` or ``prompt_ids``), with the same defaults;
``tests/measure/test_sampling_settings.py`` checks it against that signature so the two cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from steering_adapter.measure.sampling.answers import THINK_END

__all__ = ["SamplingSettings"]


@dataclass(frozen=True)
class SamplingSettings:
    """How answers are sampled (see :func:`~steering_adapter.measure.sampling.sample_answers` for each field).

    Attributes:
        k: answers per prompt.
        max_new_tokens: generation budget per answer.
        temperature: sampling temperature (``0``: greedy, one answer repeated ``k`` times).
        top_p: nucleus sampling mass.
        top_k: top-k sampling (``0``: off).
        seed: base seed (each batch or chunk derives its own).
        system_prompt: optional system message.
        thinking: reasoning handling of thinking models (``None``: detect).
        think_end: end-of-reasoning marker.
        chat_template_kwargs: extra chat-template variables.
        generate_kwargs: extra ``generate`` arguments (plain JSON values only, as they key the records).
    """

    k: int = 5
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    system_prompt: str | None = None
    thinking: bool | None = None
    think_end: str | None = THINK_END
    chat_template_kwargs: Mapping[str, Any] | None = None
    generate_kwargs: Mapping[str, Any] | None = None

    @classmethod
    def from_kwargs(cls, **sampling: Any) -> SamplingSettings:
        """The settings with ``sampling`` over the defaults.

        Raises:
            ValueError: an unknown setting.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(sampling) - set(known))
        if unknown:
            raise ValueError(f"unknown sampling settings {unknown}; known: {sorted(known)}")
        return cls(**sampling)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as a plain JSON dict (the part of a record's key that the settings make).

        Raises:
            ValueError: a value that is not plain JSON (e.g. ``generate_kwargs`` holding logits processors), which
                could not be part of a stable key.
        """
        settings = asdict(self)
        try:
            json.dumps(settings, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"sampling settings must be plain JSON values to key the records ({exc}); "
                "call sample_answers directly for non-serialisable generate_kwargs"
            ) from None
        return settings
