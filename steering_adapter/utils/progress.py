"""``--no-progress``: silence every progress bar of the process and of the processes it starts."""

from __future__ import annotations

import os

__all__ = ["disable_progress_bars"]


def disable_progress_bars() -> None:
    """Hide transformers' bars ("Loading weights", ...), huggingface_hub's download bars and, in processes started
    from here (a vLLM engine's workers), tqdm's.

    This package's own bars follow the ``progress`` argument of each stage; transformers and huggingface_hub draw
    theirs unless told globally, which this does (for the rest of the process).
    """
    from huggingface_hub.utils import disable_progress_bars as disable_hub_bars  # lazy: --help stays fast
    from transformers.utils import logging as transformers_logging  # lazy: --help stays fast

    transformers_logging.disable_progress_bar()
    disable_hub_bars()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub when a child process imports it
    os.environ["TQDM_DISABLE"] = "1"  # tqdm's default for `disable` in child processes
