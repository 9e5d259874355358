# Sourced by the scripts: sets $UV to a pinned uv, installed once into the cache (outside the
# repo) with the machine's python3 and pip. uv resolves the locks and builds venvs fast.
UV_VERSION="${UV_VERSION:-0.13.9}"
_uv_root="${XDG_CACHE_HOME:-$HOME/.cache}/agentspec/uv-$UV_VERSION"
UV="$_uv_root/bin/uv"
if [[ ! -x "$UV" ]]; then
  printf '[uv] installing uv %s into %s\n' "$UV_VERSION" "$_uv_root" >&2
  rm -rf "$_uv_root.tmp"
  python3 -m venv "$_uv_root.tmp" >&2
  "$_uv_root.tmp/bin/python" -m pip install -q "uv==$UV_VERSION" >&2
  rm -rf "$_uv_root" && mv "$_uv_root.tmp" "$_uv_root"
fi
export UV
