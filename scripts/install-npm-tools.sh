#!/usr/bin/env bash
# Install the npm-packaged tools the tests use — today only the third-party MCP server
# @modelcontextprotocol/server-everything — at a pinned version, into a cache directory
# outside the repo, so a warm machine installs nothing.
#
# Started by tests/support/mcp_servers.py (EverythingServer) as
#   node <dir>/node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp
# with PORT=<port> in its environment.
#
# Prints the install directory on stdout (everything else goes to stderr).
set -euo pipefail

EVERYTHING_VERSION="${EVERYTHING_VERSION:-2026.8.31}"
CACHE_ROOT="${AGENTSPEC_NPM_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/agentspec/npm}"
DIR="$CACHE_ROOT/$EVERYTHING_VERSION"
STAMP="$DIR/.complete"

log() { printf '[install-npm-tools] %s\n' "$*" >&2; }

if [[ -f "$STAMP" ]]; then
  echo "$DIR"
  exit 0
fi

command -v npm >/dev/null || { log "npm is required (apt-get install nodejs npm)"; exit 1; }
command -v node >/dev/null || { log "node is required (apt-get install nodejs)"; exit 1; }

# Install into a fresh sibling directory and rename it into place, so an interrupted run
# never leaves a half-installed directory that looks complete.
mkdir -p "$CACHE_ROOT"
work="$(mktemp -d "$CACHE_ROOT/.install-XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "installing @modelcontextprotocol/server-everything@${EVERYTHING_VERSION} into $DIR"
printf '{"name":"agentspec-npm-tools","private":true}\n' >"$work/package.json"
npm install --prefix "$work" --no-audit --no-fund --loglevel=error \
  "@modelcontextprotocol/server-everything@${EVERYTHING_VERSION}" >&2
entry="$work/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
[[ -f "$entry" ]] || { log "installed package has no $entry"; exit 1; }
touch "$work/.complete"
rm -rf "$DIR"
mv "$work" "$DIR"
trap - EXIT
echo "$DIR"
