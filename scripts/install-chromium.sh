#!/usr/bin/env bash
# Makes sure a headless-capable Chromium is there for the dashboard's browser tests: Debian's
# `chromium` package (Playwright drives it through executable_path; no browser is downloaded).
set -euo pipefail
if [[ -n "${ROLLOUT_CHROMIUM:-}" && -x "${ROLLOUT_CHROMIUM}" ]] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[chromium] installing Debian's chromium package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  exit 0
fi
echo "[chromium] ERROR: no chromium binary. Install it (Debian/Ubuntu: sudo apt-get install chromium)" \
     "or set ROLLOUT_CHROMIUM to a Chromium binary." >&2
exit 1
