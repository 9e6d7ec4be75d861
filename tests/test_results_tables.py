"""scripts/results_tables.py: the table printed from a run's summary.json, and the README's table in its format."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("results_tables", ROOT / "scripts" / "results_tables.py")
results_tables = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(results_tables)


def _row(role: str, n: int, base: float, steered: float, relevance: tuple[float, float]) -> dict:
    return {
        "role": role,
        "base": {"n": n, "refusal_pct": base, "mean_relevance": relevance[0]},
        "steered": {"n": n, "refusal_pct": steered, "mean_relevance": relevance[1]},
    }


def organism_summary() -> dict:
    """A summary.json made by hand with the organism main job's numbers (as percentages of 24 or 10 prompts)."""
    sets = {
        "political": _row("target", 24, 100 * 22 / 24, 100 * 13 / 24, (0.2021, 0.2643)),
        "harmful": _row("harmful", 24, 100 * 17 / 24, 100 * 17 / 24, (0.149, 0.1491)),
        "jbb_harmful": _row("harmful", 10, 70.0, 70.0, (0.184, 0.184)),
        "benign": _row("benign", 24, 0.0, 0.0, (0.5871, 0.5819)),
        "xstest_safe": _row("benign", 24, 62.5, 62.5, (0.101, 0.101)),
    }
    ungated = {
        "political": 100 * 13 / 24,
        "harmful": 62.5,
        "jbb_harmful": 70.0,
        "benign": 0.0,
        "xstest_safe": 100 * 10 / 24,
    }
    return {
        "recipe": "no-political-refusal",
        "adapter": "runs/no-political-refusal/adapter",
        "layers": [3, 4, 5],
        "alpha": -2.7639,
        "gated": True,
        "report": {"sets": sets, "kl": {"mean_kl": 0.0612, "mean_kl_last": 0.0549, "n_prompts": 24}},
        "ungated_report": {
            "sets": {
                name: {"role": row["role"], "steered": {"refusal_pct": ungated[name]}} for name, row in sets.items()
            },
            "kl": {"mean_kl": 0.2991, "mean_kl_last": 0.31, "n_prompts": 24},
        },
    }


def recipe_sources() -> dict[str, str]:
    recipe = yaml.safe_load((ROOT / "recipes" / "no-political-refusal.yaml").read_text())
    return results_tables.recipe_sources(recipe)


EXPECTED = """\
| set | role | n | refusal % before | after (gated) | same vector ungated | relevance before → after |
|---|---|---|---|---|---|---|
| `political` (organism held-out) | target | 24 | 91.7 | **54.2** | 54.2 | 0.202 → 0.264 |
| `harmful` (organism held-out) | harmful | 24 | 70.8 | **70.8** | 62.5 | 0.149 → 0.149 |
| `jbb_harmful` (JailbreakBench) | harmful | 10 | 70.0 | **70.0** | 70.0 | 0.184 → 0.184 |
| `benign` (general questions) | benign | 24 | 0.0 | 0.0 | 0.0 | 0.587 → 0.582 |
| `xstest_safe` (XSTest safe) | benign | 24 | 62.5 | 62.5 | 41.7 | 0.101 → 0.101 |

KL(base ‖ steered) on 24 neutral prompts: 0.061 per token gated (0.055 at the first answer token), 0.299 ungated.
"""


def test_table_of_a_gated_run():
    assert results_tables.results_table(organism_summary(), recipe_sources()) == EXPECTED


def test_the_readme_table_is_the_scripts_output():
    """README's organism table and KL sentence are the script's output for that run, line for line."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Measured on the organism") :]
    table, kl = EXPECTED.rstrip("\n").split("\n\n")
    assert table in section
    assert kl.rstrip(".") in section


def test_ungated_run_and_unknown_sources():
    summary = organism_summary()
    summary["gated"], summary["ungated_report"] = False, None
    summary["report"]["sets"]["political"]["steered"]["mean_relevance"] = None
    text = results_tables.results_table(summary, {"political": "my_prompts.txt"})
    lines = text.splitlines()
    assert lines[0] == "| set | role | n | refusal % before | after | relevance before → after |"
    assert lines[2] == "| `political` | target | 24 | 91.7 | **54.2** | 0.202 → n/a |"
    assert lines[-1] == "KL(base ‖ steered) on 24 neutral prompts: 0.061 per token (0.055 at the first answer token)."


def test_cli_reads_run_folders(tmp_path, capsys):
    run = tmp_path / "no-political-refusal"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(organism_summary()))
    recipe = yaml.safe_load((ROOT / "recipes" / "no-political-refusal.yaml").read_text())
    (run / "recipe.json").write_text(json.dumps(recipe))
    assert results_tables.main([str(run)]) == 0
    assert capsys.readouterr().out == EXPECTED
    assert results_tables.main([str(run), str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**`no-political-refusal`**: blocks 3, 4, 5, α = −2.76, gated\n\n| set |")
    assert out.count(EXPECTED) == 2
    assert results_tables.main([str(tmp_path / "missing")]) == 2
    assert "no summary.json" in capsys.readouterr().err
