"""The sections of a recipe: one typed settings object per top-level key (``model``, ``prompts``, ``judge``, ...).

:class:`~steering_adapter.run.recipe.Recipe` holds one of each; :mod:`steering_adapter.run.recipe` parses and validates
the YAML into them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from steering_adapter.run.selection.objective import SelectionObjective


@dataclass
class ModelSpec:
    """The model under study.

    Attributes:
        name_or_path: ``"organism"`` for the embedded model organism, else a Hub id or local folder.
        revision: exact revision of a Hub model.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: torch device (``"cpu"``, ``"cuda"``; under torchrun ``"cuda"`` is each process's own GPU) or a
            transformers device map (``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``) that spreads
            the blocks of one process's model over the visible GPUs.
        system_prompt: optional system message before every prompt.
    """

    name_or_path: str = "organism"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    system_prompt: str | None = None


@dataclass
class EvalSetSpec:
    """A held-out evaluation set: ``source`` is a prompt-set name, ``organism:<category or topic>``, a file, or
    ``jailbreak:[<families>:]<source>`` (that source's prompts wrapped in attack families,
    :mod:`steering_adapter.measure.jailbreaks`)."""

    name: str
    source: str
    role: Literal["target", "harmful", "benign", "other"]


@dataclass
class PromptsSpec:
    """Where the prompts come from and how they are split.

    Attributes:
        refusal: sources of prompts expected to be refused (the refusal side of the direction, after judging).
        compliance: sources of prompts expected to be answered (the compliance side).
        evaluation: held-out sets with their roles (selection and the final before/after report).
        neutral: source of neutral prompts for the KL divergence (held-out part).
        held_out_fraction: share of each shared/user set kept for evaluation (organism sets have their own split).
        split_seed: seed of the deterministic split.
        max_train_per_set: cap on training prompts per source (``None``: all).
        max_eval_per_set: cap on held-out prompts per set (``None``: all).
        language: keep only prompts of this language in sets that mix (deccp): ``"en"``, ``"zh"`` or ``None``.
        column: the column (CSV) or field (JSON / JSONL, Hub datasets) holding the prompt in user files that have no
            ``prompt`` one (``None``: ``prompt``, any case); known sets and ``.txt`` files ignore it.
    """

    refusal: list[str] = field(default_factory=list)
    compliance: list[str] = field(default_factory=list)
    evaluation: list[EvalSetSpec] = field(default_factory=list)
    neutral: str | None = None
    held_out_fraction: float = 0.2
    split_seed: int = 0
    max_train_per_set: int | None = None
    max_eval_per_set: int | None = None
    language: Literal["en", "zh"] | None = "en"
    column: str | None = None


@dataclass
class JudgeSpec:
    """The refusal judge.

    Attributes:
        kind: ``"probe"`` (default: a linear probe on SmolLM2-135M-Instruct's hidden states, fitted on the
            package's labeled answers, :func:`~steering_adapter.measure.judges.default_probe_judge`; no endpoint,
            about 15 answers a second on 2 CPU threads), ``"pattern"`` (keyword baseline), ``"embedding"``
            (logistic regression on MiniLM sentence embeddings,
            :func:`~steering_adapter.measure.judges.default_embedding_judge`),
            ``"openai"`` (LLM judge behind an OpenAI-compatible endpoint) or ``"transformers"`` (LLM judge run
            locally). See docs/judges.md for each judge's agreement with labeled answers.
        model: judge model name (openai) or Hub id / folder (transformers).
        degeneracy: put the degeneracy detector in front of the judge: looping / degenerate answers are refusals
            (:class:`~steering_adapter.measure.judges.DegeneracyJudge`; the probe and embedding judges always do).
        verdict: how the transformers judge gives its verdict: ``"generate"`` (it reasons briefly, then the tag) or
            ``"tag_probability"`` (P(refusal) from the two tag replies' log-probabilities, no generation; for small
            judges, :class:`~steering_adapter.measure.judges.TagProbabilityJudge`).
        max_tokens: generation budget per verdict of an LLM judge (``None``: the backend's default).
        check: measure the judge on the package's labeled test answers (248, docs/judges.md) and name its κ beside
            the report's refusal rates; ``None`` (default): for the probe, pattern and embedding judges, not for
            LLM judges (one verdict per labeled answer).
        base_url: endpoint for ``openai`` (default ``STEERING_JUDGE_BASE_URL``).
        api_key_env: name of the environment variable holding the API key; the key is sent only when this names
            one (never a fallback to ``OPENAI_API_KEY``), and only over https or to this machine.
        max_concurrency: parallel requests (openai).
        extra_refusal_patterns: phrases added to the pattern judge's defaults.
        ignore_prompt_echoes: the pattern judge does not count a phrase the prompt itself contains (e.g. the
            "sensitive" of "Why is X a sensitive topic?" repeated in an answer); see
            :class:`~steering_adapter.measure.judges.PatternJudge`.
    """

    kind: Literal["probe", "pattern", "embedding", "openai", "transformers"] = "probe"
    model: str | None = None
    degeneracy: bool = False
    verdict: Literal["generate", "tag_probability"] = "generate"
    max_tokens: int | None = None
    check: bool | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    max_concurrency: int = 4
    extra_refusal_patterns: list[str] = field(default_factory=list)
    ignore_prompt_echoes: bool = False

    def measures_agreement(self) -> bool:
        """Whether the judge is measured on the labeled answers for the reports (see ``check``)."""
        return self.check if self.check is not None else self.kind in ("probe", "pattern", "embedding")


@dataclass
class ScoringSpec:
    """How judged answers become the refusal confidence ``c(x)`` (see :mod:`steering_adapter.measure.refusal_score`).

    Attributes:
        unparseable: what an unparseable judgment (label 0) does: ``"keep"`` (default, the authors' code): it takes
            its softmax weight and adds 0, and a prompt whose answers are all unparseable scores ``c = 0`` (neutral);
            ``"drop"``: it is left out and the weights renormalised over the other answers (a prompt with none left is
            unjudged). Records keep the raw labels, so either can be recomputed without judging again.
    """

    unparseable: Literal["keep", "drop"] = "keep"


@dataclass
class BenchmarksSpec:
    """General benchmarks run through lm-evaluation-harness on the base and the steered model (report, card, summary).

    Attributes:
        tasks: benchmark names (``"mmlu"``: MMLU read offline from the shared datasets; see
            :mod:`steering_adapter.measure.benchmarks`); empty (default): none.
        num_fewshot: examples before each question (``0`` or ``5`` for MMLU; the few-shot examples are the dev split's
            first ones, as in lm-eval's MMLU).
        limit: questions per subject (``None``: all).
        variants: what is measured: ``"base"`` (no adapter), ``"steered"`` (the adapter as published, gated if it is)
            and ``"ungated"`` (the same vectors with the gate off, where a real cost would show; skipped for an
            adapter without a gate).
        batch_size: lm-eval's batch size.
        max_drop: selection constraint: the chosen point's benchmark accuracy (the published variant) may fall at
            most this many points below the base model's; feasible points are tried in the order of the objective
            until one keeps it (``None``: measured, not a constraint).
    """

    tasks: list[str] = field(default_factory=list)
    num_fewshot: int = 0
    limit: int | None = None
    variants: list[Literal["base", "steered", "ungated"]] = field(
        default_factory=lambda: ["base", "steered", "ungated"]
    )
    batch_size: int = 8
    max_drop: float | None = None


@dataclass
class SamplingSpec:
    """Answer sampling for judging (authors: K = 5, temperature 1.0).

    Attributes:
        backend: ``"transformers"`` (the loaded model) or ``"vllm"`` (a vLLM engine on the same model samples the
            judged answers of scoring, selection and evaluation; activations still come from the loaded model).
        engine_args: extra ``vllm.LLM`` arguments for the ``vllm`` backend (``tensor_parallel_size``,
            ``gpu_memory_utilization``, ``max_model_len``, ...).
    """

    k: int = 5
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    backend: Literal["transformers", "vllm"] = "transformers"
    engine_args: Any = None


@dataclass
class EstimatorSpec:
    """Direction estimation.

    Attributes:
        method: ``"md"``, ``"rmd"`` or ``"wrmd"``.
        ridge_lambda: λ (absolute, or relative to trace(Σ)/d when ``lambda_mode="relative"``).
        lambda_mode: ``"absolute"`` or ``"relative"``.
        position: ``"last"`` prompt token or ``"mean"`` over prompt tokens.
        layers: candidate layers (``None``: all blocks).
        units: ``"separation"`` (default): each vector is ``s·u``, the unit direction times the classes' mean
            separation along it, so ``α = −1`` moves the refused prompts' mean onto the complied prompts' mean on any
            model and the default α grids carry over; ``"raw"``: the estimator's closed form (its norm depends on the
            model and λ, so α grids must be calibrated per model).
        covariance: RMD / WRMD: ``"compliance"`` (the method's Σ_c) or ``"pooled"`` (pooled within-class). Either keeps
            one ``d × d`` float64 matrix per candidate block (MD keeps none): ``8 · L · (2·d + d²)`` bytes.
        answer_scale: ``ρ >= 0``. ``0`` (default): the vector is the direction at ``position``. ``ρ > 0``: the same
            estimator is fitted a second time on the model's own answers to the training prompts (mean over the answer
            tokens, teacher-forced; the answers the prompts were scored with) and the vector becomes
            ``s·(û_prompt + ρ·û_answer)`` (:func:`~steering_adapter.directions.linear_algebra.mix_directions`): the
            prompt direction in separation units plus a push ``ρ`` times as long along the answer direction. The
            vector is added at generated tokens too; this puts there the direction the refusal takes while it is
            written. Needs ``units: separation``; one more forward pass over the training prompts and their answers.
    """

    method: Literal["md", "rmd", "wrmd"] = "rmd"
    ridge_lambda: float = 0.1
    lambda_mode: Literal["absolute", "relative"] = "relative"
    position: Literal["last", "mean"] = "last"
    layers: list[int] | None = None
    units: Literal["raw", "separation"] = "separation"
    covariance: Literal["compliance", "pooled"] = "compliance"
    answer_scale: float = 0.0


@dataclass
class SelectionSpec:
    """The layer / α sweep and its objective (see :mod:`steering_adapter.run.selection`).

    Attributes:
        goal: ``"remove"`` or ``"induce"`` the target refusals.
        layer_counts: numbers of top-ranked layers to try.
        min_depth_fraction: steer only blocks at or after this fraction of the decoder's depth (``0.5``: the second
            half; ``None``: every block). Ignored when ``estimator.layers`` names the candidate blocks.
        alphas: the α grid (``None``: ``−0.5, −1, −2, −4, −8`` to remove, the same positive to induce, in
            separation units).
        refine_steps: golden-section evaluations of α around the best feasible grid point (``0``: grid only).
        delta: allowed change of the constrained sets, in percentage points.
        kl_budget: maximum mean KL(base ‖ steered) on the neutral prompts (``None``: unconstrained).
        kl_tokens: positions per neutral prompt in the KL (the last ones; ``None``: all).
        min_relevance: absolute relevance floor of the answers that must stay answers (``None``: off).
        relevance_ratio: relative floor: this fraction of the base model's relevance on benign answers (``None``: off).
        max_repetition: ceiling on the mean share of repeated 3-grams per answer (``None``: off).
        max_perplexity_ratio: ceiling on the answers' median perplexity under the base model, relative to the base
            model's own answers (``None``: off).
        near_tie: target-rate difference (points) treated as a tie, won by the smaller |α| (``None``: one prompt).
        max_prompts_per_set: cap on selection prompts per set.
    """

    goal: Literal["remove", "induce"] = "remove"
    layer_counts: list[int] = field(default_factory=lambda: [1, 2, 4])
    min_depth_fraction: float | None = 0.5
    alphas: list[float] | None = None
    refine_steps: int = 3
    delta: float = 5.0
    kl_budget: float | None = 0.5
    kl_tokens: int | None = 16
    min_relevance: float | None = 0.2
    relevance_ratio: float | None = 0.8
    max_repetition: float | None = 0.35
    max_perplexity_ratio: float | None = 10.0
    near_tie: float | None = None
    max_prompts_per_set: int | None = None

    def objective(self) -> SelectionObjective:
        """The :class:`~steering_adapter.run.selection.SelectionObjective` of these settings (its fields, by name)."""
        names = [f.name for f in dataclasses.fields(SelectionObjective)]
        return SelectionObjective(**{name: getattr(self, name) for name in names})


@dataclass
class GatingSpec:
    """Condition-gated steering (see :mod:`steering_adapter.directions.conditions`).

    Attributes:
        mode: ``"off"`` (plain steering), ``"compare"`` (the sweep tries ungated and gated variants and keeps the
            best by the objective) or ``"on"`` (gated variants only).
        positive: sources of prompts the adapter should steer (default: ``prompts.refusal``).
        negative: sources of prompts it must leave alone (e.g. harmful and benign sets).
        layers: candidate condition blocks (default: the first half of the decoder).
        position: ``"last"`` prompt token or ``"mean"`` over the prompt.
        max_false_positive_rate: cap on the share of held-out negative prompts (per source) the gate may select
            (``None``: best balanced accuracy).
        method: condition direction, ``"md"`` (mean difference) or ``"rmd"`` (ridge: discounts what varies among
            the negative prompts, so fewer of them pass the gate).
        ridge_lambda: relative ``λ`` of ``"rmd"`` (``λ · trace(Σ_neg) / d``).
    """

    mode: Literal["off", "compare", "on"] = "off"
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    layers: list[int] | None = None
    position: Literal["last", "mean"] = "last"
    max_false_positive_rate: float | None = None
    method: Literal["md", "rmd"] = "md"
    ridge_lambda: float = 1.0


@dataclass
class OutputSpec:
    """Where the run writes (records, adapter, report, plots)."""

    dir: str = "runs/recipe"
    adapter_name: str | None = None


@dataclass
class CardSpec:
    """Model-card text the run cannot measure (it goes into the adapter's ``steering_metadata`` and its card).

    Attributes:
        intended_use: what the adapter is for and for whom.
        limitations: known limits beyond the measured table.
        license: SPDX id for the card's front matter (e.g. ``apache-2.0``), or ``None``.
    """

    intended_use: str | None = None
    limitations: str | None = None
    license: str | None = None
