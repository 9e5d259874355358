#!/usr/bin/env bash
# Build the images the product ships, Dockerfile.runtime, Dockerfile.operator and
# Dockerfile.studio (after scripts/build-studio-ui.sh built the Studio's UI), with a
# daemonless builder (buildah: chroot isolation, vfs storage; needs root), on a stand-in base
# made from Debian's packages (mmdebstrap: bookworm, python3, python3-venv, ca-certificates),
# because no image registry is reachable here. Then export each image's filesystem and config
# for the tests' process kubelet (tests/support/kubelet), which runs pods from them.
#
# Cached outside the repo (like the Kubernetes binaries): the base by its recipe, each image
# by a hash of everything it is built from (Dockerfile, lock files, pyproject, sources, base).
# A warm machine with unchanged inputs rebuilds nothing.
#
# Prints one JSON object on stdout, {"runtime": IMAGE, "operator": IMAGE, "studio": IMAGE},
# where IMAGE is
# {"ref", "id", "rootfs", "config": {Entrypoint, Cmd, Env, WorkingDir, User}, "layers",
#  "rootfsBytes", "buildSeconds" (null when cached)}; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

# All of it in a function: bash then parses the whole file before running any of it, so an
# edit to this file while a build runs cannot break that build.
main() {

CACHE="${AGENTSPEC_IMAGES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentspec/images}"
SUITE=bookworm
MIRROR="${AGENTSPEC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${AGENTSPEC_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_PACKAGES=python3,python3-venv,ca-certificates
# Prune the build cache (intermediate layers; vfs stores each as a full copy) beyond this.
PRUNE_ABOVE_BYTES=$((16 << 30))

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "needs root (buildah with chroot isolation and vfs storage)"
command -v buildah >/dev/null || die "buildah is missing (scripts/setup.sh installs it)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (scripts/setup.sh installs it)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # one build at a time (parallel test workers may all ask at once)

bh() { buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver vfs "$@"; }
has_image() { bh inspect --type image "$1" >/dev/null 2>&1; }

# pip inside the build reaches the package registry only with this machine's CA bundle; it
# is handed in as a build secret, so it never lands in a layer.
secret=()
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [[ -s "$ca" ]]; then secret=(--secret "id=ca-bundle,src=$ca"); break; fi
done

# --- the stand-in base ---------------------------------------------------------------------
recipe="mmdebstrap minbase $SUITE $BASE_PACKAGES no-docs v1"
BASE="localhost/agentspec-base:$SUITE-$(printf '%s' "$recipe" | sha256sum | cut -c1-12)"
if ! has_image "$BASE"; then
  log "building the base $BASE from Debian's packages (about a minute)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # The host's resolv.conf and hostname are copied in for the build; the image must not keep
  # them (a container runtime provides its own), so the hook empties them.
  mmdebstrap --variant=minbase --mode=root --include="$BASE_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    --customize-hook=': > "$1/etc/resolv.conf"; : > "$1/etc/hostname"' \
    "$SUITE" "$work/base.tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" >&2
  ctr="$(bh from scratch)"
  bh add "$ctr" "$work/base.tar" / >&2
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["python3"]' --label "org.opencontainers.image.description=$recipe" "$ctr"
  bh commit --rm --quiet "$ctr" "$BASE" >&2
  rm -rf "$work"
  trap - EXIT
fi
base_id="$(bh inspect --type image --format '{{.FromImageID}}' "$BASE")"

# --- the images ----------------------------------------------------------------------------
inputs_hash() {  # everything the image is built from, and the base it is built on
  local name=$1
  {
    echo "$base_id"
    for f in "Dockerfile.$name" .dockerignore pyproject.toml README.md \
      requirements/build.txt "requirements/$name.txt"; do
      printf '%s\0' "$f"; sha256sum <"$f"
    done
    local sources=(runtime operator)
    [[ "$name" == studio ]] && sources=(runtime studio)
    {
      git ls-files -z --cached --others --exclude-standard -- "${sources[@]}"
      # the Studio's built UI (ignored by git, carried by its wheel)
      if [[ "$name" == studio ]]; then find studio/agentspec_studio/static -type f -print0; fi
    } | sort -z | while IFS= read -r -d '' f; do
        [[ -f "$f" ]] || continue
        printf '%s\0' "$f"; sha256sum <"$f"
      done
  } | sha256sum | cut -c1-16
}

build_image() {  # prints the image's JSON
  local name=$1 hash ref out started seconds=null
  hash="$(inputs_hash "$name")"
  ref="localhost/agentspec-$name:$hash"
  out="$CACHE/export/$name-$hash"
  if [[ ! -f "$out/.complete" || ! -d "$out/rootfs/" ]]; then
    started=$(date +%s)
    if ! has_image "$ref"; then
      log "building $ref from Dockerfile.$name"
      bh bud --isolation chroot --layers --quiet "${secret[@]}" \
        --build-arg "BASE=$BASE" -f "Dockerfile.$name" -t "$ref" . >&2
    fi
    log "exporting the filesystem of $ref"
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    # A named working container of the image, kept: its mount is the filesystem the process
    # kubelet runs pods from (read-only, as the lower layer of each container's overlay).
    local ctr="agentspec-$name-$hash"
    bh rm "$ctr" >/dev/null 2>&1 || true
    bh from --pull-never --name "$ctr" "$ref" >/dev/null
    ln -s "$(bh mount "$ctr")" "$out.tmp/rootfs"
    bh inspect --type image "$ref" >"$out.tmp/image.json"
    touch "$out.tmp/.complete"
    rm -rf "$out" && mv "$out.tmp" "$out"
    seconds=$(( $(date +%s) - started ))
    # older exports, their containers and tags of this image are garbage now
    for old in "$CACHE/export/$name-"*; do
      [[ "$old" == "$out" ]] || rm -rf "$old"
    done
    bh containers --format '{{.ContainerName}}' | grep -x "agentspec-$name-.*" |
      grep -vx "agentspec-$name-$hash" | xargs -r -n1 buildah --root "$CACHE/storage" \
      --runroot "$CACHE/run" --storage-driver vfs rm >/dev/null 2>&1 || true
    bh images --format '{{.Name}}:{{.Tag}}' | grep -x "localhost/agentspec-$name:.*" |
      grep -vx "$ref" | xargs -r -n1 buildah --root "$CACHE/storage" --runroot "$CACHE/run" \
      --storage-driver vfs rmi >/dev/null 2>&1 || true
  fi
  python3 - "$ref" "$out" "$seconds" <<'PY'
import json, os, sys
ref, out, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
image = json.load(open(os.path.join(out, "image.json")))
config = image["OCIv1"].get("config") or {}
rootfs = os.path.realpath(os.path.join(out, "rootfs"))
total = 0
for root, _dirs, files in os.walk(rootfs):
    for f in files:
        p = os.path.join(root, f)
        if not os.path.islink(p):
            total += os.lstat(p).st_size
layers = image["OCIv1"].get("rootfs", {}).get("diff_ids", [])
print(json.dumps({
    "ref": ref,
    "id": image.get("FromImageID"),
    "rootfs": rootfs,
    "config": {k: config.get(k) for k in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User")},
    "layers": len(layers),
    "rootfsBytes": total,
    "buildSeconds": None if seconds == "null" else int(seconds),
}))
PY
}

runtime_json="$(build_image runtime)"
operator_json="$(build_image operator)"
scripts/build-studio-ui.sh  # keyed by its sources: a no-op when the UI is current
studio_json="$(build_image studio)"

used=$(du -sb "$CACHE/storage" 2>/dev/null | cut -f1 || echo 0)
if (( used > PRUNE_ABOVE_BYTES )); then
  log "build cache holds $((used >> 30)) GiB: pruning intermediate layers"
  bh rmi --prune >/dev/null 2>&1 || true
fi
printf '{"base": "%s", "runtime": %s, "operator": %s, "studio": %s}\n' "$BASE" "$runtime_json" \
  "$operator_json" "$studio_json"
}

main "$@"
