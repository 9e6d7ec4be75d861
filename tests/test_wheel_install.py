"""The package as users install it: the sdist and wheel that ``python -m build`` makes, ``twine check`` on both, and
the wheel installed into a fresh virtual environment, used from a folder outside the checkout (the README's main
job, the ``load_adapter`` / ``PeftModel`` flows, every module importable).

Nothing is downloaded: the wheel is built without build isolation (this environment's setuptools) and installed with
``--no-index --no-deps``; its dependencies come from this environment's site-packages, listed as a plain line of a
``.pth`` file in the fresh environment. A plain line adds the folder to ``sys.path`` without running the ``.pth``
files inside it, so this checkout's editable install stays inactive there and ``steering_adapter`` resolves to the
wheel's copy (checked). A module or data file the wheel lacks (once: the ``run.stages`` package) fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from steering_adapter.utils.shared_datasets import DATASETS_ENV, default_datasets_dir
from steering_adapter.utils.versions import __version__

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parents[1]
CHECKS = Path(__file__).resolve().parent / "helpers" / "installed_checks.py"
PACKAGE = "steering_adapter"
DIST_INFO = f"{PACKAGE}-{__version__}.dist-info"
# What .gitignore leaves out of a clean clone (and the git folder): not copied into the build tree.
NOT_SOURCE = (".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache")
NOT_SOURCE += ("runs", "outputs", ".ci-reports")
URLS = ("Homepage", "Documentation", "Source", "Issues")


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800):
    """Run ``command``; fail the test with its output when it exits non-zero (a safety net for a hung command:
    on a busy shared machine the main job takes many times its 49 s)."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n"
            f"--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    """A copy of the checkout as a clean clone has it (building must not write build/ or egg-info into it)."""
    tree = tmp_path_factory.mktemp("source") / "steering-adapter"
    shutil.copytree(CHECKOUT, tree, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return tree


@pytest.fixture(scope="module")
def dist(source_tree, tmp_path_factory) -> dict[str, Path]:
    """``python -m build``: the sdist, then the wheel built from that sdist (so the sdist must be complete)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source_tree)], cwd=out)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


def test_twine_check_is_clean(dist):
    result = run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dist["sdist"]), str(dist["wheel"])], cwd=CHECKOUT
    )
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_holds_every_package_and_data_file_and_nothing_else(dist, source_tree):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    source = source_tree / PACKAGE
    files = {f"{PACKAGE}/{path.relative_to(source).as_posix()}" for path in source.rglob("*") if path.is_file()}
    packages = {name for name in files if name.endswith("/__init__.py")}
    assert {f"{PACKAGE}/run/stages/__init__.py", f"{PACKAGE}/models/organism/weights/model.safetensors"} <= files
    # every package (found automatically, none listed by hand), every module and every data file the package reads
    # beside its modules: the organism, the SmolLM2 overlay, the model READMEs, the model-card template, the labeled
    # answers of the judges
    assert sorted(packages - names) == []
    assert sorted(files - names) == []
    # nothing else: no tests, scripts or recipes; the license in the dist-info
    assert sorted(name for name in names - files if not name.startswith(f"{DIST_INFO}/")) == []
    assert f"{DIST_INFO}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(dist["wheel"]).read(f"{DIST_INFO}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert all(f"Project-URL: {url}, https://" in metadata for url in URLS)
    assert "Classifier: Programming Language :: Python :: 3" in metadata


def test_sdist_holds_the_package_license_and_build_files(dist, source_tree):
    with tarfile.open(dist["sdist"]) as sdist:
        top, *_ = sdist.getnames()[0].split("/")
        names = {name.removeprefix(f"{top}/") for name in sdist.getnames()}
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= names
    source = source_tree / PACKAGE
    files = {f"{PACKAGE}/{path.relative_to(source).as_posix()}" for path in source.rglob("*") if path.is_file()}
    assert sorted(files - names) == []


@pytest.fixture(scope="module")
def fresh_venv(dist, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed offline; its dependencies are this environment's."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    python = venv / "bin" / "python"
    # this environment's pip installs into the fresh one (--python); nothing is fetched
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index", "--no-deps"]
        + [str(dist["wheel"])],
        cwd=venv.parent,
    )
    fresh_site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv.parent)
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(fresh_site.stdout.strip()) / "_steering_adapter_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    return venv


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A working folder outside the checkout."""
    folder = tmp_path_factory.mktemp("outside")
    assert not folder.resolve().is_relative_to(CHECKOUT)
    return folder


@pytest.fixture(scope="module")
def user_env() -> dict[str, str]:
    """The environment of a user's shell: offline Hub, the shared datasets, no PYTHONPATH into the checkout."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update({DATASETS_ENV: str(default_datasets_dir()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def test_installed_package_is_the_wheel_copy(fresh_venv, outside, user_env):
    result = run([str(fresh_venv / "bin" / "python"), str(CHECKS), "where"], cwd=outside, env=user_env)
    folder = Path(last_json(result.stdout)["folder"])
    assert folder.is_relative_to(fresh_venv.resolve()) and not folder.is_relative_to(CHECKOUT)


def test_every_installed_module_imports(fresh_venv, outside, user_env):
    result = run([str(fresh_venv / "bin" / "python"), str(CHECKS), "imports"], cwd=outside, env=user_env)
    report = last_json(result.stdout)
    assert report["failed"] == []
    assert {f"{PACKAGE}.cli", f"{PACKAGE}.run.stages.publish", f"{PACKAGE}.runtimes.vllm.adapters"} <= set(
        report["imported"]
    )
    assert f"{PACKAGE}.cli.__main__" in report["skipped"]


@pytest.fixture(scope="module")
def main_job(fresh_venv, outside, user_env) -> Path:
    """The README's main job with the installed console script, from outside the checkout."""
    out = outside / "run"
    command = [
        str(fresh_venv / "bin" / "steering-adapter"),
        "run",
        str(CHECKOUT / "recipes" / "no-political-refusal.yaml"),
    ]
    run([*command, "--out", str(out), "--threads", "2"], cwd=outside, env=user_env, timeout=3600)
    return out


def test_readme_main_job_runs_from_the_wheel(main_job):
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert (main_job / "adapter" / name).is_file(), name
    assert (main_job / "report.md").is_file()
    config = json.loads((main_job / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "STEERING" and config["base_model_name_or_path"] == "steering-adapter:organism"


def test_load_adapter_and_peft_flows_from_the_wheel(main_job, fresh_venv, outside, user_env):
    adapter = str(main_job / "adapter")
    result = run([str(fresh_venv / "bin" / "python"), str(CHECKS), "flows", adapter], cwd=outside, env=user_env)
    tokens = last_json(result.stdout)
    assert tokens["load_adapter"] == tokens["peft"]  # transformers and PEFT load the same adapter
    assert tokens["peft"] != tokens["base"], tokens  # and the steering changes the answer
