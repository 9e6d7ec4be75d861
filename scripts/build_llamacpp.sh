#!/usr/bin/env bash
# Build, or reuse from the cache, the llama.cpp runtime used by the GGUF agreement tests (tests/runtimes/test_export_llamacpp.py):
#   - the llama-cpp-python wheel, built from its PyPI sdist (which compiles the llama.cpp it vendors), installed into
#     the given Python environment;
#   - steering-cvec-eval (scripts/llamacpp/cvec_eval.cpp): a small program that evaluates token-id prompts through
#     llama.cpp's own model and control-vector loading (common_init_from_params, as llama-cli --control-vector),
#     compiled in the same CMake build, against the same libllama as the wheel.
# Everything is kept in the cache ($STEERING_ADAPTER_CACHE, default ~/.cache/steering-adapter), outside the
# repository, so repeat runs and CI runs with a restored cache take seconds; the first build takes minutes.
# Writes $CACHE/llama.cpp-$VERSION/manifest.json (paths of the harness, its libraries, the vendored llama.cpp sources
# and the wheel), which the tests read.
#
# Usage: bash scripts/build_llamacpp.sh [PYTHON]    (default PYTHON: .venv/bin/python)
set -euo pipefail
VERSION=0.3.36
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${1:-$ROOT/.venv/bin/python}
CACHE=${STEERING_ADAPTER_CACHE:-$HOME/.cache/steering-adapter}
WORK=$CACHE/llama.cpp-$VERSION
WHEELS=$CACHE/wheels
WHEEL=$WHEELS/llama_cpp_python-$VERSION-py3-none-linux_$(uname -m).whl
MANIFEST=$WORK/manifest.json
# The build is redone when this script or the harness changes.
STAMP=$(cat "$0" "$ROOT"/scripts/llamacpp/* | sha256sum | cut -c1-16)

if [ -f "$MANIFEST" ] && grep -q "\"stamp\": \"$STAMP\"" "$MANIFEST" && [ -f "$WHEEL" ] \
    && [ -x "$WORK/bin/steering-cvec-eval" ]; then
    echo "llama.cpp $VERSION: reusing the cached build in $WORK"
else
    echo "llama.cpp $VERSION: building llama-cpp-python from its sdist and steering-cvec-eval (minutes) in $WORK"
    mkdir -p "$WORK" "$WHEELS"
    SDIST=$WORK/llama_cpp_python-$VERSION.tar.gz
    if [ ! -f "$SDIST" ]; then
        "$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
    fi
    # The sources are extracted once and files are only replaced when they change, so that a rebuild (after a
    # harness change, say) recompiles only what changed in the kept CMake build folder.
    if [ ! -d "$WORK/src" ]; then
        rm -rf "$WORK/src.partial" && mkdir -p "$WORK/src.partial"
        tar xzf "$SDIST" -C "$WORK/src.partial" --strip-components=1
        mv "$WORK/src.partial" "$WORK/src"
    fi
    mkdir -p "$WORK/harness"
    for file in "$ROOT"/scripts/llamacpp/*; do
        cmp -s "$file" "$WORK/harness/$(basename "$file")" || cp "$file" "$WORK/harness/"
    done
    # Portable CPU code (the cache may move between machines); no multimodal library, tools, tests or examples.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_PROJECT_llama_cpp_INCLUDE=$WORK/harness/harness.cmake" \
        CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
        nice -n 10 "$PYTHON" -m pip wheel -q --no-deps "$WORK/src" -w "$WHEELS" \
        --config-settings=build-dir="$WORK/build" --config-settings=cmake.build-type=Release
    rm -rf "$WORK/bin" && mkdir -p "$WORK/bin"
    cp -a "$WORK/build/bin/steering-cvec-eval" "$WORK"/build/bin/lib*.so* "$WORK/bin/"
fi
# Rewritten every time, so that a cache restored under another path names its own files.
cat > "$MANIFEST" <<JSON
{
  "stamp": "$STAMP",
  "llama_cpp_python": "$VERSION",
  "wheel": "$WHEEL",
  "harness": "$WORK/bin/steering-cvec-eval",
  "library_dir": "$WORK/bin",
  "llama_cpp_source": "$WORK/src/vendor/llama.cpp"
}
JSON
if ! "$PYTHON" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$VERSION')" \
    2>/dev/null; then
    "$PYTHON" -m pip install -q "$WHEEL"
fi
