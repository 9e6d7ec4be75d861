"""General benchmarks of steered models through lm-evaluation-harness (``pip install 'steering-adapter[benchmarks]'``).

- :func:`run_benchmark` scores a model object (steered or not) with lm-eval's Python API;
- :mod:`steering_adapter.measure.benchmarks.mmlu`: MMLU read offline from the shared datasets, as lm-eval task files
  in its standard MMLU format (shipped in :data:`TASKS_DIR`, task group ``mmlu_offline``);
- ``steering-adapter-lm-eval``: lm-eval's own command with steering adapters loadable through ``peft=`` and these
  tasks on its include path (:func:`steering_adapter.cli.lm_eval_entry.main`).
"""

from steering_adapter.measure.benchmarks.harness import (
    BenchmarkRequest,
    BenchmarkScore,
    check_benchmark_inputs,
    gated_steering_active,
    lm_eval_task,
    parse_benchmark,
    run_benchmark,
    score_from_results,
)
from steering_adapter.measure.benchmarks.mmlu import (
    MMLU_CATEGORIES,
    MMLU_SUBJECTS,
    TASKS_DIR,
    load_mmlu_subject,
    task_files,
)

__all__ = [
    "MMLU_CATEGORIES",
    "MMLU_SUBJECTS",
    "TASKS_DIR",
    "BenchmarkRequest",
    "BenchmarkScore",
    "check_benchmark_inputs",
    "gated_steering_active",
    "lm_eval_task",
    "load_mmlu_subject",
    "parse_benchmark",
    "run_benchmark",
    "score_from_results",
    "task_files",
]
