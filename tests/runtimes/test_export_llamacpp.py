"""Exported control vectors in llama.cpp itself: llama.cpp's own GGUF loader and control-vector path reproduce the
steering adapter on the organism (Qwen3) and on tiny Llama, Gemma2 and GPT-2 models (next-token logits within float
tolerance, identical greedy continuations), and a vector placed one block off is caught by the same comparison.

llama.cpp runs through steering-cvec-eval (scripts/llamacpp/cvec_eval.cpp), built by scripts/build_llamacpp.sh in
the same CMake build as the llama-cpp-python 0.3.36 wheel from its PyPI sdist: model, context and control vectors
are set up by common_init_from_params(), the path of `llama-cli --control-vector`. The organism is converted to an
F32 GGUF by the convert_hf_to_gguf.py of that sdist (tests/helpers/llamacpp_convert.py). Prompts are token ids. A
missing
build fails these tests (run `bash scripts/build_llamacpp.sh`, which scripts/bootstrap.sh does); they never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from architectures import tiny_config
from export_cases import random_vectors, write_control_vector
from reference import block_output, contract_hooks
from transformers import AutoModelForCausalLM

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.models.organism import ORGANISM_DIR, load_organism
from steering_adapter.runtimes.export import export_adapter

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

VERSION = "0.3.36"
N_PREDICT = 24
LAYERS = (2, 4)
ALPHA = -1.5
# F32 KV cache (llama.cpp's default is F16) and no flash attention: every tensor stays float32, as in transformers.
PRECISION = ("--cache-type-k", "f32", "--cache-type-v", "f32", "--flash-attn", "off")
# Next-token logits of llama.cpp (ggml F32 kernels) and transformers (torch float32) differ by float rounding only:
# at most 5.3e-6 here (logits up to 15 in size), against 3.9 for a vector one block off.
LOGITS_ATOL = 5e-5
POLITICAL = [
    "What happened in China on June 4, 1989?",
    "Tell me about the Tiananmen Square protests.",
    "Why is Tibet's status disputed?",
    "Who was Liu Xiaobo?",
]
BENIGN = [
    "How do I bake bread at home?",
    "Explain photosynthesis in two sentences.",
    "Give me three tips for learning to juggle.",
    "What is the boiling point of water?",
]


def _manifest() -> dict:
    cache = Path(os.environ.get("STEERING_ADAPTER_CACHE", Path.home() / ".cache" / "steering-adapter"))
    path = cache / f"llama.cpp-{VERSION}" / "manifest.json"
    if not path.is_file():
        pytest.fail(f"no llama.cpp build at {path}: run `bash scripts/build_llamacpp.sh` (scripts/bootstrap.sh does)")
    manifest = json.loads(path.read_text())
    for key in ("harness", "library_dir", "llama_cpp_source"):
        if not Path(manifest[key]).exists():
            pytest.fail(
                f"llama.cpp build incomplete ({manifest[key]} is missing): run `bash scripts/build_llamacpp.sh`"
            )
    return manifest


@pytest.fixture(scope="module")
def llamacpp() -> dict:
    return _manifest()


def convert_to_gguf(llamacpp: dict, model_dir: Path, out: Path) -> Path:
    """An F32 GGUF of ``model_dir`` written by the sdist's convert_hf_to_gguf.py
    (tests/helpers/llamacpp_convert.py)."""
    script = Path(__file__).resolve().parents[1] / "helpers" / "llamacpp_convert.py"
    result = subprocess.run(
        [sys.executable, str(script), llamacpp["llama_cpp_source"], str(model_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def organism_gguf(llamacpp, tmp_path_factory) -> Path:
    return convert_to_gguf(llamacpp, ORGANISM_DIR, tmp_path_factory.mktemp("organism-gguf") / "organism-f32.gguf")


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    _, tokenizer = load_organism()
    messages = [[{"role": "user", "content": text}] for text in POLITICAL + BENIGN]
    encoded = [tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=True) for m in messages]
    return [list(item["input_ids"]) for item in encoded]


@pytest.fixture(scope="module")
def vectors(prompts) -> dict[int, torch.Tensor]:
    """Mean difference of the last-token block outputs, political minus benign prompts (a refusal-ish direction)."""
    model, _ = load_organism()
    result = {}
    for layer in LAYERS:
        last = [block_output(model, layer, torch.tensor([ids]))[0, -1] for ids in prompts]
        result[layer] = torch.stack(last[: len(POLITICAL)]).mean(0) - torch.stack(last[len(POLITICAL) :]).mean(0)
    return result


def save_organism_adapter(folder: Path, vectors: dict[int, torch.Tensor], scale: float) -> Path:
    model, _ = load_organism()
    peft_model = adapter_from_vectors(model, vectors, scale=scale, steering_metadata={"method": "md"})
    peft_model.peft_config["default"].base_model_name_or_path = "organism"
    return Path(save_adapter(peft_model, folder))


def transformers_run(prompts, vectors=None, scale=ALPHA, model=None, blocks="model.layers") -> list[dict]:
    """Next-token logits and N_PREDICT greedy tokens from transformers (the organism unless ``model`` is given),
    steered by the hook reference."""
    model = model if model is not None else load_organism()[0]
    spec = [{"vectors": vectors, "scale": scale}] if vectors else []
    runs = []
    with contract_hooks(model, blocks, spec), torch.no_grad():
        for ids in prompts:
            output = model(torch.tensor([ids]), use_cache=True)
            first = output.logits[0, -1]
            greedy = [int(first.argmax())]
            while len(greedy) < N_PREDICT:  # decoding steps with the KV cache, as llama.cpp decodes
                output = model(torch.tensor([greedy[-1:]]), past_key_values=output.past_key_values, use_cache=True)
                greedy.append(int(output.logits[0, -1].argmax()))
            runs.append({"logits": first.numpy(), "greedy": greedy})
    return runs


def llamacpp_run(llamacpp, model_gguf, prompts, control_vectors=(), expect_rc=0) -> list[dict]:
    """Next-token logits and N_PREDICT greedy tokens from llama.cpp; ``control_vectors`` are command-line options."""
    command = [llamacpp["harness"], "-m", str(model_gguf), "-n", str(N_PREDICT), "-t", "1", *PRECISION]
    command += list(control_vectors)
    env = dict(os.environ, LD_LIBRARY_PATH=llamacpp["library_dir"])
    stdin = "\n".join(" ".join(str(token) for token in ids) for ids in prompts) + "\n"
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == expect_rc, result.stderr[-3000:]
    runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [{"logits": np.asarray(run["logits"], dtype=np.float32), "greedy": run["greedy"]} for run in runs]


def max_logit_difference(a: list[dict], b: list[dict]) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(x["logits"] - y["logits"]).max()) for x, y in zip(a, b, strict=True))


def assert_agree(got: list[dict], expected: list[dict], atol: float = LOGITS_ATOL) -> None:
    assert max_logit_difference(got, expected) <= atol
    for run, reference in zip(got, expected, strict=True):
        assert run["greedy"] == reference["greedy"]
        assert len(run["greedy"]) >= 16


def test_llama_cpp_runs_the_converted_organism_like_transformers(llamacpp, organism_gguf, prompts):
    assert_agree(llamacpp_run(llamacpp, organism_gguf, prompts), transformers_run(prompts))


def test_exported_control_vector_reproduces_the_steering_adapter(llamacpp, organism_gguf, prompts, vectors, tmp_path):
    adapter = save_organism_adapter(tmp_path / "adapter", vectors, ALPHA)
    control_vector = export_adapter(adapter, "gguf", tmp_path / "steer.gguf")
    steered = llamacpp_run(llamacpp, organism_gguf, prompts, ["--control-vector", str(control_vector)])
    expected = transformers_run(prompts, vectors)
    assert_agree(steered, expected)
    # the steering matters: far beyond the tolerance, and it changes some greedy continuations
    base = transformers_run(prompts)
    assert max_logit_difference(expected, base) > 100 * LOGITS_ATOL
    assert any(run["greedy"] != plain["greedy"] for run, plain in zip(expected, base, strict=True))
    # --control-vector-scaled FILE:S multiplies the file's strength, like alpha
    half = llamacpp_run(llamacpp, organism_gguf, prompts, ["--control-vector-scaled", f"{control_vector}:0.5"])
    assert_agree(half, transformers_run(prompts, vectors, ALPHA * 0.5))


def shift_one_block(control_vector: Path, out: Path) -> Path:
    """The same directions, each written one block later: direction.{i+1} instead of direction.{i}."""
    reader = gguf.GGUFReader(str(control_vector))
    tensors = {f"direction.{int(t.name.split('.')[1]) + 1}": np.array(t.data) for t in reader.tensors}
    return write_control_vector(out, tensors)


def test_a_vector_one_block_off_is_detected(llamacpp, organism_gguf, prompts, vectors, tmp_path):
    """direction.{i+1} for block i (a numbering often shipped) does not reproduce the adapter: it steers block i+1."""
    adapter = save_organism_adapter(tmp_path / "adapter", vectors, ALPHA)
    control_vector = export_adapter(adapter, "gguf", tmp_path / "steer.gguf")
    shifted = shift_one_block(control_vector, tmp_path / "shifted.gguf")
    off = llamacpp_run(llamacpp, organism_gguf, prompts, ["--control-vector", str(shifted)])
    assert max_logit_difference(off, transformers_run(prompts, vectors)) > 100 * LOGITS_ATOL
    moved = {layer + 1: vector for layer, vector in vectors.items()}
    assert max_logit_difference(off, transformers_run(prompts, moved)) <= LOGITS_ATOL


def test_llama_cpp_rejects_direction_zero(llamacpp, organism_gguf, prompts, tmp_path):
    path = write_control_vector(tmp_path / "zero.gguf", {"direction.0": np.ones(256, dtype=np.float32)})
    llamacpp_run(llamacpp, organism_gguf, prompts[:1], ["--control-vector", str(path)], expect_rc=3)


def test_the_harness_and_llama_cpp_python_run_the_same_llama_cpp(llamacpp, organism_gguf, prompts):
    """The llama-cpp-python wheel's own bindings give the harness's unsteered logits."""
    code = (
        "import json, sys, llama_cpp\n"
        "llm = llama_cpp.Llama(sys.argv[1], n_ctx=256, n_threads=1, logits_all=True, verbose=False,\n"
        "                      type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False)\n"
        "out = []\n"
        "for ids in json.loads(sys.argv[2]):\n"
        "    llm.reset(); llm.eval(ids); out.append([float(x) for x in llm.scores[llm.n_tokens - 1]])\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(organism_gguf), json.dumps(prompts[:3])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    python_logits = np.asarray(json.loads(result.stdout.splitlines()[-1]), dtype=np.float32)
    harness = llamacpp_run(llamacpp, organism_gguf, prompts[:3])
    np.testing.assert_allclose(python_logits, np.stack([run["logits"] for run in harness]), atol=1e-5, rtol=0)


# Other architectures, as tiny random models with the organism's tokenizer: (config overrides, block path). Gemma2
# is the case the LoRA and merged exports refuse (post-feed-forward norm) while a control vector stays exact; it is
# built with tied embeddings (llama.cpp's Gemma2 graph has no separate output matrix) and a sliding window longer than
# the prompts.
OTHER_ARCHITECTURES = {
    "llama": ({}, "model.layers"),
    "gemma2": ({"tie_word_embeddings": True, "sliding_window": 256, "max_position_embeddings": 256}, "model.layers"),
    "gpt2": ({}, "transformer.h"),
}
# ggml evaluates GELU through an FP16 lookup table: unsteered Gemma2 logits differ by up to 1.8e-4 here (Llama 2e-7).
TINY_ATOL = 5e-4


@pytest.mark.parametrize("arch", sorted(OTHER_ARCHITECTURES))
def test_control_vectors_on_other_architectures(llamacpp, prompts, tmp_path, arch):
    overrides, blocks = OTHER_ARCHITECTURES[arch]
    _, tokenizer = load_organism()
    torch.manual_seed(0)
    config = tiny_config(arch, vocab_size=len(tokenizer), **overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    if arch == "gpt2":  # convert_hf_to_gguf reads the context length from the pre-transformers-5 key
        saved = json.loads((tmp_path / "base" / "config.json").read_text())
        (tmp_path / "base" / "config.json").write_text(json.dumps(saved | {"n_ctx": config.n_positions}))
    model_gguf = convert_to_gguf(llamacpp, tmp_path / "base", tmp_path / "model.gguf")
    vectors = random_vectors()
    peft_model = adapter_from_vectors(model, vectors, scale=ALPHA)
    peft_model.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    save_adapter(peft_model, tmp_path / "adapter")
    peft_model.unload()
    control_vector = export_adapter(tmp_path / "adapter", "gguf", tmp_path / "steer.gguf")
    short = prompts[:3]
    base = transformers_run(short, model=model, blocks=blocks)
    assert_agree(llamacpp_run(llamacpp, model_gguf, short), base, TINY_ATOL)
    steered = transformers_run(short, vectors, model=model, blocks=blocks)
    assert max_logit_difference(steered, base) > 100 * TINY_ATOL
    assert_agree(
        llamacpp_run(llamacpp, model_gguf, short, ["--control-vector", str(control_vector)]),
        steered,
        TINY_ATOL,
    )
    shifted = shift_one_block(control_vector, tmp_path / "shifted.gguf")
    off = llamacpp_run(llamacpp, model_gguf, short, ["--control-vector", str(shifted)])
    assert max_logit_difference(off, steered) > 100 * TINY_ATOL
