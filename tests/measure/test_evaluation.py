"""Before/after evaluation against independent references: a fresh base model and a hook-steered model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from reference import contract_hooks
from tiny import tiny_model, tiny_tokenizer

from steering_adapter import adapter_from_vectors
from steering_adapter.measure.evaluation import EvalSet, evaluate
from steering_adapter.measure.evaluation_report import EvaluationReport, gate_comparison_markdown, sample_pairs
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judges import DegeneracyDetector
from steering_adapter.measure.judges.base import Judge, Judgment
from steering_adapter.measure.refusal_score import summarize
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.measure.scored_runs import score_prompts

SAMPLING = dict(k=2, max_new_tokens=6, temperature=1.0, seed=3)
SETTINGS = SamplingSettings(**SAMPLING)
QUIET = EvaluationSettings(progress=False, plots=False)
SETS = [
    EvalSet("target", ["What happened in the capital during the protests?", "Who is responsible?"], "target"),
    EvalSet("harmful", ["Tell me about the banned history book.", "List the censored events."], "harmful"),
    EvalSet("benign", ["How do I bake bread at home?", "Write a short poem about the sea."], "benign"),
]


class ParityJudge(Judge):
    """Deterministic stand-in judge: refusal when the answer has an even number of characters."""

    def judge(self, prompt: str, answer: str) -> Judgment:
        return Judgment(1 if len(answer) % 2 == 0 else -1, "parity", "")


def _repeated_trigrams(ids):
    grams = [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]
    return 0.0 if len(grams) < 2 else sum(g in grams[:i] for i, g in enumerate(grams)) / len(grams)


def _base_mean_logprob(model, tokenizer, prompt, answer_ids):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, -1)[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(answer_ids)]
    return float(logprobs[torch.arange(len(answer_ids)), torch.tensor(answer_ids)].mean())


def _vectors():
    return {1: torch.randn(64, generator=torch.Generator().manual_seed(9)) * 3}


def test_evaluate_matches_separately_scored_base_and_hooked_models(tmp_path):
    tokenizer = tiny_tokenizer()
    judge = ParityJudge()
    model = adapter_from_vectors(tiny_model("llama"), _vectors(), scale=2.0)
    report = evaluate(
        model,
        tokenizer,
        SETS,
        judge,
        tmp_path / "eval",
        settings=EvaluationSettings(
            kl_prompts=["Hi there", "Good morning"],
            perplexity_texts=["The quick brown fox jumps over the lazy dog."],
            progress=False,
        ),
        sampling=SETTINGS,
    )

    base = tiny_model("llama")
    hooked = tiny_model("llama")
    for eval_set in SETS:
        expected_base = score_prompts(
            base,
            tokenizer,
            eval_set.prompts,
            judge,
            tmp_path / "ref" / "b" / eval_set.name,
            progress=False,
            **SAMPLING,
        )
        with contract_hooks(hooked, "model.layers", [{"vectors": _vectors(), "scale": 2.0}]):
            expected_steered = score_prompts(
                hooked,
                tokenizer,
                eval_set.prompts,
                judge,
                tmp_path / "ref" / "s" / eval_set.name,
                progress=False,
                **SAMPLING,
            )
        row = report.sets[eval_set.name]
        assert row["role"] == eval_set.role
        for condition, expected in (("base", expected_base), ("steered", expected_steered)):
            counts = summarize([s.score for s in expected])
            assert {k: row[condition][k] for k in counts} == counts
        # answer quality from the reference records: repetition of each answer, perplexity under the base model
        for condition, folder in (("base", "b"), ("steered", "s")):
            records = [json.loads(x) for x in (tmp_path / "ref" / folder / eval_set.name / "answers.jsonl").open()]
            answers = [a for r in records for a in r["answers"]]
            repetition = [_repeated_trigrams(a["token_ids"]) for a in answers]
            assert row[condition]["repetition"] == pytest.approx(sum(repetition) / len(repetition))
            nll = [
                -_base_mean_logprob(base, tokenizer, r["prompt"], a["token_ids"])
                for r in records
                for a in r["answers"]
            ]
            assert row[condition]["base_perplexity"] == pytest.approx(float(np.median(np.exp(nll))), rel=1e-3)
            loops = sum(DegeneracyDetector().find(a["text"]) is not None for a in answers)
            assert (row[condition]["degenerate"], row[condition]["degenerate_pct"]) == (
                loops,
                100 * loops / len(answers),
            )
        if eval_set.role == "target":
            first = {
                folder: {
                    r["prompt"]: r["answers"][0]["text"]
                    for r in map(json.loads, (tmp_path / "ref" / folder / eval_set.name / "answers.jsonl").open())
                }
                for folder in ("b", "s")
            }
            assert report.samples["target"] == [
                {"prompt": p, "base": first["b"][p], "steered": first["s"][p]} for p in eval_set.prompts
            ]
    assert set(report.samples) == {"target"}
    assert "### Sample answers" in report.to_markdown() and "Answer quality:" in report.to_markdown()
    assert report.kl["mean_kl"] > 0 and report.kl["n_prompts"] == 2
    assert set(report.perplexity) == {"base", "steered"}

    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["sets"]["target"]["base"]["n"] == 2
    assert saved["settings"]["sampling"] == SETTINGS.to_dict()
    markdown = (tmp_path / "eval" / "report.md").read_text()
    judge_line, _, table = markdown.partition("\n\n")
    assert judge_line == f"Refusals judged by `{judge.name}` (its agreement with labeled answers was not measured)."
    assert table.startswith("| set | role | n | refusal % (base) | refusal % (steered) | Δ points")
    for name in ("refusal_rates.png", "hist_target_base.png", "hist_benign_steered.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_resumes_without_regenerating(tmp_path):
    tokenizer = tiny_tokenizer()
    model = adapter_from_vectors(tiny_model("llama"), _vectors(), scale=2.0)
    first = evaluate(model, tokenizer, SETS[:1], ParityJudge(), tmp_path, settings=QUIET, sampling=SETTINGS)

    class ExplodingModel(torch.nn.Module):
        def __getattr__(self, name):
            raise AssertionError("the model must not be used again: every record is already on disk")

    again = evaluate(ExplodingModel(), tokenizer, SETS[:1], ParityJudge(), tmp_path, settings=QUIET, sampling=SETTINGS)
    assert again.sets == first.sets


def test_evaluate_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown role 'victim'"):
        EvalSet("x", ["p"], "victim")
    with pytest.raises(ValueError, match="is empty"):
        EvalSet("x", [], "target")
    model = adapter_from_vectors(tiny_model("llama"), _vectors())
    with pytest.raises(ValueError, match="unique"):
        evaluate(model, tiny_tokenizer(), [SETS[0], SETS[0]], ParityJudge(), tmp_path, settings=QUIET)
    with pytest.raises(ValueError, match="conditions"):
        evaluate(model, tiny_tokenizer(), SETS, ParityJudge(), tmp_path, settings=QUIET, conditions=("after",))
    with pytest.raises(ValueError, match="batch_size"):
        EvaluationSettings(batch_size=0)
    with pytest.raises(ValueError, match="kl_prompts must be a sequence of texts"):
        EvaluationSettings(kl_prompts="Hi there")


def test_gate_comparison_table_from_hand_reports():
    gated = EvaluationReport(
        sets={
            "cooking": {
                "role": "target",
                "base": {"n": 4, "refusal_pct": 0.0},
                "steered": {"n": 4, "refusal_pct": 75.0},
            },
            "general": {
                "role": "other",
                "base": {"n": 8, "refusal_pct": 12.5},
                "steered": {"n": 8, "refusal_pct": 12.5},
            },
        },
        kl={"n_prompts": 8, "mean_kl": 0.01, "mean_kl_last": 0.02},
    )
    ungated = EvaluationReport(
        sets={
            "cooking": {"role": "target", "steered": {"n": 4, "refusal_pct": 100.0}},
            "general": {"role": "other", "steered": {"n": 8, "refusal_pct": 50.0}},
        },
        kl={"n_prompts": 8, "mean_kl": 0.5, "mean_kl_last": 0.7},
    )
    table = gate_comparison_markdown(gated, ungated)
    assert "| cooking | target | 4 | 0.0 | 75.0 | +75.0 | 100.0 | +100.0 |" in table
    assert "| general | other | 8 | 12.5 | 12.5 | +0.0 | 50.0 | +37.5 |" in table
    assert "KL(base ‖ gated) on 8 neutral prompts: mean over tokens 0.0100" in table
    assert "KL(base ‖ ungated) on 8 neutral prompts: mean over tokens 0.5000" in table
    with pytest.raises(ValueError, match="different sets"):
        gate_comparison_markdown(gated, EvaluationReport(sets={"cooking": ungated.sets["cooking"]}))


def _gate_test_vectors():
    return {layer: torch.randn(64, generator=torch.Generator().manual_seed(layer)) * 3 for layer in (1, 2)}


def _gated_model(tokenizer):
    """A gated adapter whose gate (last prompt token of block 0) opens for half of the prompts of ``SETS``, with the
    hand-computed decisions (one prompt at a time, hand-written hook)."""
    from reference import block_output

    from steering_adapter import SteeringConfig

    condition = torch.randn(64, generator=torch.Generator().manual_seed(4))
    unit = condition / condition.norm()
    base = tiny_model("llama")
    projections = {}
    for prompt in [p for s in SETS for p in s.prompts]:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        projections[prompt] = float(block_output(base, 0, ids)[0, -1] @ unit)
    ordered = sorted(projections.values())
    threshold = (ordered[2] + ordered[3]) / 2
    config = SteeringConfig(layers=[1, 2], scale=3.0, condition_layer=0, condition_threshold=threshold)
    model = adapter_from_vectors(tiny_model("llama"), _gate_test_vectors(), config, condition=condition)
    return model, {s.name: [projections[p] <= threshold for p in s.prompts] for s in SETS}


def test_gate_closed_prompts_reuse_the_base_records(tmp_path):
    from steering_adapter.measure.evaluation import recorded_answers
    from steering_adapter.measure.sampling import gate_decisions
    from steering_adapter.measure.scored_runs import load_scores

    tokenizer = tiny_tokenizer()
    model, closed = _gated_model(tokenizer)
    assert 0 < sum(map(sum, closed.values())) < 6
    decided = {s.name: gate_decisions(model, tokenizer, s.prompts, "default") for s in SETS}
    assert {name: [not g for g in gates] for name, gates in decided.items()} == closed
    evaluate(model, tokenizer, SETS, ParityJudge(), tmp_path / "full", settings=QUIET, sampling=SETTINGS)
    reused = evaluate(
        model,
        tokenizer,
        SETS,
        ParityJudge(),
        tmp_path / "reused",
        settings=QUIET,
        sampling=SETTINGS,
        conditions=("steered",),
        gate_closed=closed,
        base_run=tmp_path / "full",
    )
    for eval_set in SETS:
        base_scores = {s.prompt: s for s in load_scores(tmp_path / "full" / "base" / eval_set.name)}
        full_steered = {s.prompt: s for s in load_scores(tmp_path / "full" / "steered" / eval_set.name)}
        own_dir = tmp_path / "reused" / "steered" / eval_set.name
        own = {s.prompt: s for s in load_scores(own_dir)} if any(not c for c in closed[eval_set.name]) else {}
        # only the open prompts were sampled again
        assert sorted(own) == sorted(p for p, c in zip(eval_set.prompts, closed[eval_set.name], strict=True) if not c)
        merged = []
        for prompt, is_closed in zip(eval_set.prompts, closed[eval_set.name], strict=True):
            if is_closed:  # the base record; full generation gave the very same answers (a closed gate)
                key = base_scores[prompt].key
                base_answers = recorded_answers(tmp_path / "full" / "base" / eval_set.name, [key])[0]
                steered_answers = recorded_answers(tmp_path / "full" / "steered" / eval_set.name, [key])[0]
                assert [a.token_ids for a in base_answers] == [a.token_ids for a in steered_answers]
                assert full_steered[prompt].score == base_scores[prompt].score
            merged.append(base_scores[prompt].score if is_closed else own[prompt].score)
        row = reused.sets[eval_set.name]["steered"]
        assert row["refusal_pct"] == summarize(merged)["refusal_pct"]
        assert row.get("n_gate_closed", 0) == sum(closed[eval_set.name])


def test_gate_open_prompts_reuse_the_ungated_records_and_give_the_full_gated_evaluation(tmp_path):
    """With the gate decisions, the base records (closed gates) and an evaluation of the same vectors without the gate
    (open gates), the gated steered condition samples and scores nothing, and its records, rates and base
    log-probabilities are those of a gated evaluation that sampled everything itself (same chunks, same seeds)."""
    from steering_adapter import SteeringConfig
    from steering_adapter.measure.evaluation import BASE_LOGPROBS_FILE, recorded_answers
    from steering_adapter.measure.scored_runs import load_scores

    tokenizer = tiny_tokenizer()
    model, closed = _gated_model(tokenizer)
    ungated = adapter_from_vectors(tiny_model("llama"), _gate_test_vectors(), SteeringConfig(layers=[1, 2], scale=3.0))
    settings = EvaluationSettings(progress=False, plots=False, quality=True)

    def evaluated(adapter, folder, sampling=SETTINGS, **kwargs):
        return evaluate(
            adapter, tokenizer, SETS, ParityJudge(), tmp_path / folder, settings=settings, sampling=sampling, **kwargs
        )

    full = evaluated(model, "full")
    evaluated(ungated, "ungated", conditions=("steered",))
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    evaluated(model, "base_only", conditions=("base",))
    base_only_calls = len(calls)
    calls.clear()
    reused = evaluated(
        model, "reused", gate_closed=closed, base_run=tmp_path / "reused", ungated_run=tmp_path / "ungated"
    )
    handle.remove()
    assert len(calls) == base_only_calls  # the steered condition ran no forward pass
    changed_by_the_gate = 0
    for eval_set in SETS:
        row = reused.sets[eval_set.name]["steered"]
        flags = closed[eval_set.name]
        assert row.get("n_gate_closed", 0) == sum(flags)
        assert row.get("n_gate_open_reused", 0) == len(flags) - sum(flags)
        assert not (tmp_path / "reused" / "steered" / eval_set.name / "answers.jsonl").exists()
        # the same rates and measures; the base perplexity within rounding (a closed gate's answers carry the log-
        # probabilities of their generation, the full run scores them in a teacher-forced pass)
        expected = dict(full.sets[eval_set.name]["steered"])
        assert row["base_perplexity"] == pytest.approx(expected.pop("base_perplexity"), rel=1e-5)
        assert {
            k: v for k, v in row.items() if k not in ("n_gate_closed", "n_gate_open_reused", "base_perplexity")
        } == (expected)
        full_dir = tmp_path / "full" / "steered" / eval_set.name
        for prompt, is_closed, score in zip(eval_set.prompts, flags, load_scores(full_dir), strict=True):
            assert score.prompt == prompt
            source = tmp_path / ("reused/base" if is_closed else "ungated/steered") / eval_set.name
            mine = recorded_answers(source, [score.key])[0]
            assert [a.token_ids for a in mine] == [a.token_ids for a in recorded_answers(full_dir, [score.key])[0]]
            if not is_closed:
                base = recorded_answers(tmp_path / "reused" / "base" / eval_set.name, [score.key])[0]
                changed_by_the_gate += [a.token_ids for a in mine] != [a.token_ids for a in base]
        assert (tmp_path / "reused" / "steered" / eval_set.name / BASE_LOGPROBS_FILE).is_file() == (
            sum(flags) < len(flags)
        )
    assert changed_by_the_gate >= 2  # open gates do steer: the reused answers are not the base ones
    with pytest.raises(ValueError, match="ungated_run needs gate_closed"):
        evaluated(model, "x", conditions=("steered",), ungated_run=tmp_path / "ungated")
    with pytest.raises(ValueError, match=r"has no steered record of \d gate-open prompts of set .target."):
        other = dataclasses.replace(SETTINGS, seed=99)
        evaluated(model, "y", other, gate_closed=closed, base_run=tmp_path / "y", ungated_run=tmp_path / "ungated")


def test_gate_closed_bad_input(tmp_path):
    tokenizer = tiny_tokenizer()
    model, closed = _gated_model(tokenizer)
    everything = {s.name: [True] * len(s.prompts) for s in SETS}

    def steered(judge=None, sampling=SETTINGS, **kwargs):
        return evaluate(
            model,
            tokenizer,
            SETS,
            judge or ParityJudge(),
            tmp_path / "a",
            settings=QUIET,
            sampling=sampling,
            conditions=("steered",),
            **kwargs,
        )

    with pytest.raises(ValueError, match="gate_closed needs base_run"):
        steered(gate_closed=closed)
    with pytest.raises(ValueError, match=r"gate_closed\['target'\] has 1 entries for 2 prompts"):
        steered(gate_closed={"target": [True]}, base_run=tmp_path)
    with pytest.raises(ValueError, match="no finished base scoring"):
        steered(gate_closed=everything, base_run=tmp_path / "none")
    evaluate(
        model,
        tokenizer,
        SETS,
        ParityJudge(),
        tmp_path / "base",
        settings=EvaluationSettings(progress=False),
        sampling=SETTINGS,
        conditions=("base",),
    )

    class OtherJudge(ParityJudge):
        name = "other"

    with pytest.raises(ValueError, match="was judged by"):
        steered(OtherJudge(), gate_closed=everything, base_run=tmp_path / "base")
    with pytest.raises(ValueError, match="has no base record of 2 gate-closed prompts"):
        steered(gate_closed=everything, base_run=tmp_path / "base", sampling=dataclasses.replace(SETTINGS, seed=99))


def test_sample_answers_are_a_seeded_random_sample_in_prompt_order():
    prompts = [f"p{i}" for i in range(20)]
    base, steered = [f"b{i}" for i in range(20)], [f"s{i}" for i in range(20)]
    picked = sample_pairs(prompts, base, steered, 3, seed=7)
    index = [int(pair["prompt"][1:]) for pair in picked]
    assert index == sorted(index) and len(set(index)) == 3 and index != [0, 1, 2]
    assert all(
        pair == {"prompt": f"p{i}", "base": f"b{i}", "steered": f"s{i}"} for i, pair in zip(index, picked, strict=True)
    )
    assert sample_pairs(prompts, base, steered, 3, seed=7) == picked
    assert sample_pairs(prompts, base, steered, 3, seed=8) != picked
    assert len(sample_pairs(prompts[:2], base[:2], steered[:2], 3, seed=0)) == 2


def test_the_report_names_the_judge_and_its_agreement_with_labeled_answers():
    report = EvaluationReport(
        settings={
            "judge": "pattern:abc",
            "judge_agreement": {"judge": "pattern:abc", "n": 248, "accuracy": 0.54, "kappa": 0.2, "labels": "x"},
        }
    )
    assert report.judge_line() == (
        "Refusals judged by `pattern:abc`: Cohen's κ 0.20, accuracy 0.54 against 248 answers labeled by reading "
        "(x; see docs/judges.md)."
    )


def test_reused_base_records_are_rescored_with_this_evaluations_unparseable_mode(tmp_path):
    class UnsureOnHarmful(Judge):
        """Unparseable (0) on every answer to a harmful-set prompt, refusal elsewhere."""

        def judge(self, prompt: str, answer: str) -> Judgment:
            return Judgment(0 if prompt in SETS[1].prompts else 1, "script", "")

    model = adapter_from_vectors(tiny_model("llama"), _vectors())
    tokenizer, judge = tiny_tokenizer(), UnsureOnHarmful()
    drop = dataclasses.replace(QUIET, unparseable="drop")
    base = evaluate(
        model, tokenizer, SETS, judge, tmp_path / "b", settings=drop, sampling=SETTINGS, conditions=("base",)
    )
    assert base.sets["harmful"]["base"]["n_judged"] == 0  # drop: every answer left out, unjudged
    everything = {s.name: [True] * len(s.prompts) for s in SETS}
    steered = evaluate(
        model,
        tokenizer,
        SETS,
        judge,
        tmp_path / "s",
        settings=QUIET,  # keep: the reused base records count as c = 0, neutral
        sampling=SETTINGS,
        conditions=("steered",),
        gate_closed=everything,
        base_run=tmp_path / "b",
    )
    row = steered.sets["harmful"]["steered"]
    assert (row["n_judged"], row["neutral"], row["refusal_pct"]) == (2, 2, 0.0)
    assert steered.sets["target"]["steered"]["refusal_pct"] == 100.0
