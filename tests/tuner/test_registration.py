"""PEFT registration of STEERING: idempotent, and the enum extension works on Python 3.11-3.13."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

import peft
import pytest
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType

import steering_adapter
from steering_adapter.tuner import enum_members
from steering_adapter.utils.versions import (
    IncompatibleVersionsError,
    UntestedVersionsWarning,
    check_versions,
    version_problems,
    warn_untested_versions,
)


def test_registered_as_peft_method():
    member = PeftType.STEERING
    assert member == "STEERING" and PeftType("STEERING") is member and PeftType["STEERING"] is member
    assert PEFT_TYPE_TO_CONFIG_MAPPING[member] is steering_adapter.SteeringConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[member] is steering_adapter.SteeringModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[member] == "steering_"
    assert PEFT_TYPE_TO_CONFIG_MAPPING["STEERING"] is steering_adapter.SteeringConfig  # plain str lookups too


def test_registration_is_idempotent():
    before = list(PeftType)
    assert steering_adapter.register() is PeftType.STEERING
    importlib.reload(steering_adapter)
    assert list(PeftType) == before
    assert list(PeftType).count(PeftType.STEERING) == 1


_ENUM_CHECK = r"""
import enum, importlib.util, pickle, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec); sys.modules[name] = module
    spec.loader.exec_module(module); return module
peft_types = load("peft_types", sys.argv[1])
members = load("enum_members", sys.argv[2])
PeftType = peft_types.PeftType
count = len(PeftType)
m = members.add_enum_member(PeftType, "STEERING", "STEERING")
assert members.add_enum_member(PeftType, "STEERING", "STEERING") is m
assert len(PeftType) == count + 1 and list(PeftType)[-1] is m
assert PeftType.STEERING is m and PeftType("STEERING") is m and PeftType["STEERING"] is m
assert m == "STEERING" and m.value == "STEERING" and m.name == "STEERING" and "STEERING" in list(PeftType)
assert {m: 1}["STEERING"] == 1 and pickle.loads(pickle.dumps(m)) is m and isinstance(m, PeftType)
print("ok", sys.version_info[:2])
"""


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_enum_extension_on_python_versions(version):
    """Runs the extension on PEFT's real PeftType source under each interpreter (stdlib only, no torch)."""
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        python = sys.executable
    else:
        python = _pyenv_python(version) or shutil.which(f"python{version}")
    if python is None:
        pytest.skip(f"no python{version} interpreter on this machine")
    peft_types = os.path.join(os.path.dirname(peft.__file__), "utils", "peft_types.py")
    result = subprocess.run(
        [python, "-c", _ENUM_CHECK, peft_types, enum_members.__file__], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def _pyenv_python(version: str) -> str | None:
    root = os.path.expanduser("~/.pyenv/versions")
    if not os.path.isdir(root):
        return None
    for name in sorted(os.listdir(root), reverse=True):
        candidate = os.path.join(root, name, "bin", "python")
        if name.startswith(version + ".") and os.path.exists(candidate):
            return candidate
    return None


def test_enum_member_value_clash_is_an_error():
    import enum

    class Colour(str, enum.Enum):  # noqa: UP042  (same shape as PeftType)
        RED = "RED"

    with pytest.raises(RuntimeError, match="already has a member with value 'RED'"):
        enum_members.add_enum_member(Colour, "CRIMSON", "RED")


@pytest.mark.parametrize(
    ("transformers_version", "peft_version", "message"),
    [
        ("5.24.0", "0.21.2", "unless peft >= 0.22.0"),
        ("5.30.1", "0.21.2", "unless peft >= 0.22.0"),
        ("5.23.0", "0.20.0", "older than 0.21.2"),
        ("4.57.0", "0.21.2", "older than 5.0"),
    ],
)
def test_incompatible_versions_get_clear_message(transformers_version, peft_version, message):
    with pytest.raises(IncompatibleVersionsError, match=message):
        check_versions(transformers_version, peft_version)
    with pytest.warns(UntestedVersionsWarning, match=message) as record:
        assert warn_untested_versions(transformers_version, peft_version)
    assert len(record) == 1


def test_tested_pair_passes():
    check_versions("5.23.0", "0.21.2")
    check_versions("5.24.0", "0.22.0")
    check_versions()  # what is installed here
    assert version_problems("5.23.0", "0.21.2") == [] and version_problems() == []
    (problem,) = version_problems("5.24.0", "0.22.0")  # not known to fail, but not tested: one sentence
    assert problem.startswith("untested: transformers 5.24.0 (tested: transformers<5.24,>=5.0), peft 0.22.0")


@pytest.mark.parametrize(("fake", "expected"), [("5.30.1", "will fail: transformers 5.30.1"), ("5.23.0", None)])
def test_import_never_stops_on_versions(fake, expected):
    """A user on another transformers can still import the package: one warning, no exception."""
    code = (
        "import importlib.metadata as m, warnings\n"
        "real = m.version\n"
        f"m.version = lambda name: {fake!r} if name == 'transformers' else real(name)\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    import steering_adapter\n"
        "mine = [w for w in caught if issubclass(w.category, steering_adapter.UntestedVersionsWarning)]\n"
        "print(len(mine)); print(mine[0].message if mine else '')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    count, message = result.stdout.splitlines()[-2:]
    if expected is None:
        assert count == "0"
    else:
        assert count == "1" and expected in message and "peft >= 0.22.0" in message
