"""General benchmarks through lm-evaluation-harness: the offline MMLU tasks are lm-eval's own MMLU format, the Python
API on a (steered) model object agrees exactly with the ``lm_eval`` command, and an adapter that damages the model
lowers the score by exactly what an independent count of the answer key predicts.

The damaging adapter pushes the last block's output along the unembedding of one answer letter, so the steered model
answers that letter to every question; its accuracy is then the share of questions whose key is that letter, counted
here from the CSV files. The letter is the one the key uses least, so the score must fall below the base model's.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from steering_adapter.adapter.builder import adapter_from_vectors, save_adapter
from steering_adapter.measure.benchmarks import (
    MMLU_CATEGORIES,
    MMLU_SUBJECTS,
    TASKS_DIR,
    BenchmarkRequest,
    load_mmlu_subject,
    parse_benchmark,
    run_benchmark,
    score_from_results,
    task_files,
)
from steering_adapter.models.organism import ORGANISM_DIR, load_organism
from steering_adapter.utils.shared_datasets import default_datasets_dir

pytestmark = pytest.mark.usefixtures("single_thread")

LIMIT = 2  # questions per subject: 114 questions, seconds on the organism
BIN = Path(sys.executable).parent
LETTERS = "ABCD"


def _key(limit: int) -> list[str]:
    """The answer letters of the first ``limit`` test questions of every subject, read straight from the CSVs."""
    letters = []
    for subject in MMLU_SUBJECTS:
        with open(default_datasets_dir() / "mmlu" / "test" / f"{subject}_test.csv", newline="") as handle:
            letters += [row[5] for row, _ in zip(csv.reader(handle), range(limit), strict=False)]
    return letters


def _loader_ignoring_functions() -> type:
    """A YAML loader that reads lm-eval's ``!function`` tags as ``None`` (not needed to compare prompt fields)."""
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return loader


def _lm_eval_template(name: str) -> dict:
    """One of the installed lm-eval's own MMLU task files (tasks/mmlu/default), parsed."""
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / name
    return yaml.load(path.read_text(), Loader=_loader_ignoring_functions())


def test_shipped_task_files_are_the_generated_ones():
    shipped = {path.name: path.read_text() for path in TASKS_DIR.iterdir() if path.is_file()}
    assert shipped == task_files()


def test_tasks_use_lm_eval_standard_mmlu_format():
    """The prompt, choices, target, metric, few-shot sampler and group weighting are those of lm-eval's own MMLU
    task files (read from the installed lm-eval), and every subject's description matches its file there."""
    ours = yaml.load((TASKS_DIR / "_template_yaml").read_text(), Loader=_loader_ignoring_functions())
    theirs = _lm_eval_template("_default_template_yaml")
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "output_type", "metric_list", "fewshot_config"):
        assert ours[key] == theirs[key], key
    assert (ours["test_split"], ours["fewshot_split"]) == (theirs["test_split"], theirs["fewshot_split"])
    for category, subjects in MMLU_CATEGORIES.items():
        for subject in subjects:
            theirs = _lm_eval_template(f"mmlu_{subject}.yaml")
            ours = yaml.safe_load((TASKS_DIR / f"mmlu_offline_{subject}.yaml").read_text())
            assert ours["description"] == theirs["description"], subject
            assert theirs["tag"] == f"mmlu_{category}_tasks"
    assert (
        _lm_eval_template("_mmlu.yaml")["aggregate_metric_list"]
        == yaml.safe_load((TASKS_DIR / "_mmlu_offline.yaml").read_text())["aggregate_metric_list"]
    )
    shipped_subjects = {p.name.removesuffix("_test.csv") for p in (default_datasets_dir() / "mmlu" / "test").iterdir()}
    assert shipped_subjects == set(MMLU_SUBJECTS)


def test_subject_documents_follow_the_csv():
    splits = load_mmlu_subject("anatomy")
    assert len(splits["dev"]) == 5
    first = splits["dev"][0]
    assert first["question"] == "What is the embryological origin of the hyoid bone?"
    assert first["choices"][3] == "The second and third pharyngeal arches"
    assert first["answer"] == LETTERS.index("D")
    with open(default_datasets_dir() / "mmlu" / "test" / "anatomy_test.csv", newline="") as handle:
        assert len(splits["test"]) == sum(1 for _ in csv.reader(handle))


