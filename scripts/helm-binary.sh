#!/usr/bin/env bash
# Builds the `helm` CLI from its Go module (helm.sh/helm/v4) into a cache outside the repo,
# only when missing. Prints the binary's path on its last line of stdout.
#
# Why from source: the machines this project runs on reach the Go module proxy but no
# release download site (get.helm.sh), and Debian 12 packages no helm.
#
# Environment:
#   ROLLOUT_HELM_BIN   a prebuilt helm (>= 3.18) to use instead; nothing is built
#   HELM_VERSION       (default v4.3.2) helm.sh/helm/v4 version
#   ROLLOUT_CACHE_DIR  (default ~/.cache/envoy-ai-rollout) the cache root
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
CACHE_ROOT="${ROLLOUT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/envoy-ai-rollout}"
DEST="$CACHE_ROOT/helm/$HELM_VERSION"

log() { printf '[helm-binary] %s\n' "$*" >&2; }
die() { printf '[helm-binary] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -n "${ROLLOUT_HELM_BIN:-}" ]]; then
  [[ -x "$ROLLOUT_HELM_BIN" ]] || die "ROLLOUT_HELM_BIN=$ROLLOUT_HELM_BIN is not an executable file"
  echo "$ROLLOUT_HELM_BIN"
  exit 0
fi
if [[ -x "$DEST/helm" ]]; then
  log "cached: $DEST/helm"
  echo "$DEST/helm"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH. Install Go >= 1.26 (https://go.dev/doc/install), or set ROLLOUT_HELM_BIN to a helm binary."

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
major="${HELM_VERSION%%.*}"   # v4.3.2 -> v4
module="helm.sh/helm/$major"
log "resolving $module@$HELM_VERSION from the Go module proxy"
if ! answer="$(go mod download -json "$module@$HELM_VERSION" 2>&1)"; then
  reason="$(printf '%s' "$answer" | sed -n 's/.*"Error": "\(.*\)".*/\1/p' | head -n 1)"
  die "could not download $module@$HELM_VERSION (${reason:-$answer}): is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))? Or set ROLLOUT_HELM_BIN to a helm binary."
fi

mkdir -p "$DEST"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/helm-binary.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# The same version stamp as helm's own Makefile for a tagged release.
ldflags="-s -w -X $module/internal/version.version=$HELM_VERSION -X $module/internal/version.gitTreeState=clean"
log "building helm $HELM_VERSION (about 9 minutes cold on 2 cores)"
GOBIN="$WORK" go install -trimpath -ldflags "$ldflags" "$module/cmd/helm@$HELM_VERSION" \
  || die "building helm $HELM_VERSION failed (see above)"
mv "$WORK/helm" "$DEST/helm"
"$DEST/helm" version --short >&2 || die "the built $DEST/helm does not run"
log "helm ready"
echo "$DEST/helm"
