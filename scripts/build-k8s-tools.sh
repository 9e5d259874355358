#!/usr/bin/env bash
# Build the pinned Kubernetes control plane used by the tests — kube-apiserver,
# kube-controller-manager, kubectl, etcd and helm — from the Go module proxy only,
# and cache the binaries outside the repo so a warm machine rebuilds nothing.
#
# kube-apiserver & co. live in k8s.io/kubernetes, whose go.mod points every
# k8s.io/* staging module at ./staging/...; a wrapper module requires
# k8s.io/kubernetes and `replace`s each staging module with its published v0.X.Y.
#
# Prints the bin directory on stdout (everything else goes to stderr).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
CACHE_ROOT="${AGENTSPEC_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentspec/tools}"
BIN="$CACHE_ROOT/k8s-v${K8S_VERSION}-etcd-v${ETCD_VERSION}-helm-v${HELM_VERSION}/bin"
STAMP="$BIN/.complete"

log() { printf '[build-k8s-tools] %s\n' "$*" >&2; }

if [[ -f "$STAMP" ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is required (the Go toolchain builds the control plane)"; exit 1; }
mkdir -p "$BIN"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
start=$(date +%s)

# --- kube-apiserver, kube-controller-manager, kubectl ---------------------------
mkdir -p "$work/k8s" && cd "$work/k8s"
log "resolving k8s.io/kubernetes v${K8S_VERSION}"
gomod="$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@v${K8S_VERSION}"; exit 1; }
staging_minor="0.${K8S_VERSION#1.}"
{
  echo "module agentspec.local/k8stools"
  echo
  echo "go 1.25"
  echo
  echo "require k8s.io/kubernetes v${K8S_VERSION}"
  echo
  echo "replace ("
  # every `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x v0.Y.Z`
  sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\1#p' "$gomod" |
    while read -r m; do echo "	$m => $m v${staging_minor}"; done
  echo ")"
} > go.mod
pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
log "fetching modules for ${pkgs[*]}"
go get "${pkgs[@]/%/@v${K8S_VERSION}}" >&2
ver="k8s.io/component-base/version"
cver="k8s.io/client-go/pkg/version"
minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for p in "$ver" "$cver"; do
  ldflags+=" -X $p.gitVersion=v${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
log "building ${pkgs[*]} (cold: several minutes on 2 cores)"
go build -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}" >&2

# --- etcd (its own module graph, so its own wrapper) ----------------------------
mkdir -p "$work/etcd" && cd "$work/etcd"
printf 'module agentspec.local/etcdtools\n\ngo 1.25\n' > go.mod
log "building etcd v${ETCD_VERSION}"
go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2
go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2

# --- helm -----------------------------------------------------------------------
mkdir -p "$work/helm" && cd "$work/helm"
printf 'module agentspec.local/helmtools\n\ngo 1.25\n' > go.mod
log "building helm v${HELM_VERSION}"
go get "helm.sh/helm/v3/cmd/helm@v${HELM_VERSION}" >&2
go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION}" \
  -o "$BIN/helm" helm.sh/helm/v3/cmd/helm >&2

"$BIN/kube-apiserver" --version >&2
"$BIN/kubectl" version --client >&2
"$BIN/etcd" --version >&2
"$BIN/helm" version --short >&2
touch "$STAMP"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