def test_bad_benchmark_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'mmlu_cooking'; expected mmlu"):
        parse_benchmark("mmlu_cooking:5")
    with pytest.raises(ValueError, match="N must be a whole number >= 1"):
        parse_benchmark("mmlu:0")
    with pytest.raises(ValueError, match="unknown MMLU subject 'cooking'"):
        load_mmlu_subject("cooking")
    with pytest.raises(ValueError, match=r"mmlu_missing.*not found; set STEERING_ADAPTER_DATASETS"):
        load_mmlu_subject("anatomy", tmp_path / "mmlu_missing")
    bad = tmp_path / "mmlu" / "dev"
    bad.mkdir(parents=True)
    (bad / "anatomy_dev.csv").write_text("a question,only two\n")
    (tmp_path / "mmlu" / "test").mkdir()
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_text("")
    with pytest.raises(ValueError, match=r"anatomy_dev.csv: line 1: expected question, A, B, C, D, answer letter"):
        load_mmlu_subject("anatomy", tmp_path)


@pytest.fixture(scope="module")
def organism():
    return load_organism()


@pytest.fixture(scope="module")
def cli_result(tmp_path_factory):
    """MMLU (LIMIT per subject, 0-shot) of the organism from lm-eval's own command, with our task folder."""
    out = tmp_path_factory.mktemp("lm_eval_cli")
    command = [str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={ORGANISM_DIR}", "--device", "cpu"]
    command += [
        "--tasks",
        "mmlu_offline",
        "--limit",
        str(LIMIT),
        "--batch_size",
        "8",
        "--include_path",
        str(TASKS_DIR),
    ]
    command += ["--output_path", str(out)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def damaging_adapter(organism, tmp_path_factory):
    """An adapter that makes the organism answer the letter the answer key uses least."""
    model, tokenizer = organism
    key = _key(LIMIT)
    letter = min(LETTERS, key=key.count)
    ids = {x: tokenizer(f" {x}", add_special_tokens=False).input_ids[-1] for x in LETTERS}
    rows = model.get_output_embeddings().weight.detach()
    push = rows[ids[letter]] - torch.stack([rows[i] for i in ids.values()]).mean(0)
    last = model.config.num_hidden_layers - 1
    peft_model = adapter_from_vectors(model, {last: 100 * push / push.norm()}, scale=1.0)
    folder = save_adapter(peft_model, tmp_path_factory.mktemp("damaging") / "adapter", card=False)
    peft_model.unload()
    return folder, key.count(letter) / len(key)


def test_python_api_agrees_exactly_with_the_lm_eval_command(organism, cli_result):
    model, tokenizer = organism
    api = run_benchmark(model, tokenizer, BenchmarkRequest("mmlu", limit=LIMIT))
    cli = score_from_results(cli_result, BenchmarkRequest("mmlu", limit=LIMIT))
    assert api.n == cli.n == LIMIT * len(MMLU_SUBJECTS)
    assert api.accuracy == cli.accuracy
    assert api.stderr == cli.stderr
    assert api.subjects == cli.subjects


def test_a_damaging_adapter_lowers_mmlu_by_the_predicted_amount(organism, cli_result, damaging_adapter):
    model, tokenizer = organism
    folder, share = damaging_adapter
    base = score_from_results(cli_result, BenchmarkRequest("mmlu", limit=LIMIT)).accuracy
    model.load_adapter(folder, adapter_name="damaging")
    try:
        steered = run_benchmark(model, tokenizer, BenchmarkRequest("mmlu", limit=LIMIT))
    finally:
        model.delete_adapter("damaging")
    assert round(steered.accuracy * steered.n) == round(share * steered.n)  # every question answered with the letter
    assert steered.accuracy < base


def test_the_entry_point_loads_steering_adapters_through_peft(damaging_adapter, tmp_path):
    """``steering-adapter-lm-eval --model_args pretrained=organism,peft=ADAPTER``: lm-eval's own loading path."""
    folder, share = damaging_adapter
    command = [
        str(BIN / "steering-adapter-lm-eval"),
        "--model",
        "hf",
        "--model_args",
        f"pretrained=organism,peft={folder}",
    ]
    command += ["--device", "cpu", "--tasks", "mmlu_offline", "--limit", str(LIMIT), "--output_path", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (path,) = tmp_path.rglob("results_*.json")
    score = score_from_results(json.loads(path.read_text()), BenchmarkRequest("mmlu", limit=LIMIT))
    assert round(score.accuracy * score.n) == round(share * score.n)


def test_eval_command_adds_benchmark_rows(damaging_adapter, cli_result, tmp_path):
    from steering_adapter.cli import EXIT_OK, main

    folder, share = damaging_adapter
    out = tmp_path / "eval"
    args = ["eval", str(folder), "--sets", "p=organism:political:target", "--sample", "2", "--k", "1"]
    args += ["--max-new-tokens", "8", "--no-relevance", "--no-progress", "--out", str(out), "--model", "organism"]
    assert main([*args, "--benchmark", f"mmlu:{LIMIT}"]) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    mmlu = report["benchmarks"]["mmlu"]
    expected_base = score_from_results(cli_result, BenchmarkRequest("mmlu", limit=LIMIT))
    assert (mmlu["base"]["accuracy"], mmlu["base"]["n"]) == (expected_base.accuracy, expected_base.n)
    assert round(mmlu["steered"]["accuracy"] * mmlu["steered"]["n"]) == round(share * mmlu["steered"]["n"])
    markdown = (out / "report.md").read_text()
    assert f"MMLU (0-shot, {LIMIT}/subject, n = {expected_base.n})" in markdown


def test_fewshot_prompts_take_the_first_dev_questions(organism):
    """5-shot runs and its prompt starts with lm-eval's description and the first dev question."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    anatomy = manager.load(["mmlu_offline_anatomy"])["tasks"]["mmlu_offline_anatomy"]
    anatomy.set_config("num_fewshot", 5)
    doc = anatomy.test_docs()[0]
    context = anatomy.fewshot_context(doc, num_fewshot=5)
    dev = load_mmlu_subject("anatomy")["dev"]
    first = dev[0]
    expected_start = (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        f"{first['question'].strip()}\nA. {first['choices'][0]}\nB. {first['choices'][1]}\n"
        f"C. {first['choices'][2]}\nD. {first['choices'][3]}\nAnswer: D\n\n"
    )
    assert context.startswith(expected_start)
    assert context.count("\nAnswer:") == 6


def test_max_drop_rejects_the_damaging_point(organism, damaging_adapter, tmp_path):
    """``benchmarks.max_drop``: the objective's first choice (the damaging vector) is measured, found to cost more
    than the allowed points, marked infeasible with the reason, and the next feasible point is chosen."""
    from safetensors.torch import load_file

    from steering_adapter.run.recipe import BenchmarksSpec, Recipe
    from steering_adapter.run.selection.objective import SelectionObjective, SweepPoint, SweepResult
    from steering_adapter.run.stages.benchmark import enforce_max_drop
    from steering_adapter.run.stages.context import RunContext

    model, tokenizer = organism
    folder, _ = damaging_adapter
    (push,) = load_file(str(Path(folder) / "adapter_model.safetensors")).values()
    last = model.config.num_hidden_layers - 1
    directions = {last: push, 0: torch.zeros_like(push)}  # the second point leaves the model as it is
    damaging = SweepPoint(1, [last], 1.0, {}, target_refusal_pct=0.0, feasible=True)
    harmless = SweepPoint(1, [0], 1.0, {}, target_refusal_pct=10.0, feasible=True)
    sweep = SweepResult(SelectionObjective(), {}, {}, [damaging, harmless], damaging, [last, 0])
    recipe = Recipe(name="max-drop", benchmarks=BenchmarksSpec(tasks=["mmlu"], limit=LIMIT, max_drop=0.5))
    ctx = RunContext(recipe, model, tokenizer, sampler=None, judge=None, out=tmp_path, log=lambda line: None)
    chosen = enforce_max_drop(ctx, sweep, directions, None).choice
    assert chosen is harmless
    assert not damaging.feasible and "mmlu" in damaging.violations[-1] and "max_drop 0.5" in damaging.violations[-1]
    assert len(list((tmp_path / "benchmarks").glob("mmlu-*.json"))) == 3  # base, the two points: kept for a re-run


@pytest.mark.slow
def test_pipeline_reports_mmlu_rows_equal_to_the_lm_eval_command(cli_result, tmp_path):
    """The recipe's ``benchmarks`` section: report.md, summary.json and the model card carry the MMLU rows; the base
    row is the number lm-eval's own command gives for the same model and task."""
    from small_recipe import SMALL

    from steering_adapter.cli import EXIT_OK, main

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "no-political-refusal.yaml"
    args = ["run", str(recipe), "--out", str(tmp_path), "--no-progress"]
    for override in [*SMALL, "selection.refine_steps=0", "benchmarks.tasks=[mmlu]", f"benchmarks.limit={LIMIT}"]:
        args += ["--set", override]
    assert main(args) == EXIT_OK
    summary = json.loads((tmp_path / "summary.json").read_text())
    mmlu = summary["benchmarks"]["mmlu"]
    expected = score_from_results(cli_result, BenchmarkRequest("mmlu", limit=LIMIT))
    assert (mmlu["base"]["accuracy"], mmlu["base"]["stderr"], mmlu["base"]["n"]) == (
        expected.accuracy,
        expected.stderr,
        expected.n,
    )
    variants = {"base", "steered", "ungated"} if summary["gated"] else {"base", "steered"}
    assert set(mmlu) == variants
    row = f"MMLU (0-shot, {LIMIT}/subject, n = {expected.n})"
    assert row in (tmp_path / "report.md").read_text()
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "### Compared with the base model" in card
    assert f"{row}, accuracy % | {100 * expected.accuracy:.1f} ± {100 * expected.stderr:.1f} |" in card
    assert "first-token KL(base ‖ ·), neutral prompts" in card


def test_a_gated_adapter_is_gated_on_each_question_not_on_padding(organism, damaging_adapter):
    """lm-eval right-pads a batch and passes no attention mask, so a gate deciding on the last token of a batched row
    would read a pad token. The damaging vector is gated here on a condition that opens for the last real token of
    every question (measured below) and stays closed for some pad tokens: at batch size 8 every question must still
    be steered, i.e. answered with the pushed letter."""
    from safetensors.torch import load_file

    model, tokenizer = organism
    folder, share = damaging_adapter
    (push,) = load_file(str(Path(folder) / "adapter_model.safetensors")).values()
    block = 1
    prompts = []
    for subject in MMLU_SUBJECTS:
        description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."
        for doc in load_mmlu_subject(subject)["test"][:LIMIT]:
            choices = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, doc["choices"], strict=True))
            prompts.append(f"{description}\n\n{doc['question'].strip()}{choices}\nAnswer:")
    real, padded = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids[:, -model.config.max_position_embeddings :]
            real.append(model(ids, output_hidden_states=True).hidden_states[block + 1][0, -1])
            ids = torch.cat([ids[:, -200:], torch.full((1, 8), tokenizer.pad_token_id)], dim=1)
            padded.append(model(ids, output_hidden_states=True).hidden_states[block + 1][0, -1])
    condition = torch.stack(real).mean(0) - torch.stack(padded).mean(0)
    condition = condition / condition.norm()
    threshold = float((torch.stack(real) @ condition).min()) - 0.5
    assert (torch.stack(padded) @ condition < threshold).any()  # batched, some rows would be gated on a closed pad
    last = model.config.num_hidden_layers - 1
    gated = adapter_from_vectors(
        model, {last: push}, scale=1.0, condition=condition, condition_layer=block, condition_threshold=threshold
    )
    try:
        score = run_benchmark(gated, tokenizer, BenchmarkRequest("mmlu", limit=LIMIT, batch_size=8))
    finally:
        gated.unload()
    assert round(score.accuracy * score.n) == round(share * score.n)


def test_entry_point_arguments(tmp_path):
    """Every ``--model_args`` form is resolved, a given ``--include_path`` is kept, a gated adapter gets batch 1."""
    from steering_adapter.cli.lm_eval_entry import lm_eval_arguments

    folder = str(ORGANISM_DIR)
    assert lm_eval_arguments(["-a", "dtype=float32", "pretrained=organism", "--tasks", "mmlu_offline"]) == [
        *["-a", "dtype=float32", f"pretrained={folder}", "--tasks", "mmlu_offline"],
        *["--include_path", str(TASKS_DIR)],
    ]
    assert lm_eval_arguments(["--model_args=pretrained=steering-adapter:organism,peft=x", "--include_path=/mine"]) == [
        f"--model_args=pretrained={folder},peft=x",
        "--include_path=/mine",
    ]
    gated = tmp_path / "gated"
    gated.mkdir()
    (gated / "adapter_config.json").write_text(json.dumps({"condition_layer": 1}))
    arguments = lm_eval_arguments(["--model_args", f"pretrained=organism,peft={gated}", "--batch_size", "8"])
    assert arguments[-2:] == ["--batch_size", "1"] and arguments.count("--batch_size") == 1


def test_scores_of_one_subject_and_of_a_one_question_limit(organism):
    model, tokenizer = organism
    one = run_benchmark(model, tokenizer, BenchmarkRequest("mmlu_anatomy", limit=1))
    assert one.n == 1 and list(one.subjects) == ["anatomy"] and one.accuracy in (0.0, 1.0)
    stem = run_benchmark(model, tokenizer, BenchmarkRequest("mmlu_stem", limit=1))
    assert stem.n == len(MMLU_CATEGORIES["stem"]) and set(stem.subjects) == set(MMLU_CATEGORIES["stem"])
    assert stem.accuracy == pytest.approx(sum(stem.subjects.values()) / stem.n)  # equal sizes: the plain mean
