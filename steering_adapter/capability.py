"""Capability cost of steering: KL divergence from the base model's next-token distributions, and perplexity."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .token_positions import last_token_index
from .tuner.model import steering_disabled


def _encode(tokenizer, texts: Sequence[str], chat: bool, device) -> dict[str, torch.Tensor]:
    if chat and getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
            for t in texts
        ]
    batch = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=not chat)
    return {key: value.to(device) for key, value in batch.items()}


def _device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


@torch.no_grad()
def next_token_kl(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    chat: bool = True,
    progress: bool = True,
) -> dict[str, float]:
    """Mean KL(base ‖ steered) of next-token distributions over every real token position of the prompts.

    The base distribution comes from the same model with steering switched off (:func:`steering_disabled`).

    Args:
        model: a model with steering adapters attached (PeftModel or transformers ``load_adapter``).
        tokenizer: its tokenizer (padding side does not matter: masked positions are excluded).
        prompts: neutral prompts, formatted with the chat template when ``chat`` is true.
        batch_size: prompts per forward pass.

    Returns:
        ``{"mean_kl": mean over positions, "mean_kl_last": mean over prompts at the last prompt token (the first
        answer token's distribution), "positions": count}``.
    """
    if not prompts:
        raise ValueError("no prompts to measure KL on")
    total, count, last_total = 0.0, 0, 0.0
    for start in tqdm(range(0, len(prompts), batch_size), desc="KL", disable=not progress):
        batch = _encode(tokenizer, prompts[start : start + batch_size], chat, _device(model))
        steered = torch.log_softmax(model(**batch).logits.float(), dim=-1)
        with steering_disabled(model):
            base = torch.log_softmax(model(**batch).logits.float(), dim=-1)
        kl = (base.exp() * (base - steered)).sum(-1)  # [batch, seq]
        mask = batch["attention_mask"].bool()
        total += kl[mask].double().sum().item()
        count += int(mask.sum())
        last = last_token_index(batch["attention_mask"])
        last_total += kl[torch.arange(kl.shape[0]), last].double().sum().item()
    return {"mean_kl": total / count, "mean_kl_last": last_total / len(prompts), "positions": count}


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
        batch = _encode(tokenizer, texts[start : start + batch_size], False, _device(model))
        logprobs = torch.log_softmax(model(**batch).logits.float()[:, :-1], dim=-1)
        targets = batch["input_ids"][:, 1:]
        mask = batch["attention_mask"][:, 1:].bool() & batch["attention_mask"][:, :-1].bool()
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        nll -= token_lp[mask].double().sum().item()
        count += int(mask.sum())
    if count == 0:
        raise ValueError("texts are too short: no token to predict")
    return float(torch.exp(torch.tensor(nll / count)))
