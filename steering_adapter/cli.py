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


def _base_model_of(adapter: str) -> str:
    """The base model an adapter's config names (``"organism"`` when it names none)."""
    from .adapter_files import read_config_dict

    return read_config_dict(adapter).get("base_model_name_or_path") or "organism"


def _load_model_and_adapters(model_name: str | None, adapters: Sequence[str], scale: float | None):
    from .pipeline import load_model
    from .recipes import ModelSpec
    from .tuner.model import set_adapter_scale

    if model_name is None:
        if not adapters:
            raise ValueError("give --model or at least one --adapter (its config names the base model)")
        model_name = _base_model_of(adapters[0])
    model, tokenizer = load_model(ModelSpec(name_or_path=model_name))
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


def cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from .evaluation import adapter_report_markdown
    from .pipeline import NoFeasibleChoiceError, run_recipe
    from .recipes import recipe_from_dict

    with open(args.recipe, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{args.recipe}: a recipe must be a YAML mapping")
    overrides = list(args.set or [])
    if args.out:
        overrides.append((["output", "dir"], args.out))
    if args.backend:
        overrides.append((["sampling", "backend"], args.backend))
    recipe = recipe_from_dict(apply_overrides(data, overrides))
    try:
        result = run_recipe(recipe, progress=not args.no_progress)
    except NoFeasibleChoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
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
    from .recipes import JudgeSpec, ModelSpec

    if args.backend == "vllm":
        from .vllm.sampler import VllmSampler

        spec = ModelSpec(name_or_path=args.model or _base_model_of(args.adapter))
        model = VllmSampler.from_model_spec(spec, adapters=[{"path": args.adapter, "scale": args.scale}])
        tokenizer = model.tokenizer
    else:
        model, tokenizer = _load_model_and_adapters(args.model, [args.adapter], args.scale)
    sets = []
    for text in args.sets:
        parts = text.split("=", 1)
        if len(parts) != 2 or ":" not in parts[1]:
            raise ValueError(f"--sets expects NAME=SOURCE:ROLE, got {text!r}")
        source, role = parts[1].rsplit(":", 1)
        sets.append(EvalSet(parts[0], _prompts(source, args.limit), role))
    kl = _prompts(args.kl_prompts, args.limit) if args.kl_prompts else None
    relevance = None
    if not args.no_relevance:
        from .relevance import RelevanceScorer

        relevance = RelevanceScorer()
    report = evaluate(
        model,
        tokenizer,
        sets,
        build_judge(JudgeSpec(kind=args.judge)),
        args.out,
        kl_prompts=kl,
        relevance=relevance,
        progress=not args.no_progress,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    if args.backend == "vllm":
        model.close()
    print(report.to_markdown())
    print(f"report: {args.out}/report.md")
    return EXIT_OK


def _prompts(source: str, limit: int | None) -> list[str]:
    """Held-out prompts of a source (see :func:`steering_adapter.pipeline.load_source`)."""
    from .pipeline import load_source

    prompts = load_source(source)[1].prompts
    if not prompts:
        raise ValueError(f"no held-out prompts in {source!r}")
    return prompts[:limit]


def cmd_generate(args: argparse.Namespace) -> int:
    from .tuner.model import steering_disabled

    model, tokenizer = _load_model_and_adapters(args.model, args.adapter or [], args.scale)
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
    model, tokenizer = _load_model_and_adapters(args.model, args.adapter or [], args.scale)
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

    run = sub.add_parser(
        "run",
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
        "--backend", choices=["transformers", "vllm"], help="sampling backend (overrides sampling.backend)"
    )
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser(
        "eval",
        help="evaluate an existing adapter against its base model on prompt sets",
        description="Score prompt sets with steering off and on; write report.json / report.md and plots.",
    )
    ev.add_argument("adapter", help="adapter folder or Hub repo id")
    ev.add_argument("--model", help="base model (default: the adapter's base_model_name_or_path)")
    ev.add_argument(
        "--sets",
        nargs="+",
        required=True,
        metavar="NAME=SOURCE:ROLE",
        help="sets to score, e.g. political=organism:political:target jbb=jbb_harmful:harmful "
        "xstest=xstest_safe:benign (roles: target, harmful, benign, other)",
    )
    ev.add_argument("--kl-prompts", help="source of neutral prompts for the KL divergence")
    ev.add_argument("--judge", choices=["pattern"], default="pattern", help="judge (LLM judges: use a recipe)")
    ev.add_argument("--scale", type=float, help="override the adapter's scale alpha")
    ev.add_argument("--k", type=int, default=3, help="answers per prompt (default 3)")
    ev.add_argument("--max-new-tokens", type=int, default=64, help="answer length (default 64)")
    ev.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ev.add_argument("--limit", type=int, help="at most this many prompts per set")
    ev.add_argument("--no-relevance", action="store_true", help="skip answer relevance")
    ev.add_argument("--out", default="runs/eval", help="output folder (default runs/eval)")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ev.add_argument(
        "--backend",
        choices=["transformers", "vllm"],
        default="transformers",
        help="sampling backend: the transformers model (default) or a vLLM engine with the adapter attached",
    )
    ev.set_defaults(func=cmd_eval)

    for name, func, text in (
        ("generate", cmd_generate, "answer prompts with adapters attached"),
        ("chat", cmd_chat, "interactive chat (stdin) with adapters attached"),
    ):
        gen = sub.add_parser(name, help=text, description=text.capitalize() + ".")
        if name == "generate":
            gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
            gen.add_argument("--compare", action="store_true", help="also print the base model's answer")
        gen.add_argument("--model", help="base model: 'organism', a Hub id or folder (default: from the adapter)")
        gen.add_argument("--adapter", action="append", help="adapter folder or repo id (repeatable; applied in order)")
        gen.add_argument("--scale", type=float, help="override every adapter's scale alpha")
        gen.add_argument("--max-new-tokens", type=int, default=96, help="answer length (default 96)")
        gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
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
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
