"""The recipe runner's stages, one module each: what a stage reads, what it writes and which cache folder it owns.

- :mod:`.load`: the model, sampling backend and judge a recipe names.
- :mod:`.inputs`: a recipe's prompt sources split into train / selection / test, and its sampling settings.
- :mod:`.folders`: fingerprints, resumable stage folders (moved aside when their inputs change), wall times.
- :mod:`.estimate`: score the training prompts, collect activations, fit and diagnose one direction per block
  (``train_scores/``, ``directions/``, ``diagnostics/``).
- :mod:`.gate_fit`: the gate's condition direction, block and threshold.
- :mod:`.choose`: the sweep of layers × α on the selection half (``selection/``).
- :mod:`.publish`: the chosen adapter evaluated on the test half, with and without its gate, and saved
  (``evaluation/``, ``evaluation_ungated/``, ``adapter/``, ``summary.json``, ``report.md``); the runner writes
  ``timings.json``, also for a run that fails.

:func:`steering_adapter.run.pipeline.run_recipe` runs them in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steering_adapter.utils.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from steering_adapter.run.stages.choose import NoFeasibleChoiceError, select_layers_and_alpha
    from steering_adapter.run.stages.context import EstimatedDirections, RunContext
    from steering_adapter.run.stages.estimate import estimate_directions
    from steering_adapter.run.stages.folders import fingerprint, gate_key, stage_dir, tensor_digest
    from steering_adapter.run.stages.gate_fit import fit_recipe_condition
    from steering_adapter.run.stages.inputs import eval_sets, load_source, recipe_sampling, resolve_prompts
    from steering_adapter.run.stages.load import build_judge, build_sampler, load_model
    from steering_adapter.run.stages.publish import evaluate_and_save
    from steering_adapter.run.stages.stage_times import StageTimes

# public name -> the module that defines it, imported on first use (PEP 562)
_EXPORTS = {
    "NoFeasibleChoiceError": "steering_adapter.run.stages.choose",
    "StageTimes": "steering_adapter.run.stages.stage_times",
    "build_judge": "steering_adapter.run.stages.load",
    "build_sampler": "steering_adapter.run.stages.load",
    "EstimatedDirections": "steering_adapter.run.stages.context",
    "RunContext": "steering_adapter.run.stages.context",
    "estimate_directions": "steering_adapter.run.stages.estimate",
    "eval_sets": "steering_adapter.run.stages.inputs",
    "evaluate_and_save": "steering_adapter.run.stages.publish",
    "fingerprint": "steering_adapter.run.stages.folders",
    "fit_recipe_condition": "steering_adapter.run.stages.gate_fit",
    "gate_key": "steering_adapter.run.stages.folders",
    "load_model": "steering_adapter.run.stages.load",
    "load_source": "steering_adapter.run.stages.inputs",
    "recipe_sampling": "steering_adapter.run.stages.inputs",
    "resolve_prompts": "steering_adapter.run.stages.inputs",
    "select_layers_and_alpha": "steering_adapter.run.stages.choose",
    "stage_dir": "steering_adapter.run.stages.folders",
    "tensor_digest": "steering_adapter.run.stages.folders",
}

__all__ = [
    "NoFeasibleChoiceError",
    "StageTimes",
    "build_judge",
    "build_sampler",
    "EstimatedDirections",
    "RunContext",
    "estimate_directions",
    "eval_sets",
    "evaluate_and_save",
    "fingerprint",
    "fit_recipe_condition",
    "gate_key",
    "load_model",
    "load_source",
    "recipe_sampling",
    "resolve_prompts",
    "select_layers_and_alpha",
    "stage_dir",
    "tensor_digest",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
