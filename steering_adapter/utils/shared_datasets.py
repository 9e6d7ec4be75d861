"""Where the shared prompt sets and benchmarks live: ``$STEERING_ADAPTER_DATASETS`` or ``../shared/datasets``."""

from __future__ import annotations

import os
from pathlib import Path

DATASETS_ENV = "STEERING_ADAPTER_DATASETS"

__all__ = ["DATASETS_ENV", "default_datasets_dir"]


def default_datasets_dir() -> Path:
    """``$STEERING_ADAPTER_DATASETS`` if set, else ``<checkout>/../shared/datasets`` (beside a source checkout).

    An installed package (a wheel in ``site-packages``) has no checkout beside it: set the variable there.
    """
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
