#!/usr/bin/env bash
# Makes a minimal Debian base image with python3 + python3-venv for the Containerfile's BASE,
# from Debian packages only: `debootstrap --variant=minbase`, then `podman import`. Prints the
# image reference on its last line of stdout.
#
# Why: the machines this project is tested on reach Debian's package archive but no image
# registry, so the official python image cannot be pulled. Elsewhere, `make image` uses the
# official slim Python image and needs none of this.
#
# Cached twice: the root filesystem tarball under $ROLLOUT_CACHE_DIR/image-base/ (survives a
# wiped image store) and the imported image in podman's store (nothing is done when present).
#
# Environment:
#   BASE_SUITE        (default bookworm)  Debian suite; its python3 must be >= 3.11
#   DEBIAN_MIRROR     (default http://deb.debian.org/debian)
#   ROLLOUT_CACHE_DIR (default ~/.cache/envoy-ai-rollout) the cache root
set -euo pipefail

BASE_SUITE="${BASE_SUITE:-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv"
CACHE_ROOT="${ROLLOUT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/envoy-ai-rollout}"
TARBALL="$CACHE_ROOT/image-base/debian-$BASE_SUITE-minbase-python3.tar"
IMAGE="localhost/envoy-ai-rollout-base:$BASE_SUITE-python3"

log() { printf '[image-base] %s\n' "$*" >&2; }
die() { printf '[image-base] ERROR: %s\n' "$*" >&2; exit 1; }

command -v podman >/dev/null 2>&1 \
  || die "podman is not installed: run 'make image-tools' (Debian: apt-get install podman runc debootstrap)"

if podman image exists "$IMAGE"; then
  log "cached: $IMAGE"
  echo "$IMAGE"
  exit 0
fi

if [[ ! -s "$TARBALL" ]]; then
  command -v debootstrap >/dev/null 2>&1 \
    || die "debootstrap is not installed: run 'make image-tools' (Debian: apt-get install debootstrap)"
  [[ $(id -u) -eq 0 ]] || die "debootstrap needs root (it creates device nodes and chroots); run as root, or pass BASE=<an image with python3 >= 3.11> to 'make image'"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/image-base.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  log "debootstrap --variant=minbase $BASE_SUITE with $PACKAGES from $DEBIAN_MIRROR (~2 minutes)"
  debootstrap --variant=minbase --include="$PACKAGES" "$BASE_SUITE" "$WORK/rootfs" "$DEBIAN_MIRROR" \
    > "$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above): is $DEBIAN_MIRROR reachable?"; }
  root="$WORK/rootfs"
  version="$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  chroot "$root" python3 -c 'import sys, venv; assert sys.version_info >= (3, 11)' \
    || die "$BASE_SUITE's python3 is $version; the project needs >= 3.11"
  # Nothing that only apt, man or a translator would read: a smaller, equally working base.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/* "$root"/debootstrap
  mkdir -p "$(dirname "$TARBALL")"
  tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -C "$root" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  log "root filesystem cached: $TARBALL (python $version)"
fi

log "podman import $TARBALL as $IMAGE"
podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $BASE_SUITE + $PACKAGES" \
  "$TARBALL" "$IMAGE" >/dev/null \
  || die "podman import failed (see above)"
echo "$IMAGE"
