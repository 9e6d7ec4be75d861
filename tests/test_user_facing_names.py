"""Every dotted name a user types resolves: ``steering_adapter.x.y[.name]`` and ``from steering_adapter.x import a``
in the README, the docs, the model-card template, the recipes, the examples, the benchmarks and pyproject's entry
points (console script, vLLM plugin). Read statically (ast), so the vLLM modules are checked without vLLM."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "steering_adapter"
SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    PACKAGE / "adapter" / "templates" / "model_card.md",
    *sorted((ROOT / "recipes").glob("*.yaml")),
    *sorted((ROOT / "examples").glob("*.py")),
    *sorted((ROOT / "benchmarks").glob("*.py")),
    *sorted((ROOT / "scripts").rglob("*.sh")),
]
DOTTED = re.compile(r"\bsteering_adapter(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"from (steering_adapter(?:\.\w+)*) import (\([^)]*\)|[\w, ]+)")
# dotted names that are not Python names: metadata keys written into other formats
NOT_PYTHON = {"steering_adapter.provenance": "the GGUF metadata key of an export's provenance"}


def _module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _defined_names(path: Path) -> set[str]:
    """Top-level names of a module: definitions, assignments, imports and lazy-export table keys."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node in tree.body:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Assign) and node in tree.body:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                    if target.id in ("_EXPORTS", "_LAZY") and isinstance(node.value, ast.Dict):
                        names |= {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
                    if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                        names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
        elif isinstance(node, ast.AnnAssign) and node in tree.body and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _resolves(dotted: str) -> bool:
    """A module, or a module followed by names defined in it (a class attribute after that is not followed)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:cut]))
        if path is not None:
            rest = parts[cut:]
            return not rest or rest[0] in _defined_names(path)
    return False


def _names_in(path: Path) -> list[str]:
    text = path.read_text()
    found = [match.group(0).rstrip(".") for match in DOTTED.finditer(text)]
    for module, names in FROM_IMPORT.findall(text):
        names = re.sub(r"#[^\n]*", "", names).strip("()")
        found += [f"{module}.{name.split(' as ')[0].strip()}" for name in names.split(",") if name.strip()]
    return [name for name in found if name not in NOT_PYTHON]


def _entry_points() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    targets = list(project["scripts"].values())
    for group in project.get("entry-points", {}).values():
        targets += list(group.values())
    return [target.replace(":", ".") for target in targets]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dotted_name_resolves(source):
    missing = sorted({name for name in _names_in(source) if not _resolves(name)})
    assert not missing, f"{source.relative_to(ROOT)} names what does not exist: {missing}"


def test_entry_points_resolve():
    missing = [target for target in _entry_points() if not _resolves(target)]
    assert not missing, missing
    assert "steering_adapter.runtimes.vllm.plugin.register" in _entry_points()


def test_the_checker_can_fail():
    assert not _resolves("steering_adapter.measure.no_such_module")
    assert not _resolves("steering_adapter.measure.sampling.no_such_name")
    assert _resolves("steering_adapter.measure.sampling.generation.sample_answers")
    assert _resolves("steering_adapter.runtimes.vllm.worker")
