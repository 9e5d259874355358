#!/usr/bin/env bash
# Build Agent Studio's web UI (studio/ui: React + TypeScript + Vite) into the Python package
# (studio/agentspec_studio/static), which the wheel carries: no CDN at run time.
# npm installs exactly package-lock.json (npm ci) in a cache folder outside the repo, keyed
# by the sources' hash: a warm machine with unchanged sources does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[build-studio-ui] %s\n' "$*" >&2; }
out="$PWD/studio/agentspec_studio/static"
key=$(cd studio/ui && find package.json package-lock.json tsconfig.json vite.config.ts index.html src \
  -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [[ -f "$out/.built-$key" ]]; then exit 0; fi
command -v npm >/dev/null || { log "npm is missing (scripts/setup.sh installs it)"; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/agentspec/studio-ui"
work="$cache/$(cd studio/ui && sha256sum package-lock.json | cut -c1-16)"
if [[ ! -d "$work/node_modules" ]]; then
  log "npm ci (package-lock.json) into $work"
  mkdir -p "$work"
  cp studio/ui/package.json studio/ui/package-lock.json "$work/"
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
rm -rf "$work/src"
cp -r studio/ui/src studio/ui/tsconfig.json studio/ui/vite.config.ts studio/ui/index.html "$work/"
log "building into $out"
(cd "$work" && STUDIO_OUT_DIR="$out" npm run --silent build >&2)
touch "$out/.built-$key"
