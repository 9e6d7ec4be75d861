"""steering-adapter: refusal steering vectors as shareable PEFT adapters.

Importing this package registers the ``STEERING`` adapter type with PEFT, so the usual calls work::

    import steering_adapter
    model.load_adapter("org/no-political-refusal")          # transformers
    PeftModel.from_pretrained(model, "org/no-political-refusal")

The adapter format and its PEFT method load eagerly; the pipeline stages (activations, estimators, judges,
evaluation, selection, recipes) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .versions import IncompatibleVersionsError, UntestedVersionsWarning, check_versions, warn_untested_versions

warn_untested_versions()  # one warning outside the tested pair, never a stop

from .tuner import (  # noqa: E402
    SteeringConfig,
    SteeringLayer,
    SteeringModel,
    register,
    set_adapter_scale,
    steering_disabled,
)

register()

from .integrations import install as _install_load_checks  # noqa: E402

_install_load_checks()

from .builder import adapter_from_vectors, save_adapter  # noqa: E402
from .hub import push_adapter  # noqa: E402

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily, PEP 562)
_LAZY = {
    # activations and statistics
    "ActivationCollector": "activations",
    "CollectionResult": "activations",
    "collect_activations": "activations",
    "format_prompts": "prompt_encoding",
    "ActivationStatistics": "statistics",
    # estimators
    "MeanDifference": "estimators",
    "RidgeMeanDifference": "estimators",
    "WeightedRidgeMeanDifference": "estimators",
    "compute_direction": "estimators",
    "fit_directions": "estimators",
    "make_estimator": "estimators",
    # diagnostics
    "DirectionDiagnostics": "diagnostics",
    "diagnose_directions": "diagnostics",
    # sampling, judging, scoring
    "sample_answers": "generation",
    "Answer": "generation",
    "PromptSamples": "generation",
    "Judge": "judges",
    "Judgment": "judges",
    "PatternJudge": "judges",
    "LLMJudge": "judges",
    "OpenAIChatBackend": "judges",
    "TransformersJudgeBackend": "judges",
    "parse_judge_output": "judges",
    "refusal_confidence": "scoring",
    "classify": "scoring",
    "summarize": "scoring",
    "score_prompts": "scoring_run",
    "PromptScore": "scoring_run",
    # prompt sets
    "PromptSet": "datasets",
    "load_prompt_set": "datasets",
    "split_prompts": "datasets",
    "list_prompt_sets": "datasets",
    # evaluation and selection
    "EvalSet": "evaluation",
    "EvaluationReport": "evaluation",
    "evaluate": "evaluation",
    "next_token_kl": "capability",
    "perplexity": "capability",
    "RelevanceScorer": "relevance",
    "SelectionObjective": "selection",
    "sweep_layers_and_scale": "selection",
    # recipes and the runner
    "Recipe": "recipes",
    "load_recipe": "recipes",
    "run_recipe": "pipeline",
    # other runtimes: llama.cpp control vectors, plain PEFT LoRA, merged checkpoints
    "export_adapter": "export",
    "import_gguf": "export",
}

__all__ = [
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
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
