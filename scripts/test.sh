#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, static gates, then pytest.
# Extra arguments go to pytest (for example: scripts/test.sh -k crds).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
AGENTSPEC_K8S_BIN="$(scripts/build-k8s-tools.sh)"
export AGENTSPEC_K8S_BIN
export PATH="$PWD/.venv/bin:$PATH"

echo "== gates: ruff, mypy --strict, import-linter, CRDs current"
ruff check .
ruff format --check .
mypy runtime/agentspec_runtime operator/agentspec_operator tests bench
lint-imports
agentspec crds --check

echo "== tests"
python -m pytest "$@"
