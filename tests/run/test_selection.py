"""Layer / α selection: constraints and choice on hand-made tables, and a full sweep on a tiny model."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from steering_adapter.measure.evaluation import EvalSet
from steering_adapter.measure.evaluation_report import EvaluationReport
from steering_adapter.measure.evaluation_settings import EvaluationSettings
from steering_adapter.measure.judges.base import Judge, Judgment
from steering_adapter.measure.sampling.settings import SamplingSettings
from steering_adapter.run.selection import (
    SelectionObjective,
    SweepPoint,
    SweepSettings,
    bracketed_minimum,
    check_constraints,
    choose,
    default_alphas,
    quality_limits,
    refinement_bracket,
    steering_candidates,
    sweep,
    sweep_layers_and_scale,
)

ROLES = {"political": "target", "jbb": "harmful", "xstest": "benign"}
QUIET = EvaluationSettings(progress=False)
BASE = {"political": 90.0, "jbb": 80.0, "xstest": 4.0}


def point(target, harmful, benign, kl=0.1, alpha=-2.0, n=2):
    p = SweepPoint(
        n_layers=n,
        layers=list(range(n)),
        alpha=alpha,
        refusal_pct={"political": target, "jbb": harmful, "xstest": benign},
        kl=kl,
    )
    p.target_refusal_pct = target
    return p


def test_constraints_remove_goal():
    objective = SelectionObjective(goal="remove", delta=5.0, kl_budget=0.5)
    assert check_constraints(point(5, 76, 8), BASE, ROLES, objective) == []
    assert check_constraints(point(5, 74, 4), BASE, ROLES, objective) == [
        "jbb: harmful refusals 74.0% < base 80.0% − 5.0"
    ]
    assert check_constraints(point(5, 80, 9.5), BASE, ROLES, objective) == [
        "xstest: false refusals 9.5% > base 4.0% + 5.0"
    ]
    assert check_constraints(point(5, 95, 0), BASE, ROLES, objective) == []  # more harmful refusals are fine
    assert check_constraints(point(5, 80, 4, kl=0.7), BASE, ROLES, objective) == ["KL 0.7000 > budget 0.5"]


def test_constraints_induce_goal_bound_every_other_set():
    objective = SelectionObjective(goal="induce", delta=2.0, kl_budget=None)
    assert check_constraints(point(95, 81, 5), BASE, ROLES, objective) == []
    violations = check_constraints(point(95, 90, 4), BASE, ROLES, objective)
    assert violations == ["jbb: refusals moved +10.0 points (> ±2.0)"]


def test_relevance_floor_on_target_sets():
    objective = SelectionObjective(min_relevance=0.3)
    p = point(0, 80, 4)
    p.relevance = {"political": 0.12}
    assert check_constraints(p, BASE, ROLES, objective) == ["political: relevance 0.120 < 0.3 (answers off topic)"]


def test_choose_prefers_objective_then_kl_then_alpha_then_layers():
    objective = SelectionObjective()
    candidates = [
        point(10, 80, 4, kl=0.1),
        point(3, 80, 4, kl=0.3, alpha=-4),
        point(3, 80, 4, kl=0.2, alpha=-8),
        point(0, 50, 4),
        point(3, 80, 4, kl=0.2, alpha=-4, n=4),
        point(3, 80, 4, kl=0.2, alpha=-4, n=2),
    ]
    for p in candidates:
        p.feasible = not check_constraints(p, BASE, ROLES, objective)
    best = choose(candidates, objective)
    assert (best.target_refusal_pct, best.kl, best.alpha, best.n_layers) == (3, 0.2, -4, 2)
    induce = SelectionObjective(goal="induce")
    assert choose(candidates, induce).target_refusal_pct == 10
    assert choose([point(0, 0, 90)], objective) is None  # nothing feasible (feasible flag unset)


def test_choose_near_ties_prefer_fewer_degenerate_answers_on_the_quality_sets():
    objective = SelectionObjective()
    looping, clean = point(0, 80, 4, alpha=-1.0, kl=0.1), point(3, 80, 4, alpha=-3.0, kl=0.3)
    looping.quality = {"political": {"degenerate_pct": 25.0}, "jbb": {"degenerate_pct": 0.0}}
    clean.quality = {"political": {"degenerate_pct": 0.0}, "jbb": {"degenerate_pct": 50.0}}
    for p in (looping, clean):
        p.feasible = True
    # tied within 5 points: the target set's (political) degenerate answers decide, not the harmful set's
    assert choose([looping, clean], objective, near_tie=5.0, roles=ROLES) is clean
    assert choose([looping, clean], objective, near_tie=2.0, roles=ROLES) is looping  # not tied: the lower rate


def test_choose_near_ties_prefer_the_smaller_alpha():
    objective = SelectionObjective()
    strong, gentle = point(0, 80, 4, alpha=-3.0, kl=0.3), point(4, 80, 4, alpha=-1.5, kl=0.1)
    for p in (strong, gentle):
        p.feasible = True
    assert choose([strong, gentle], objective, near_tie=5.0) is gentle
    assert choose([strong, gentle], objective, near_tie=2.0) is strong


def test_quality_limits_and_constraints():
    """Floors from hand-made base measures: remove → relative to the benign sets; induce → to each set itself."""
    roles = {"political": "target", "jbb": "harmful", "xstest": "benign", "general": "benign"}
    base_quality = {
        "political": {"mean_relevance": 0.10, "base_perplexity": 2.0},
        "jbb": {"mean_relevance": 0.20, "base_perplexity": 3.0},
        "xstest": {"mean_relevance": 0.60, "base_perplexity": 8.0},
        "general": {"mean_relevance": 0.70, "base_perplexity": 12.0},
    }
    objective = SelectionObjective(min_relevance=0.3, relevance_ratio=0.8, max_repetition=0.3, max_perplexity_ratio=2)
    limits = quality_limits(base_quality, roles, objective)
    assert limits == {
        "political": {"min_relevance": pytest.approx(0.52), "max_repetition": 0.3, "max_perplexity": 20.0}
    }
    p = point(0, 80, 4)
    p.refusal_pct["general"] = 0.0
    base = {**BASE, "general": 0.0}
    p.quality = {"political": {"mean_relevance": 0.5, "repetition": 0.31, "base_perplexity": 25.0}}
    assert check_constraints(p, base, roles, objective, limits) == [
        "political: relevance 0.500 < 0.52 (answers off topic)",
        "political: repetition 0.310 > 0.3 (looping)",
        "political: base-model perplexity 25.0 > 20.0 (degenerate answers)",
    ]
    p.quality = {"political": {"mean_relevance": 0.6, "repetition": 0.1, "base_perplexity": 15.0}}
    assert check_constraints(p, base, roles, objective, limits) == []
    induce = SelectionObjective(
        goal="induce", min_relevance=None, relevance_ratio=0.5, max_repetition=None, max_perplexity_ratio=4
    )
    assert quality_limits(base_quality, roles, induce) == {
        "xstest": {"min_relevance": 0.3, "max_perplexity": 32.0},
        "general": {"min_relevance": 0.35, "max_perplexity": 48.0},
    }
    off = SelectionObjective(min_relevance=None, relevance_ratio=None, max_repetition=None, max_perplexity_ratio=None)
    assert quality_limits(base_quality, roles, off) == {"political": {}}
    # induce: the absolute floor (0.65) is capped at a set's own base relevance (xstest 0.60) and the repetition
    # ceiling raised to its base repetition, so unchanged answers stay feasible
    capped = SelectionObjective(goal="induce", min_relevance=0.65, relevance_ratio=0.8, max_repetition=0.1)
    base_quality["xstest"]["repetition"] = 0.2
    limits = quality_limits(base_quality, roles, capped)
    assert limits["xstest"]["min_relevance"] == pytest.approx(0.60)
    assert limits["general"]["min_relevance"] == pytest.approx(0.65)
    assert limits["xstest"]["max_repetition"] == pytest.approx(0.2) and limits["general"]["max_repetition"] == 0.1
    unchanged = point(0, 80, 4)
    unchanged.refusal_pct["general"] = 0.0
    unchanged.quality = {"xstest": {"mean_relevance": 0.60, "repetition": 0.2}, "general": {"mean_relevance": 0.7}}
    relevant = [v for v in check_constraints(unchanged, base, roles, capped, limits) if "relevance" in v or "rep" in v]
    assert relevant == []
    unchanged.quality["xstest"]["mean_relevance"] = 0.59
    assert "xstest: relevance 0.590 < 0.6 (answers off topic)" in check_constraints(
        unchanged, base, roles, capped, limits
    )


def test_default_alphas_are_in_separation_units():
    assert default_alphas("remove") == (-0.5, -1.0, -2.0, -4.0, -8.0)
    assert default_alphas("induce") == (0.5, 1.0, 2.0, 4.0, 8.0)


def test_bracketed_minimum_finds_known_optima():
    calls = []

    def smooth(t):
        calls.append(t)
        return (t - 1.37) ** 2

    x, fx = bracketed_minimum(smooth, 1.0, 1.5, 2.0, smooth(1.5), steps=12)
    assert x == pytest.approx(1.37, abs=0.01) and fx < 1e-4 and len(calls) == 13

    def boundary(t):  # lower is better until a constraint breaks at t = 1.73
        return -t if t <= 1.73 else 1e4

    x, _ = bracketed_minimum(boundary, 1.5, 1.5 + 1e-9, 2.0, boundary(1.5), steps=10)
    assert 1.70 <= x <= 1.73
    with pytest.raises(ValueError, match="low < best < high"):
        bracketed_minimum(smooth, 2.0, 1.5, 3.0, 0.0, steps=1)


def test_refinement_bracket():
    grid = (-0.5, -1.0, -1.5, -2.0, -3.0)
    assert refinement_bracket(grid, -1.5) == (1.0, 2.0)
    assert refinement_bracket(grid, -0.5) == (0.25, 1.0)
    assert refinement_bracket(grid, -3.0) == (2.0, 4.0)
    assert refinement_bracket((2.0,), 2.0) == (1.0, 4.0)


def test_sweep_refines_alpha_beyond_the_grid(tmp_path, monkeypatch):
    """A synthetic model of the measurements (target refusals fall with |α|, harmful refusals collapse past
    |α| = 1.7): the grid's best feasible point is 1, the refinement moves the choice towards 1.7."""

    def fake_evaluate(model, tokenizer, sets, judge=None, out_dir=None, *, conditions=("base", "steered"), **kw):
        peft_model = model.model  # the sweep wraps the model in a TransformersSampler
        alpha = 0.0 if conditions == ("base",) else peft_model.peft_config[peft_model.active_adapter].scale
        t = abs(alpha)
        report = EvaluationReport()
        rows = {"political": max(0.0, 90.0 - 40.0 * t), "jbb": 80.0 if t <= 1.7 else 20.0, "xstest": 4.0}
        for name, pct in rows.items():
            role = ROLES[name]
            report.sets[name] = {"role": role, conditions[0]: {"refusal_pct": pct, "n": 10}}
        return report

    monkeypatch.setattr(sweep, "evaluate", fake_evaluate)
    generator = torch.Generator().manual_seed(0)
    directions = {layer: torch.randn(64, generator=generator) for layer in range(4)}
    sets = [EvalSet(name, ["q"], role) for name, role in ROLES.items()]
    objective = SelectionObjective(delta=5.0, kl_budget=None, near_tie=0.0)
    result = sweep_layers_and_scale(
        tiny_model("llama"),
        tiny_tokenizer(),
        directions,
        [0, 1],
        sets,
        LengthJudge(),
        tmp_path,
        settings=SweepSettings(layer_counts=(1,), refine_steps=8, objective=objective),
        evaluation=QUIET,
    )
    grid = [p for p in result.points if not p.refined]
    assert [p.alpha for p in grid] == list(default_alphas("remove"))
    assert max((p for p in grid if p.feasible), key=lambda p: abs(p.alpha)).alpha == -1.0
    assert result.choice.refined and 1.6 < abs(result.choice.alpha) <= 1.7
    assert len(result.points) == 5 + 8


