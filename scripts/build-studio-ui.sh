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
modules="$cache/$(cd studio/ui && sha256sum package-lock.json | cut -c1-16)"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one install at a time (checkouts side by side share the cache)
if [[ ! -f "$modules/.installed" ]]; then
  log "npm ci (package-lock.json) into $modules"
  rm -rf "$modules" && mkdir -p "$modules"
  cp studio/ui/package.json studio/ui/package-lock.json "$modules/"
  (cd "$modules" && npm ci --no-audit --no-fund --loglevel=error >&2)
  touch "$modules/.installed"  # only a finished install is reused
fi
# each build in a folder of its own, sharing the installed packages
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r studio/ui/src studio/ui/tsconfig.json studio/ui/vite.config.ts studio/ui/index.html \
  studio/ui/package.json "$work/"
ln -s "$modules/node_modules" "$work/node_modules"
log "building into $out"
(cd "$work" && STUDIO_OUT_DIR="$out" npm run --silent build >&2)
touch "$out/.built-$key"
