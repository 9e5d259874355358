#!/usr/bin/env bash
# Build the trace backend the Studio's tests read traces from — Jaeger v2 (the `jaeger` binary
# of github.com/jaegertracing/jaeger, an OpenTelemetry Collector distribution with the Jaeger
# storage and query extensions) — from the Go module proxy only, at a pinned version, and
# cache it outside the repo (like build-metrics-tools.sh), so a warm machine rebuilds nothing.
# Its web UI is not embedded (the Studio only uses the query API, /api/v3).
#
# Prints the bin directory on stdout (everything else goes to stderr).
set -euo pipefail

JAEGER_VERSION="${JAEGER_VERSION:-1.76.0}"  # the module's v1 tag: it carries Jaeger v2 (cmd/jaeger)
CACHE_ROOT="${AGENTSPEC_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentspec/tools}"
OUT="$CACHE_ROOT/jaeger-v${JAEGER_VERSION}"
BIN="$OUT/bin"
STAMP="$BIN/.complete"

log() { printf '[build-tracing-tools] %s\n' "$*" >&2; }

if [[ -f "$STAMP" ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is required (the Go toolchain builds Jaeger)"; exit 1; }
mkdir -p "$BIN"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
start=$(date +%s)
cd "$work"
printf 'module agentspec.local/tracingtools\n\ngo 1.26\n' > go.mod
log "building Jaeger v${JAEGER_VERSION} (cold: several minutes on 2 cores)"
go get "github.com/jaegertracing/jaeger/cmd/jaeger@v${JAEGER_VERSION}" >&2
go build -trimpath -ldflags "-s -w" -o "$BIN/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2
touch "$STAMP"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
