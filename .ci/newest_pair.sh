#!/usr/bin/env bash
# Second CI job: the test suite on the newest transformers + peft the registry serves, reported, never hidden.
#
# Policy (printed with the report): failures here fail CI only when that pair lies inside the ranges pyproject.toml
# declares (so `pip install steering-adapter` would give it to users today). A newest pair outside the declared
# ranges (e.g. a transformers that is known-incompatible with the newest peft) is reported and does not block landing.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-newest
REPORTS=.ci-reports
mkdir -p "$REPORTS"
label="NEWEST-PAIR REPORT"

newest() {  # newest version of a package on the registry, or nothing
    .venv/bin/python -m pip index versions "$1" 2>/dev/null | sed -n "s/^$1 (\(.*\))$/\1/p" | head -1
}
tf=$(newest transformers)
pf=$(newest peft)
if [ -z "$tf" ] || [ -z "$pf" ]; then
    echo "=== $label: the registry did not answer 'pip index versions'; skipped (not a CI failure) ==="
    exit 0
fi
echo "=== $label: transformers $tf + peft $pf (tested pair: $(grep -E '^(transformers|peft)==' constraints.txt | tr '\n' ' ')) ==="

# A venv reused between runs: only the two packages under test change.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
fi
deps=$(.venv/bin/python - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
names = ("transformers", "peft", "torch")
keep = [d for d in project["dependencies"] + project["optional-dependencies"]["test"] if not d.startswith(names)]
print(" ".join(f"'{d}'" for d in keep))
PY
)
if ! eval "$VENV/bin/python" -m pip install -q "'torch==2.13.0'" "'transformers==$tf'" "'peft==$pf'" "$deps" \
        > "$REPORTS/newest-install.log" 2>&1 \
    || ! "$VENV/bin/python" -m pip install -q --no-deps -e . >> "$REPORTS/newest-install.log" 2>&1; then
    echo "=== $label: installing transformers $tf + peft $pf failed (see $REPORTS/newest-install.log) ==="
    tail -5 "$REPORTS/newest-install.log"
    exit 0
fi

# What runs: the tests of the code that calls into transformers and PEFT (the adapter format and its loading flows,
# gating, composition, cards, the Hub, generation), bounded to 20 minutes (a timeout is reported like any other
# result) so that CI stays inside its limit; NEWEST_PAIR_TESTS overrides the list (e.g. "tests" for everything).
DEFAULT_TESTS="tests/adapter/test_flows.py tests/tuner/test_tuner.py tests/tuner/test_registration.py tests/tuner/test_gating.py \
tests/adapter/test_composition.py tests/adapter/test_cards.py tests/adapter/test_hub.py tests/measure/test_generation.py tests/tuner/test_load_properties.py"
timeout 1200 "$VENV/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$REPORTS/newest.xml" \
    ${NEWEST_PAIR_TESTS:-$DEFAULT_TESTS} > "$REPORTS/newest-pytest.log" 2>&1
code=$?
"$VENV/bin/python" .ci/summarize_newest.py "$REPORTS/newest.xml" "$tf" "$pf" "$code"
