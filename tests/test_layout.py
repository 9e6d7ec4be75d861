"""The package's shape, read from its own source (ast, nothing imported): the rules a newcomer relies on.

- every package sits in one layer, and imports only run down the layers (or sideways inside one package);
- no import cycle between modules, counting imports inside functions too;
- no private name (``_x``) imported from another module;
- an import inside a function, of any module, says why on its line (``# lazy: ...``): import cost, an optional
  dependency, or a runtime that may be absent;
- the longest chain of imports a module runs when it is imported stays short (a newcomer follows it);
- modules stay short enough to read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "steering_adapter"

# Lowest first: a package may import from its own layer's packages only through their public modules, and from
# any layer below. The CLI and the top-level ``__init__`` sit above everything.
LAYERS = [
    ["utils"],
    ["models"],
    ["tuner"],
    ["adapter"],
    ["measure"],
    ["directions"],
    ["runtimes"],
    ["run", "training"],
    ["cli"],
]
LAYER_OF = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
MAX_LINES = 500
# The longest chain of modules one import runs through (module-level imports, ``if TYPE_CHECKING:`` blocks left
# out: they never run). The target is about 8; the chain below is where it stands, and it may only shrink.
MAX_IMPORT_DEPTH = 13
# Modules over MAX_LINES, each with its reason; the list may only shrink.
LONG_MODULES: dict[str, str] = {
    "steering_adapter.training.organism": "502 lines: the organism's training script kept whole",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str], bool, int]]:
    """(module, names, inside a function, line) for every ``steering_adapter`` import of a file."""
    source = path.read_text()
    tree = ast.parse(source)
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("steering_adapter"):
                assert child.level == 0, f"{path}:{child.lineno}: relative import"
                found.append((child.module, [alias.name for alias in child.names], nested, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("steering_adapter"):
                        found.append((alias.name, [], nested, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def _target_module(module: str, name: str) -> str:
    """The module an ``from module import name`` binds: ``module.name`` when that is a module itself."""
    return f"{module}.{name}" if f"{module}.{name}" in MODULES else module


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the top-level package (public API): above every layer
    return LAYER_OF[parts[1]]


def test_every_package_has_a_layer():
    packages = {name.split(".")[1] for name in MODULES if name.count(".") >= 1}
    assert packages <= set(LAYER_OF), sorted(packages - set(LAYER_OF))


def test_imports_only_run_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        here = _layer(module)
        if here is None:
            continue
        for target, names, _, line in _imports(path):
            for name in names or [""]:
                there = _layer(_target_module(target, name))
                if there is None:
                    wrong.append(f"{module}:{line} imports the top-level package")
                elif there > here:
                    wrong.append(f"{module}:{line} imports {target} (a higher layer)")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = {module: set() for module in MODULES}
    for module, path in MODULES.items():
        for target, names, _, _ in _imports(path):
            for name in names or [""]:
                dependency = _target_module(target, name)
                if dependency != module and dependency in graph:
                    graph[module].add(dependency)
    # a package's __init__ that re-exports its modules is not a cycle with them: drop edges into packages
    # from their own submodules
    for module in graph:
        graph[module] = {d for d in graph[module] if not module.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dependency in sorted(graph[node]):
            if state.get(dependency) == 1:
                cycle = stack[stack.index(dependency) :] + [dependency]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dependency not in state:
                visit(dependency)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_private_name_crosses_modules():
    wrong = []
    for module, path in MODULES.items():
        for target, names, _, line in _imports(path):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    wrong.append(f"{module}:{line} imports {target}.{name}")
    assert not wrong, "\n".join(wrong)


def _unexplained_lazy_imports(module: str, path: Path) -> list[str]:
    """Imports inside functions of one module whose line has no ``# lazy: <why>``."""
    lines = path.read_text().splitlines()
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            is_import = isinstance(child, (ast.Import, ast.ImportFrom))
            if nested and is_import and "# lazy:" not in lines[child.lineno - 1]:
                found.append(f"{module}:{child.lineno}: {lines[child.lineno - 1].strip()}")
            visit(child, inner)

    visit(ast.parse("\n".join(lines)), False)
    return found


def test_imports_inside_functions_say_why():
    """Every import inside a function, of this package or any other, carries ``# lazy: <why>`` on its line."""
    wrong = [line for module, path in MODULES.items() for line in _unexplained_lazy_imports(module, path)]
    assert not wrong, "imports inside functions without '# lazy: <why>':\n" + "\n".join(wrong)


def _type_checking_lines(path: Path) -> set[int]:
    """The lines of a file's ``if TYPE_CHECKING:`` blocks (their imports never run)."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for statement in node.body:
                lines.update(range(statement.lineno, statement.end_lineno + 1))
    return lines


def test_import_chains_are_short():
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        skipped = _type_checking_lines(path)
        runtime = {
            _target_module(target, name)
            for target, names, nested, line in _imports(path)
            if not nested and line not in skipped
            for name in names or [""]
        }
        graph[module] = {d for d in runtime if d in MODULES and d != module and not module.startswith(d + ".")}
    longest: dict[str, list[str]] = {}

    def chain(module: str) -> list[str]:
        if module not in longest:
            longest[module] = [module]  # a cycle is test_no_import_cycle's to report
            longest[module] = max(([module, *chain(d)] for d in sorted(graph[module])), key=len, default=[module])
        return longest[module]

    deepest = max((chain(module) for module in sorted(graph)), key=len)
    assert len(deepest) <= MAX_IMPORT_DEPTH, f"{len(deepest)} modules deep: " + " -> ".join(deepest)


def test_modules_are_short():
    long = {
        module: len(path.read_text().splitlines())
        for module, path in MODULES.items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert set(long) <= set(LONG_MODULES), {m: n for m, n in long.items() if m not in LONG_MODULES}
    assert set(LONG_MODULES) <= set(long), f"no longer long, drop from LONG_MODULES: {set(LONG_MODULES) - set(long)}"
