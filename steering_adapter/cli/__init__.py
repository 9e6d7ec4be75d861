"""The ``steering-adapter`` console script (``python -m steering_adapter.cli`` runs the same)."""

from steering_adapter.cli.main import (
    EXIT_ERROR,
    EXIT_INFEASIBLE,
    EXIT_OK,
    EXIT_USAGE,
    apply_overrides,
    base_model_spec,
    build_parser,
    main,
    parse_override,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INFEASIBLE",
    "EXIT_OK",
    "EXIT_USAGE",
    "apply_overrides",
    "base_model_spec",
    "build_parser",
    "main",
    "parse_override",
]
