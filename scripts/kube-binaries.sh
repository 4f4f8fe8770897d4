#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from their Go modules into a cache outside the repo,
# only when missing. Prints the folder holding both binaries on its last line of stdout.
#
# Why from source: the machines this project runs on reach the Go module proxy but no
# release download site, and Debian's etcd (3.4) is too old for Kubernetes >= 1.31.
#
# Environment:
#   KUBE_VERSION   (default v1.36.3)   k8s.io/kubernetes version for kube-apiserver
#   ETCD_VERSION   (default v3.6.16)   go.etcd.io/etcd/server/v3 version
#   ROLLOUT_CACHE_DIR (default ~/.cache/envoy-ai-rollout) the cache root
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${ROLLOUT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/envoy-ai-rollout}"
DEST="$CACHE_ROOT/kube/${KUBE_VERSION}-etcd-${ETCD_VERSION}"

log() { printf '[kube-binaries] %s\n' "$*" >&2; }
die() { printf '[kube-binaries] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -x "$DEST/kube-apiserver" && -x "$DEST/kubectl" && -x "$DEST/etcd" ]]; then
  log "cached: $DEST"
  echo "$DEST"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH. Install Go >= 1.25 (https://go.dev/doc/install), or point KUBEBUILDER_ASSETS at a folder holding kube-apiserver and etcd (e.g. from 'setup-envtest use 1.36')."

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$DEST"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kube-binaries.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# ---- kube-apiserver and kubectl (one wrapper module) -------------------------------------
if [[ ! -x "$DEST/kube-apiserver" || ! -x "$DEST/kubectl" ]]; then
  log "resolving k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy"
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')" \
    || die "could not download k8s.io/kubernetes@$KUBE_VERSION: is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?"
  staging_version="v0${KUBE_VERSION#v1}"   # v1.36.3 -> v0.36.3
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
  # paths; outside its own repo those must point at the published staging versions.
  mapfile -t staging < <(grep -E '=>[[:space:]]*\./staging/src/' "$gomod" | awk '{print $1}' | sort -u)
  [[ ${#staging[@]} -gt 0 ]] || die "no staging modules found in $gomod"
  log "wrapper module with ${#staging[@]} staging replaces at $staging_version"
  mkdir -p "$WORK/apiserver"
  {
    echo "module local/kubebuild"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    for m in "${staging[@]}"; do echo "replace $m => $m $staging_version"; done
  } > "$WORK/apiserver/go.mod"
  cat > "$WORK/apiserver/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  done
  for cmd in kube-apiserver kubectl; do
    [[ -x "$DEST/$cmd" ]] && continue
    log "building $cmd $KUBE_VERSION (a cold kube-apiserver build takes ~10 minutes on 2 cores; kubectl reuses most of it)"
    (cd "$WORK/apiserver" && go build -trimpath -ldflags "$ldflags" -o "$DEST/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd") \
      || die "building $cmd failed (see above)"
    mv "$DEST/$cmd.tmp" "$DEST/$cmd"
    log "$cmd ready"
  done
fi

# ---- etcd -----------------------------------------------------------------------------
if [[ ! -x "$DEST/etcd" ]]; then
  log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3)"
  mkdir -p "$WORK/etcd"
  (cd "$WORK/etcd" && go mod init local/etcdbuild >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
    && go build -trimpath -ldflags "-s -w" -o "$DEST/etcd.tmp" go.etcd.io/etcd/server/v3) \
    || die "building etcd failed (see above)"
  mv "$DEST/etcd.tmp" "$DEST/etcd"
  log "etcd ready"
fi

echo "$DEST"
