#!/usr/bin/env bash
# Builds the upstream Envoy AI Gateway controller (v1.1.0, the release of our CRDs) from the
# source in ../shared/ai-gateway/src into a cache outside the repo, only when missing. Prints
# the binary's path on its last line of stdout.
#
# Why from source: the module github.com/envoyproxy/ai-gateway is not served by the Go module
# proxy here, so it is built as the main module from shared/; its dependencies come from the
# proxy. A cold build takes about 4 minutes on 2 cores (~2.2 GB of Go caches), a warm one 16 s.
#
# Environment:
#   ROLLOUT_AIGW_CONTROLLER  a prebuilt controller binary: used as it is, nothing is built
#   ROLLOUT_AIGW_SRC         the source folder (default ../shared/ai-gateway/src beside the repo)
#   ROLLOUT_CACHE_DIR        (default ~/.cache/envoy-ai-rollout) the cache root
set -euo pipefail

AIGW_VERSION="v1.1.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="${ROLLOUT_AIGW_SRC:-$HERE/../../shared/ai-gateway/src}"
CACHE_ROOT="${ROLLOUT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/envoy-ai-rollout}"
DEST="$CACHE_ROOT/aigw/$AIGW_VERSION"
BIN="$DEST/aigw-controller"

log() { printf '[aigw-controller] %s\n' "$*" >&2; }
die() { printf '[aigw-controller] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -n "${ROLLOUT_AIGW_CONTROLLER:-}" ]]; then
  [[ -x "$ROLLOUT_AIGW_CONTROLLER" ]] || die "ROLLOUT_AIGW_CONTROLLER=$ROLLOUT_AIGW_CONTROLLER is not an executable file"
  echo "$ROLLOUT_AIGW_CONTROLLER"
  exit 0
fi
if [[ -x "$BIN" ]]; then
  log "cached: $BIN"
  echo "$BIN"
  exit 0
fi

[[ -f "$SRC/go.mod" && -d "$SRC/cmd/controller" ]] \
  || die "no AI Gateway source at $SRC (expected shared/ai-gateway/src beside the repository). Set ROLLOUT_AIGW_SRC to it, or ROLLOUT_AIGW_CONTROLLER to a prebuilt controller binary."
command -v go >/dev/null 2>&1 \
  || die "no Go toolchain on PATH. Install Go >= 1.26 (https://go.dev/doc/install), or set ROLLOUT_AIGW_CONTROLLER to a prebuilt Envoy AI Gateway $AIGW_VERSION controller binary."

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
mkdir -p "$DEST"
log "building the Envoy AI Gateway controller $AIGW_VERSION from $SRC (once; a cold build takes ~4 minutes on 2 cores)"
# The source folder may be read-only (CI copies shared/ without write bits): build output goes
# to the cache, and -mod=readonly never touches go.mod/go.sum.
(cd "$SRC" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" ./cmd/controller) \
  || die "building the AI Gateway controller failed (see above). Is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))? Or set ROLLOUT_AIGW_CONTROLLER to a prebuilt binary."
mv "$BIN.tmp" "$BIN"
log "ready: $BIN"
echo "$BIN"
