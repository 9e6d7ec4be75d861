"""Capability cost of steering: KL divergence from the base model's next-token distributions, and perplexity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from steering_adapter.measure.sampling.batches import forward_inputs
from steering_adapter.measure.sampling.prompt_encoding import (
    encode_texts,
    format_prompts,
    input_device,
    pad_batch,
    padding_id,
    stop_token_ids,
)
from steering_adapter.tuner.model import steering_disabled


def _causal_lm(model: nn.Module) -> nn.Module:
    """The transformers model under any PEFT wrapper (the identity the base-side cache belongs to)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class NextTokenKL:
    """KL(base ‖ steered) of next-token distributions on fixed neutral prompts, with the base side computed once.

    Each prompt is formatted as the sampler formats it (chat template, optional system turn, left padding). At the
    last ``max_tokens`` real positions of each prompt — the last one gives the first answer token — the base model's
    log-probabilities are computed on the first :meth:`measure` (with steering switched off) and kept; every later
    call only runs the steered model. Logits are produced for the kept positions only (``logits_to_keep`` where the
    model takes it) and normalised in row chunks, so memory is bounded by ``batch_size × max_tokens × vocab``.

    Args:
        tokenizer: the model's tokenizer.
        prompts: neutral prompts.
        max_tokens: positions per prompt (``None``: every real position).
        batch_size: prompts per forward pass.
        system_prompt: system message before each prompt (as when sampling).
        chat: format with the chat template (``False``: plain text with the tokenizer's special tokens).
        progress: tqdm bars.

    Raises:
        ValueError: empty ``prompts`` or ``max_tokens < 1``.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompts: Sequence[str],
        *,
        max_tokens: int | None = 16,
        batch_size: int = 8,
        system_prompt: str | None = None,
        chat: bool = True,
        progress: bool = True,
    ) -> None:
        if not prompts:
            raise ValueError("no prompts to measure KL on")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.system_prompt = system_prompt
        self.chat = chat
        self.progress = progress
        self._base: list[torch.Tensor] | None = None
        self._owner: nn.Module | None = None

    def _batches(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.chat:  # the sampler's formatting: chat template (plain-text fallback), system turn, special tokens
            encoded = encode_texts(
                self.tokenizer, format_prompts(self.tokenizer, self.prompts, system_prompt=self.system_prompt)
            )
        else:  # plain text with the tokenizer's own special tokens
            texts = (
                self.prompts if self.system_prompt is None else [f"{self.system_prompt}\n\n{p}" for p in self.prompts]
            )
            encoded = encode_texts(self.tokenizer, texts, add_special_tokens=True)
        pad_id = padding_id(self.tokenizer, stop_token_ids(model, self.tokenizer))
        device = input_device(model)
        return [
            pad_batch(encoded[start : start + self.batch_size], pad_id, device=device)
            for start in range(0, len(encoded), self.batch_size)
        ]

    def _logprobs(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[n_kept, vocab]`` (float32, CPU) at the kept positions, row by row of the batch."""

        width = input_ids.shape[1]
        keep = width if self.max_tokens is None else min(self.max_tokens, width)
        logits = model(**forward_inputs(model, input_ids, attention_mask, keep)).logits[:, -keep:]
        kept = attention_mask[:, -keep:].bool()
        rows = [torch.log_softmax(logits[row][kept[row]].float(), dim=-1).cpu() for row in range(logits.shape[0])]
        return torch.cat(rows)

    def _last_rows(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Per batch, the index (among its kept rows) of each prompt's last position."""
        indices = []
        for _, mask in batches:
            keep = mask.shape[1] if self.max_tokens is None else min(self.max_tokens, mask.shape[1])
            counts = mask[:, -keep:].sum(dim=1).cpu()
            indices.append(counts.cumsum(0) - 1)
        return indices

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        """KL(base ‖ steered) of ``model`` (steering adapters attached and active) on the prompts.

        Returns:
            ``{"mean_kl": mean over the kept positions, "mean_kl_last": mean over prompts at the last prompt token
            (the first answer token's distribution), "positions": count, "n_prompts": len(prompts)}``.

        Raises:
            ValueError: when called with another model than the one whose base side is cached.
        """
        owner = _causal_lm(model)
        if self._owner is not None and owner is not self._owner:
            raise ValueError("this NextTokenKL holds the base distributions of another model; make a new one")
        batches = self._batches(model)
        if self._base is None:
            with steering_disabled(model):
                self._base = [
                    self._logprobs(model, ids, mask)
                    for ids, mask in tqdm(batches, desc="KL (base)", disable=not self.progress)
                ]
            self._owner = owner
        total, count, last_total = 0.0, 0, 0.0
        for (ids, mask), base, last in zip(
            tqdm(batches, desc="KL", disable=not self.progress), self._base, self._last_rows(batches), strict=True
        ):
            steered = self._logprobs(model, ids, mask)
            kl = (base.exp() * (base - steered)).sum(-1)
            total += kl.double().sum().item()
            count += kl.numel()
            last_total += kl[last].double().sum().item()
        return {
            "mean_kl": total / count,
            "mean_kl_last": last_total / len(self.prompts),
            "positions": count,
            "n_prompts": len(self.prompts),
        }


def next_token_kl(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    max_tokens: int | None = None,
    system_prompt: str | None = None,
    chat: bool = True,
    progress: bool = True,
) -> dict[str, float]:
    """Mean KL(base ‖ steered) of next-token distributions at the real token positions of the prompts.

    The base distribution comes from the same model with steering switched off (:func:`steering_disabled`). To
    measure several steering strengths against one base, keep a :class:`NextTokenKL` (its base side is computed once).

    Args:
        model: a model with steering adapters attached (PeftModel or transformers ``load_adapter``).
        tokenizer: its tokenizer (padding side does not matter: prompts are left-padded by hand).
        prompts: neutral prompts, formatted with the chat template when ``chat`` is true.
        batch_size: prompts per forward pass.
        max_tokens: only the last ``max_tokens`` real positions of each prompt (``None``: all of them).
        system_prompt: system message before each prompt.

    Returns:
        ``{"mean_kl": mean over positions, "mean_kl_last": mean over prompts at the last prompt token (the first
        answer token's distribution), "positions": count, "n_prompts": len(prompts)}``.
    """
    kl = NextTokenKL(
        tokenizer,
        prompts,
        max_tokens=max_tokens,
        batch_size=batch_size,
        system_prompt=system_prompt,
        chat=chat,
        progress=progress,
    )
    return kl.measure(model)


@torch.no_grad()
def perplexity(
    model: nn.Module, tokenizer, texts: Sequence[str], *, batch_size: int = 8, progress: bool = True
) -> float:
    """Token-level perplexity of plain ``texts`` (no chat template): exp(mean negative log-likelihood).

    Args:
        model: any causal LM (steered or not; wrap the call in :func:`steering_disabled` for the base value).
        tokenizer: its tokenizer.
        texts: reference texts.

    Returns:
        The perplexity over all predicted tokens of all texts.
    """
    if not texts:
        raise ValueError("no texts to measure perplexity on")
    nll, count = 0.0, 0
    for start in tqdm(range(0, len(texts), batch_size), desc="perplexity", disable=not progress):
        # plain text with the tokenizer's own special tokens, right-padded (default positions stay exact)
        encoded = encode_texts(tokenizer, texts[start : start + batch_size], add_special_tokens=True)
        input_ids, attention_mask = pad_batch(encoded, padding_id(tokenizer), side="right", device=input_device(model))
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        logprobs = torch.log_softmax(model(**batch).logits.float()[:, :-1], dim=-1)
        targets = batch["input_ids"][:, 1:]
        mask = batch["attention_mask"][:, 1:].bool() & batch["attention_mask"][:, :-1].bool()
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        nll -= token_lp[mask].double().sum().item()
        count += int(mask.sum())
    if count == 0:
        raise ValueError("texts are too short: no token to predict")
    return float(torch.exp(torch.tensor(nll / count)))
