"""The ``steering-adapter`` console script (``python -m steering_adapter.cli`` runs the same).

:func:`main` and :func:`build_parser` live in :mod:`.main`, the ``--set`` helpers in :mod:`.overrides`, the exit
codes in :mod:`.exit_codes`; each command group has its own module, imported when one of its commands runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steering_adapter.cli.exit_codes import EXIT_ERROR, EXIT_INFEASIBLE, EXIT_OK, EXIT_USAGE
from steering_adapter.cli.main import build_parser, main
from steering_adapter.cli.overrides import apply_overrides, parse_override
from steering_adapter.utils.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from steering_adapter.cli.model_loading import base_model_spec

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

# base_model_spec on first use: its module imports the recipe schema and the model loader (--help stays fast)
__getattr__, __dir__ = lazy_exports(__name__, {"base_model_spec": "model_loading"}, eager=__all__)
