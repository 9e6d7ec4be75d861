"""Log-probabilities of answer tokens: recorded during ``generate`` (:class:`StepLogprobs`) or teacher-forced
(:func:`answer_logprobs`), both from the model's raw logits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteria

from steering_adapter.measure.sampling.batches import accepted_forward_arguments, forward_inputs, prompt_batches
from steering_adapter.measure.sampling.prompt_encoding import format_prompts, input_device, padding_id, stop_token_ids

__all__ = ["LOGITS_BUDGET", "StepLogprobs", "answer_logprobs", "token_logprobs"]

# Upper bound on the number of logit entries (rows x answer positions x vocabulary) materialised at once in the
# log-probability pass; rows are processed in chunks to stay under it (about 1 GiB of float32).
LOGITS_BUDGET = 2**28


@torch.no_grad()
def token_logprobs(
    model: nn.Module,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    lengths: Sequence[int],
) -> list[torch.Tensor]:
    """Log-probabilities (float32, raw logits) of each row's first ``lengths[r]`` generated tokens.

    Args:
        sequences: ``[rows, prompt_width + new]`` left-padded prompts followed by the generated tokens.
        attention_mask: ``[rows, prompt_width + new]``, ``0`` on left padding and after each answer's end.
        prompt_width: width of the (padded) prompt part.
        lengths: answer lengths per row.

    Returns:
        One ``[lengths[r]]`` tensor per row, on CPU.
    """
    rows, total = sequences.shape
    new = total - prompt_width
    _, takes_logits_to_keep = accepted_forward_arguments(model)
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else 1
    kept = new + 1 if takes_logits_to_keep else total
    chunk = max(1, LOGITS_BUDGET // max(1, kept * vocab))
    results: list[torch.Tensor] = []
    for start in range(0, rows, chunk):
        ids = sequences[start : start + chunk]
        logits = model(**forward_inputs(model, ids, attention_mask[start : start + chunk], new + 1)).logits
        # logits[:, j] predicts the token after position j; keep the ones predicting the generated tokens.
        logits = logits[:, -(new + 1) : -1]
        for offset in range(ids.shape[0]):
            length = lengths[start + offset]
            targets = ids[offset, prompt_width : prompt_width + length]
            logprobs = torch.log_softmax(logits[offset, :length].float(), dim=-1)
            results.append(logprobs.gather(-1, targets[:, None].to(logprobs.device))[:, 0].cpu())
    return results


class StepLogprobs(StoppingCriteria):
    """Records, during ``generate``, the log-probability of each produced token under the model's raw logits.

    A forward hook on the causal LM keeps ``log_softmax`` of the last position's logits of the current step (one
    ``[rows, vocab]`` float32 tensor, replaced every step); ``generate`` calls this object as a stopping criterion
    right after it appends the step's token, which is then gathered from that row. It never stops generation.

    Use as a context manager around ``generate`` (the hook is removed on exit) and pass it in ``stopping_criteria``.

    Args:
        model: the model whose ``generate`` is called (a transformers model, with or without adapters, or a
            ``PeftModel``); the hook sits on the innermost transformers causal LM, whose output carries the logits.
    """

    def __init__(self, model: nn.Module) -> None:
        self.module = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._handle: Any = None
        self._pending: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def __enter__(self) -> StepLogprobs:
        self._steps, self._pending = [], None
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, _module: nn.Module, _args: Any, output: Any) -> None:
        logits = output["logits"] if isinstance(output, Mapping) else output.logits
        self._pending = torch.log_softmax(logits[:, -1, :].float(), dim=-1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self._pending is None:
            raise RuntimeError("StepLogprobs saw a generated token without the model's logits for it")
        token = input_ids[:, -1:].to(self._pending.device)
        self._steps.append(self._pending.gather(-1, token)[:, 0].cpu())
        self._pending = None
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def result(self, generated: torch.Tensor) -> list[torch.Tensor]:
        """Per row, the log-probabilities of the ``generated`` tokens ``[rows, new]`` (float32 on CPU).

        Raises:
            RuntimeError: when the number of recorded steps does not match the generated width.
        """
        if len(self._steps) != generated.shape[1]:
            raise RuntimeError(f"recorded {len(self._steps)} steps for {generated.shape[1]} generated tokens")
        if not self._steps:
            return [torch.empty(0) for _ in range(generated.shape[0])]
        table = torch.stack(self._steps, dim=1)
        return list(table.unbind(0))


@torch.no_grad()
def answer_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    answer_token_ids: Sequence[Sequence[int]],
    *,
    system_prompt: str | None = None,
    batch_size: int = 8,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[torch.Tensor]:
    """Teacher-forced log-probabilities of given answers under ``model`` (e.g. the base model scoring steered answers).

    Args:
        model: a causal LM (adapters as they are: wrap the call in ``steering_disabled`` for the base model).
        tokenizer: its tokenizer.
        prompts: user prompts, formatted exactly as :func:`sample_answers` formats them.
        answer_token_ids: per prompt, the answer tokens (e.g. :attr:`Answer.token_ids`).
        system_prompt: the system message used when sampling.
        batch_size: rows per forward pass.
        chat_template_kwargs: extra chat-template variables.

    Returns:
        One float32 ``[len(answer_token_ids[i])]`` tensor per prompt, on CPU.
    """
    if len(prompts) != len(answer_token_ids):
        raise ValueError(f"{len(prompts)} prompts but {len(answer_token_ids)} answers")
    eos_ids = stop_token_ids(model, tokenizer)
    pad_id = padding_id(tokenizer, eos_ids)
    device = input_device(model)
    texts = format_prompts(tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs)
    results: list[torch.Tensor] = []
    for start, input_ids, attention_mask in prompt_batches(tokenizer, texts, batch_size, pad_id, device):
        answers = [list(ids) for ids in answer_token_ids[start : start + batch_size]]
        lengths = [len(ids) for ids in answers]
        new = max(lengths + [1])
        tail = torch.full((len(answers), new), pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(answers), new), dtype=torch.long)
        for row, ids in enumerate(answers):
            tail[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            tail_mask[row, : len(ids)] = 1
        sequences = torch.cat([input_ids, tail.to(device)], dim=1)
        mask = torch.cat([attention_mask, tail_mask.to(device)], dim=1)
        results += token_logprobs(model, sequences, mask, input_ids.shape[1], lengths)
    return results
