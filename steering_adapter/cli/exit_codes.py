"""The exit codes of the ``steering-adapter`` command.

0 success; 1 unexpected error; 2 bad command line, recipe or input; 3 the selection found no layer/α that meets the
recipe's constraints.
"""

from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INFEASIBLE = 0, 1, 2, 3

__all__ = ["EXIT_ERROR", "EXIT_INFEASIBLE", "EXIT_OK", "EXIT_USAGE"]