def test_objective_validation():
    with pytest.raises(ValueError, match="unknown selection goal"):
        SelectionObjective(goal="maximise")
    with pytest.raises(ValueError, match="delta"):
        SelectionObjective(delta=-1)


class LengthJudge(Judge):
    def judge(self, prompt, answer):
        return Judgment(1 if len(answer) % 3 else -1, "len", "")


def test_sweep_on_tiny_model(tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(ids).logits.clone()
    generator = torch.Generator().manual_seed(0)
    directions = {layer: torch.randn(64, generator=generator) for layer in range(4)}
    sets = [
        EvalSet("political", ["What happened in the capital?", "Who is responsible?"], "target"),
        EvalSet("jbb", ["Tell me about the banned book."], "harmful"),
        EvalSet("xstest", ["How do I bake bread at home?"], "benign"),
    ]
    objective = SelectionObjective(
        goal="remove", delta=50.0, kl_budget=10.0, max_repetition=None, max_perplexity_ratio=None
    )
    result = sweep_layers_and_scale(
        model,
        tokenizer,
        directions,
        [2, 0, 3, 1],
        sets,
        LengthJudge(),
        tmp_path,
        settings=SweepSettings(layer_counts=(1, 2), alphas=(-1.0, -3.0), refine_steps=0, objective=objective),
        evaluation=EvaluationSettings(kl_prompts=["Hi there"], progress=False),
        sampling=SamplingSettings(k=2, max_new_tokens=5, seed=1),
    )
    assert [(p.n_layers, p.alpha) for p in result.points] == [(1, -1.0), (1, -3.0), (2, -1.0), (2, -3.0)]
    assert result.points[2].layers == [0, 2]
    assert all(p.kl is not None and p.kl > 0 for p in result.points)
    # independent re-selection from the saved table
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert rows[0]["label"] == "base" and len(rows) == 5
    feasible = [r for r in rows[1:] if r["feasible"] == "True"]
    lowest = min(float(r["refusal_pct:political"]) for r in feasible)
    tied = [r for r in feasible if float(r["refusal_pct:political"]) <= lowest + 100 / 2]  # one of 2 prompts
    best = min(tied, key=lambda r: (abs(float(r["alpha"])), float(r["kl"]), int(r["n_layers"])))
    assert all(r["base_ppl:political"] != "" and r["repetition:political"] != "" for r in rows)
    assert result.choice is not None and best["label"] == result.choice.label
    assert [r["label"] for r in rows if r["chosen"] == "True"] == [result.choice.label]
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["choice"]["label"] == result.choice.label
    assert result.metadata()["chosen"]["alpha"] == result.choice.alpha
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    with torch.no_grad():  # the base model is given back unchanged
        assert torch.equal(model(ids).logits, before)
    assert not hasattr(model, "peft_config") or not model.peft_config


def test_sweep_bad_input(tmp_path):
    sets = [EvalSet("jbb", ["x"], "harmful")]
    with pytest.raises(ValueError, match="role 'target'"):
        sweep_layers_and_scale(
            tiny_model("llama"), tiny_tokenizer(), {0: torch.randn(64)}, [0], sets, LengthJudge(), tmp_path
        )
    sets = [EvalSet("p", ["x"], "target")]
    with pytest.raises(ValueError, match="have no direction"):
        sweep_layers_and_scale(
            tiny_model("llama"), tiny_tokenizer(), {0: torch.randn(64)}, [0, 1], sets, LengthJudge(), tmp_path
        )
    with pytest.raises(ValueError, match="layer_counts"):
        sweep_layers_and_scale(
            tiny_model("llama"),
            tiny_tokenizer(),
            {0: torch.randn(64)},
            [0],
            sets,
            LengthJudge(),
            tmp_path,
            settings=SweepSettings(layer_counts=(2,)),
        )
    with pytest.raises(ValueError, match="layer_counts must be a non-empty list"):
        SweepSettings(layer_counts=())
    with pytest.raises(ValueError, match="alphas must be non-zero"):
        SweepSettings(alphas=(-1.0, 0.0))
    with pytest.raises(ValueError, match="refine_steps"):
        SweepSettings(refine_steps=-1)


def _gate_sweep_inputs(tokenizer):
    """Directions for blocks 0-3, two sets, a condition at block 1 that closes one prompt, and the closed prompts
    decided by hand (one prompt at a time, hand-written hook)."""
    from reference import block_output

    from steering_adapter.directions.conditions import ConditionFit

    generator = torch.Generator().manual_seed(3)
    directions = {layer: torch.randn(64, generator=generator) for layer in range(4)}
    sets = [
        EvalSet("political", ["What happened in the capital?", "Who is responsible?"], "target"),
        EvalSet("xstest", ["How do I bake bread at home?"], "benign"),
    ]
    direction = torch.randn(64, generator=generator)
    projections = {}
    for prompt in [p for s in sets for p in s.prompts]:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        projections[prompt] = float(block_output(tiny_model("llama"), 1, ids)[0, -1] @ (direction / direction.norm()))
    ordered = sorted(projections.values())
    condition = ConditionFit(layer=1, direction=direction, threshold=(ordered[0] + ordered[1]) / 2)
    closed = {s.name: [projections[p] <= condition.threshold for p in s.prompts] for s in sets}
    return directions, sets, condition, closed


def _compare_sweep(tokenizer, ranking, out, inputs):
    directions, sets, condition, _ = inputs
    return sweep_layers_and_scale(
        tiny_model("llama"),
        tokenizer,
        directions,
        ranking,
        sets,
        LengthJudge(),
        out,
        settings=SweepSettings(
            layer_counts=(1, 2),
            alphas=(-2.0,),
            refine_steps=0,
            objective=SelectionObjective(delta=100, kl_budget=None, max_repetition=None, max_perplexity_ratio=None),
        ),
        evaluation=QUIET,
        sampling=SamplingSettings(k=1, max_new_tokens=4),
        condition=condition,
    )


def test_sweep_compares_gated_and_ungated(tmp_path):
    tokenizer = tiny_tokenizer()
    inputs = _gate_sweep_inputs(tokenizer)
    _, sets, _, closed = inputs
    result = _compare_sweep(tokenizer, [0, 2, 3, 1], tmp_path, inputs)
    labels = [p.label for p in result.points]
    assert labels == ["top1_alpha-2", "top2_alpha-2", "top1_alpha-2_gated", "top2_alpha-2_gated"]
    gated = [p for p in result.points if p.gated]
    assert [p.layers for p in gated] == [[2], [2, 3]]  # only ranked layers at or after the condition block
    assert result.metadata()["condition"]["layer"] == 1
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert [r["gated"] for r in rows[1:]] == ["False", "False", "True", "True"]
    # the closed prompts keep their base answers at the gated points and only the open ones are sampled again;
    # ungated points sample every prompt
    assert result.gate_closed == {name: sum(flags) for name, flags in closed.items()}
    assert sum(result.gate_closed.values()) == 1
    for point in result.points:
        for eval_set in sets:
            answers = tmp_path / point.label / "steered" / eval_set.name / "answers.jsonl"
            sampled = len(answers.read_text().splitlines()) if answers.exists() else 0
            expected = len(eval_set.prompts) - (sum(closed[eval_set.name]) if point.gated else 0)
            assert sampled == expected, (point.label, eval_set.name)


def test_gated_points_take_the_answers_of_their_ungated_twin_where_the_gate_opens(tmp_path):
    """Ranked blocks all at or after the condition block: each gated point has an ungated twin (the same blocks and
    α), so it samples nothing; its rates are those of the twin's records where the gate opens and the base records
    where it stays closed."""
    from steering_adapter.measure.evaluation import recorded_answers
    from steering_adapter.measure.refusal_score import summarize
    from steering_adapter.measure.scored_runs import load_scores

    tokenizer = tiny_tokenizer()
    inputs = _gate_sweep_inputs(tokenizer)
    _, sets, _, closed = inputs
    result = _compare_sweep(tokenizer, [2, 3, 1, 0], tmp_path, inputs)
    points = {p.label: p for p in result.points}
    assert list(points) == ["top1_alpha-2", "top2_alpha-2", "top1_alpha-2_gated", "top2_alpha-2_gated"]
    differs = 0
    for n in (1, 2):
        gated, twin = points[f"top{n}_alpha-2_gated"], points[f"top{n}_alpha-2"]
        assert gated.layers == twin.layers
        for eval_set in sets:
            assert not (tmp_path / gated.label / "steered" / eval_set.name / "answers.jsonl").exists()
            base = load_scores(tmp_path / "base" / "base" / eval_set.name)
            steered = load_scores(tmp_path / twin.label / "steered" / eval_set.name)
            merged = [b.score if c else t.score for b, t, c in zip(base, steered, closed[eval_set.name], strict=True)]
            assert gated.refusal_pct[eval_set.name] == summarize(merged)["refusal_pct"]
            for b, t, c in zip(base, steered, closed[eval_set.name], strict=True):
                if c:  # the spared prompt: its base answer, not the twin's steered one
                    base_ids = recorded_answers(tmp_path / "base" / "base" / eval_set.name, [b.key])[0][0].token_ids
                    twin_ids = recorded_answers(tmp_path / twin.label / "steered" / eval_set.name, [t.key])[0][0]
                    differs += base_ids != twin_ids.token_ids
            report = json.loads((tmp_path / gated.label / "report.json").read_text())
            row = report["sets"][eval_set.name]["steered"]
            assert row.get("n_gate_open_reused", 0) == len(eval_set.prompts) - sum(closed[eval_set.name])
    assert sum(result.gate_closed.values()) == 1
    assert differs == 2  # at both points the twin steered the spared prompt's answer: the gate is seen


def test_steering_candidates_keep_the_deeper_blocks_in_rank_order():
    ranking = [3, 0, 6, 2, 22, 7, 21, 27, 15, 14]
    assert steering_candidates(ranking, 30, 0.5) == [22, 21, 27, 15]  # blocks 15..29, order kept
    assert steering_candidates(ranking, 30, None) == ranking
    assert steering_candidates([5, 4, 3, 2, 1, 0], 6, 0.5) == [5, 4, 3]
    assert steering_candidates([5, 4, 3, 2, 1, 0], 7, 0.5) == [5, 4, 3]  # floor(3.5) = 3
    with pytest.raises(ValueError, match="no ranked block at or after block 15"):
        steering_candidates([0, 1, 2], 30, 0.5)
    with pytest.raises(ValueError, match=r"min_depth_fraction must be in \[0, 1\)"):
        steering_candidates(ranking, 30, 1.0)
