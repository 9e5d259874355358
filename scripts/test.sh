#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, the images, static gates, then pytest.
# Extra arguments go to pytest (for example: scripts/test.sh -k crds).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
AGENTSPEC_K8S_BIN="$(scripts/build-k8s-tools.sh)"
AGENTSPEC_METRICS_BIN="$(scripts/build-metrics-tools.sh)"
AGENTSPEC_TRACING_BIN="$(scripts/build-tracing-tools.sh)"
# The images the end-to-end tests run (built by setup.sh; cached, so this only reads them).
AGENTSPEC_IMAGES_JSON="$(mktemp -t agentspec-images.XXXXXX.json)"
trap 'rm -f "$AGENTSPEC_IMAGES_JSON"' EXIT
scripts/build-images.sh >"$AGENTSPEC_IMAGES_JSON"
export AGENTSPEC_K8S_BIN AGENTSPEC_METRICS_BIN AGENTSPEC_TRACING_BIN AGENTSPEC_IMAGES_JSON
export PATH="$PWD/.venv/bin:$PATH"
python - "$AGENTSPEC_IMAGES_JSON" <<'PY'
import json, sys
images = json.load(open(sys.argv[1]))
for name in ("runtime", "operator", "studio"):
    i = images[name]
    built = f", built in {i['buildSeconds']} s" if i["buildSeconds"] is not None else ""
    print(f"== image {i['ref']}: {i['rootfsBytes'] / 1e6:.0f} MB unpacked{built}")
PY

echo "== gates: ruff, mypy --strict, import-linter, CRDs current"
ruff check .
ruff format --check .
mypy runtime/agentspec_runtime operator/agentspec_operator studio/agentspec_studio tests bench
lint-imports
agentspec crds --check

echo "== tests"
python -m pytest "$@"
