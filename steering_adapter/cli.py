"""The ``steering-adapter`` console script: run recipes, evaluate, generate / chat with adapters, publish.

Exit codes: 0 success; 1 unexpected error; 2 bad command line, recipe or input; 3 the selection found no layer/α
that meets the recipe's constraints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INFEASIBLE = 0, 1, 2, 3


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY.PATH=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.split("."), yaml.safe_load(value)


def apply_overrides(data: dict[str, Any], overrides: Sequence[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set ``a.b.c = value`` entries in a parsed recipe dict (validated afterwards by the schema)."""
    for path, value in overrides:
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {'.'.join(path)}: {part!r} is not a mapping in the recipe")
        node[path[-1]] = value
    return data


def _load_model_and_adapters(
    model_name: str | None,
    adapters: Sequence[str],
    scale: float | None,
    spec: Any = None,
    placement: dict[str, str] | None = None,
):
    import dataclasses

    from .adapter_files import read_config_dict
    from .pipeline import load_model
    from .recipes import ModelSpec
    from .tuner.model import set_adapter_scale

    if model_name is None:
        if not adapters:
            raise ValueError("give --model or at least one --adapter (its config names the base model)")
        model_name = read_config_dict(adapters[0]).get("base_model_name_or_path") or "organism"
    if spec is None or spec.name_or_path != model_name:  # another model than the recipe's: its revision does not apply
        spec = dataclasses.replace(spec or ModelSpec(), name_or_path=model_name, revision=None)
    if placement:
        spec = dataclasses.replace(spec, **placement)
    model, tokenizer = load_model(spec)
    names = []
    for index, adapter in enumerate(adapters):
        name = f"adapter{index}"
        model.load_adapter(adapter, adapter_name=name)
        names.append(name)
    if names:
        model.set_adapter(names)
        if scale is not None:
            for name in names:
                set_adapter_scale(model, scale, name)
    return model, tokenizer


def _generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float) -> list[str]:
    from .generation import sample_answers

    samples = sample_answers(
        model, tokenizer, list(prompts), k=1, max_new_tokens=max_new_tokens, temperature=temperature, progress=False
    )
    return [sample.answers[0].text for sample in samples]


def _placement(args: argparse.Namespace) -> dict[str, str]:
    """``--dtype`` / ``--device`` / ``--device-map`` as ModelSpec overrides."""
    placement = {}
    if getattr(args, "dtype", None):
        placement["dtype"] = args.dtype
    if getattr(args, "device", None):
        placement["device"] = args.device
    if getattr(args, "device_map", None):
        placement["device"] = args.device_map
    return placement


def _add_placement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="model dtype (default: float32)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", help="torch device for the model, e.g. cpu, cuda, cuda:1 (default: cpu)")
    where.add_argument(
        "--device-map",
        choices=["auto", "balanced", "balanced_low_0", "sequential"],
        help="spread the model's blocks over the visible GPUs (transformers device_map)",
    )


