#!/usr/bin/env bash
# Refresh the dependency locks in requirements/ from pyproject.toml — the one command:
#   scripts/lock.sh              keep the pinned versions, add/remove what pyproject changed
#   scripts/lock.sh --upgrade    move every pin to the newest version pyproject allows
#
# requirements/dev.txt is the whole set the test venv installs ([dev,operator,runtime]);
# runtime.txt and operator.txt (what Dockerfile.runtime / Dockerfile.operator install) are
# resolved from their extra alone, constrained to dev.txt's versions, so the images run
# exactly the versions the tests ran; build.txt pins the build backend the images use.
# Every pin carries its hashes (pip --require-hashes).
# Resolved with uv (fast, universal: one lock for every platform and Python >= 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/uv.sh   # defines $UV (a pinned uv, installed into the cache if missing)

upgrade=()
[[ "${1:-}" == "--upgrade" ]] && upgrade=(--upgrade)
common=(--universal --python-version 3.11 --generate-hashes --quiet
        --custom-compile-command "scripts/lock.sh")
"$UV" pip compile pyproject.toml "${common[@]}" "${upgrade[@]}" \
  --extra dev --extra operator --extra runtime --extra studio -o requirements/dev.txt
# The build backend the images use to build the project's wheel (pyproject's build-system).
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' |
  "$UV" pip compile - "${common[@]}" "${upgrade[@]}" -o requirements/build.txt
for extra in runtime operator studio; do
  "$UV" pip compile pyproject.toml "${common[@]}" \
    --extra "$extra" -c requirements/dev.txt -o "requirements/$extra.txt"
done
echo "locked: requirements/{dev,runtime,operator,studio,build}.txt" >&2
