"""Checks that the installed transformers / peft pair can load adapters together."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

# Tested pair. transformers >= 5.24 refuses most adapter calls unless peft >= 0.22.0, which is not released yet.
TESTED_PEFT = ">=0.21.2,<0.22"
TESTED_TRANSFORMERS = ">=5.0,<5.24"
MIN_PEFT = Version("0.21.2")


class IncompatibleVersionsError(ImportError):
    """Raised when the installed transformers and peft cannot load steering adapters together."""


def _installed(name: str) -> Version | None:
    try:
        return Version(version(name))
    except PackageNotFoundError:
        return None


def check_versions(transformers_version: str | None = None, peft_version: str | None = None) -> None:
    """Raise :class:`IncompatibleVersionsError` with a fix when the pair is known not to work.

    Args:
        transformers_version: version to check (the installed one by default).
        peft_version: version to check (the installed one by default).
    """
    tf = Version(transformers_version) if transformers_version else _installed("transformers")
    pf = Version(peft_version) if peft_version else _installed("peft")
    if tf is None or pf is None:
        missing = "transformers" if tf is None else "peft"
        raise IncompatibleVersionsError(f"steering-adapter needs {missing}; pip install 'steering-adapter'")
    if pf < MIN_PEFT:
        raise IncompatibleVersionsError(
            f"peft {pf} is too old for steering-adapter (needs peft{TESTED_PEFT}); pip install 'peft==0.21.2'"
        )
    if tf.major < 5:
        raise IncompatibleVersionsError(
            f"transformers {tf} is too old for steering-adapter (needs transformers{TESTED_TRANSFORMERS}); "
            "pip install 'transformers==5.23.*'"
        )
    if tf >= Version("5.24") and pf < Version("0.22.0"):
        raise IncompatibleVersionsError(
            f"transformers {tf} requires peft >= 0.22.0 for adapter calls, but peft {pf} is installed. "
            "Install the tested pair: pip install 'transformers==5.23.*' 'peft==0.21.2'"
        )
