"""MMLU read offline from the shared datasets, as lm-evaluation-harness task definitions in its standard MMLU format.

The data are the original CSV files (``mmlu/dev/<subject>_dev.csv``, ``mmlu/test/<subject>_test.csv``: no header;
question, four choices, the answer letter) under :func:`~steering_adapter.utils.shared_datasets.default_datasets_dir`;
nothing is vendored. Each subject becomes the document layout of the Hub's ``cais/mmlu`` (``question``, ``subject``,
``choices`` ``[4]``, ``answer`` index), so the task files below are lm-eval's own MMLU tasks (same description, prompt,
choices, metric, few-shot sampler and group weighting) with a different loader: numbers are comparable with published
ones. The task files ship in :data:`TASKS_DIR` (one per subject, one per category, the ``mmlu_offline`` group) and
are written by :func:`task_files`; a test keeps the two equal.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from steering_adapter.utils.shared_datasets import DATASETS_ENV, default_datasets_dir

__all__ = [
    "GROUP",
    "MMLU_CATEGORIES",
    "MMLU_SUBJECTS",
    "TASKS_DIR",
    "load_mmlu_subject",
    "mmlu_dataset",
    "subject_task",
    "task_files",
]

GROUP = "mmlu_offline"
TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
LETTERS = ("A", "B", "C", "D")

# lm-eval's four MMLU categories (tasks/mmlu/default, the ``tag`` of each subject).
MMLU_CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics", "high_school_physics",
        "high_school_statistics", "machine_learning",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging", "management",
        "marketing", "medical_genetics", "miscellaneous", "nutrition", "professional_accounting",
        "professional_medicine", "virology",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics",
        "high_school_microeconomics", "high_school_psychology", "human_sexuality", "professional_psychology",
        "public_relations", "security_studies", "sociology", "us_foreign_policy",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history",
        "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy",
        "prehistory", "professional_law", "world_religions",
    ),
}  # fmt: skip
MMLU_SUBJECTS: tuple[str, ...] = tuple(sorted(s for subjects in MMLU_CATEGORIES.values() for s in subjects))


def subject_task(subject: str) -> str:
    """lm-eval task name of one subject (``mmlu_offline_anatomy``)."""
    return f"{GROUP}_{subject}"


def load_mmlu_subject(subject: str, datasets_dir: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """One subject's dev and test questions in the ``cais/mmlu`` layout.

    Args:
        subject: one of :data:`MMLU_SUBJECTS`.
        datasets_dir: folder holding ``mmlu/`` (default: ``$STEERING_ADAPTER_DATASETS`` or ``../shared/datasets``).

    Returns:
        ``{"dev": [...], "test": [...]}``, each document ``{"question", "subject", "choices": [4], "answer": int}``
        in file order (the few-shot examples are the first dev rows, as with the Hub dataset).

    Raises:
        ValueError: an unknown subject, a missing file (the message names it and the variable to set) or a malformed
            row (file and line named).
    """
    if subject not in MMLU_SUBJECTS:
        raise ValueError(f"unknown MMLU subject {subject!r}; known: {', '.join(MMLU_SUBJECTS)}")
    root = Path(datasets_dir) if datasets_dir is not None else default_datasets_dir()
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in ("dev", "test"):
        path = root / "mmlu" / split / f"{subject}_{split}.csv"
        if not path.is_file():
            raise ValueError(f"MMLU file {path} not found; set {DATASETS_ENV} to the folder that holds mmlu/")
        documents = []
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if len(row) != 6 or row[5].strip() not in LETTERS:
                    raise ValueError(
                        f"{path}: line {len(documents) + 1}: expected question, A, B, C, D, answer letter; got {row!r}"
                    )
                documents.append(
                    {
                        "question": row[0],
                        "subject": subject,
                        "choices": row[1:5],
                        "answer": LETTERS.index(row[5].strip()),
                    }
                )
        splits[split] = documents
    return splits


def mmlu_dataset(subject: str, datasets_dir: str | None = None, **_metadata: Any) -> Any:
    """lm-eval ``custom_dataset`` loader: one subject as a ``datasets.DatasetDict`` with ``test`` and ``dev``.

    lm-eval calls it with the task's ``metadata`` and ``dataset_kwargs`` as keyword arguments; only ``subject`` and
    ``datasets_dir`` (a ``--metadata`` override) are used.
    """
    import datasets  # lazy: lm-eval's own dependency, imported only when a task loads

    splits = load_mmlu_subject(subject, datasets_dir)
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


_TEMPLATE = """\
# lm-eval's MMLU template (tasks/mmlu/default/_default_template_yaml) with the offline loader of
# steering_adapter.measure.benchmarks.mmlu. Written by task_files(); do not edit by hand.
custom_dataset: !function loader.mmlu_dataset
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "DOC_TO_TEXT"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

# lm-eval's MMLU prompt: the question, the four lettered choices, "Answer:" (the choices are scored as " A" ... " D")
_TEMPLATE = _TEMPLATE.replace(
    "DOC_TO_TEXT",
    "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:",
)

_LOADER = '''\
"""The loader lm-eval imports for the offline MMLU tasks (``custom_dataset: !function loader.mmlu_dataset``)."""

from steering_adapter.measure.benchmarks.mmlu import mmlu_dataset

__all__ = ["mmlu_dataset"]
'''


def _group_file(name: str, alias: str | None, members: list[str]) -> str:
    lines = [f"group: {name}"]
    if alias:
        lines.append(f"group_alias: {alias}")
    lines += ["task:", *(f"  - {member}" for member in members)]
    lines += ["aggregate_metric_list:", "  - metric: acc", "    weight_by_size: True", "metadata:", "  version: 2", ""]
    return "\n".join(lines)


def task_files() -> dict[str, str]:
    """The lm-eval task files of :data:`TASKS_DIR`, by file name (what ships in the package)."""
    files = {"_template_yaml": _TEMPLATE, "loader.py": _LOADER}
    files[f"_{GROUP}.yaml"] = _group_file(GROUP, None, [f"{GROUP}_{category}" for category in MMLU_CATEGORIES])
    for category, subjects in MMLU_CATEGORIES.items():
        files[f"_{GROUP}_{category}.yaml"] = _group_file(
            f"{GROUP}_{category}", category, [f"{GROUP}_{category}_tasks"]
        )
        for subject in subjects:
            description = (
                f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."
            )
            files[f"{subject_task(subject)}.yaml"] = "\n".join(
                [
                    f"task: {subject_task(subject)}",
                    f"task_alias: {subject}",
                    f"tag: {GROUP}_{category}_tasks",
                    "include: _template_yaml",
                    "dataset_kwargs:",
                    f"  subject: {subject}",
                    f'description: "{description}\\n\\n"',
                    "",
                ]
            )
    return files
