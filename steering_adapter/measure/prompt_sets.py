"""Prompt sets: the evaluation sets shipped in ``shared/datasets`` under one shape, user files, and splits.

Known sets (files and licenses in ``shared/datasets/PROVENANCE.md``; the files are not part of the package):

============================  ===========================================  ================================
name                          file                                         prompts
============================  ===========================================  ================================
``jbb_harmful``               ``jbb_behaviors/harmful-behaviors.csv``      column ``Goal`` (100)
``jbb_benign``                ``jbb_behaviors/benign-behaviors.csv``       column ``goal`` (100)
``deccp_censored``            ``deccp/censored.txt``                       one per line (95: 65 en, 30 zh)
``deccp_uncensored``          ``deccp/uncensored.txt``                     one per line (37)
``deccp_other``               ``deccp/other.txt``                          one per line (70)
``xstest_safe``               ``xstest/xstest_prompts.csv``                ``type`` not ``contrast_*`` (250)
``xstest_unsafe``             ``xstest/xstest_prompts.csv``                ``type`` ``contrast_*`` (200)
``ccp_sensitive``             ``ccp_sensitive/ccp_sensitive.json``         field ``prompt`` (1360)
============================  ===========================================  ================================

The folder is the ``datasets_dir`` argument, else ``$STEERING_ADAPTER_DATASETS``, else ``shared/datasets`` next to
the repository checkout. Anything else is a user file (``.txt`` one prompt per line, ``.csv`` with a ``prompt``
column, ``.json`` list of strings or objects, ``.jsonl``) or a Hugging Face dataset (``"hf:org/name"`` or
``"hf://org/name"``, needs the optional ``datasets`` package and network access). A run's source may also be
``organism:<category>`` (the organism's own prompts) or ``jailbreak:<source>`` (any source wrapped in attack
families, :mod:`steering_adapter.measure.jailbreaks`); both are resolved by the run's prompt split
(``steering_adapter.run.stages.inputs``), not by :func:`load_prompt_set`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steering_adapter.utils.shared_datasets import DATASETS_ENV, default_datasets_dir

__all__ = [
    "KNOWN_PROMPT_SETS",
    "PromptColumnError",
    "PromptSet",
    "default_datasets_dir",
    "detect_language",
    "list_prompt_sets",
    "load_prompt_set",
    "split_prompts",
]

Language = Literal["en", "zh"]

# CJK unified ideographs (+ extension A, compatibility) and CJK punctuation / full-width forms.
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


@dataclass
class PromptSet:
    """A named list of prompts with per-prompt metadata.

    Attributes:
        name: set name (a known name, a file path, ``hf:...``; splits append ``:train`` / ``:held_out``).
        prompts: the prompts.
        metadata: one dict per prompt (source row or line, category, language, ...).
    """

    name: str
    prompts: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.metadata:
            self.metadata = [{} for _ in self.prompts]
        if len(self.metadata) != len(self.prompts):
            raise ValueError(
                f"prompt set {self.name!r}: {len(self.metadata)} metadata entries for {len(self.prompts)} prompts"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    def subset(self, indices: Sequence[int], name: str | None = None) -> PromptSet:
        """The prompts at ``indices`` (in that order), with their metadata."""
        return PromptSet(
            name or self.name,
            [self.prompts[i] for i in indices],
            [dict(self.metadata[i]) for i in indices],
        )


def detect_language(text: str) -> Language:
    """``"zh"`` when ``text`` holds any CJK character, else ``"en"`` (a heuristic fit for deccp's two languages)."""
    return "zh" if _CJK.search(text) else "en"


# -- readers ---------------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    prompts, metadata = [], []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if text:
                prompts.append(text)
                metadata.append({"line": number})
    return prompts, metadata


class PromptColumnError(ValueError):
    """A prompt file or dataset without the prompt column asked for (or without a ``prompt`` one); the message names
    how the caller lets the user name the column (:meth:`naming`)."""

    def __init__(self, text: str, option: str = "column=") -> None:
        self.text = text
        super().__init__(text.replace("{option}", option))

    def naming(self, option: str) -> PromptColumnError:
        """The same error, naming ``option`` (``--column``, ``recipe.prompts.column``) as the way to name the
        column."""
        return PromptColumnError(self.text, option)


def _pick_column(columns: Sequence[str], column: str | None, source: str, candidates: Sequence[str]) -> str:
    if column is not None:
        if column not in columns:
            raise PromptColumnError(f"{source}: no column {column!r} (from {{option}}); columns are {list(columns)}")
        return column
    lowered = {name.lower(): name for name in columns}
    for candidate in candidates:
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    raise PromptColumnError(
        f"{source}: no {' / '.join(map(repr, candidates))} column; name the prompt column with {{option}} "
        f"(one of {list(columns)})"
    )


def _read_csv(
    path: Path, column: str | None, candidates: Sequence[str] = ("prompt",)
) -> tuple[list[str], list[dict[str, Any]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        chosen = _pick_column(columns, column, str(path), candidates)
        prompts, metadata = [], []
        for row_number, row in enumerate(reader):
            text = (row.get(chosen) or "").strip()
            if not text:
                continue
            prompts.append(text)
            extra = {(key or "index").strip().lower(): value for key, value in row.items() if key != chosen}
            metadata.append({"row": row_number, **extra})
    return prompts, metadata


def _records_to_prompts(
    records: Sequence[Any], column: str | None, source: str
) -> tuple[list[str], list[dict[str, Any]]]:
    prompts, metadata = [], []
    for index, record in enumerate(records):
        if isinstance(record, str):
            if column is not None:
                raise PromptColumnError(
                    f"{source}: entries are plain strings, so {{option}} {column!r} does not apply"
                )
            text, extra = record, {}
        elif isinstance(record, dict):
            chosen = _pick_column(list(record), column, f"{source} (entry {index})", ("prompt",))
            value = record[chosen]
            if not isinstance(value, str):
                raise ValueError(f"{source} (entry {index}): {chosen!r} is not a string")
            text, extra = value, {key: item for key, item in record.items() if key != chosen}
        else:
            raise ValueError(f"{source} (entry {index}): expected a string or an object, got {type(record).__name__}")
        if text.strip():
            prompts.append(text.strip())
            metadata.append({"row": index, **extra})
    return prompts, metadata


def _read_json(path: Path, column: str | None) -> tuple[list[str], list[dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as handle:
        try:
            data = json.load(handle)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):  # {"prompts": [...]} or {"data": [...]}
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a JSON list (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of strings or objects")
    return _records_to_prompts(data, column, str(path))


def _read_jsonl(path: Path, column: str | None) -> tuple[list[str], list[dict[str, Any]]]:
    records = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}: line {number} is not valid JSON") from None
    return _records_to_prompts(records, column, str(path))


_READERS: dict[str, Callable[[Path, str | None], tuple[list[str], list[dict[str, Any]]]]] = {
    ".txt": lambda path, column: _read_lines(path),
    ".csv": _read_csv,
    ".json": _read_json,
    ".jsonl": _read_jsonl,
}


# -- known sets ------------------------------------------------------------------------------------------------------


def _known_csv(relative: str, column: str, keep: Callable[[dict[str, Any]], bool] | None = None):
    def load(directory: Path) -> tuple[list[str], list[dict[str, Any]]]:
        prompts, metadata = _read_csv(directory / relative, column)
        if keep is not None:
            pairs = [(p, m) for p, m in zip(prompts, metadata, strict=True) if keep(m)]
            prompts, metadata = [p for p, _ in pairs], [m for _, m in pairs]
        return prompts, metadata

    return relative, load


def _known_lines(relative: str):
    def load(directory: Path) -> tuple[list[str], list[dict[str, Any]]]:
        prompts, metadata = _read_lines(directory / relative)
        for prompt, meta in zip(prompts, metadata, strict=True):
            meta["language"] = detect_language(prompt)
        return prompts, metadata

    return relative, load


def _known_json(relative: str, column: str):
    def load(directory: Path) -> tuple[list[str], list[dict[str, Any]]]:
        return _read_json(directory / relative, column)

    return relative, load


def _is_contrast(meta: dict[str, Any]) -> bool:
    return str(meta.get("type", "")).startswith("contrast_")


KNOWN_PROMPT_SETS: dict[str, tuple[str, Callable[[Path], tuple[list[str], list[dict[str, Any]]]]]] = {
    "jbb_harmful": _known_csv("jbb_behaviors/harmful-behaviors.csv", "Goal"),
    "jbb_benign": _known_csv("jbb_behaviors/benign-behaviors.csv", "goal"),
    "deccp_censored": _known_lines("deccp/censored.txt"),
    "deccp_uncensored": _known_lines("deccp/uncensored.txt"),
    "deccp_other": _known_lines("deccp/other.txt"),
    "xstest_safe": _known_csv("xstest/xstest_prompts.csv", "prompt", lambda meta: not _is_contrast(meta)),
    "xstest_unsafe": _known_csv("xstest/xstest_prompts.csv", "prompt", _is_contrast),
    "ccp_sensitive": _known_json("ccp_sensitive/ccp_sensitive.json", "prompt"),
}
"""``name -> (file relative to the datasets folder, loader)``."""


def list_prompt_sets() -> list[str]:
    """Names of the known prompt sets."""
    return sorted(KNOWN_PROMPT_SETS)


def _load_hf(name: str, column: str | None, split: str, config: str | None) -> tuple[list[str], list[dict]]:
    try:
        import datasets  # lazy: optional dependency (Hugging Face datasets)
    except ImportError:
        raise ImportError(
            f"loading {name!r} from the Hugging Face Hub needs the 'datasets' package: pip install datasets"
        ) from None
    dataset = datasets.load_dataset(name, config, split=split)
    chosen = _pick_column(list(dataset.column_names), column, f"hf:{name}", ("prompt",))
    prompts, metadata = [], []
    for index, row in enumerate(dataset):
        text = row[chosen]
        if isinstance(text, str) and text.strip():
            prompts.append(text.strip())
            metadata.append({"row": index, **{k: v for k, v in row.items() if k != chosen}})
    return prompts, metadata


def load_prompt_set(
    name: str | os.PathLike,
    *,
    datasets_dir: str | os.PathLike | None = None,
    column: str | None = None,
    language: Language | None = None,
    split: str = "train",
    config: str | None = None,
    column_option: str = "column=",
) -> PromptSet:
    """Load a prompt set by name, from a file, or from the Hugging Face Hub.

    Args:
        name: a known set name (see :func:`list_prompt_sets`), a path to a ``.txt`` / ``.csv`` / ``.json`` /
            ``.jsonl`` file, or ``"hf:org/name"`` / ``"hf://org/name"``.
        datasets_dir: folder of the known sets; default :func:`default_datasets_dir`.
        column: for user files and Hub datasets, the prompt column or field (default ``prompt``, any case).
        language: keep only English (``"en"``) or Chinese (``"zh"``) prompts, by the presence of CJK characters;
            ``None`` keeps all. Meant for deccp's mixed files; works on any set.
        split: Hub dataset split.
        config: Hub dataset configuration.
        column_option: how the caller lets the user name the column (``column=``, ``--column``,
            ``recipe.prompts.column``), for the messages.

    Returns:
        The :class:`PromptSet`; metadata keeps the other columns (lower-cased names for CSV files), the source row
        or line, and ``language`` for deccp sets.

    Raises:
        ValueError: unknown set name (the message lists the known ones), unsupported file type, bad ``language``, a
            set that is empty (after filtering).
        PromptColumnError: no such column, or no ``prompt`` one (a ``ValueError`` naming ``column_option``).
        FileNotFoundError: a known set's file or a user file is missing.
    """
    if language not in (None, "en", "zh"):
        raise ValueError(f"language must be 'en', 'zh' or None, got {language!r}")
    label = os.fspath(name)
    if label.startswith(("hf://", "hf:")):
        repo = label.removeprefix("hf://").removeprefix("hf:")
        if not repo:
            raise ValueError(f"no dataset name after the prefix in {label!r}; use 'hf:org/name'")
        try:
            prompts, metadata = _load_hf(repo, column, split, config)
        except PromptColumnError as exc:
            raise exc.naming(column_option) from None
    elif label in KNOWN_PROMPT_SETS:
        relative, loader = KNOWN_PROMPT_SETS[label]
        directory = Path(datasets_dir) if datasets_dir is not None else default_datasets_dir()
        if not (directory / relative).is_file():
            raise FileNotFoundError(
                f"prompt set {label!r} needs {directory / relative}, which does not exist; pass datasets_dir= or set "
                f"{DATASETS_ENV}"
            )
        if column is not None:
            raise ValueError(f"{column_option} applies to user files and Hub datasets, not to the known set {label!r}")
        prompts, metadata = loader(directory)
    else:
        path = Path(label)
        suffix = path.suffix.lower()
        if suffix not in _READERS:
            if not path.exists():
                raise ValueError(
                    f"unknown prompt set {label!r}; known sets: {', '.join(list_prompt_sets())}; or give a .txt, "
                    ".csv, .json or .jsonl file, or 'hf:org/name'"
                )
            raise ValueError(f"unsupported prompt file type {suffix!r} for {label!r}; use .txt, .csv, .json or .jsonl")
        if not path.is_file():
            raise FileNotFoundError(f"prompt file {label!r} does not exist")
        try:
            prompts, metadata = _READERS[suffix](path, column)
        except PromptColumnError as exc:
            raise exc.naming(column_option) from None
    if language is not None:
        pairs = [(p, m) for p, m in zip(prompts, metadata, strict=True) if detect_language(p) == language]
        prompts, metadata = [p for p, _ in pairs], [m for _, m in pairs]
    if not prompts:
        detail = f" with language={language!r}" if language else ""
        raise ValueError(f"prompt set {label!r} is empty{detail}")
    name_out = label if language is None else f"{label}:{language}"
    return PromptSet(name_out, prompts, metadata)


def _split_rank(prompt: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x00{prompt}".encode()).hexdigest()


def split_prompts(prompt_set: PromptSet, held_out_fraction: float = 0.2, seed: int = 0) -> tuple[PromptSet, PromptSet]:
    """Deterministic train / held-out split by a seeded hash of each prompt's text.

    Distinct prompt texts are ranked by ``sha256(seed, text)``; the first ``round(held_out_fraction * n_distinct)``
    are held out. The split is the same in every run and process (no ``hash()``), independent of the order of the
    prompts, and a text that occurs several times lands on one side only. Each side keeps the input order.

    Args:
        prompt_set: the set to split.
        held_out_fraction: share of distinct prompts held out, in ``[0, 1]``.
        seed: changes the split.

    Returns:
        ``(train, held_out)``, named ``"<name>:train"`` and ``"<name>:held_out"``.

    Raises:
        ValueError: ``held_out_fraction`` outside ``[0, 1]``.
    """
    if not 0.0 <= held_out_fraction <= 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1], got {held_out_fraction}")
    distinct = sorted(set(prompt_set.prompts), key=lambda text: _split_rank(text, seed))
    held = set(distinct[: round(held_out_fraction * len(distinct))])
    train_idx = [i for i, prompt in enumerate(prompt_set.prompts) if prompt not in held]
    held_idx = [i for i, prompt in enumerate(prompt_set.prompts) if prompt in held]
    return (
        prompt_set.subset(train_idx, f"{prompt_set.name}:train"),
        prompt_set.subset(held_idx, f"{prompt_set.name}:held_out"),
    )
