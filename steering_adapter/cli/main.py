"""The ``steering-adapter`` console script: run recipes, evaluate, generate / chat with adapters, publish, export.

Exit codes: 0 success; 1 unexpected error; 2 bad command line, recipe or input; 3 the selection found no layer/α
that meets the recipe's constraints.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INFEASIBLE = 0, 1, 2, 3


_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``a.b[2].c=VALUE`` -> (``["a", "b", 2, "c"]``, the YAML value)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY.PATH=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    path: list[str | int] = []
    for part in key.split("."):
        match = _KEY_PART.fullmatch(part)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"--set {key!r}: expected KEY.PATH like 'sampling.k' or 'prompts.evaluation[0].source'"
            )
        path.append(match.group(1))
        path += [int(index) for index in re.findall(r"\d+", match.group(2))]
    return path, yaml.safe_load(value)


def _path_text(path: Sequence[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def apply_overrides(data: dict[str, Any], overrides: Sequence[tuple[Sequence[str | int], Any]]) -> dict[str, Any]:
    """Set ``a.b[1].c = value`` entries in a parsed recipe dict (validated afterwards by the schema).

    Missing mapping keys are created; list items must exist.
    """
    for path, value in overrides:
        node: Any = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = _path_text(path[: depth + 1])
            if isinstance(part, int):
                if not isinstance(node, list):
                    raise ValueError(f"--set {_path_text(path)}: {_path_text(path[:depth])} is not a list")
                if not 0 <= part < len(node):
                    raise ValueError(f"--set {_path_text(path)}: {where} does not exist (the list has {len(node)})")
            elif not isinstance(node, dict):
                raise ValueError(f"--set {_path_text(path)}: {_path_text(path[:depth])} is not a mapping")
            if last:
                node[part] = value
            elif isinstance(part, int):
                node = node[part]
            else:
                node = node.setdefault(part, [] if isinstance(path[depth + 1], int) else {})
    return data


def base_model_spec(model_name: str | None, adapters: Sequence[str]):
    """The base model to load: ``--model`` as given, else the one the first adapter's config names, pinned to the
    revision it records (an adapter computed on an embedded model, e.g. the organism, loads that model offline)."""
    from steering_adapter.models.embedded import canonical_name
    from steering_adapter.run.recipe import ModelSpec
    from steering_adapter.tuner.files import read_config_dict

    if model_name is not None:
        return ModelSpec(name_or_path=canonical_name(model_name) or model_name)
    if not adapters:
        raise ValueError("give --model or at least one --adapter (its config names the base model)")
    config = read_config_dict(adapters[0])
    name = config.get("base_model_name_or_path")
    if not name:
        raise ValueError(f"{adapters[0]}: the adapter config names no base model; give --model")
    short = canonical_name(name)
    if short is not None:
        return ModelSpec(name_or_path=short)
    return ModelSpec(name_or_path=name, revision=config.get("revision") or None)


def _load_model_and_adapters(
    model_name: str | None,
    adapters: Sequence[str],
    scale: float | None,
    spec: Any = None,
    placement: dict[str, str] | None = None,
):
    """The base model with the adapters attached in order. ``spec`` (a recipe's model section) supplies dtype, device
    and system prompt; the model itself and its revision come from :func:`base_model_spec`; ``placement``
    (``--dtype`` / ``--device`` / ``--device-map``) overrides dtype and device."""
    import dataclasses

    from steering_adapter.run.stages.load import load_model
    from steering_adapter.tuner.model import set_adapter_scale

    base = base_model_spec(model_name, adapters)
    if spec is not None:
        base = dataclasses.replace(spec, name_or_path=base.name_or_path, revision=base.revision)
    if placement:
        base = dataclasses.replace(base, **placement)
    model, tokenizer = load_model(base)
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
    from steering_adapter.measure.sampling.generation import sample_answers

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
    from steering_adapter.run.memory import estimate_recipe_memory, free_memory, model_config

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


def check_sources(recipe) -> None:
    """Load every prompt source a recipe names, so a missing or empty one is reported before the model loads.

    Raises:
        ValueError: ``recipe.prompts.refusal[1]: prompt file 'x.txt' does not exist`` (the key and the problem).
    """
    from steering_adapter.run.recipe import recipe_sources
    from steering_adapter.run.stages.inputs import load_source

    spec = recipe.prompts
    for key, source in recipe_sources(recipe).items():
        try:
            train, held = load_source(
                source, held_out_fraction=spec.held_out_fraction, seed=spec.split_seed, language=spec.language
            )
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"{key}: {exc}") from None
        if not len(train) and not len(held):
            raise ValueError(f"{key}: source {source!r} has no prompts")


def _recipe_with_overrides(path: str, overrides: list[tuple[list[str], Any]]) -> Any:
    from steering_adapter.run.recipe import read_recipe_yaml, recipe_from_dict

    return recipe_from_dict(apply_overrides(read_recipe_yaml(path), overrides))


def cmd_run(args: argparse.Namespace) -> int:
    from steering_adapter.measure.evaluation import adapter_report_markdown
    from steering_adapter.run.pipeline import NoFeasibleChoiceError, run_recipe
    from steering_adapter.utils import distributed

    overrides = list(args.set or [])
    if args.out:
        overrides.append((["output", "dir"], args.out))
    if args.backend:
        overrides.append((["sampling", "backend"], args.backend))
    recipe = _recipe_with_overrides(args.recipe, overrides)
    check_sources(recipe)
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
    from steering_adapter.measure.evaluation import EvalSet, evaluate
    from steering_adapter.run.recipe import JudgeSpec, Recipe
    from steering_adapter.run.stages.load import build_judge

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
    backend = args.backend or (sampling.backend if sampling is not None else "transformers")
    if backend == "vllm":
        import dataclasses

        from steering_adapter.runtimes.vllm.sampler import VllmSampler

        spec = base_model_spec(args.model, [args.adapter])
        if recipe is not None:
            spec = dataclasses.replace(recipe.model, name_or_path=spec.name_or_path, revision=spec.revision)
        spec = dataclasses.replace(spec, **_placement(args))
        engine = dict(sampling.engine_args or {}) if sampling is not None else {}
        model = VllmSampler.from_model_spec(spec, adapters=[{"path": args.adapter, "scale": args.scale}], **engine)
        tokenizer = model.tokenizer
    else:
        model, tokenizer = _load_model_and_adapters(
            args.model, [args.adapter], args.scale, recipe.model if recipe is not None else None, _placement(args)
        )
    relevance = None
    if not args.no_relevance and (recipe is None or recipe.relevance):
        from steering_adapter.measure.relevance import RelevanceScorer

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
    if backend == "vllm":
        model.close()
    print(report.to_markdown())
    print(f"report: {args.out}/report.md")
    return EXIT_OK


def _model_placement(recipe: Any, args: argparse.Namespace) -> Any:
    """The dtype and device a local judge model gets: the evaluated model's (recipe, then command-line options)."""
    import dataclasses

    from steering_adapter.run.recipe import ModelSpec

    return dataclasses.replace(recipe.model if recipe is not None else ModelSpec(), **_placement(args))


def _read_recipe(path: str) -> Any:
    from steering_adapter.run.recipe import load_recipe

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

    from steering_adapter.run.recipe import Recipe
    from steering_adapter.run.stages.inputs import resolve_prompts

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
    from steering_adapter.tuner.model import steering_disabled

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


RESET_COMMAND = "/reset"


def cmd_chat(args: argparse.Namespace) -> int:
    from steering_adapter.measure.judges.backends import TransformersJudgeBackend

    model, tokenizer = _load_model_and_adapters(args.model, args.adapter or [], args.scale, None, _placement(args))
    # greedy chat completion of the whole conversation (the same runner as a local judge model)
    runner = TransformersJudgeBackend(model, tokenizer, max_new_tokens=args.max_new_tokens, batch_size=1)
    print(
        f"steering-adapter chat: one message per line; the model sees the whole conversation. {RESET_COMMAND} "
        "starts a new one; an empty line or Ctrl-D quits.",
        file=sys.stderr,
    )
    history: list[dict[str, str]] = []
    for line in sys.stdin:
        message = line.strip()
        if not message:
            break
        if message == RESET_COMMAND:
            history = []
            print("(new conversation)", file=sys.stderr, flush=True)
            continue
        history.append({"role": "user", "content": message})
        answer = runner.complete(history).text or ""
        history.append({"role": "assistant", "content": answer})
        print(answer, flush=True)
    return EXIT_OK


def cmd_push(args: argparse.Namespace) -> int:
    from steering_adapter.adapter.hub import push_adapter

    print(push_adapter(args.adapter_dir, args.repo_id, private=args.private, token=args.token))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from steering_adapter.tuner.files import read_config_dict

    print(json.dumps(read_config_dict(args.adapter), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from steering_adapter.runtimes.export import export_adapter

    path = export_adapter(args.adapter, args.format, args.out, base_model=args.base, revision=args.revision)
    print(f"wrote {args.format} export: {path}")
    return EXIT_OK


def cmd_import_gguf(args: argparse.Namespace) -> int:
    from pathlib import Path

    from steering_adapter.runtimes.export import import_gguf

    out = args.out or str(Path(args.file).with_suffix("")) + "-steering-adapter"
    path = import_gguf(args.file, args.base, out, revision=args.revision, scale=args.scale)
    print(f"wrote steering adapter: {path}")
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
        help="torch CPU threads (default: $STEERING_ADAPTER_THREADS, else one per physical core that other processes "
        "do not keep busy)",
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
        type=parse_override,
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
    run.add_argument(
        "--backend", choices=["transformers", "vllm"], help="sampling backend (overrides sampling.backend)"
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
        "--set", action="append", type=parse_override, metavar="KEY.PATH=VALUE", help="override a recipe value"
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
    ev.add_argument(
        "--backend",
        choices=["transformers", "vllm"],
        help="sampling backend: the transformers model (default, or the recipe's) or a vLLM engine with the adapter",
    )
    _add_placement_options(ev)
    ev.set_defaults(func=cmd_eval)

    for name, func, text in (
        ("generate", cmd_generate, "answer prompts with adapters attached"),
        ("chat", cmd_chat, "interactive multi-turn chat (stdin, greedy) with adapters attached; /reset starts over"),
    ):
        gen = sub.add_parser(name, parents=[common], help=text, description=text.capitalize() + ".")
        if name == "generate":
            gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
            gen.add_argument("--compare", action="store_true", help="also print the base model's answer")
        gen.add_argument("--model", help="base model: 'organism', a Hub id or folder (default: from the adapter)")
        gen.add_argument("--adapter", action="append", help="adapter folder or repo id (repeatable; applied in order)")
        gen.add_argument("--scale", type=float, help="override every adapter's scale alpha")
        gen.add_argument("--max-new-tokens", type=int, default=96, help="answer length (default 96)")
        if name == "generate":
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

    export = sub.add_parser(
        "export",
        help="export an adapter for llama.cpp (gguf), stock PEFT (lora) or plain transformers (merged)",
        description="Write a steering adapter in another runtime's format: a llama.cpp control vector (gguf), a "
        "plain PEFT LoRA adapter (lora) or a transformers checkpoint with the shift folded into a bias (merged). "
        "Formats that cannot express the adapter exactly (ablate mode, gating, some architectures) are refused "
        "with the reason.",
    )
    export.add_argument("adapter", help="steering adapter folder or Hub repo id")
    export.add_argument("--format", required=True, choices=["gguf", "lora", "merged"], help="export format")
    export.add_argument("--out", required=True, help="output .gguf file (gguf) or folder (lora, merged)")
    export.add_argument("--base", help="base model to read (default: the adapter's base_model_name_or_path)")
    export.add_argument("--revision", help="Hub revision of the base model (default: the adapter's revision)")
    export.set_defaults(func=cmd_export)

    import_gguf = sub.add_parser(
        "import-gguf",
        help="turn a llama.cpp / repeng control vector into a steering adapter",
        description="Read a llama.cpp / repeng control vector (.gguf) and write a steering adapter: direction.N "
        "becomes the vector of block N (where llama.cpp adds it).",
    )
    import_gguf.add_argument("file", help="control vector .gguf file")
    import_gguf.add_argument("--base", required=True, help="its base model: Hub id, folder or 'organism'")
    import_gguf.add_argument("--out", help="adapter folder to write (default: FILE without .gguf + -steering-adapter)")
    import_gguf.add_argument("--scale", type=float, default=1.0, help="the adapter's scale alpha (default 1.0)")
    import_gguf.add_argument("--revision", help="Hub revision of the base model")
    import_gguf.set_defaults(func=cmd_import_gguf)
    return parser


def _check_launcher(command: str) -> None:
    """Only ``run`` splits its work over torchrun's processes; other commands would each do all of it.

    Raises:
        ValueError: another command started by torchrun with several processes.
    """
    from steering_adapter.utils.distributed import launched_by_torchrun

    if command != "run" and launched_by_torchrun():
        raise ValueError(
            f"`{command}` runs in one process; only `run` shares its work among torchrun's processes "
            "(start it without torchrun, or with --nproc-per-node 1)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``steering-adapter`` command; returns the process exit code."""
    from steering_adapter.adapter.hub import HubUnreachableError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "threads"):
            from steering_adapter.utils.threads import configure_threads

            configure_threads(args.threads)
        _check_launcher(args.command)
        return args.func(args)
    except HubUnreachableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
