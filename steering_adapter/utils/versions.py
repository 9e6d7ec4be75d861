"""Which transformers / peft pairs are tested, and one warning at import when another pair is installed.

``import steering_adapter`` never stops on versions: outside the tested pair it emits a single
:class:`UntestedVersionsWarning` that says what is installed, what is tested, and what is known to fail, and the call
that truly cannot work raises there (transformers >= 5.24 refuses its adapter calls unless peft >= 0.22, for example).
:func:`check_versions` is the explicit, raising form, for scripts that want a hard stop.
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__version__ = "0.1.0"  # this package's version (pyproject.toml reads it from here)

# The tested pair (constraints.txt). transformers >= 5.24 refuses most adapter calls unless peft >= 0.22.0.
TESTED_TRANSFORMERS = SpecifierSet(">=5.0,<5.24")
TESTED_PEFT = SpecifierSet(">=0.21.2,<0.22")
MIN_PEFT = Version("0.21.2")
PINNED = "pip install 'transformers==5.23.*' 'peft==0.21.2'"


class IncompatibleVersionsError(ImportError):
    """Raised by :func:`check_versions` when the installed transformers and peft cannot load steering adapters."""


class UntestedVersionsWarning(UserWarning):
    """transformers or peft outside the tested pair: it may work; what is known to fail is named."""


def _installed(name: str) -> Version | None:
    try:
        return Version(version(name))
    except PackageNotFoundError:
        return None


def version_problems(transformers_version: str | None = None, peft_version: str | None = None) -> list[str]:
    """What is wrong with a transformers / peft pair, worst first (empty for a tested pair).

    Args:
        transformers_version: version to check (the installed one by default).
        peft_version: version to check (the installed one by default).

    Returns:
        Sentences naming each problem and its fix; known failures start with ``"will fail:"``.
    """
    tf = Version(transformers_version) if transformers_version else _installed("transformers")
    pf = Version(peft_version) if peft_version else _installed("peft")
    problems = []
    for name, installed in (("transformers", tf), ("peft", pf)):
        if installed is None:
            problems.append(f"will fail: {name} is not installed; pip install 'steering-adapter'")
    if tf is None or pf is None:
        return problems
    if tf >= Version("5.24") and pf < Version("0.22.0"):
        problems.append(
            f"will fail: transformers {tf} refuses adapter calls (load_adapter, from_pretrained of an adapter) unless "
            f"peft >= 0.22.0, and peft {pf} is installed; the tested pair: {PINNED}"
        )
    if pf < MIN_PEFT:
        problems.append(f"will fail: peft {pf} is older than {MIN_PEFT} (needs peft{TESTED_PEFT}); {PINNED}")
    if tf.major < 5:
        problems.append(f"will fail: transformers {tf} is older than 5.0 (needs transformers{TESTED_TRANSFORMERS})")
    untested = [
        f"{name} {installed} (tested: {name}{specifier})"
        for name, installed, specifier in (("transformers", tf, TESTED_TRANSFORMERS), ("peft", pf, TESTED_PEFT))
        if installed not in specifier
    ]
    if untested and not problems:
        problems.append(f"untested: {', '.join(untested)}; it may work; if it does not: {PINNED}")
    return problems


def warn_untested_versions(transformers_version: str | None = None, peft_version: str | None = None) -> bool:
    """Emit one :class:`UntestedVersionsWarning` when the pair is not the tested one (what ``import`` does).

    Returns:
        Whether a warning was emitted.
    """
    problems = version_problems(transformers_version, peft_version)
    if problems:
        warnings.warn("steering-adapter: " + " | ".join(problems), UntestedVersionsWarning, stacklevel=3)
    return bool(problems)


def check_versions(transformers_version: str | None = None, peft_version: str | None = None) -> None:
    """Raise :class:`IncompatibleVersionsError` when the pair is known not to work (``will fail:`` problems).

    Args:
        transformers_version: version to check (the installed one by default).
        peft_version: version to check (the installed one by default).
    """
    failures = [p for p in version_problems(transformers_version, peft_version) if p.startswith("will fail:")]
    if failures:
        raise IncompatibleVersionsError("; ".join(failure.removeprefix("will fail: ") for failure in failures))
