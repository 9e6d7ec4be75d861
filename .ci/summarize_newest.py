"""Print the newest-pair report from a JUnit XML file and decide whether it fails CI (see .ci/newest_pair.sh)."""

from __future__ import annotations

import sys
import tomllib
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version


def declared(name: str) -> Requirement:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    return next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == name)


def main(xml_path: str, transformers: str, peft: str, exit_code: str) -> int:
    label = "NEWEST-PAIR REPORT"
    inside = (
        Version(transformers) in declared("transformers").specifier and Version(peft) in declared("peft").specifier
    )
    failures: dict[str, list[str]] = defaultdict(list)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if Path(xml_path).is_file():
        root = ElementTree.parse(xml_path).getroot()
        for case in root.iter("testcase"):
            counts["tests"] += 1
            for kind in ("failure", "error", "skipped"):
                node = case.find(kind)
                if node is None:
                    continue
                counts["failures" if kind == "failure" else "errors" if kind == "error" else "skipped"] += 1
                if kind != "skipped":
                    first = (node.get("message") or node.text or "").strip().splitlines()
                    failures[case.get("classname", "?")].append(
                        f"{case.get('name')}: {first[0][:160] if first else ''}"
                    )
    broken = counts["failures"] + counts["errors"]
    print(f"=== {label}: transformers {transformers} + peft {peft} ===")
    if exit_code == "124":
        print(f"{label}: the suite did not finish within its time bound (20 min); results below are partial")
    print(
        f"{label}: {counts['tests']} tests, {broken} broken ({counts['failures']} failed, {counts['errors']} errors), "
        f"{counts['skipped']} skipped"
    )
    for module, cases in sorted(failures.items()):
        print(f"{label}:   {module}: {len(cases)} broken")
        for line in cases[:5]:
            print(f"{label}:     {line}")
        if len(cases) > 5:
            print(f"{label}:     ... and {len(cases) - 5} more")
    if inside:
        verdict = "this pair is inside the ranges pyproject.toml declares (users get it today)"
        failing = broken > 0 or exit_code not in ("0", "5")
    else:
        verdict = (
            f"this pair is outside the declared ranges ({declared('transformers')}, {declared('peft')}), e.g. a "
            "transformers that is known-incompatible with the newest peft (transformers >= 5.24 needs peft >= 0.22): "
            "reported only, it does not block landing"
        )
        failing = False
    print(f"{label}: {verdict}; CI {'FAILS' if failing else 'passes'} on this job")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
