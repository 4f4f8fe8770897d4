#!/usr/bin/env bash
# Builds the controller image from ./Containerfile with podman or docker (whichever works;
# CONTAINER_ENGINE=podman|docker chooses). Prints the image reference on its last line.
#
# The Python dependencies are resolved HERE, on the build host, as wheels for the base
# image's Python and platform (asked of the base image itself), and handed to the build in
# its context: the build installs them with `pip install --no-index` and reaches no network.
#
# Environment:
#   BASE              (default docker.io/library/python:3.12-slim) any glibc image with
#                     python3 >= 3.11 and its venv module
#   IMAGE             (default envoy-ai-rollout:<project version>) the tag to build
#   CONTAINER_ENGINE  podman or docker (default: podman if installed, else docker)
#   ROLLOUT_CACHE_DIR (default ~/.cache/envoy-ai-rollout) where wheels are cached, keyed by
#                     the dependencies in pyproject.toml and the base's Python and platform
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${BASE:-docker.io/library/python:3.12-slim}"
CACHE_ROOT="${ROLLOUT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/envoy-ai-rollout}"

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- the engine -----------------------------------------------------------------------
engine="${CONTAINER_ENGINE:-}"
if [[ -z "$engine" ]]; then
  if command -v podman >/dev/null 2>&1; then
    engine=podman
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  else
    die "neither podman nor a running docker engine: install one (Debian: 'make image-tools', or apt-get install podman runc)"
  fi
fi
engine_cmd=("$engine")
run_flags=()
if [[ "$engine" == podman ]]; then
  # crun fails on hosts with hybrid cgroups (this project's CI machines); runc works. Podman
  # there refuses the default ulimits, so they are given explicitly.
  if [[ -x /usr/sbin/runc ]]; then engine_cmd+=(--runtime /usr/sbin/runc); fi
  run_flags+=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
fi
engine_cmd_run() { "${engine_cmd[@]}" "$@"; }

# ---- what the base image runs -----------------------------------------------------------
log "asking $BASE for its Python and platform ($engine)"
probe='import platform, sys, sysconfig, venv
libc, libc_version = platform.libc_ver()
print("%d.%d" % sys.version_info[:2], platform.machine(), libc, libc_version, sysconfig.get_config_var("SOABI") or "")'
read -r py_version machine libc libc_version soabi < <(
  engine_cmd_run run --rm --network none "${run_flags[@]}" --entrypoint python3 "$BASE" -c "$probe"
) || die "could not run python3 (with its venv module) in $BASE: pass BASE=<an image with python3 >= 3.11 and venv>"
[[ "$libc" == glibc ]] || die "$BASE has no glibc ($libc): the wheels are manylinux wheels; use a glibc-based image (e.g. Debian's)"
python3 -c "import sys; sys.exit(0 if tuple(map(int, '$py_version'.split('.'))) >= (3, 11) else 1)" \
  || die "$BASE has Python $py_version; the project needs >= 3.11"
py_tag="cp${py_version/./}"
glibc_minor="${libc_version#2.}"
platforms=()
for ((m = glibc_minor; m >= 17; m--)); do platforms+=(--platform "manylinux_2_${m}_${machine}"); done
platforms+=(--platform "manylinux2014_${machine}")
log "base: Python $py_version ($soabi), $machine, glibc $libc_version"

# ---- wheels, on the build host --------------------------------------------------------
pip=(python3 -m pip)
[[ -x "$REPO/.venv/bin/python" ]] && pip=("$REPO/.venv/bin/python" -m pip)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/image-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# The project wheel from the work tree's files that git does not ignore (a stale build/
# folder never leaks into the wheel).
mkdir -p "$WORK/src" "$WORK/project"
git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
  || die "$REPO is not a git checkout: the project wheel is built from the files git tracks"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
  | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' | xargs -0 cp --parents -t "$WORK/src") \
  || die "copying the work tree's files for the wheel failed (see above)"
"${pip[@]}" wheel -q --no-deps -w "$WORK/project" "$WORK/src" >&2 \
  || die "building the project wheel failed (see above)"
project_wheel="$(ls "$WORK"/project/*.whl)"
version="$(basename "$project_wheel" | cut -d- -f2)"
IMAGE="${IMAGE:-envoy-ai-rollout:$version}"

key="$( { sed -n '/^dependencies = \[/,/^\]/p' "$REPO/pyproject.toml"; echo "$py_tag $machine $libc_version"; } \
  | sha256sum | cut -c1-16)"
deps="$CACHE_ROOT/wheels/$py_tag-$machine-$key"
if [[ -f "$deps/.complete" ]]; then
  log "dependency wheels cached: $deps"
else
  log "resolving the dependencies as $py_tag/$machine wheels into $deps"
  rm -rf "$deps" && mkdir -p "$deps"
  "${pip[@]}" download -q --only-binary=:all: --python-version "$py_version" --implementation cp \
      --abi "$py_tag" --abi abi3 --abi none "${platforms[@]}" -d "$deps" "$project_wheel" >&2 \
    || die "pip could not fetch wheels for Python $py_version on $machine (is PyPI reachable? see above)"
  rm -f "$deps/$(basename "$project_wheel")"
  touch "$deps/.complete"
fi

# ---- the build context: wheels only ---------------------------------------------------
context="$CACHE_ROOT/image-context"
rm -rf "$context" && mkdir -p "$context/wheels/deps" "$context/wheels/project"
cp "$deps"/*.whl "$context/wheels/deps/"
cp "$project_wheel" "$context/wheels/project/"
revision="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]]; then revision+="-dirty"; fi
source_url="$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || echo unknown)"

log "building $IMAGE from $BASE with $engine (context: $context)"
build_flags=(build -f "$REPO/Containerfile" -t "$IMAGE"
  --build-arg "BASE=$BASE" --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url")
build_flags+=(--network none)  # the build reaches nothing: the wheels are in the context
if [[ "$engine" == podman ]]; then build_flags+=("${run_flags[@]}"); fi
engine_cmd_run "${build_flags[@]}" "$context" >&2 || die "$engine build failed (see above)"
log "built $IMAGE"
echo "$IMAGE"
