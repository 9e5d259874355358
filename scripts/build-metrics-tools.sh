#!/usr/bin/env bash
# Build the metrics pipeline the autoscaling tests run — Prometheus, and KEDA's operator and
# metrics API server — from the Go module proxy only, at pinned versions, and cache the
# binaries outside the repo (like build-k8s-tools.sh) so a warm machine rebuilds nothing.
#
# KEDA's go.mod carries `replace` lines, which `go install pkg@version` refuses, so KEDA is
# built inside a writable copy of its downloaded module, as the main module. Its CRDs are
# copied from the same module, so the CRDs and the binaries always match.
#
# Prints the bin directory on stdout (everything else goes to stderr).
set -euo pipefail

PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-3.16.0}"
KEDA_VERSION="${KEDA_VERSION:-2.21.0}"
CACHE_ROOT="${AGENTSPEC_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentspec/tools}"
OUT="$CACHE_ROOT/prometheus-v${PROMETHEUS_VERSION}-keda-v${KEDA_VERSION}"
BIN="$OUT/bin"
STAMP="$BIN/.complete"

log() { printf '[build-metrics-tools] %s\n' "$*" >&2; }

if [[ -f "$STAMP" ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is required (the Go toolchain builds Prometheus and KEDA)"; exit 1; }
mkdir -p "$BIN" "$OUT/keda-crds"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
start=$(date +%s)

# --- Prometheus (module versions are v0.<major><minor>.<patch>: 3.16.0 is v0.316.0) ----
major="${PROMETHEUS_VERSION%%.*}"; rest="${PROMETHEUS_VERSION#*.}"
minor="${rest%%.*}"; patch="${rest#*.}"
prom_mod="v0.${major}$(printf '%02d' "$minor").${patch}"
mkdir -p "$work/prometheus" && cd "$work/prometheus"
printf 'module agentspec.local/promtools\n\ngo 1.26\n' > go.mod
log "building Prometheus v${PROMETHEUS_VERSION} (module ${prom_mod})"
go get "github.com/prometheus/prometheus/cmd/prometheus@${prom_mod}" >&2
pv="github.com/prometheus/common/version"
go build -trimpath -tags netgo \
  -ldflags "-s -w -X ${pv}.Version=${PROMETHEUS_VERSION} -X ${pv}.Branch=HEAD -X ${pv}.Revision=module" \
  -o "$BIN/prometheus" github.com/prometheus/prometheus/cmd/prometheus >&2

# --- KEDA operator and metrics API server ---------------------------------------
log "downloading KEDA v${KEDA_VERSION}"
keda_dir="$(go mod download -json "github.com/kedacore/keda/v2@v${KEDA_VERSION}" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$keda_dir" ]] || { log "could not download github.com/kedacore/keda/v2@v${KEDA_VERSION}"; exit 1; }
cp -r "$keda_dir" "$work/keda" && chmod -R u+w "$work/keda" && cd "$work/keda"
kv="github.com/kedacore/keda/v2/version"
log "building KEDA v${KEDA_VERSION} operator and adapter (cold: many minutes on 2 cores)"
go build -trimpath -ldflags "-s -w -X ${kv}.Version=${KEDA_VERSION} -X ${kv}.GitCommit=module" \
  -o "$BIN/keda-operator" ./cmd/operator >&2
go build -trimpath -ldflags "-s -w -X ${kv}.Version=${KEDA_VERSION} -X ${kv}.GitCommit=module" \
  -o "$BIN/keda-adapter" ./cmd/adapter >&2
cp config/crd/bases/*.yaml "$OUT/keda-crds/"

"$BIN/prometheus" --version >&2
touch "$STAMP"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
