"""Before / after evaluation of steering adapters on named prompt sets.

For each prompt set the model is scored twice — with steering switched off (the base model) and on — with the same
sampling settings and judge (``docs/method.md`` §1): refusal / neutral / compliance rates, and the quality of the
answers (:mod:`steering_adapter.measure.answer_quality`): relevance to their prompts with a 95 % interval over prompts
(an off-topic
"compliance" is not a real answer), repetition, and their perplexity under the base model (garbled text scores
high). Capability is measured as the KL divergence of next-token distributions from the base model on neutral
prompts (:class:`~steering_adapter.measure.likelihood.NextTokenKL`; pass one object to several evaluations and the base
side
is computed once), and perplexity on reference texts. A few base/steered answer pairs per target set go into the
report. A harmful set of jailbreak-wrapped prompts also reports its attack success (``100 − refusal %``), overall and
per attack family (:func:`~steering_adapter.measure.jailbreaks.attack_success`). Every stage goes through
:func:`~steering_adapter.measure.scored_runs.score_prompts`, so an interrupted evaluation resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from steering_adapter.measure.answer_quality import repetition_rate, summarize_quality
from steering_adapter.measure.evaluation_report import (
    CONDITIONS,
    EvaluationReport,
    plot_refusal_rates,
    sample_pairs,
)
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.jailbreaks import attack_families, attack_success
from steering_adapter.measure.judges.base import Judge
from steering_adapter.measure.judges.degeneracy import DegeneracyDetector
from steering_adapter.measure.refusal_score import classify, plot_histogram, refusal_confidence, summarize
from steering_adapter.measure.sampling.answers import Answer
from steering_adapter.measure.sampling.backend import Sampler, as_sampler
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.measure.scored_runs import (
    ANSWERS_FILE,
    SCORES_FILE,
    PromptScore,
    load_scores,
    prompt_key,
    score_prompts,
)
from steering_adapter.utils.records import JsonlLog, atomic_write_json, atomic_write_text

ROLES = ("target", "harmful", "benign", "other")
# Counts the looping / degenerate answers of every set and condition (``degenerate``, ``degenerate_pct``).
DETECTOR = DegeneracyDetector()


@dataclass
class EvalSet:
    """A named prompt set and its role in the evaluation.

    Attributes:
        name: short name used in reports and folder names (letters, digits, ``-``, ``_``).
        prompts: the prompts.
        role: ``"target"`` (the refusals the adapter should remove or induce), ``"harmful"`` (refusals that must be
            kept, e.g. JailbreakBench), ``"benign"`` (false-refusal checks, e.g. XSTest safe) or ``"other"``. A
            ``"harmful"`` set whose prompts are all wrapped in attack families (a ``jailbreak:`` source,
            :mod:`steering_adapter.measure.jailbreaks`) also reports its attack success, overall and per family.
    """

    name: str
    prompts: list[str]
    role: str = "other"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} for set {self.name!r}; expected one of {ROLES}")
        if not self.prompts:
            raise ValueError(f"prompt set {self.name!r} is empty")
        if not self.name or not all(ch.isalnum() or ch in "-_" for ch in self.name):
            raise ValueError(f"set name {self.name!r} must be non-empty letters, digits, '-' or '_'")


def recorded_answers(log_dir: str | os.PathLike, keys: Sequence[str]) -> list[list[Answer]]:
    """The answers recorded by ``score_prompts`` in ``log_dir`` for each prompt key."""
    records = JsonlLog(Path(log_dir) / ANSWERS_FILE).by_key()
    return [[Answer.from_dict(answer) for answer in records[key]["answers"]] for key in keys]


def answer_texts(log_dir: str | os.PathLike, keys: Sequence[str]) -> list[list[str]]:
    """The answer texts recorded by ``score_prompts`` in ``log_dir`` for each prompt key."""
    return [[answer.text for answer in answers] for answers in recorded_answers(log_dir, keys)]


def evaluate(
    model: nn.Module | Sampler,
    tokenizer: Any,
    sets: Sequence[EvalSet],
    judge: Judge,
    out_dir: str | os.PathLike,
    *,
    settings: EvaluationSettings | None = None,
    sampling: SamplingSettings | None = None,
    conditions: Sequence[str] = CONDITIONS,
    gate_closed: Mapping[str, Sequence[bool]] | None = None,
    base_run: str | os.PathLike | None = None,
    ungated_run: str | os.PathLike | None = None,
) -> EvaluationReport:
    """Score every set with steering off (``base``) and on (``steered``) and write the report.

    Args:
        model: a model with steering adapters attached and active (PeftModel or transformers ``load_adapter``), or a
            sampling backend with its adapters (:class:`~steering_adapter.measure.sampling.backend.Sampler`, e.g. the
            vLLM one).
        tokenizer: its tokenizer.
        sets: the prompt sets with their roles.
        judge: the refusal judge.
        out_dir: run folder: ``<condition>/<set>/`` hold the resumable records, ``report.json``, ``report.md`` and
            PNG plots go at the top.
        settings: what is measured besides the refusal rates (KL, perplexity, relevance, answer quality, sample
            answers, plots) and the batch size and progress bars (default :class:`EvaluationSettings` ``()``).
        sampling: how the answers are sampled; they key the resumable records (default
            :class:`~steering_adapter.measure.sampling.settings.SamplingSettings` ``()``).
        conditions: which of ``("base", "steered")`` to run.
        gate_closed: ``{set name: [B] bool}``, the prompts the active condition-gated adapter leaves alone
            (:meth:`~steering_adapter.measure.sampling.backend.TransformersSampler.gate_decisions`, negated). A closed
            gate leaves
            every forward pass of its prompt unchanged, so the base answers are samples of the steered model: the
            steered condition takes these prompts' records from ``base_run`` and samples only the others (each
            set's summary counts them in ``n_gate_closed``).
        base_run: ``out_dir`` of an earlier evaluation of the base condition on the same sets, judge and sampling
            settings (needed with ``gate_closed``; it may be ``out_dir`` itself when ``conditions`` runs ``"base"``
            first).
        ungated_run: ``out_dir`` of an earlier evaluation of the steered condition of the same adapter without its
            gate (same vectors, blocks and scale) on the same sets, judge and sampling settings. With
            ``gate_closed``, the prompts whose gate opens take their records (and their base log-probabilities) from
            it: an open gate steers exactly as the ungated adapter does, so those answers are samples of the gated
            model too, and with both runs sampled in the same chunks they are the very answers it would give. Each
            set's summary counts them in ``n_gate_open_reused``.

    Returns:
        The :class:`EvaluationReport` (also saved as ``report.json`` and ``report.md``).

    Raises:
        ValueError: unknown conditions, no or duplicate sets, ``gate_closed`` without ``base_run`` or of the wrong
            length, a gate-closed prompt without a base record from the same judge and settings, sampling settings
            that are not plain JSON.
    """
    settings = settings if settings is not None else EvaluationSettings()
    sampling = sampling if sampling is not None else SamplingSettings()
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown or not conditions:
        raise ValueError(f"conditions must be a non-empty subset of {CONDITIONS}, got {list(conditions)}")
    if not sets:
        raise ValueError("no prompt sets to evaluate")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"prompt set names must be unique, got {names}")
    gate_closed = dict(gate_closed or {})
    if gate_closed and base_run is None:
        raise ValueError("gate_closed needs base_run, the evaluation whose base answers the closed prompts reuse")
    if ungated_run is not None and not gate_closed:
        raise ValueError("ungated_run needs gate_closed, the gate decisions that say which prompts reuse it")
    for eval_set in sets:
        if eval_set.name in gate_closed and len(gate_closed[eval_set.name]) != len(eval_set.prompts):
            raise ValueError(
                f"gate_closed[{eval_set.name!r}] has {len(gate_closed[eval_set.name])} entries for "
                f"{len(eval_set.prompts)} prompts"
            )
    out = Path(out_dir)
    sampler = as_sampler(model, tokenizer)
    keywords = {f.name: getattr(sampling, f.name) for f in fields(sampling)}  # score_prompts' sampling keywords
    report = EvaluationReport(
        settings={
            "sampling": sampling.to_dict(),
            "judge": getattr(judge, "name", type(judge).__name__),
            "judge_agreement": dict(settings.judge_agreement) if settings.judge_agreement else None,
            "unparseable": settings.unparseable,
        }
    )
    for eval_set in sets:
        report.sets[eval_set.name] = {"role": eval_set.role}
        # a harmful set of wrapped prompts (a jailbreak: source): attack success overall and per family
        families = attack_families(eval_set.prompts) if eval_set.role == "harmful" else None
        texts: dict[str, list[str]] = {}
        for condition in conditions:
            log_dir = out / condition / eval_set.name
            reused: dict[int, tuple[PromptScore, list[Answer]]] = {}  # closed gates: base records
            reused_open: dict[int, tuple[PromptScore, list[Answer]]] = {}  # open gates: the ungated run's records
            if condition == "steered" and eval_set.name in gate_closed:
                closed = gate_closed[eval_set.name]
                reused = _reused_records(
                    Path(base_run) / "base", eval_set, closed, judge, sampling, settings.unparseable, "gate-closed"
                )
                if ungated_run is not None:
                    opened = [not is_closed for is_closed in closed]
                    reused_open = _reused_records(
                        Path(ungated_run) / "steered",
                        eval_set,
                        opened,
                        judge,
                        sampling,
                        settings.unparseable,
                        "gate-open",
                    )
                    _copy_base_logprobs(Path(ungated_run) / "steered" / eval_set.name, log_dir, reused_open.values())
            todo = [prompt for i, prompt in enumerate(eval_set.prompts) if i not in reused and i not in reused_open]
            own: list[PromptScore] = []
            if todo:
                with _condition(sampler, condition):
                    own = score_prompts(
                        sampler,
                        tokenizer,
                        todo,
                        judge,
                        log_dir,
                        batch_size=settings.batch_size,
                        progress=settings.progress,
                        unparseable=settings.unparseable,
                        **keywords,
                    )
            own_records = iter(zip(own, recorded_answers(log_dir, [s.key for s in own]) if own else [], strict=True))
            merged = [
                reused[i] if i in reused else reused_open[i] if i in reused_open else next(own_records)
                for i in range(len(eval_set.prompts))
            ]
            scores = [score for score, _ in merged]
            answers = [group for _, group in merged]
            summary = summarize([s.score for s in scores])
            if reused:
                summary["n_gate_closed"] = len(reused)
            if reused_open:
                summary["n_gate_open_reused"] = len(reused_open)
            if families is not None:
                summary.update(attack_success([s.score for s in scores], families))
            texts[condition] = [group[0].text for group in answers]
            flat_texts = [a.text for group in answers for a in group]
            degenerate = sum(DETECTOR.find(text) is not None for text in flat_texts)
            summary["degenerate"] = degenerate
            summary["degenerate_pct"] = 100.0 * degenerate / len(flat_texts) if flat_texts else math.nan
            relevance_per_prompt = None
            if settings.relevance is not None:
                pairs = [(s.prompt, a.text) for s, group in zip(scores, answers, strict=True) for a in group]
                values = settings.relevance.score([p for p, _ in pairs], [a for _, a in pairs])
                sizes = [len(group) for group in answers]
                starts = [sum(sizes[:i]) for i in range(len(sizes))]
                relevance_per_prompt = [sum(values[b : b + n]) / n for b, n in zip(starts, sizes, strict=True)]
                summary["mean_relevance"] = float(sum(values) / len(values))
            if settings.quality:
                flat = [a for group in answers for a in group]
                if condition == "base":  # sampled from the base model: its own log-probabilities
                    base_logprobs = [a.mean_logprob for a in flat]
                else:  # reused base answers carry their own; the others get a teacher-forced pass (logged)
                    steered_records = [record for i, record in enumerate(merged) if i not in reused]
                    scored = iter(
                        _base_logprobs(
                            sampler,
                            [score for score, _ in steered_records],
                            [group for _, group in steered_records],
                            log_dir,
                            settings.batch_size,
                            sampling,
                        )
                        if steered_records
                        else []
                    )
                    base_logprobs = [
                        a.mean_logprob if i in reused else next(scored)
                        for i, group in enumerate(answers)
                        for a in group
                    ]
                summary.update(
                    summarize_quality(
                        relevance_per_prompt, [repetition_rate(a.token_ids) for a in flat], base_logprobs
                    )
                )
            if settings.plots:
                plot_histogram(
                    [s.score for s in scores],
                    out / f"hist_{eval_set.name}_{condition}.png",
                    title=f"{eval_set.name} ({condition})",
                )
            report.sets[eval_set.name][condition] = summary
        if settings.samples and eval_set.role == "target" and set(CONDITIONS) <= set(texts):
            report.samples[eval_set.name] = sample_pairs(
                eval_set.prompts, texts["base"], texts["steered"], settings.samples, seed=sampling.seed
            )
    if settings.kl_prompts is not None:
        report.kl = {
            **sampler.next_token_kl(
                list(settings.kl_prompts),
                batch_size=settings.batch_size,
                progress=settings.progress,
                max_tokens=settings.kl_tokens,
                system_prompt=sampling.system_prompt,
            ),
            "n_prompts": len(settings.kl_prompts),
        }
    if settings.perplexity_texts is not None:
        report.perplexity = {}
        for condition in conditions:
            with _condition(sampler, condition):
                report.perplexity[condition] = sampler.perplexity(
                    list(settings.perplexity_texts), batch_size=settings.batch_size, progress=settings.progress
                )
    if settings.plots:
        plot_refusal_rates(report, out / "refusal_rates.png")
    atomic_write_json(out / "report.json", report.to_dict())
    atomic_write_text(out / "report.md", report.to_markdown())
    return report


def gate_closed_prompts(
    model: nn.Module | Sampler,
    tokenizer: Any,
    adapter_name: str,
    sets: Sequence[EvalSet],
    *,
    batch_size: int,
    sampling: SamplingSettings,
) -> dict[str, list[bool]]:
    """``{set name: [B] bool}``: the prompts of each set whose gate the condition-gated adapter ``adapter_name`` keeps
    closed (``{}`` when the backend cannot tell), as :func:`evaluate`'s ``gate_closed`` takes them.

    The prompts are batched as :func:`~steering_adapter.measure.scored_runs.score_prompts` batches them (unique
    prompts, in order, ``batch_size`` per batch), so each decision is the one generation takes. The adapter must be
    active.
    """
    sampler = as_sampler(model, tokenizer)
    decide = getattr(sampler, "gate_decisions", None)
    if decide is None:
        return {}
    closed: dict[str, list[bool]] = {}
    for eval_set in sets:
        unique = list(dict.fromkeys(eval_set.prompts))
        gates = decide(
            unique,
            adapter_name,
            batch_size=batch_size,
            system_prompt=sampling.system_prompt,
            chat_template_kwargs=sampling.chat_template_kwargs,
        )
        opened = dict(zip(unique, gates, strict=True))
        closed[eval_set.name] = [not opened[prompt] for prompt in eval_set.prompts]
    return closed


BASE_LOGPROBS_FILE = "base_logprobs.jsonl"


def _reused_records(
    condition_dir: Path,
    eval_set: EvalSet,
    chosen: Sequence[bool],
    judge: Judge,
    sampling: SamplingSettings,
    unparseable: str,
    which: str,
) -> dict[int, tuple[PromptScore, list[Answer]]]:
    """``{position: (score, answers)}`` of the ``chosen`` prompts of ``eval_set`` from the records of one condition
    of an earlier evaluation (``condition_dir``: its ``base/`` or ``steered/`` folder; same judge, same sampling
    settings: the same record keys); each score is computed again from its recorded labels with ``unparseable`` (the
    earlier run may have scored them the other way). ``which`` names the chosen prompts in errors.

    Raises:
        ValueError: no finished scoring of the set there, another judge, or a chosen prompt without a record.
    """
    condition, log_dir = condition_dir.name, condition_dir / eval_set.name
    positions = [i for i, is_chosen in enumerate(chosen) if is_chosen]
    if not positions:
        return {}
    if not (log_dir / SCORES_FILE).is_file():
        raise ValueError(f"{log_dir} holds no finished {condition} scoring of set {eval_set.name!r} to reuse")
    with open(log_dir / SCORES_FILE, encoding="utf-8") as handle:
        recorded = json.load(handle)
    recorded_judge = recorded["judge"]
    judge_name = getattr(judge, "name", type(judge).__name__)
    if recorded_judge != judge_name:
        raise ValueError(f"{log_dir} was judged by {recorded_judge!r}, this evaluation by {judge_name!r}")
    by_key = {score.key: score for score in load_scores(log_dir)}
    settings = sampling.to_dict()
    keys = [prompt_key(eval_set.prompts[i], settings) for i in positions]
    missing = [eval_set.prompts[i] for i, key in zip(positions, keys, strict=True) if key not in by_key]
    if missing:
        raise ValueError(
            f"{log_dir} has no {condition} record of {len(missing)} {which} prompts of set {eval_set.name!r} "
            f"(e.g. {missing[0][:80]!r}): score the {condition} condition there with the same prompts and sampling "
            "settings"
        )
    answers = recorded_answers(log_dir, keys)
    tau, threshold = recorded["tau"], recorded["threshold"]
    rescored = {}
    for key in set(keys):
        score = by_key[key]
        value = refusal_confidence(score.labels, score.mean_logprobs, tau=tau, unparseable=unparseable)
        rescored[key] = dataclasses.replace(score, score=value, label=classify(value, threshold))
    return {i: (rescored[key], group) for i, key, group in zip(positions, keys, answers, strict=True)}


def _copy_base_logprobs(source_dir: Path, log_dir: Path, records: Iterable[tuple[PromptScore, list[Answer]]]) -> None:
    """Copy into ``log_dir``'s base log-probability log the values ``source_dir``'s log holds for ``records`` (the
    rest are scored by :func:`_base_logprobs` when they are needed)."""
    source = JsonlLog(source_dir / BASE_LOGPROBS_FILE)
    if not source.path.is_file():
        return
    known = source.by_key()
    target = JsonlLog(log_dir / BASE_LOGPROBS_FILE)
    for score, _ in records:
        if score.key in known:
            target.append_keyed(known[score.key])  # once per key: duplicate prompts share one


def _base_logprobs(
    sampler: Sampler,
    scores: Sequence[Any],
    answers: Sequence[Sequence[Answer]],
    log_dir: Path,
    batch_size: int,
    sampling: SamplingSettings,
) -> list[float]:
    """Mean log-probability of every steered answer under the base model (steering off), NaN for empty answers.

    Kept per prompt key in ``log_dir/base_logprobs.jsonl``, so a resumed evaluation does not score them again.
    Thinking models' answers are scored after the prompt alone (their reasoning is not re-fed)."""
    log = JsonlLog(log_dir / BASE_LOGPROBS_FILE)
    done = {key: record["values"] for key, record in log.by_key().items()}
    pending = {s.key: (s, group) for s, group in zip(scores, answers, strict=True) if s.key not in done}
    todo = list(pending.values())  # duplicate prompts share a key: scored once
    if todo:
        prompts = [s.prompt for s, group in todo for _ in group]
        token_ids = [a.token_ids for _, group in todo for a in group]
        with sampler.steering_disabled():
            values = sampler.answer_logprobs(
                prompts,
                token_ids,
                system_prompt=sampling.system_prompt,
                chat_template_kwargs=sampling.chat_template_kwargs,
                batch_size=batch_size,
            )
        means = iter(float(v.mean()) if len(v) else None for v in values)
        for s, group in todo:
            done[s.key] = [next(means) for _ in group]
            log.append_keyed({"key": s.key, "values": done[s.key]})
    return [math.nan if v is None else v for s in scores for v in done[s.key]]


def _condition(sampler: Sampler, condition: str) -> contextlib.AbstractContextManager:
    """Steering switched off for ``"base"``; left as it is for ``"steered"``."""
    return sampler.steering_disabled() if condition == "base" else contextlib.nullcontext()
