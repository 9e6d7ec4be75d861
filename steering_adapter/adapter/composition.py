"""Composing steering adapters: declared order and weights, saved and loaded as one unit, with interference control.

A composition folder holds its parts and a ``steering_composition.json`` that declares them::

    steering_composition.json   {"format": "steering-composition", "version": 1, "order": "ablate_first",
                                 "parts": [{"name": "no_political", "path": "parts/no_political", "weight": 1.0},
                                           {"name": "no_cooking", "path": "parts/no_cooking", "weight": 1.0}],
                                 "orthogonalize": [{"part": "no_cooking", "against": "no_political"}]}
    parts/<name>/               ordinary steering adapters (each loads alone with load_adapter / PeftModel too)

Loading attaches every part under its name, multiplies its scale by its weight, orthogonalises the declared vectors
(per shared layer, ``v ← v − (v·û)û``) and activates the parts in order: ``"declared"`` keeps the list order,
``"ablate_first"`` (default) moves ``ablate`` parts before ``add`` parts, keeping the declared order within each
group. Gated parts keep their own condition.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn

from steering_adapter.adapter.integrations import check_steering_adapter
from steering_adapter.tuner.config import check_adapter_name
from steering_adapter.tuner.files import CONFIG_NAME, WEIGHTS_NAME, read_json_file
from steering_adapter.tuner.layer import SteeringLayer
from steering_adapter.tuner.model import set_adapter_scale
from steering_adapter.utils.records import atomic_write_json

COMPOSITION_FILE = "steering_composition.json"
ORDERS = ("ablate_first", "declared")


@dataclass
class CompositionPart:
    """One adapter of a composition: its name once attached, where it lives, and its weight."""

    name: str
    path: str
    weight: float = 1.0


@dataclass
class Composition:
    """A declared composition (the content of ``steering_composition.json``)."""

    parts: list[CompositionPart]
    order: str = "ablate_first"
    orthogonalize: list[dict[str, str]] = field(default_factory=list)

    def validate(self) -> None:
        if not self.parts:
            raise ValueError("a composition needs at least one part")
        for part in self.parts:
            check_adapter_name(part.name)
            check_part_path(part.path)
            if isinstance(part.weight, bool) or not isinstance(part.weight, (int, float)):
                raise ValueError(f"part {part.name!r}: weight must be a number, got {part.weight!r}")
            if not math.isfinite(part.weight):
                raise ValueError(f"part {part.name!r}: weight must be finite, got {part.weight!r}")
        names = [part.name for part in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"composition part names must be unique, got {names}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown composition order {self.order!r}; expected one of {ORDERS}")
        for rule in self.orthogonalize:
            if set(rule) != {"part", "against"} or not {rule["part"], rule["against"]} <= set(names):
                raise ValueError(f"orthogonalize rule {rule} must name two parts of {names} as 'part' and 'against'")
            if rule["part"] == rule["against"]:
                raise ValueError(f"orthogonalize rule {rule}: a part cannot be orthogonalised against itself")


def check_part_path(path: object) -> str:
    """A part path as written in ``steering_composition.json``: relative, with no ``..`` (``parts/<name>``).

    Raises:
        ValueError: an absolute path, a ``..`` component, an empty path or a non-string.
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"composition part path must be a relative folder path, got {path!r}")
    pure = Path(path)
    if pure.is_absolute() or path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise ValueError(f"composition part path {path!r} is absolute; it must stay inside the composition folder")
    if ".." in pure.parts or ".." in path.replace("\\", "/").split("/"):
        raise ValueError(f"composition part path {path!r} leaves the composition folder ('..')")
    return path


def part_folder(directory: str | os.PathLike, part: CompositionPart) -> Path:
    """The local folder of a part: inside ``directory`` once symlinks are resolved, and a folder (never a Hub id).

    Raises:
        ValueError: the path escapes the composition folder (``..``, absolute, or a symlink out of it), or it is not
            a folder.
    """
    root = Path(directory).resolve()
    folder = (root / check_part_path(part.path)).resolve()
    if folder != root and root not in folder.parents:
        raise ValueError(
            f"composition part {part.name!r}: {part.path!r} resolves to {folder}, outside the composition "
            f"folder {root}"
        )
    if not folder.is_dir():
        raise ValueError(
            f"composition part {part.name!r}: {root / part.path} is not a folder (parts are local adapter folders, "
            "never Hub repo ids)"
        )
    return folder


