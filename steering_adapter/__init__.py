"""steering-adapter: refusal steering vectors as shareable PEFT adapters.

Importing this package registers the ``STEERING`` adapter type with PEFT, so the usual calls work::

    import steering_adapter
    model.load_adapter("org/no-political-refusal")          # transformers
    PeftModel.from_pretrained(model, "org/no-political-refusal")

The adapter format and its PEFT method load eagerly; the pipeline stages (activations, estimators, judges,
evaluation, selection, recipes) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steering_adapter.utils.versions import (
    IncompatibleVersionsError,
    UntestedVersionsWarning,
    __version__,
    check_versions,
    warn_untested_versions,
)

warn_untested_versions()  # one warning outside the tested pair, never a stop

from steering_adapter.tuner import (  # noqa: E402
    SteeringConfig,
    SteeringLayer,
    SteeringModel,
    register,
    set_adapter_scale,
    steering_disabled,
)

register()

from steering_adapter.adapter.integrations import install as _install_load_checks  # noqa: E402

_install_load_checks()

from steering_adapter.adapter.builder import adapter_from_vectors, save_adapter  # noqa: E402
from steering_adapter.adapter.hub import push_adapter  # noqa: E402
from steering_adapter.utils.lazy_exports import lazy_exports  # noqa: E402

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from steering_adapter.directions.collection import ActivationCollector, collect_activations
    from steering_adapter.directions.collection_result import CollectionResult
    from steering_adapter.directions.diagnostics import DirectionDiagnostics, diagnose_directions
    from steering_adapter.directions.estimators import (
        MeanDifference,
        RidgeMeanDifference,
        WeightedRidgeMeanDifference,
        make_estimator,
    )
    from steering_adapter.directions.fitting import compute_direction, fit_directions
    from steering_adapter.directions.statistics import ActivationStatistics
    from steering_adapter.measure.evaluation import EvalSet, evaluate
    from steering_adapter.measure.evaluation_report import EvaluationReport
    from steering_adapter.measure.judges import (
        Judge,
        Judgment,
        LLMJudge,
        OpenAIChatBackend,
        PatternJudge,
        TransformersJudgeBackend,
        parse_judge_output,
    )
    from steering_adapter.measure.likelihood import next_token_kl, perplexity
    from steering_adapter.measure.prompt_sets import PromptSet, list_prompt_sets, load_prompt_set, split_prompts
    from steering_adapter.measure.refusal_score import classify, refusal_confidence, summarize
    from steering_adapter.measure.relevance import RelevanceScorer
    from steering_adapter.measure.sampling import Answer, PromptSamples, sample_answers
    from steering_adapter.measure.sampling.prompt_encoding import format_prompts
    from steering_adapter.measure.scored_runs import PromptScore, score_prompts
    from steering_adapter.run.pipeline import run_recipe
    from steering_adapter.run.recipe import Recipe, load_recipe
    from steering_adapter.run.selection.objective import SelectionObjective
    from steering_adapter.run.selection.sweep import sweep_layers_and_scale
    from steering_adapter.runtimes.export import export_adapter, import_gguf

# public name -> module that defines it (imported lazily, PEP 562)
_LAZY = {
    # activations and statistics
    "ActivationCollector": "directions.collection",
    "CollectionResult": "directions.collection_result",
    "collect_activations": "directions.collection",
    "format_prompts": "measure.sampling.prompt_encoding",
    "ActivationStatistics": "directions.statistics",
    # estimators
    "MeanDifference": "directions.estimators",
    "RidgeMeanDifference": "directions.estimators",
    "WeightedRidgeMeanDifference": "directions.estimators",
    "compute_direction": "directions.fitting",
    "fit_directions": "directions.fitting",
    "make_estimator": "directions.estimators",
    # diagnostics
    "DirectionDiagnostics": "directions.diagnostics",
    "diagnose_directions": "directions.diagnostics",
    # sampling, judging, scoring
    "sample_answers": "measure.sampling",
    "Answer": "measure.sampling",
    "PromptSamples": "measure.sampling",
    "Judge": "measure.judges",
    "Judgment": "measure.judges",
    "PatternJudge": "measure.judges",
    "LLMJudge": "measure.judges",
    "OpenAIChatBackend": "measure.judges",
    "TransformersJudgeBackend": "measure.judges",
    "parse_judge_output": "measure.judges",
    "refusal_confidence": "measure.refusal_score",
    "classify": "measure.refusal_score",
    "summarize": "measure.refusal_score",
    "score_prompts": "measure.scored_runs",
    "PromptScore": "measure.scored_runs",
    # prompt sets
    "PromptSet": "measure.prompt_sets",
    "load_prompt_set": "measure.prompt_sets",
    "split_prompts": "measure.prompt_sets",
    "list_prompt_sets": "measure.prompt_sets",
    # evaluation and selection
    "EvalSet": "measure.evaluation",
    "EvaluationReport": "measure.evaluation_report",
    "evaluate": "measure.evaluation",
    "next_token_kl": "measure.likelihood",
    "perplexity": "measure.likelihood",
    "RelevanceScorer": "measure.relevance",
    "SelectionObjective": "run.selection.objective",
    "sweep_layers_and_scale": "run.selection.sweep",
    # recipes and the runner
    "Recipe": "run.recipe",
    "load_recipe": "run.recipe",
    "run_recipe": "run.pipeline",
    # other runtimes: llama.cpp control vectors, plain PEFT LoRA, merged checkpoints
    "export_adapter": "runtimes.export",
    "import_gguf": "runtimes.export",
}

__all__ = [
    "__version__",
    "IncompatibleVersionsError",
    "UntestedVersionsWarning",
    "SteeringConfig",
    "SteeringLayer",
    "SteeringModel",
    "adapter_from_vectors",
    "check_versions",
    "push_adapter",
    "register",
    "save_adapter",
    "set_adapter_scale",
    "steering_disabled",
    "ActivationCollector",
    "CollectionResult",
    "collect_activations",
    "format_prompts",
    "ActivationStatistics",
    "MeanDifference",
    "RidgeMeanDifference",
    "WeightedRidgeMeanDifference",
    "compute_direction",
    "fit_directions",
    "make_estimator",
    "DirectionDiagnostics",
    "diagnose_directions",
    "sample_answers",
    "Answer",
    "PromptSamples",
    "Judge",
    "Judgment",
    "PatternJudge",
    "LLMJudge",
    "OpenAIChatBackend",
    "TransformersJudgeBackend",
    "parse_judge_output",
    "refusal_confidence",
    "classify",
    "summarize",
    "score_prompts",
    "PromptScore",
    "PromptSet",
    "load_prompt_set",
    "split_prompts",
    "list_prompt_sets",
    "EvalSet",
    "EvaluationReport",
    "evaluate",
    "next_token_kl",
    "perplexity",
    "RelevanceScorer",
    "SelectionObjective",
    "sweep_layers_and_scale",
    "Recipe",
    "load_recipe",
    "run_recipe",
    "export_adapter",
    "import_gguf",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, eager=__all__)
