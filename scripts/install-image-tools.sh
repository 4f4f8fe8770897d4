#!/usr/bin/env bash
# Makes sure podman, runc and debootstrap are installed (Debian's packages): the image test
# builds the controller image with podman on a base made by debootstrap. Installing them
# starts nothing.
set -euo pipefail
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
[[ -x /usr/sbin/runc ]] || command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[image-tools] installing Debian's ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # With its recommends: netavark, slirp4netns, fuse-overlayfs, catatonit (as tested here).
  apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "[image-tools] ERROR: ${missing[*]} missing. Install them (Debian/Ubuntu:" \
     "sudo apt-get install podman runc debootstrap); the image test needs them." >&2
exit 1