def resolved_order(parts: Sequence[CompositionPart], modes: dict[str, str], order: str) -> list[str]:
    """Activation order of the parts: declared, or ``ablate`` parts first (stable within each group)."""
    names = [part.name for part in parts]
    if order == "declared":
        return names
    return [n for n in names if modes[n] == "ablate"] + [n for n in names if modes[n] != "ablate"]


def save_composition(
    directory: str | os.PathLike,
    parts: Sequence[tuple[str, str | os.PathLike, float]],
    *,
    order: str = "ablate_first",
    orthogonalize: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write a composition folder that contains copies of its parts.

    Args:
        directory: the folder to create.
        parts: ``(name, adapter folder, weight)`` in declared order.
        order: ``"ablate_first"`` or ``"declared"``.
        orthogonalize: ``(part, against)`` pairs: ``part``'s vectors lose their component along ``against``'s.

    Returns:
        The folder.
    """
    composition = Composition(
        parts=[CompositionPart(check_adapter_name(name), f"parts/{name}", float(weight)) for name, _, weight in parts],
        order=order,
        orthogonalize=[{"part": p, "against": a} for p, a in orthogonalize],
    )
    composition.validate()
    directory = Path(directory)
    for name, source, _ in parts:
        target = directory / "parts" / name
        target.mkdir(parents=True, exist_ok=True)
        for filename in (CONFIG_NAME, WEIGHTS_NAME, "README.md"):
            if (Path(source) / filename).is_file():
                shutil.copyfile(Path(source) / filename, target / filename)
        if not (target / WEIGHTS_NAME).is_file():
            raise ValueError(f"part {name!r}: {source} is not a steering adapter folder ({WEIGHTS_NAME} missing)")
    atomic_write_json(
        directory / COMPOSITION_FILE, {"format": "steering-composition", "version": 1, **asdict(composition)}
    )
    return directory


def read_composition(directory: str | os.PathLike) -> Composition:
    """Parse and validate ``steering_composition.json``."""
    path = Path(directory) / COMPOSITION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {COMPOSITION_FILE}")
    data = read_json_file(path)
    if data.get("format") != "steering-composition" or data.get("version") != 1:
        raise ValueError(f"{path}: not a version-1 steering composition")
    try:
        parts = data["parts"]
        if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
            raise ValueError("'parts' must be a list of {name, path, weight} objects")
        orthogonalize = data.get("orthogonalize", [])
        if not isinstance(orthogonalize, list) or not all(isinstance(rule, dict) for rule in orthogonalize):
            raise ValueError("'orthogonalize' must be a list of {part, against} objects")
        composition = Composition(
            parts=[CompositionPart(**part) for part in parts],
            order=data.get("order", "ablate_first"),
            orthogonalize=list(orthogonalize),
        )
        composition.validate()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    for part in composition.parts:
        part_folder(directory, part)
    return composition


def _layers_with(model: nn.Module, name: str) -> list[SteeringLayer]:
    return [m for m in model.modules() if isinstance(m, SteeringLayer) and name in m.steering_vector]


def vectors_of(model: nn.Module, name: str) -> dict[int, torch.Tensor]:
    """``{layer: vector}`` of an attached adapter (any loading flow)."""
    return {m.layer_index: m.steering_vector[name].detach().float().cpu().clone() for m in _layers_with(model, name)}


def orthogonalize_adapter(model: nn.Module, part: str, against: str) -> dict[int, float]:
    """Remove from ``part``'s vector on each shared layer its component along ``against``'s vector.

    Returns:
        ``{layer: cosine before}`` for the shared layers.
    """
    reference = vectors_of(model, against)
    cosines = {}
    for module in _layers_with(model, part):
        if module.layer_index not in reference:
            continue
        unit = reference[module.layer_index].double()
        unit = unit / unit.norm()
        vector = module.steering_vector[part].detach().double().cpu()
        cosines[module.layer_index] = float(vector @ unit / vector.norm())
        with torch.no_grad():
            module.steering_vector[part].copy_((vector - (vector @ unit) * unit).float())
        module.invalidate_cache()
    return cosines


def interference(model: nn.Module, names: Sequence[str]) -> dict[str, dict[int, float]]:
    """Per-layer cosine between the vectors of every pair of attached adapters (``"a|b" -> {layer: cos}``)."""
    vectors = {name: vectors_of(model, name) for name in names}
    report = {}
    for a, b in itertools.combinations(names, 2):
        shared = sorted(set(vectors[a]) & set(vectors[b]))
        report[f"{a}|{b}"] = {
            layer: float(torch.nn.functional.cosine_similarity(vectors[a][layer], vectors[b][layer], dim=0))
            for layer in shared
        }
    return report


class _OtherAdaptersMissingFilter(logging.Filter):
    """Drops transformers' load report when the only keys it calls missing are those of *other* adapters.

    transformers counts every parameter whose name contains the PEFT type (``steering``) as an adapter key, so loading
    a second steering adapter reports the first one's vectors as "MISSING ... newly initialized". They are not: they
    belong to the adapter loaded before. A report naming any other key or status is kept, and a vector that is truly
    missing is refused before loading (:mod:`steering_adapter.adapter.integrations`).
    """

    def __init__(self, other_adapters: Sequence[str]) -> None:
        super().__init__()
        self.other_adapters = set(other_adapters)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message or not self.other_adapters:
            return True
        rows = [line for line in message.splitlines() if line.count("|") >= 2 and not line.lstrip().startswith("Key")]
        rows = [line for line in rows if not set(line.strip()) <= {"-", "+", "|", " "}]
        if not rows:
            return True
        for line in rows:
            key, status = (cell.strip() for cell in line.split("|")[:2])
            if status != "MISSING" or key.rsplit(".", 1)[-1] not in self.other_adapters:
                return True
        return False


@contextlib.contextmanager
def _quiet_other_adapter_reports(other_adapters: Sequence[str]):
    logger = logging.getLogger("transformers.integrations.peft")
    report_filter = _OtherAdaptersMissingFilter(other_adapters)
    logger.addFilter(report_filter)
    try:
        yield
    finally:
        logger.removeFilter(report_filter)


def load_composition(model: nn.Module, directory: str | os.PathLike) -> dict[str, Any]:
    """Attach a composition and activate it, through transformers or PEFT.

    Args:
        model: a transformers causal LM (each part goes through ``model.load_adapter``), or a ``PeftModel``
            (each part missing from it goes through ``PeftModel.load_adapter``; activation through
            ``base_model.set_adapter``).
        directory: a folder written by :func:`save_composition`.

    Returns:
        ``{"order", "modes", "weights", "interference_before", "orthogonalized", "interference_after"}``.
    """

    directory = Path(directory)
    composition = read_composition(directory)
    folders = {part.name: str(part_folder(directory, part)) for part in composition.parts}
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    for part in composition.parts:  # every part is checked before the first one is attached
        if check_steering_adapter(base, folders[part.name]) is None:
            raise ValueError(f"composition part {part.name!r}: {folders[part.name]} is not a steering adapter")
    modes = {}
    for part in composition.parts:
        folder = folders[part.name]
        if isinstance(model, PeftModel):
            if part.name not in model.peft_config:
                model.load_adapter(folder, adapter_name=part.name)
        else:
            loaded = [name for name in (getattr(model, "peft_config", None) or {}) if name != part.name]
            with _quiet_other_adapter_reports(loaded):
                model.load_adapter(folder, adapter_name=part.name)
        config = model.peft_config[part.name]
        modes[part.name] = config.mode
        if part.weight != 1.0:
            set_adapter_scale(model, config.scale * part.weight, part.name)
    names = [part.name for part in composition.parts]
    before = interference(model, names)
    orthogonalized = {
        f"{rule['part']} against {rule['against']}": orthogonalize_adapter(model, rule["part"], rule["against"])
        for rule in composition.orthogonalize
    }
    order = resolved_order(composition.parts, modes, composition.order)
    if isinstance(model, PeftModel):
        model.base_model.set_adapter(order)
    else:
        model.set_adapter(order)
    return {
        "order": order,
        "modes": modes,
        "weights": {part.name: part.weight for part in composition.parts},
        "interference_before": before,
        "orthogonalized": orthogonalized,
        "interference_after": interference(model, names) if orthogonalized else before,
    }
