"""The vLLM sampling backend: K answers per prompt with their mean token log-probability, from one vLLM engine.

:class:`VllmSampler` is a :class:`~steering_adapter.measure.sampling.backend.Sampler`: pass it wherever a model goes in
:func:`~steering_adapter.measure.scored_runs.score_prompts`, :func:`~steering_adapter.measure.evaluation.evaluate` and
:func:`~steering_adapter.run.selection.sweep_layers_and_scale`; the records are the transformers backend's.

What is the same as the transformers backend (:func:`steering_adapter.measure.sampling.generation.sample_answers`): the
chat template
and its rendering (:mod:`~steering_adapter.measure.sampling.prompt_encoding`), the prompt tokens (vLLM gets token ids,
never
re-tokenises), the eos tokens (generation config and tokenizer), the answer tokens (eos included) and the
``</think>`` split (:func:`~steering_adapter.measure.sampling.generation.answer_from_tokens`), and the
log-probabilities: vLLM's own
``raw_logprobs`` of each sampled token (the model's distribution at temperature 1, before top-p / top-k), returned
with the sample, so no second pass. What differs: seeds are per prompt (``seed``, the prompt's position and text), so
answers do not depend on how vLLM batches, and differ from the transformers backend's samples except greedy ones;
``batch_size`` is not used (vLLM schedules the whole list).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, GenerationConfig

from steering_adapter.measure.sampling.answers import (
    THINK_END,
    Answer,
    PromptSamples,
    answer_from_tokens,
    check_sampling_arguments,
    derive_seed,
)
from steering_adapter.measure.sampling.prompt_encoding import (
    encode_texts,
    format_chat,
    format_prompts,
    stop_token_ids,
)
from steering_adapter.models.embedded import resolve_embedded
from steering_adapter.runtimes.vllm.adapters import AdapterSpec, parse_adapter_specs, write_adapter
from steering_adapter.runtimes.vllm.batch import REQUEST_ADAPTERS_ENV, TRACKER_QUALNAME
from steering_adapter.runtimes.vllm.compiled import GATES_KEY, SLOTS_KEY
from steering_adapter.runtimes.vllm.worker import EXTRA_CONFIG_KEY, LOAD_FORMAT, WORKER_EXTENSION

__all__ = ["VllmSampler", "engine_kwargs"]


def engine_kwargs(
    adapters: Sequence[Any] = (),
    *,
    gated: bool = True,
    compiled: bool = True,
    slots: int | None = None,
    gates: int | None = None,
) -> dict[str, Any]:
    """The ``vllm.LLM`` / ``vllm serve`` settings that attach steering adapters.

    Args:
        adapters: adapter paths or ``{"path", "name", "scale", "revision"}`` dicts, applied in this order.
        gated: make the engine able to run condition-gated (and later attached) adapters exactly: prefix caching
            and chunked prefill off.
        compiled: vLLM's compiled mode (torch.compile; CUDA graphs on GPUs) with the steering built into the graph
            (:mod:`steering_adapter.runtimes.vllm.slots`); ``False``: eager mode with forward hooks.
        slots: steering slots per decoder block in compiled mode (the engine's adapters' plan steps plus one per
            request adapter); default: enough for the adapters it starts with, at least 4.
        gates: condition gates in compiled mode; default: enough for the adapters it starts with, at least 1.

    Returns:
        ``load_format="steering"`` with the adapters (and the slot sizes) in ``model_loader_extra_config``, the
        worker extension, the batch tracker, ``enforce_eager`` (with piecewise CUDA graphs when compiled) and raw
        log-probabilities.
    """
    extra: dict[str, Any] = {EXTRA_CONFIG_KEY: [spec.to_dict() for spec in parse_adapter_specs(adapters)]}
    for key, value in ((SLOTS_KEY, slots), (GATES_KEY, gates)):
        if value is not None:
            extra[key] = value
    kwargs: dict[str, Any] = {
        "load_format": LOAD_FORMAT,
        "model_loader_extra_config": extra,
        "worker_extension_cls": WORKER_EXTENSION,
        "logits_processors": [TRACKER_QUALNAME],
        "enforce_eager": not compiled,
        "logprobs_mode": "raw_logprobs",
    }
    if compiled:  # full CUDA graphs would replay past the hook that writes each step's steering buffers
        kwargs["compilation_config"] = {"cudagraph_mode": "PIECEWISE"}
    if gated:
        kwargs.update(enable_prefix_caching=False, enable_chunked_prefill=False)
    return kwargs


class VllmSampler:
    """A vLLM engine with steering adapters, as a sampling backend.

    Args:
        model: Hub id or folder of the base model.
        adapters: steering adapters attached from the start, applied in this order (paths or dicts, see
            :func:`engine_kwargs`).
        tokenizer: the tokenizer (default: loaded from ``model``).
        dtype: vLLM ``dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``, ...).
        revision: Hub revision of ``model``.
        gated: allow condition-gated adapters (prefix caching and chunked prefill off; see :func:`engine_kwargs`).
        request_adapters: adapters that single requests may select (``{"name", "path", "scale"}`` dicts), with
            ``SamplingParams(extra_args={"steering_adapter": name, "steering_scale": α})``; they are declared in
            the ``STEERING_ADAPTER_VLLM_REQUEST_ADAPTERS`` environment variable of this process until
            :meth:`close` (the engine's processes inherit it; engines started meanwhile in this process see the
            same declaration) and need prefix caching off.
        work_dir: where adapters built with :meth:`add_adapter` are written (default: a temporary folder).
        slots: steering slots per block in compiled mode (see :func:`engine_kwargs`).
        gates: condition gates in compiled mode (see :func:`engine_kwargs`).
        **engine: more ``vllm.LLM`` arguments (``tensor_parallel_size``, ``max_model_len``, ``gpu_memory_utilization``,
            ...); they override the defaults above.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        adapters: Sequence[Any] = (),
        tokenizer: Any = None,
        dtype: str = "auto",
        revision: str | None = None,
        gated: bool = True,
        request_adapters: Sequence[Mapping[str, Any]] = (),
        work_dir: str | os.PathLike | None = None,
        slots: int | None = None,
        gates: int | None = None,
        **engine: Any,
    ) -> None:
        from vllm import LLM  # lazy: vllm is an optional dependency

        self.model_path = str(model)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.model_path, revision=revision)
        try:
            generation_config = GenerationConfig.from_pretrained(self.model_path, revision=revision)
        except OSError:
            generation_config = None
        self.eos_ids = stop_token_ids(SimpleNamespace(generation_config=generation_config), self.tokenizer)
        self._initial = parse_adapter_specs(list(adapters))
        self._specs: dict[str, AdapterSpec] = {spec.name or spec.path: spec for spec in self._initial}
        self._active = list(self._specs)
        self._work = Path(work_dir) if work_dir is not None else None
        self._temporary: tempfile.TemporaryDirectory | None = None
        declared = parse_adapter_specs(list(request_adapters))
        if any(spec.name is None for spec in declared):
            raise ValueError("request adapters need a name (the value requests give as steering_adapter)")
        self._previous_env: tuple[str | None] | None = None
        if declared:  # a process-wide declaration (see batch.REQUEST_ADAPTERS_ENV), restored by close()
            self._previous_env = (os.environ.get(REQUEST_ADAPTERS_ENV),)
            os.environ[REQUEST_ADAPTERS_ENV] = json.dumps([spec.to_dict() for spec in declared])
        settings = {"model": self.model_path, "dtype": dtype, "revision": revision, "max_logprobs": -1}
        settings.update(engine_kwargs(self._initial, gated=gated, slots=slots, gates=gates))
        settings.update(engine)
        try:
            self.llm = LLM(**settings)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_model_spec(cls, spec: Any, *, adapters: Sequence[Any] = (), **engine: Any) -> VllmSampler:
        """A sampler on the model a recipe names (:class:`~steering_adapter.run.recipe.ModelSpec`; ``"organism"`` is
        the embedded model), with its dtype and revision; ``engine`` as in the constructor."""

        model = resolve_embedded(spec.name_or_path)  # an embedded model (organism, smollm2-censored): its folder
        return cls(model, adapters=adapters, dtype=spec.dtype, revision=spec.revision, **engine)

    # ------------------------------------------------------------------------------------------- sampling
    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer, texts)

    def _generate(self, ids: Sequence[Sequence[int]], params: Any, progress: bool) -> list[Any]:
        from vllm.inputs import TokensPrompt  # lazy: vllm is an optional dependency

        prompts = [TokensPrompt(prompt_token_ids=list(row)) for row in ids]
        return self.llm.generate(prompts, params, use_tqdm=progress)

    def sample_answers(
        self,
        prompts: Sequence[str],
        *,
        k: int = 5,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        batch_size: int = 8,
        system_prompt: str | None = None,
        progress: bool = True,
        prompt_ids: Sequence[str] | None = None,
        thinking: bool | None = None,
        think_end: str | None = THINK_END,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
    ) -> list[PromptSamples]:
        """Sample ``k`` answers per prompt with the attached adapters; arguments as in
        :func:`steering_adapter.measure.sampling.generation.sample_answers`.

        ``generate_kwargs`` are extra ``vllm.SamplingParams`` fields (e.g. ``repetition_penalty``); ``batch_size`` is
        validated but vLLM schedules the whole list itself. Greedy answers (``temperature=0``) are repeated ``k``
        times, as in the transformers backend.

        Returns:
            One :class:`~steering_adapter.measure.sampling.generation.PromptSamples` per prompt, in input order;
            ``mean_logprob`` is
            the mean of vLLM's raw log-probabilities of the answer tokens.
        """
        from vllm import SamplingParams  # lazy: vllm is an optional dependency

        prompts = check_sampling_arguments(prompts, k, max_new_tokens, temperature, top_p, batch_size, prompt_ids)
        greedy = temperature == 0
        texts = format_prompts(
            self.tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs
        )
        ids = self._token_ids(texts)
        params = [
            SamplingParams(
                n=1 if greedy else k,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k if top_k > 0 else 0,
                max_tokens=max_new_tokens,
                logprobs=0,
                seed=None if greedy else derive_seed(seed, "prompt", index, prompt),
                stop_token_ids=list(self.eos_ids),
                detokenize=False,
                **dict(generate_kwargs or {}),
            )
            for index, prompt in enumerate(prompts)
        ]
        outputs = self._generate(ids, params, progress)
        results = []
        for index, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
            answers = [self._answer(completion, think_end, thinking) for completion in output.outputs]
            if greedy:
                answers = [answers[0]] + [Answer(**asdict(answers[0])) for _ in range(k - 1)]
            prompt_id = str(prompt_ids[index]) if prompt_ids is not None else str(index)
            results.append(PromptSamples(prompt=prompt, answers=answers, prompt_id=prompt_id))
        return results

    def _answer(self, completion: Any, think_end: str | None, thinking: bool | None) -> Answer:
        """One vLLM completion as an :class:`Answer` (text, tokens, raw log-probabilities, finished)."""
        tokens = list(completion.token_ids)
        logprobs = [step[token].logprob for step, token in zip(completion.logprobs, tokens, strict=True)]
        finished = bool(tokens) and tokens[-1] in self.eos_ids and completion.finish_reason == "stop"
        return answer_from_tokens(self.tokenizer, tokens, logprobs, finished, think_end, thinking)

    def chat(
        self,
        conversations: Sequence[Sequence[Mapping[str, str]]],
        *,
        max_new_tokens: int = 128,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        think_end: str | None = THINK_END,
    ) -> list[Answer]:
        """The greedy next assistant turn of each conversation, with the attached adapters.

        Args:
            conversations: lists of ``{"role", "content"}`` messages (system, user and assistant turns), rendered
                with the chat template as :func:`~steering_adapter.measure.sampling.prompt_encoding.format_chat` does
                for the transformers backend.
            max_new_tokens: answer length.
            chat_template_kwargs: extra template variables (e.g. ``{"enable_thinking": False}``).
            think_end: the marker that ends a reasoning part.

        Returns:
            One :class:`~steering_adapter.measure.sampling.answers.Answer` per conversation, in input order.
        """
        from vllm import SamplingParams  # lazy: vllm is an optional dependency

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        texts = format_chat(self.tokenizer, conversations, chat_template_kwargs=chat_template_kwargs)
        params = SamplingParams(
            temperature=0,
            max_tokens=max_new_tokens,
            logprobs=0,
            stop_token_ids=list(self.eos_ids),
            detokenize=False,
        )
        outputs = self._generate(self._token_ids(texts), params, False)
        return [self._answer(output.outputs[0], think_end, None) for output in outputs]

    # ------------------------------------------------------------------------------------------ capability
    def _distributions(self, ids: list[list[int]], progress: bool) -> list[torch.Tensor]:
        """Per prompt, ``[len, vocab]`` log-probabilities of the next token after each prefix (raw logits)."""
        from vllm import SamplingParams  # lazy: vllm is an optional dependency

        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=-1, logprobs=-1, detokenize=False)
        results = []
        for output in self._generate(ids, params, progress):
            steps = list(output.prompt_logprobs[1:]) + [output.outputs[0].logprobs[0]]
            vocab = max(max(step) for step in steps) + 1
            table = torch.full((len(steps), vocab), -math.inf, dtype=torch.float64)
            for row, step in enumerate(steps):
                tokens = torch.tensor(list(step.keys()))
                table[row, tokens] = torch.tensor([value.logprob for value in step.values()], dtype=torch.float64)
            results.append(table)
        return results

    def next_token_kl(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int = 8,
        progress: bool = True,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
    ) -> dict[str, float]:
        """Mean KL(base ‖ steered) of the next-token distributions at the last ``max_tokens`` positions of each
        prompt (``None``: all), as :class:`steering_adapter.measure.likelihood.NextTokenKL` computes it (chat template,
        ``system_prompt``).

        vLLM returns full-vocabulary log-probabilities (``prompt_logprobs=-1``) as Python objects: exact, but its
        host cost grows with vocabulary × tokens; keep the KL prompt set small on large-vocabulary models.
        """
        if not prompts:
            raise ValueError("no prompts to measure KL on")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        texts = format_prompts(self.tokenizer, prompts, system_prompt=system_prompt)
        ids = self._token_ids(texts)
        total, count, last_total = 0.0, 0, 0.0
        for start in tqdm(range(0, len(ids), batch_size), desc="KL", disable=not progress):
            chunk = ids[start : start + batch_size]
            steered = self._distributions(chunk, False)
            with self.steering_disabled():
                base = self._distributions(chunk, False)
            for b, s in zip(base, steered, strict=True):
                if max_tokens is not None:
                    b, s = b[-max_tokens:], s[-max_tokens:]
                width = max(b.shape[1], s.shape[1])
                b = torch.nn.functional.pad(b, (0, width - b.shape[1]), value=-math.inf)
                s = torch.nn.functional.pad(s, (0, width - s.shape[1]), value=-math.inf)
                kl = torch.where(b > -math.inf, b.exp() * (b - s), torch.zeros_like(b)).sum(-1)
                total += float(kl.sum())
                count += kl.shape[0]
                last_total += float(kl[-1])
        return {"mean_kl": total / count, "mean_kl_last": last_total / len(prompts), "positions": count}

    def answer_logprobs(
        self,
        prompts: Sequence[str],
        answer_token_ids: Sequence[Sequence[int]],
        *,
        batch_size: int = 8,
        system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        """Teacher-forced log-probabilities of given answers with the current steering (vLLM's prompt logprobs of
        prompt + answer), as :func:`steering_adapter.measure.sampling.generation.answer_logprobs` computes them."""
        from vllm import SamplingParams  # lazy: vllm is an optional dependency

        if len(prompts) != len(answer_token_ids):
            raise ValueError(f"{len(prompts)} prompts but {len(answer_token_ids)} answers")
        texts = format_prompts(
            self.tokenizer, prompts, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs
        )
        prompt_ids = self._token_ids(texts)
        rows = [list(p) + list(a) for p, a in zip(prompt_ids, answer_token_ids, strict=True)]
        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0, detokenize=False)
        results = []
        for output, row, prompt in zip(self._generate(rows, params, False), rows, prompt_ids, strict=True):
            steps = output.prompt_logprobs[len(prompt) :]
            tokens = row[len(prompt) :]
            results.append(torch.tensor([step[t].logprob for step, t in zip(steps, tokens, strict=True)]))
        return results

    def perplexity(self, texts: Sequence[str], *, batch_size: int = 8, progress: bool = True) -> float:
        """Token-level perplexity of plain ``texts`` with the current steering, as
        :func:`steering_adapter.measure.likelihood.perplexity` computes it (the tokenizer's special tokens, no
        template)."""
        from vllm import SamplingParams  # lazy: vllm is an optional dependency

        if not texts:
            raise ValueError("no texts to measure perplexity on")
        ids = encode_texts(self.tokenizer, texts, add_special_tokens=True)
        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0, detokenize=False)
        nll, count = 0.0, 0
        for output, row in zip(self._generate(ids, params, progress), ids, strict=True):
            for step, token in zip(output.prompt_logprobs[1:], row[1:], strict=True):
                nll -= step[token].logprob
                count += 1
        if count == 0:
            raise ValueError("texts are too short: no token to predict")
        return float(math.exp(nll / count))

    # ------------------------------------------------------------------------------------------- adapters
    def _rpc(self, method: str, *args: Any) -> list[Any]:
        return self.llm.collective_rpc(method, args=args)

    def _push(self) -> None:
        self._rpc("steering_set_adapters", [self._specs[name].to_dict() for name in self._active])

    def attached(self) -> list[dict[str, Any]]:
        """What the engine's first worker has attached (name, source, layers, mode, scale, layer scales, gated)."""
        return self._rpc("steering_describe")[0]

    def set_adapters(self, adapters: Sequence[Any]) -> list[dict[str, Any]]:
        """Attach ``adapters`` (paths or dicts) in this order, replacing the active ones; returns :meth:`attached`."""
        specs = parse_adapter_specs(list(adapters))
        for spec in specs:
            self._specs[spec.name or spec.path] = spec
        self._active = [spec.name or spec.path for spec in specs]
        self._push()
        return self.attached()

    @contextlib.contextmanager
    def steering_disabled(self) -> Iterator[None]:
        """Every attached adapter off inside the block (the base model's outputs exactly)."""
        self._rpc("steering_set_enabled", False)
        try:
            yield
        finally:
            self._rpc("steering_set_enabled", True)

    def add_adapter(
        self, name: str, vectors: dict[int, torch.Tensor], *, condition: torch.Tensor | None = None, **config: Any
    ) -> None:
        """Write ``vectors`` as an adapter folder (``config``: :class:`SteeringConfig` fields) and register it under
        ``name``, inactive; :meth:`activate` attaches it."""
        if self._work is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="steering-vllm-")
            self._work = Path(self._temporary.name)
        text = self.llm.llm_engine.model_config.hf_text_config
        folder = write_adapter(
            self._work / name,
            vectors,
            hidden_size=text.hidden_size,
            num_hidden_layers=text.num_hidden_layers,
            condition=condition,
            **config,
        )
        self._specs[name] = AdapterSpec(path=str(folder), name=name)

    def activate(self, name: str) -> None:
        """Make ``name`` the one active adapter."""
        if name not in self._specs:
            raise ValueError(f"no steering adapter named {name!r}; known: {sorted(self._specs)}")
        self._active = [name]
        self._push()

    def set_scale(self, name: str, scale: float) -> None:
        """Change α of adapter ``name`` (attached or not)."""
        if name not in self._specs:
            raise ValueError(f"no steering adapter named {name!r}; known: {sorted(self._specs)}")
        spec = self._specs[name]
        self._specs[name] = AdapterSpec(path=spec.path, name=spec.name, scale=float(scale), revision=spec.revision)
        if name in self._active:
            self._rpc("steering_set_scale", name, float(scale))

    def remove_adapters(self) -> None:
        """Forget the adapters added with :meth:`add_adapter`; the ones given at start are active again."""
        self._specs = {spec.name or spec.path: spec for spec in self._initial}
        self._active = list(self._specs)
        self._push()

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del self.llm
            gc.collect()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None
        if self._previous_env is not None:
            (previous,) = self._previous_env
            if previous is None:
                os.environ.pop(REQUEST_ADAPTERS_ENV, None)
            else:
                os.environ[REQUEST_ADAPTERS_ENV] = previous
            self._previous_env = None

    def __enter__(self) -> VllmSampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
