"""The ``steering-adapter`` console script: run recipes, evaluate, generate / chat with adapters, publish.

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


def _parse_override(text: str) -> tuple[list[str | int], Any]:
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
    revision it records (an adapter computed on the embedded organism loads the shipped organism)."""
    from .adapter_files import read_config_dict
    from .organism import is_organism
    from .recipes import ModelSpec

    if model_name is not None:
        return ModelSpec(name_or_path="organism" if is_organism(model_name) else model_name)
    if not adapters:
        raise ValueError("give --model or at least one --adapter (its config names the base model)")
    config = read_config_dict(adapters[0])
    name = config.get("base_model_name_or_path")
    if not name:
        raise ValueError(f"{adapters[0]}: the adapter config names no base model; give --model")
    if is_organism(name):
        return ModelSpec(name_or_path="organism")
    return ModelSpec(name_or_path=name, revision=config.get("revision") or None)


def _load_model_and_adapters(model_name: str | None, adapters: Sequence[str], scale: float | None):
    from .pipeline import load_model
    from .tuner.model import set_adapter_scale

    model, tokenizer = load_model(base_model_spec(model_name, adapters))
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


def check_sources(recipe) -> None:
    """Load every prompt source a recipe names, so a missing or empty one is reported before the model loads.

    Raises:
        ValueError: ``recipe.prompts.refusal[1]: prompt file 'x.txt' does not exist`` (the key and the problem).
    """
    from .pipeline import load_source
    from .recipes import recipe_sources

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


def cmd_run(args: argparse.Namespace) -> int:
    from .evaluation import adapter_report_markdown
    from .pipeline import NoFeasibleChoiceError, run_recipe
    from .recipes import read_recipe_yaml, recipe_from_dict

    data = read_recipe_yaml(args.recipe)
    overrides = list(args.set or [])
    if args.out:
        overrides.append((["output", "dir"], args.out))
    recipe = recipe_from_dict(apply_overrides(data, overrides))
    check_sources(recipe)
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
    from .recipes import JudgeSpec

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


RESET_COMMAND = "/reset"


def cmd_chat(args: argparse.Namespace) -> int:
    from .judges.backends import TransformersJudgeBackend

    model, tokenizer = _load_model_and_adapters(args.model, args.adapter or [], args.scale)
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
    ev.set_defaults(func=cmd_eval)

    for name, func, text in (
        ("generate", cmd_generate, "answer prompts with adapters attached"),
        ("chat", cmd_chat, "interactive multi-turn chat (stdin, greedy) with adapters attached; /reset starts over"),
    ):
        gen = sub.add_parser(name, help=text, description=text.capitalize() + ".")
        if name == "generate":
            gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
            gen.add_argument("--compare", action="store_true", help="also print the base model's answer")
        gen.add_argument("--model", help="base model: 'organism', a Hub id or folder (default: from the adapter)")
        gen.add_argument("--adapter", action="append", help="adapter folder or repo id (repeatable; applied in order)")
        gen.add_argument("--scale", type=float, help="override every adapter's scale alpha")
        gen.add_argument("--max-new-tokens", type=int, default=96, help="answer length (default 96)")
        if name == "generate":
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
    from .hub import HubUnreachableError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