def cmd_memory(args: argparse.Namespace) -> int:
    from .memory import estimate_recipe_memory, free_memory, model_config

    recipe = _recipe_with_overrides(args.recipe, list(args.set or []))
    if args.config:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.config)
    else:
        config = model_config(recipe.model.name_or_path, recipe.model.revision)
    estimate = estimate_recipe_memory(recipe, config, prompt_tokens=args.prompt_tokens)
    print(f"# memory of {recipe.name} ({recipe.model.name_or_path}, {recipe.model.dtype} on {recipe.model.device})\n")
    print(estimate.table())
    free = free_memory(recipe.model.device)
    print("\nassumed: " + ", ".join(f"{key} {value}" for key, value in estimate.assumptions.items()))
    print("free now: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in free.items() if v is not None))
    return EXIT_OK


def _recipe_with_overrides(path: str, overrides: list[tuple[list[str], Any]]) -> Any:
    import yaml

    from .recipes import recipe_from_dict

    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping")
    return recipe_from_dict(apply_overrides(data, overrides))


def cmd_run(args: argparse.Namespace) -> int:
    from . import distributed
    from .evaluation import adapter_report_markdown
    from .pipeline import NoFeasibleChoiceError, run_recipe

    overrides = list(args.set or [])
    if args.out:
        overrides.append((["output", "dir"], args.out))
    recipe = _recipe_with_overrides(args.recipe, overrides)
    distributed.init_from_environment(recipe.model.device)  # under torchrun: join the other processes
    main = distributed.is_main()
    try:
        result = run_recipe(recipe, progress=not args.no_progress, memory_check=not args.no_memory_check)
    except NoFeasibleChoiceError as exc:
        if main:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    finally:
        distributed.shutdown()
    if not main:
        return EXIT_OK
    print()
    choice = result.selection.choice
    gate = f", gated at block {result.selection.condition['layer']}" if choice.gated else ""
    print(f"# {recipe.name}: layers {choice.layers}, alpha = {choice.alpha:g}{gate}")
    print(adapter_report_markdown(result.report, result.ungated_report))
    print(f"adapter: {result.adapter_dir}\nreport:  {result.out_dir / 'report.md'}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import EvalSet, evaluate
    from .pipeline import build_judge
    from .recipes import JudgeSpec, Recipe

    recipe: Recipe | None = _read_recipe(args.recipe) if args.recipe else None
    sampling = recipe.sampling if recipe is not None else None

    def pick(value: Any, recipe_value: Any, default: Any) -> Any:
        if value is not None:
            return value
        return recipe_value if recipe is not None else default

    specs = [_parse_set(text) for text in args.sets] if args.sets else None
    if specs is None:
        if recipe is None:
            raise ValueError("give --sets NAME=SOURCE:ROLE ... or --recipe RECIPE (its evaluation sets)")
        specs = [(spec.name, spec.source, spec.role) for spec in recipe.prompts.evaluation]
    seed = pick(args.seed, sampling.seed if sampling else None, 0)
    # every prompt source is read and checked before the model is loaded
    sets = [
        EvalSet(name, _eval_prompts(source, args.split, recipe, args.sample, seed), role)
        for name, source, role in specs
    ]
    kl_source = args.kl_prompts or (recipe.prompts.neutral if recipe is not None else None)
    kl = _eval_prompts(kl_source, args.split, recipe, args.sample, seed) if kl_source else None
    total = sum(len(s.prompts) for s in sets)
    print(
        f"[eval] scoring {total} prompts ({args.split}): "
        + ", ".join(f"{s.name} {len(s.prompts)} ({s.role})" for s in sets)
        + (f"; KL on {len(kl)} neutral prompts" if kl else ""),
        flush=True,
    )
    model, tokenizer = _load_model_and_adapters(
        args.model, [args.adapter], args.scale, recipe.model if recipe is not None else None, _placement(args)
    )
    relevance = None
    if not args.no_relevance and (recipe is None or recipe.relevance):
        from .relevance import RelevanceScorer

        relevance = RelevanceScorer()
    judge = build_judge(
        recipe.judge if recipe is not None and args.judge is None else JudgeSpec(kind=args.judge or "pattern"),
        _model_placement(recipe, args),
    )
    report = evaluate(
        model,
        tokenizer,
        sets,
        judge,
        args.out,
        kl_prompts=kl,
        relevance=relevance,
        batch_size=pick(args.batch_size, sampling.batch_size if sampling else None, 8),
        progress=not args.no_progress,
        k=pick(args.k, sampling.k if sampling else None, 3),
        max_new_tokens=pick(args.max_new_tokens, sampling.max_new_tokens if sampling else None, 64),
        temperature=pick(args.temperature, sampling.temperature if sampling else None, 1.0),
        top_p=sampling.top_p if sampling else 1.0,
        seed=seed,
        system_prompt=recipe.model.system_prompt if recipe is not None else None,
    )
    print(report.to_markdown())
    print(f"report: {args.out}/report.md")
    return EXIT_OK


def _model_placement(recipe: Any, args: argparse.Namespace) -> Any:
    """The dtype and device a local judge model gets: the evaluated model's (recipe, then command-line options)."""
    import dataclasses

    from .recipes import ModelSpec

    return dataclasses.replace(recipe.model if recipe is not None else ModelSpec(), **_placement(args))


def _read_recipe(path: str) -> Any:
    from .recipes import load_recipe

    return load_recipe(path)


def _parse_set(text: str) -> tuple[str, str, str]:
    parts = text.split("=", 1)
    if len(parts) != 2 or ":" not in parts[1]:
        raise ValueError(f"--sets expects NAME=SOURCE:ROLE, got {text!r}")
    source, role = parts[1].rsplit(":", 1)
    return parts[0], source, role


def _eval_prompts(source: str, split: str, recipe: Any, sample: int | None, seed: int) -> list[str]:
    """The prompts of ``source`` for ``eval``: the whole source (``split="all"``) or a part of the recipe's split
    (defaults without a recipe), then a seeded sample of ``sample`` prompts when asked."""
    import random

    from .pipeline import resolve_prompts
    from .recipes import Recipe

    split_recipe = recipe if recipe is not None else Recipe(name="eval")
    prompts = resolve_prompts(source, split, split_recipe, capped=False)
    if not prompts:
        raise ValueError(f"no prompts in {source!r} ({split})")
    if sample is not None:
        if sample < 1:
            raise ValueError(f"--sample must be >= 1, got {sample}")
        if sample < len(prompts):
            chosen = sorted(random.Random(seed).sample(range(len(prompts)), sample))
            prompts = [prompts[i] for i in chosen]
    return prompts


def cmd_generate(args: argparse.Namespace) -> int:
    from .tuner.model import steering_disabled

    model, tokenizer = _load_model_and_adapters(args.model, args.adapter or [], args.scale, None, _placement(args))
    prompts = args.prompt
    steered = _generate(model, tokenizer, prompts, args.max_new_tokens, args.temperature)
    base = None
    if args.compare and args.adapter:
        with steering_disabled(model):
            base = _generate(model, tokenizer, prompts, args.max_new_tokens, args.temperature)
    for index, prompt in enumerate(prompts):
        print(f">>> {prompt}")
        if base is not None:
            print(f"[base]    {base[index]}")
        print(f"[{'steered' if args.adapter else 'model'}] {steered[index]}\n")
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    model, tokenizer = _load_model_and_adapters(args.model, args.adapter or [], args.scale, None, _placement(args))
    print("steering-adapter chat: one prompt per line; empty line or Ctrl-D quits.", file=sys.stderr)
    for line in sys.stdin:
        prompt = line.strip()
        if not prompt:
            break
        print(_generate(model, tokenizer, [prompt], args.max_new_tokens, args.temperature)[0], flush=True)
    return EXIT_OK


def cmd_push(args: argparse.Namespace) -> int:
    from .hub import push_adapter

    print(push_adapter(args.adapter_dir, args.repo_id, private=args.private, token=args.token))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from .adapter_files import read_config_dict

    print(json.dumps(read_config_dict(args.adapter), indent=2, sort_keys=True))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steering-adapter",
        description="Refusal steering vectors as shareable PEFT adapters: compute them from a recipe, evaluate "
        "them, generate with them attached, publish them.",
        epilog="Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 no feasible layer/alpha in the selection.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: $STEERING_ADAPTER_THREADS, else one per physical core)",
    )

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run a recipe end to end (sample, judge, estimate, select, evaluate, save)",
        description="Run a recipe: sample answers, judge them, score prompts, collect activations, "
        "estimate directions, choose layers and alpha on held-out prompts, evaluate before/after "
        "and save the adapter, report, plots and model card. Re-running resumes.",
    )
    run.add_argument("recipe", help="recipe YAML file (see recipes/)")
    run.add_argument("--out", help="output folder (overrides output.dir)")
    run.add_argument(
        "--set",
        action="append",
        type=_parse_override,
        metavar="KEY.PATH=VALUE",
        help="override a recipe value, e.g. --set sampling.k=1 --set selection.alphas=[-4,-8] "
        "(repeatable; values are YAML)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument(
        "--no-memory-check",
        action="store_true",
        help="do not stop before loading the model when the memory estimate exceeds the free memory",
    )
    run.set_defaults(func=cmd_run)

    memory = sub.add_parser(
        "memory",
        parents=[common],
        help="estimate a recipe's memory per stage from the model's config (nothing is loaded)",
        description="Print the memory a recipe needs per stage (weights, sampling, statistics, diagnostics, gating, "
        "KL) and per process, from the model's config and the recipe; `run` checks the same estimate against the "
        "free memory before it loads the model.",
    )
    memory.add_argument("recipe", help="recipe YAML file")
    memory.add_argument("--config", help="a local config.json (or folder) to use instead of the recipe model's")
    memory.add_argument(
        "--set", action="append", type=_parse_override, metavar="KEY.PATH=VALUE", help="override a recipe value"
    )
    memory.add_argument("--prompt-tokens", type=int, default=256, help="assumed prompt length (default 256)")
    memory.set_defaults(func=cmd_memory)

    ev = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate an existing adapter against its base model on prompt sets",
        description="Score prompt sets with steering off and on; write report.json / report.md and plots. "
        "Every prompt of each source is scored unless --split or --sample says otherwise; the prompt count is "
        "printed before scoring starts.",
    )
    ev.add_argument("adapter", help="adapter folder or Hub repo id")
    ev.add_argument("--model", help="base model (default: the adapter's base_model_name_or_path)")
    ev.add_argument(
        "--sets",
        nargs="+",
        metavar="NAME=SOURCE:ROLE",
        help="sets to score, e.g. political=organism:political:target jbb=jbb_harmful:harmful "
        "xstest=xstest_safe:benign (roles: target, harmful, benign, other); default: the recipe's evaluation sets",
    )
    ev.add_argument(
        "--recipe",
        help="reuse a recipe's judge (incl. extra refusal phrasings), sampling settings, model dtype/device/system "
        "prompt, split, neutral prompts and evaluation sets; explicit options below override it",
    )
    ev.add_argument(
        "--split",
        choices=["all", "train", "selection", "test"],
        default="all",
        help="which prompts of each source: all (default) or a part of the recipe's split (test: what `run` reports)",
    )
    ev.add_argument("--sample", type=int, help="score a seeded random sample of N prompts per set instead of all")
    ev.add_argument("--kl-prompts", help="source of neutral prompts for the KL divergence (default: the recipe's)")
    ev.add_argument("--judge", choices=["pattern"], help="judge (default: the recipe's, else pattern)")
    ev.add_argument("--scale", type=float, help="override the adapter's scale alpha")
    ev.add_argument("--k", type=int, help="answers per prompt (default: the recipe's, else 3)")
    ev.add_argument("--max-new-tokens", type=int, help="answer length (default: the recipe's, else 64)")
    ev.add_argument("--temperature", type=float, help="sampling temperature (default: the recipe's, else 1.0)")
    ev.add_argument("--seed", type=int, help="sampling and --sample seed (default: the recipe's, else 0)")
    ev.add_argument("--batch-size", type=int, help="prompts per generation batch (default: the recipe's, else 8)")
    ev.add_argument("--no-relevance", action="store_true", help="skip answer relevance")
    ev.add_argument("--out", default="runs/eval", help="output folder (default runs/eval)")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_placement_options(ev)
    ev.set_defaults(func=cmd_eval)

    for name, func, text in (
        ("generate", cmd_generate, "answer prompts with adapters attached"),
        ("chat", cmd_chat, "interactive chat (stdin) with adapters attached"),
    ):
        gen = sub.add_parser(name, parents=[common], help=text, description=text.capitalize() + ".")
        if name == "generate":
            gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
            gen.add_argument("--compare", action="store_true", help="also print the base model's answer")
        gen.add_argument("--model", help="base model: 'organism', a Hub id or folder (default: from the adapter)")
        gen.add_argument("--adapter", action="append", help="adapter folder or repo id (repeatable; applied in order)")
        gen.add_argument("--scale", type=float, help="override every adapter's scale alpha")
        gen.add_argument("--max-new-tokens", type=int, default=96, help="answer length (default 96)")
        gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
        _add_placement_options(gen)
        gen.set_defaults(func=func)

    push = sub.add_parser(
        "push",
        help="upload an adapter folder to the Hub",
        description="Upload an adapter folder (config, safetensors, model card) to a Hub repo.",
    )
    push.add_argument("adapter_dir", help="folder written by `run` or save_adapter")
    push.add_argument("repo_id", help="target repo, e.g. org/no-political-refusal")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN / logged-in user)")
    push.set_defaults(func=cmd_push)

    inspect = sub.add_parser(
        "inspect",
        help="print an adapter's configuration",
        description="Print adapter_config.json of a folder or Hub repo.",
    )
    inspect.add_argument("adapter", help="adapter folder or Hub repo id")
    inspect.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``steering-adapter`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "threads"):
            from .threads import configure_threads

            configure_threads(args.threads)
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
