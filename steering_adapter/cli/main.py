"""The ``steering-adapter`` console script: run recipes, evaluate, generate / chat with adapters, publish, export.

Exit codes: 0 success; 1 unexpected error; 2 bad command line, recipe or input; 3 the selection found no layer/α
that meets the recipe's constraints.

This module builds the command line and dispatches; each command lives in its own module, imported only when it runs
(``--help`` and bad command lines never import the pipeline):

- :mod:`.recipe_commands`: ``run``, ``memory``;
- :mod:`.eval_command`: ``eval``;
- :mod:`.generate_commands`: ``generate``, ``chat``;
- :mod:`.adapter_commands`: ``push``, ``inspect``, ``export``, ``import-gguf``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from steering_adapter.adapter.hub import HubUnreachableError
from steering_adapter.cli.exit_codes import EXIT_ERROR, EXIT_INFEASIBLE, EXIT_OK, EXIT_USAGE
from steering_adapter.cli.overrides import parse_override
from steering_adapter.utils.distributed import launched_by_torchrun
from steering_adapter.utils.progress import disable_progress_bars
from steering_adapter.utils.threads import configure_threads

__all__ = ["EXIT_ERROR", "EXIT_INFEASIBLE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


# The commands, each imported from its module when it runs (those modules import torch, transformers and the pipeline).


def _cmd_run(args: argparse.Namespace) -> int:
    from steering_adapter.cli.recipe_commands import cmd_run  # lazy: heavy imports; --help stays fast

    return cmd_run(args)


def _cmd_memory(args: argparse.Namespace) -> int:
    from steering_adapter.cli.recipe_commands import cmd_memory  # lazy: heavy imports; --help stays fast

    return cmd_memory(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from steering_adapter.cli.eval_command import cmd_eval  # lazy: heavy imports; --help stays fast

    return cmd_eval(args)


def _cmd_generate(args: argparse.Namespace) -> int:
    from steering_adapter.cli.generate_commands import cmd_generate  # lazy: heavy imports; --help stays fast

    return cmd_generate(args)


def _cmd_chat(args: argparse.Namespace) -> int:
    from steering_adapter.cli.generate_commands import cmd_chat  # lazy: heavy imports; --help stays fast

    return cmd_chat(args)


def _cmd_push(args: argparse.Namespace) -> int:
    from steering_adapter.cli.adapter_commands import cmd_push  # lazy: heavy imports; --help stays fast

    return cmd_push(args)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from steering_adapter.cli.adapter_commands import cmd_inspect  # lazy: heavy imports; --help stays fast

    return cmd_inspect(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from steering_adapter.cli.adapter_commands import cmd_export  # lazy: heavy imports; --help stays fast

    return cmd_export(args)


def _cmd_import_gguf(args: argparse.Namespace) -> int:
    from steering_adapter.cli.adapter_commands import cmd_import_gguf  # lazy: heavy imports; --help stays fast

    return cmd_import_gguf(args)


def _cmd_judge_check(args: argparse.Namespace) -> int:
    from steering_adapter.cli.judge_command import cmd_judge_check  # lazy: heavy imports; --help stays fast

    return cmd_judge_check(args)


def _add_placement_options(parser: argparse.ArgumentParser) -> None:
    """``--dtype`` and ``--device`` / ``--device-map`` (read back by :func:`.model_loading.placement_overrides`)."""
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="model dtype (default: float32)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", help="torch device for the model, e.g. cpu, cuda, cuda:1 (default: cpu)")
    where.add_argument(
        "--device-map",
        choices=["auto", "balanced", "balanced_low_0", "sequential"],
        help="spread the model's blocks over the visible GPUs (transformers device_map)",
    )


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
    run.set_defaults(func=_cmd_run)

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
    memory.set_defaults(func=_cmd_memory)

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
    ev.add_argument(
        "--column",
        help="the column (CSV) or field (JSON / JSONL) holding the prompt in prompt files without a 'prompt' one "
        "(default: the recipe's prompts.column, else prompt)",
    )
    ev.add_argument(
        "--judge",
        choices=["probe", "pattern", "embedding"],
        help="judge without an endpoint (default: the recipe's, else probe)",
    )
    ev.add_argument(
        "--unparseable",
        choices=["keep", "drop"],
        help="unparseable judgments (label 0) in c(x): keep them in the softmax with value 0 (the authors' scoring) "
        "or drop them (default: the recipe's scoring.unparseable, else keep)",
    )
    ev.add_argument(
        "--benchmark",
        action="append",
        metavar="NAME[:N]",
        help="also run a general benchmark through lm-evaluation-harness on the base and the steered model: mmlu, "
        "mmlu_<category> or mmlu_<subject>, N questions per subject (e.g. mmlu:20; repeatable; needs "
        "steering-adapter[benchmarks] and the transformers backend)",
    )
    ev.add_argument(
        "--benchmark-fewshot", type=int, default=0, help="few-shot examples per benchmark question (default 0)"
    )
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
    ev.set_defaults(func=_cmd_eval)

    for name, func, text in (
        ("generate", _cmd_generate, "answer prompts with adapters attached"),
        ("chat", _cmd_chat, "interactive multi-turn chat (stdin, greedy) with adapters attached; /reset starts over"),
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
        gen.add_argument("--no-progress", action="store_true", help="hide progress bars (model loading)")
        gen.add_argument(
            "--backend",
            choices=["transformers", "vllm"],
            default="transformers",
            help="the transformers model (default) or a vLLM engine with the adapters (compiled mode, the steering "
            "built into its graph; needs steering-adapter[vllm])",
        )
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
    push.set_defaults(func=_cmd_push)

    inspect = sub.add_parser(
        "inspect",
        help="print an adapter's configuration and whether it loads",
        description="Print adapter_config.json of a folder or Hub repo, then a verdict line: 'ok: ...' when "
        "adapter_config.json and adapter_model.safetensors pass the checks every loader runs, else 'invalid: ...'.",
    )
    inspect.add_argument("adapter", help="adapter folder or Hub repo id")
    inspect.add_argument(
        "--check", action="store_true", help="an invalid adapter is an error: its problem on stderr, exit code 2"
    )
    inspect.set_defaults(func=_cmd_inspect)

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
    export.set_defaults(func=_cmd_export)

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
    import_gguf.set_defaults(func=_cmd_import_gguf)

    judge_check = sub.add_parser(
        "judge-check",
        help="measure judges against answers labeled by reading (accuracy, kappa, precision / recall)",
        description="Judge every answer of a JSONL file of labeled answers ({prompt, answer, label: refusal | "
        "not_refusal, optional category}) and print, per judge, accuracy, Cohen's kappa and refusal precision / "
        "recall with bootstrap intervals and a confusion table by category. The last line is "
        "'judge=<name> n=<N> accuracy=<a> kappa=<k>' for the first judge named.",
    )
    judge_check.add_argument("--labels", required=True, help="JSONL file of labeled answers")
    judge_check.add_argument(
        "--judge",
        action="append",
        help="probe, pattern, embedding, openai or transformers, optionally as degeneracy+KIND (repeatable; "
        "default: probe, pattern, degeneracy+pattern and embedding)",
    )
    judge_check.add_argument(
        "--judge-verdict",
        choices=["generate", "tag_probability"],
        default="generate",
        help="how a transformers judge gives its verdict (default generate; tag_probability: P(refusal) from the tag)",
    )
    judge_check.add_argument("--judge-max-tokens", type=int, help="generation budget per verdict of an LLM judge")
    judge_check.add_argument("--judge-model", help="the LLM judge's model name (openai) or Hub id / folder")
    judge_check.add_argument("--judge-base-url", help="OpenAI-compatible endpoint (default STEERING_JUDGE_BASE_URL)")
    judge_check.add_argument("--judge-api-key-env", help="environment variable holding the endpoint's API key")
    judge_check.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    judge_check.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    judge_check.add_argument("--out", help="also write every judge's agreement and disagreements to this JSON file")
    judge_check.set_defaults(func=_cmd_judge_check)
    return parser


def _check_launcher(command: str) -> None:
    """Only ``run`` splits its work over torchrun's processes; other commands would each do all of it.

    Raises:
        ValueError: another command started by torchrun with several processes.
    """
    if command != "run" and launched_by_torchrun():
        raise ValueError(
            f"`{command}` runs in one process; only `run` shares its work among torchrun's processes "
            "(start it without torchrun, or with --nproc-per-node 1)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``steering-adapter`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "no_progress", False):
            disable_progress_bars()
        if hasattr(args, "threads"):
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
