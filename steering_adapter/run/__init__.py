"""Recipe runs: a YAML recipe in, a chosen, evaluated and saved steering adapter out.

- :mod:`.recipe`: the recipe schema (:class:`Recipe`, :func:`load_recipe`, :func:`recipe_from_dict`), validated with
  errors that name the bad key.
- :mod:`.pipeline`: :func:`run_recipe`, the runner (sample → judge → score → collect → estimate → select → evaluate
  → save), resumable stage by stage.
- :mod:`.stages`: one module per stage, each owning its cache folder.
- :mod:`.selection`: the layer / α sweep and its objective (:func:`sweep_layers_and_scale`, :class:`SweepSettings`,
  :class:`SelectionObjective`, :class:`SweepResult`).
- :mod:`.memory`: the memory a recipe needs, estimated from the model's config before anything is loaded
  (:func:`estimate_recipe_memory`, :func:`check_recipe_memory`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steering_adapter.utils.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from steering_adapter.run.memory import (
        InsufficientMemoryError,
        MemoryEstimate,
        StageMemory,
        check_recipe_memory,
        estimate_recipe_memory,
        free_memory,
        model_config,
        parameter_count,
    )
    from steering_adapter.run.pipeline import RunResult, run_recipe
    from steering_adapter.run.recipe import (
        CardSpec,
        EstimatorSpec,
        EvalSetSpec,
        GatingSpec,
        JudgeSpec,
        ModelSpec,
        OutputSpec,
        PromptsSpec,
        Recipe,
        RecipeError,
        SamplingSpec,
        SelectionSpec,
        load_recipe,
        read_recipe_yaml,
        recipe_from_dict,
        recipe_sources,
    )
    from steering_adapter.run.selection.objective import SelectionObjective, SweepPoint, SweepResult, default_alphas
    from steering_adapter.run.selection.sweep import save_sweep, sweep_layers_and_scale
    from steering_adapter.run.selection.sweep_settings import SweepSettings
    from steering_adapter.run.stages.choose import NoFeasibleChoiceError

# public name -> the module that defines it, imported on first use (PEP 562)
_EXPORTS = {
    "CardSpec": "steering_adapter.run.recipe",
    "EstimatorSpec": "steering_adapter.run.recipe",
    "EvalSetSpec": "steering_adapter.run.recipe",
    "GatingSpec": "steering_adapter.run.recipe",
    "InsufficientMemoryError": "steering_adapter.run.memory",
    "JudgeSpec": "steering_adapter.run.recipe",
    "MemoryEstimate": "steering_adapter.run.memory",
    "ModelSpec": "steering_adapter.run.recipe",
    "NoFeasibleChoiceError": "steering_adapter.run.stages.choose",
    "OutputSpec": "steering_adapter.run.recipe",
    "PromptsSpec": "steering_adapter.run.recipe",
    "Recipe": "steering_adapter.run.recipe",
    "RecipeError": "steering_adapter.run.recipe",
    "RunResult": "steering_adapter.run.pipeline",
    "SamplingSpec": "steering_adapter.run.recipe",
    "SelectionObjective": "steering_adapter.run.selection.objective",
    "SelectionSpec": "steering_adapter.run.recipe",
    "StageMemory": "steering_adapter.run.memory",
    "SweepPoint": "steering_adapter.run.selection.objective",
    "SweepResult": "steering_adapter.run.selection.objective",
    "SweepSettings": "steering_adapter.run.selection.sweep_settings",
    "check_recipe_memory": "steering_adapter.run.memory",
    "default_alphas": "steering_adapter.run.selection.objective",
    "estimate_recipe_memory": "steering_adapter.run.memory",
    "free_memory": "steering_adapter.run.memory",
    "load_recipe": "steering_adapter.run.recipe",
    "model_config": "steering_adapter.run.memory",
    "parameter_count": "steering_adapter.run.memory",
    "read_recipe_yaml": "steering_adapter.run.recipe",
    "recipe_from_dict": "steering_adapter.run.recipe",
    "recipe_sources": "steering_adapter.run.recipe",
    "run_recipe": "steering_adapter.run.pipeline",
    "save_sweep": "steering_adapter.run.selection.sweep",
    "sweep_layers_and_scale": "steering_adapter.run.selection.sweep",
}

__all__ = [
    "CardSpec",
    "EstimatorSpec",
    "EvalSetSpec",
    "GatingSpec",
    "InsufficientMemoryError",
    "JudgeSpec",
    "MemoryEstimate",
    "ModelSpec",
    "NoFeasibleChoiceError",
    "OutputSpec",
    "PromptsSpec",
    "Recipe",
    "RecipeError",
    "RunResult",
    "SamplingSpec",
    "SelectionObjective",
    "SelectionSpec",
    "StageMemory",
    "SweepPoint",
    "SweepResult",
    "SweepSettings",
    "check_recipe_memory",
    "default_alphas",
    "estimate_recipe_memory",
    "free_memory",
    "load_recipe",
    "model_config",
    "parameter_count",
    "read_recipe_yaml",
    "recipe_from_dict",
    "recipe_sources",
    "run_recipe",
    "save_sweep",
    "sweep_layers_and_scale",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
