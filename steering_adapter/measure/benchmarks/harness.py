"""General benchmarks of a (steered) model through lm-evaluation-harness: its Python API on the model object.

``run_benchmark(model, tokenizer, BenchmarkRequest("mmlu", limit=20))`` wraps the model as lm-eval's ``HFLM`` and
runs the offline MMLU tasks of :mod:`steering_adapter.measure.benchmarks.mmlu` with ``lm_eval.simple_evaluate``: the
same harness, task files and defaults as ``lm_eval --model hf --tasks mmlu_offline --include_path …`` (see
:func:`steering_adapter.cli.lm_eval_entry.main` for that command with steering adapters), so the numbers of the two
agree exactly. The model can carry steering adapters (``load_adapter``, ``PeftModel``, a composition, gated or not):
lm-eval only calls its forward pass.

A condition-gated adapter decides its gate from each sequence's last prompt token. lm-eval right-pads the rows of a
log-likelihood batch and passes no attention mask, so in a batch the gate of every shorter row would be decided on a
pad token: while a gated steering adapter is active, :func:`run_benchmark` runs lm-eval with batch size 1 (the
numbers are then those of each question alone; ungated adapters are unaffected by the right padding of a causal
model and keep the requested batch size).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from steering_adapter.measure.benchmarks.mmlu import (
    GROUP,
    MMLU_CATEGORIES,
    MMLU_SUBJECTS,
    TASKS_DIR,
    load_mmlu_subject,
    subject_task,
)
from steering_adapter.tuner.config import SteeringConfig
from steering_adapter.tuner.layer import SteeringLayer

__all__ = [
    "BenchmarkRequest",
    "BenchmarkScore",
    "check_benchmark_inputs",
    "gated_steering_active",
    "lm_eval_task",
    "parse_benchmark",
    "run_benchmark",
    "score_from_results",
]

BENCHMARK_NAMES = "mmlu, mmlu_<category> (stem, humanities, social_sciences, other) or mmlu_<subject>"
BENCHMARK_SYNTAX = f"{BENCHMARK_NAMES}, each with an optional :N (N questions per subject)"


@dataclass(frozen=True)
class BenchmarkRequest:
    """One benchmark run.

    Attributes:
        task: ``"mmlu"`` (all 57 subjects, weighted by size as lm-eval's group), ``"mmlu_<category>"`` (``stem``,
            ``humanities``, ``social_sciences``, ``other``) or ``"mmlu_<subject>"`` (e.g. ``mmlu_anatomy``).
        num_fewshot: few-shot examples per question (the dev split's first ones).
        limit: questions per subject (``None``: all).
        batch_size: lm-eval's batch size (the numbers do not depend on it beyond float rounding); 1 while a gated
            adapter is active (see the module docstring).
    """

    task: str = "mmlu"
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        lm_eval_task(self.task)  # raises on an unknown name
        if self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 questions per subject, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class BenchmarkScore:
    """One model's result on one benchmark.

    Attributes:
        task: the benchmark name (``"mmlu"``).
        accuracy: lm-eval's ``acc`` in ``[0, 1]`` (for a group: the mean over questions, subjects weighted by size).
        stderr: its standard error (lm-eval's ``acc_stderr``; for a group, pooled over the subjects).
        n: questions scored.
        num_fewshot: few-shot examples per question.
        limit: questions per subject, or ``None`` (all).
        subjects: ``{subject: accuracy}``.
    """

    task: str
    accuracy: float
    stderr: float
    n: int
    num_fewshot: int
    limit: int | None
    subjects: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def points(self) -> str:
        """``"45.1 ± 0.4"``: accuracy and standard error in percentage points."""
        return f"{100 * self.accuracy:.1f} ± {100 * self.stderr:.1f}"


def lm_eval_task(task: str) -> str:
    """The lm-eval task name of a benchmark name (``mmlu`` -> ``mmlu_offline``, ``mmlu_anatomy`` ->
    ``mmlu_offline_anatomy``).

    Raises:
        ValueError: an unknown name (the message lists the accepted forms).
    """
    if task == "mmlu":
        return GROUP
    name = task.removeprefix("mmlu_")
    if task.startswith("mmlu_") and name in MMLU_CATEGORIES:
        return f"{GROUP}_{name}"
    if task.startswith("mmlu_") and name in MMLU_SUBJECTS:
        return subject_task(name)
    raise ValueError(f"unknown benchmark {task!r}; expected {BENCHMARK_NAMES}")


def benchmark_subjects(task: str) -> tuple[str, ...]:
    """The MMLU subjects a benchmark name covers."""
    name = lm_eval_task(task).removeprefix(GROUP).removeprefix("_")
    if not name:
        return MMLU_SUBJECTS
    return MMLU_CATEGORIES.get(name, (name,))


def check_benchmark_inputs(tasks: list[str], option: str) -> None:
    """Fail before any work when a benchmark cannot run: lm-eval missing, or an MMLU file missing or malformed.

    Args:
        tasks: benchmark names.
        option: the recipe key or option that names them, for the message.

    Raises:
        ValueError: one line naming ``option`` and the problem.
    """
    if not tasks:
        return
    if importlib.util.find_spec("lm_eval") is None:
        raise ValueError(f"{option}: needs lm-evaluation-harness: pip install 'steering-adapter[benchmarks]'")
    for task in tasks:
        for subject in benchmark_subjects(task):
            try:
                load_mmlu_subject(subject)
            except ValueError as error:
                raise ValueError(f"{option}: {error}") from None


def gated_steering_active(model: nn.Module) -> bool:
    """Whether a condition-gated steering adapter steers ``model`` now (attached, active, not disabled)."""
    configs = getattr(model, "peft_config", None) or {}
    for module in model.modules():
        if isinstance(module, SteeringLayer) and not module.disable_adapters:
            for name in module.active_adapters:
                config = configs.get(name)
                if isinstance(config, SteeringConfig) and config.gated:
                    return True
    return False


def parse_benchmark(text: str, **settings: Any) -> BenchmarkRequest:
    """``"mmlu:20"`` -> ``BenchmarkRequest("mmlu", limit=20, **settings)``.

    Raises:
        ValueError: a bad name or count (one line, the accepted syntax).
    """
    name, _, count = text.partition(":")
    limit = settings.pop("limit", None)
    if count:
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"benchmark {text!r}: N must be a whole number >= 1; expected {BENCHMARK_SYNTAX}")
        limit = int(count)
    try:
        return BenchmarkRequest(task=name, limit=limit, **settings)
    except ValueError as error:
        raise ValueError(f"benchmark {text!r}: {error}; accepted: {BENCHMARK_SYNTAX}") from None


def run_benchmark(model: Any, tokenizer: Any, request: BenchmarkRequest, *, progress: bool = True) -> BenchmarkScore:
    """Score ``model`` on a benchmark with lm-evaluation-harness.

    lm-eval's log lines below errors are silenced while it runs (it warns once per subject about the offline
    loader's keyword arguments, and once per question longer than the model's context).

    Args:
        model: a transformers causal LM, steered or not (its active adapters stay as they are).
        tokenizer: its tokenizer.
        request: what to run.
        progress: lm-eval's progress bars (building the requests, tokenizing, scoring); ``False`` hides them.

    Returns:
        The :class:`BenchmarkScore` (accuracy, standard error, n, per-subject accuracies).
    """
    import lm_eval  # lazy: lm-evaluation-harness is the optional ``benchmarks`` extra and takes seconds to import
    import lm_eval.api.task  # lazy: as above
    from lm_eval.models.huggingface import HFLM  # lazy: as above
    from lm_eval.tasks import TaskManager  # lazy: as above

    class QuietHFLM(HFLM):
        """lm-eval's ``HFLM`` with its scoring bars off."""

        def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list:
            return super().loglikelihood(requests, disable_tqdm=True)

    was_training = model.training
    model.eval()
    task = lm_eval_task(request.task)
    batch_size = 1 if gated_steering_active(model) else request.batch_size  # see the module docstring
    wrapper = HFLM if progress else QuietHFLM
    logger = logging.getLogger("lm_eval")
    previous_level, task_bar = logger.level, lm_eval.api.task.tqdm
    logger.setLevel(logging.ERROR)
    if not progress:  # building the requests has a bar lm-eval offers no switch for: off for this call only
        lm_eval.api.task.tqdm = functools.partial(task_bar, disable=True)
    try:
        results = lm_eval.simple_evaluate(
            model=wrapper(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
            tasks=[task],
            num_fewshot=request.num_fewshot,
            limit=request.limit,
            log_samples=False,
            task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        )
    finally:
        logger.setLevel(previous_level)
        lm_eval.api.task.tqdm = task_bar
        model.train(was_training)
    return score_from_results(results, request)


def score_from_results(results: dict[str, Any], request: BenchmarkRequest) -> BenchmarkScore:
    """The :class:`BenchmarkScore` of lm-eval's results dictionary (``simple_evaluate``'s return value, or the
    ``results_*.json`` the ``lm_eval`` command writes), for the task of ``request``."""
    task = lm_eval_task(request.task)
    row = results["results"][task]
    samples = results.get("n-samples", {})
    subjects = {
        name.removeprefix(f"{GROUP}_"): float(values["acc,none"])
        for name, values in results["results"].items()
        if name.removeprefix(f"{GROUP}_") in MMLU_SUBJECTS
    }
    n = sum(int(samples[subject_task(s)]["effective"]) for s in subjects if subject_task(s) in samples)
    stderr = row.get("acc_stderr,none", float("nan"))
    return BenchmarkScore(
        task=request.task,
        accuracy=float(row["acc,none"]),
        stderr=float(stderr) if stderr not in (None, "N/A") else math.nan,
        n=n,
        num_fewshot=request.num_fewshot,
        limit=request.limit,
        subjects=subjects,
    )
