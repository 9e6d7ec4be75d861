"""The documentation cites files that exist: docs pages cited by the code, and code paths cited by the docs.

`mkdocs build --strict` (in `.ci/run`) checks the links between pages and the API reference; this checks the plain
path citations it cannot see: ``docs/method.md`` in a docstring, ``steering_adapter/...`` or ``measure/...`` in a page.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "steering_adapter"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SUBPACKAGES = ("utils", "models", "tuner", "adapter", "measure", "directions", "runtimes", "run", "training", "cli")
REPO_FOLDERS = ("steering_adapter", "tests", "scripts", "recipes", "examples", "benchmarks", "docs", ".ci")


def test_docs_cited_by_the_code_exist():
    missing = []
    for folder in ("steering_adapter", "tests", "scripts", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for cited in re.findall(r"\bdocs/[\w./-]*\w\.md", path.read_text()):
                if not (ROOT / cited).is_file():
                    missing.append(f"{path.relative_to(ROOT)}: {cited}")
    assert not missing, missing


def test_code_paths_cited_by_the_docs_exist():
    missing = []
    for page in PAGES:
        for cited in re.findall(r"`([\w.-]+/[\w./-]*)`", page.read_text()):
            head = cited.split("/")[0]
            if head in REPO_FOLDERS:
                target = ROOT / cited
            elif head in SUBPACKAGES and "/" in cited.rstrip("/"):
                target = PACKAGE / cited
            else:
                continue  # run-folder outputs (`selection/sweep.csv`), shared data, vendored llama.cpp files
            if not target.exists():
                missing.append(f"{page.relative_to(ROOT)}: {cited}")
    assert not missing, missing


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(config["nav"]))
    on_disk = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert listed == on_disk


def test_the_site_front_page_is_the_readme():
    """docs/index.md is README.md with its links made relative to docs/ (edit the README, then copy it)."""
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "index.md").read_text() == readme.replace("](docs/", "](")
