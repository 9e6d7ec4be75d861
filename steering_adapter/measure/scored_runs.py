"""A resumable measuring run: prompts → K answers → judgments → refusal confidence ``c(x)``.

Everything produced is appended to ``log_dir`` as soon as it exists, so an interrupted run (crash, ``kill``, a judge
endpoint going down) resumes where it stopped and ends with the same scores as an uninterrupted run:

- ``answers.jsonl``: one record per prompt, ``{"key", "prompt", "prompt_id", "settings", "answers": [...]}``;
- ``judgments.jsonl``: one record per prompt and judge, ``{"key", "prompt_key", "judge", "judgments": [...]}``;
  a prompt whose judgments include a backend error (label 0 with ``error``) is not logged, so a re-run retries it,
  and the failed answers take no weight in ``c(x)`` (a prompt with only failed judgments is "unjudged", not neutral);
- ``scores.json``: written atomically at the end: settings, judge, ``tau``, ``threshold``, ``unparseable``,
  ``summary`` (see :func:`~steering_adapter.measure.refusal_score.summarize`) and one entry per input prompt.

The scores are computed from the records on every call (the judgments keep the raw labels, 0 included), so a call
with another ``tau``, ``threshold`` or ``unparseable`` rewrites ``scores.json`` without sampling or judging again.

The key of a prompt is a hash of its text and of the sampling settings (``k``, temperature, seed, system prompt,
...); judgments are keyed by the prompt key and the judge's :attr:`~steering_adapter.measure.judges.Judge.name`.
Changing a
setting or the judge therefore never reuses stale records. The model is not part of the key: use one ``log_dir`` per
model (and per adapter and steering strength).

Determinism: prompts are processed in fixed chunks of ``batch_size`` unique prompts, in input order; each chunk is
sampled under a seed derived from ``seed`` and the keys of the whole chunk. When a chunk was only partly logged, the
whole chunk is sampled again (same prompts, same seed, same answers) and only the missing records are written.

Throughput: the judge works on chunk ``i`` in a worker thread while the model samples chunk ``i + 1`` (a queue of at
most one chunk waiting; ``overlap=False`` alternates instead). The records are the same either way: answers and
judgments are appended by the calling thread, each file in chunk order. An OpenAI-compatible judge sends the chunk's
requests with its own ``max_concurrency``. A judge running in the worker must not draw from torch's global random
generator (the shipped judges do not), which the sampler seeds.

Data parallelism: under ``torch.distributed`` (``torchrun``, see :mod:`steering_adapter.utils.distributed`) chunk ``c``
is
sampled and judged by rank ``c mod N``; after each round of N chunks every process receives the round's records and
appends them, in chunk order, to its own ``log_dir`` (rank 0's is the run's folder; the others write scratch
copies), so the records are those of a single process. Rank 0's existing records decide what is resumed. The
processes check that they score the same prompts with the same settings, judge and steering state, and fail loudly
otherwise.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn
from tqdm.auto import tqdm

from steering_adapter.measure.judges.base import Judge, Judgment
from steering_adapter.measure.refusal_score import (
    DEFAULT_THRESHOLD,
    check_unparseable,
    classify,
    refusal_confidence,
    summarize,
)
from steering_adapter.measure.sampling.answers import Answer, derive_seed
from steering_adapter.measure.sampling.backend import Sampler, as_sampler
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.tuner.layer import SteeringLayer
from steering_adapter.utils import distributed
from steering_adapter.utils.records import JsonlLog, atomic_write_json, stable_key

__all__ = ["PromptScore", "load_scores", "prompt_key", "score_prompts"]

ANSWERS_FILE = "answers.jsonl"
JUDGMENTS_FILE = "judgments.jsonl"
SCORES_FILE = "scores.json"


@dataclass
class PromptScore:
    """The refusal confidence of one prompt.

    Attributes:
        key: record key (hash of the prompt and the sampling settings).
        prompt: the prompt.
        prompt_id: the caller's identifier, or the prompt's position in the input list.
        score: ``c(x)`` in ``[-1, 1]``; NaN when unjudged (no answer with a log-probability and a judgment that
            did not fail, or, with ``unparseable="drop"``, none with a label other than 0).
        label: ``"refusal"``, ``"neutral"``, ``"compliance"`` or ``"unjudged"`` (see
            :func:`~steering_adapter.measure.refusal_score.classify`).
        labels: ``[K]`` judge labels of the answers.
        mean_logprobs: ``[K]`` mean token log-probabilities of the answers; NaN for an answer without tokens or
            whose judgment failed (a backend error is not a label 0), so it takes no weight when rescored.
    """

    key: str
    prompt: str
    prompt_id: str | None
    score: float
    label: str
    labels: list[int]
    mean_logprobs: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PromptScore:
        nan = float("nan")
        return cls(
            key=record["key"],
            prompt=record["prompt"],
            prompt_id=record.get("prompt_id"),
            score=nan if record.get("score") is None else float(record["score"]),
            label=record["label"],
            labels=[int(label) for label in record["labels"]],
            mean_logprobs=[nan if value is None else float(value) for value in record["mean_logprobs"]],
        )


def prompt_key(prompt: str, settings: dict[str, Any]) -> str:
    """Record key of ``prompt`` under the full sampling ``settings`` (:meth:`SamplingSettings.to_dict`)."""
    return stable_key("prompt", prompt, settings)


def _judgment_key(key: str, judge_name: str) -> str:
    return stable_key("judgments", key, judge_name)


def load_scores(log_dir: str | os.PathLike) -> list[PromptScore]:
    """The per-prompt scores of a finished run, from ``log_dir/scores.json``."""
    with open(Path(log_dir) / SCORES_FILE, encoding="utf-8") as handle:
        data = json.load(handle)
    return [PromptScore.from_dict(record) for record in data["scores"]]


def load_answers(log_dir: str | os.PathLike, scores: Sequence[PromptScore]) -> list[list[Answer]]:
    """The sampled answers behind ``scores`` (from ``log_dir``'s answer records), one list of ``K`` per score.

    Raises:
        ValueError: a score whose answers are not in ``log_dir`` (another run folder, or a damaged log).
    """
    records = JsonlLog(Path(log_dir) / ANSWERS_FILE).by_key()
    missing = [score.prompt for score in scores if score.key not in records]
    if missing:
        raise ValueError(f"{len(missing)} scored prompts have no answer records in {log_dir} (first: {missing[0]!r})")
    return [[Answer.from_dict(answer) for answer in records[score.key]["answers"]] for score in scores]


def _steering_state(model: nn.Module) -> list[tuple[Any, ...]]:
    """What the attached steering adapters do right now (blocks, active adapters, factors, vector sums, gates)."""

    state: list[tuple[Any, ...]] = [type(model).__name__]
    model = getattr(model, "model", model)  # a TransformersSampler's model
    if not isinstance(model, nn.Module):  # another sampling backend: its type only
        return state
    for name, module in model.named_modules():
        if not isinstance(module, SteeringLayer) or module.disable_adapters:
            continue
        for adapter in module.active_adapters:
            if adapter in module.steering_vector:
                vector = module.steering_vector[adapter].detach()
                state.append((name, adapter, module.steering_factor[adapter], float(vector.double().sum())))
            if adapter in module.steering_gate_rule:
                state.append((name, adapter, module.steering_gate_rule[adapter]))
    return state


def _completed(function: Callable[[], Any]) -> Future:
    """A future already holding ``function()`` (the sequential path)."""
    future: Future = Future()
    try:
        future.set_result(function())
    except BaseException as exc:
        future.set_exception(exc)
    return future


def score_prompts(
    model: nn.Module | Sampler,
    tokenizer: Any,
    prompts: Sequence[str],
    judge: Judge,
    log_dir: str | os.PathLike,
    *,
    prompt_ids: Sequence[str] | None = None,
    tau: float = 1.0,
    threshold: float = DEFAULT_THRESHOLD,
    unparseable: Literal["keep", "drop"] = "keep",
    batch_size: int = 8,
    progress: bool = True,
    overlap: bool = True,
    **sampling: Any,
) -> list[PromptScore]:
    """Sample, judge and score ``prompts``, resuming from whatever ``log_dir`` already holds.

    Args:
        model: the model under study (adapters included), as for
            :func:`~steering_adapter.measure.sampling.generation.sample_answers`,
            or a sampling backend (:class:`~steering_adapter.measure.sampling.backend.Sampler`, e.g. the vLLM one):
            same records.
        tokenizer: its tokenizer.
        prompts: user prompts (duplicates are scored once and reported at each position).
        judge: any :class:`~steering_adapter.measure.judges.Judge`; its ``name`` keys the judgment records.
        log_dir: run folder (created); one per model / adapter / steering strength.
        prompt_ids: identifiers stored with the records; default the input position.
        tau: softmax temperature of :func:`~steering_adapter.measure.refusal_score.refusal_confidence`.
        threshold: class threshold of :func:`~steering_adapter.measure.refusal_score.classify`.
        unparseable: what an unparseable judgment (label 0) does in
            :func:`~steering_adapter.measure.refusal_score.refusal_confidence`: ``"keep"`` (weight, value 0) or
            ``"drop"``; it keys no record (the judgments hold the raw labels).
        batch_size: unique prompts per sampling chunk (and per ``judge_many`` call).
        progress: show a tqdm bar over prompts.
        overlap: judge chunk ``i`` in a worker thread while chunk ``i + 1`` is sampled (same records as ``False``).
        **sampling: sampling settings for ``sample_answers`` (``k``, ``max_new_tokens``, ``temperature``, ``top_p``,
            ``top_k``, ``seed``, ``system_prompt``, ``thinking``, ``think_end``, ``chat_template_kwargs``).

    Returns:
        One :class:`PromptScore` per input prompt, in input order.

    Raises:
        ValueError: empty prompts, bad ``prompt_ids`` length, unknown or non-JSON sampling settings, ``unparseable``
            not ``"keep"`` or ``"drop"``, a judge that returns the wrong number of judgments.
        RuntimeError: under ``torch.distributed``, when the processes do not score the same work.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    if prompt_ids is not None and len(prompt_ids) != len(prompts):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} entries for {len(prompts)} prompts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_unparseable(unparseable)
    settings = SamplingSettings.from_kwargs(**sampling).to_dict()
    judge_name = getattr(judge, "name", type(judge).__name__)
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    answers_log = JsonlLog(log_dir / ANSWERS_FILE)
    judgments_log = JsonlLog(log_dir / JUDGMENTS_FILE)

    ids = [str(prompt_ids[i]) if prompt_ids is not None else str(i) for i in range(len(prompts))]
    keys = [prompt_key(prompt, settings) for prompt in prompts]
    unique: dict[str, tuple[str, str]] = {}
    for key, prompt, prompt_id in zip(keys, prompts, ids, strict=True):
        unique.setdefault(key, (prompt, prompt_id))
    order = list(unique)
    parallel = distributed.is_distributed()
    if parallel:
        distributed.check_same(
            stable_key(order, settings, judge_name, repr(_steering_state(model))),
            "the prompts, sampling settings, judge and steering state of score_prompts",
        )

    def existing() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        found_answers = [record for key, record in answers_log.by_key().items() if key in unique]
        found_judgments = [
            record
            for record in judgments_log.by_key().values()
            if record.get("prompt_key") in unique and record.get("judge") == judge_name
        ]
        return found_answers, found_judgments

    answer_records, judgment_records = distributed.from_main(existing) if parallel else existing()
    answers: dict[str, list[Answer]] = {}
    judgments: dict[str, list[Judgment]] = {}
    for record in answer_records:
        answers[record["key"]] = [Answer.from_dict(answer) for answer in record["answers"]]
        if record["key"] not in answers_log:  # a process other than rank 0 mirrors rank 0's records
            answers_log.append_keyed(record)
    for record in judgment_records:
        judgments[record["prompt_key"]] = [Judgment.from_dict(item) for item in record["judgments"]]
        if record["key"] not in judgments_log:
            judgments_log.append_keyed(record)

    sample_settings = {name: value for name, value in settings.items() if name != "seed"}
    sampler = as_sampler(model, tokenizer)

    def sample(chunk: list[str]) -> list[dict[str, Any]]:
        """New answer records of ``chunk`` (the whole chunk is sampled when any of it is missing)."""
        if all(key in answers for key in chunk):
            return []
        samples = sampler.sample_answers(
            [unique[key][0] for key in chunk],
            prompt_ids=[unique[key][1] for key in chunk],
            batch_size=len(chunk),
            progress=False,
            seed=derive_seed(settings["seed"], "chunk", *chunk),
            **sample_settings,
        )
        return [
            {
                "key": key,
                "prompt": sampled.prompt,
                "prompt_id": sampled.prompt_id,
                "settings": settings,
                "answers": [answer.to_dict() for answer in sampled.answers],
            }
            for key, sampled in zip(chunk, samples, strict=True)
            if key not in answers
        ]

    def judge_work(chunk: list[str]) -> Callable[[], list[tuple[str, list[dict[str, Any]]]]]:
        """The judging of ``chunk``'s unjudged prompts, as a job for the worker (inputs are copied now)."""
        to_judge = [key for key in chunk if key not in judgments]
        sizes = [len(answers[key]) for key in to_judge]
        pairs = [(unique[key][0], answer.text) for key in to_judge for answer in answers[key]]

        def job() -> list[tuple[str, list[dict[str, Any]]]]:
            if not pairs:
                return []
            verdicts = judge.judge_many(pairs)
            if len(verdicts) != len(pairs):
                raise ValueError(f"judge {judge_name!r} returned {len(verdicts)} judgments for {len(pairs)} answers")
            result, position = [], 0
            for key, size in zip(to_judge, sizes, strict=True):
                result.append((key, [verdict.to_dict() for verdict in verdicts[position : position + size]]))
                position += size
            return result

        return job

    def publish_answers(records: list[dict[str, Any]]) -> None:
        for batch in distributed.all_gather_objects(records) if parallel else [records]:
            for record in batch:
                answers_log.append_keyed(record)
                answers[record["key"]] = [Answer.from_dict(answer) for answer in record["answers"]]

    def publish_judgments(result: list[tuple[str, list[dict[str, Any]]]]) -> None:
        for batch in distributed.all_gather_objects(result) if parallel else [result]:
            for key, items in batch:
                own = [Judgment.from_dict(item) for item in items]
                judgments[key] = own
                if any(verdict.error for verdict in own):
                    continue  # not logged: a re-run retries it
                judgments_log.append_keyed(
                    {"key": _judgment_key(key, judge_name), "prompt_key": key, "judge": judge_name, "judgments": items}
                )

    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    world, me = distributed.world_size(), distributed.rank()
    rounds = [chunks[start : start + world] for start in range(0, len(chunks), world)]
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge") if overlap else None
    in_flight: deque[tuple[Future, int]] = deque()  # judging jobs not yet published, with their round's prompt count
    bar = tqdm(total=len(order), desc="scoring", unit="prompt", disable=not (progress and distributed.is_main()))
    try:
        for members in rounds:
            mine = members[me] if me < len(members) else []
            publish_answers(sample(mine))
            job = judge_work(mine)
            in_flight.append(
                (executor.submit(job) if executor is not None else _completed(job), sum(map(len, members)))
            )
            while len(in_flight) > (1 if executor is not None else 0):
                future, size = in_flight.popleft()
                publish_judgments(future.result())
                bar.update(size)
        while in_flight:
            future, size = in_flight.popleft()
            publish_judgments(future.result())
            bar.update(size)
    finally:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        bar.close()

    scores: dict[str, PromptScore] = {}
    for key in order:
        labels = [verdict.label for verdict in judgments[key]]
        # a failed judgment is no judgment: its answer has no weight (NaN), unlike an unparseable label 0
        logprobs = [
            float("nan") if verdict.error else answer.mean_logprob
            for verdict, answer in zip(judgments[key], answers[key], strict=True)
        ]
        score = refusal_confidence(labels, logprobs, tau=tau, unparseable=unparseable)
        prompt, prompt_id = unique[key]
        scores[key] = PromptScore(key, prompt, prompt_id, score, classify(score, threshold), labels, logprobs)
    results = [
        PromptScore(**{**asdict(scores[key]), "prompt_id": prompt_id})
        for key, prompt_id in zip(keys, ids, strict=True)
    ]
    atomic_write_json(
        log_dir / SCORES_FILE,
        {
            "settings": settings,
            "judge": judge_name,
            "tau": tau,
            "threshold": threshold,
            "unparseable": unparseable,
            "summary": summarize([result.score for result in results], threshold),
            "scores": [result.to_dict() for result in results],
        },
    )
    return results
