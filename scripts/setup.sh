#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine; a warm machine does nothing.
#   - Debian packages: redis-server and postgresql (the tests start their own servers on free
#     ports; the packages' own services are never started), and
#     node/npm if missing (for the npm MCP server @modelcontextprotocol/server-everything)
#     buildah and mmdebstrap (the daemonless image build)
#   - a virtualenv in .venv with exactly the locked versions of requirements/dev.txt (the
#     project's [dev,operator,runtime] extras; scripts/lock.sh refreshes the lock), by uv
#   - kube-apiserver, kube-controller-manager, kubectl, etcd, helm built from the Go
#     module proxy (scripts/build-k8s-tools.sh, cached outside the repo)
#   - Prometheus and KEDA's operator and metrics server built from the Go module proxy
#     (scripts/build-metrics-tools.sh, cached outside the repo; the autoscaling tests)
#   - the pinned npm MCP server (scripts/install-npm-tools.sh, cached outside the repo)
#   - Agent Studio's web UI, from npm with its lock file (scripts/build-studio-ui.sh; the
#     browser tests drive Debian's chromium)
#   - the runtime and operator images (scripts/build-images.sh, cached outside the repo)
#
# --python-only: only the virtualenv (what the local demo needs).
set -euo pipefail
cd "$(dirname "$0")/.."
python_only=0; [[ "${1:-}" == "--python-only" ]] && python_only=1

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
[[ $python_only == 1 ]] || command -v redis-server >/dev/null || missing+=(redis-server)
[[ $python_only == 1 ]] || compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
  || missing+=(postgresql)
[[ $python_only == 1 ]] || command -v node >/dev/null || missing+=(nodejs)
[[ $python_only == 1 ]] || command -v npm >/dev/null || missing+=(npm)
[[ $python_only == 1 ]] || command -v buildah >/dev/null || missing+=(buildah)
[[ $python_only == 1 ]] || command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
[[ $python_only == 1 ]] || command -v gcc >/dev/null || missing+=(gcc libc6-dev)
[[ $python_only == 1 ]] || command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
  sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >&2
  # policy-rc.d keeps apt from starting a system-wide redis (6379) or postgres (5432): the
  # tests run their own
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
  $sudo rm -f /usr/sbin/policy-rc.d
fi

# Reinstall only when the declared or locked dependencies change.
source scripts/uv.sh
stamp=".venv/.agentspec-deps-$(cat pyproject.toml requirements/dev.txt | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "installing the locked requirements/dev.txt and the project into .venv"
  [[ -x .venv/bin/python ]] || "$UV" venv --quiet --python "$(command -v python3)" .venv >&2
  "$UV" pip sync --quiet --python .venv/bin/python --require-hashes requirements/dev.txt >&2
  "$UV" pip install --quiet --python .venv/bin/python --no-deps -e . >&2
  rm -f .venv/.agentspec-deps-*
  touch "$stamp"
fi

if [[ $python_only == 0 ]]; then
  scripts/build-k8s-tools.sh >/dev/null
  # Prometheus and KEDA compile (CPU) while the images build (mostly downloads and disk).
  # (its own process group, so a failure here stops its compilers too)
  setsid scripts/build-metrics-tools.sh >/dev/null &
  metrics_build=$!
  trap 'kill -- -"$metrics_build" 2>/dev/null || true' EXIT
  scripts/install-npm-tools.sh >/dev/null
  scripts/build-studio-ui.sh
  scripts/build-images.sh >/dev/null
  wait "$metrics_build"
  trap - EXIT
fi
log "ready"
