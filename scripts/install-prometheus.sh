#!/usr/bin/env bash
# Makes sure a `prometheus` binary is on PATH (Debian's package; installing it starts nothing:
# our own launcher runs it on a loopback port for the tests and the demo).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 || [[ -n "${ROLLOUT_PROMETHEUS_BIN:-}" ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[prometheus] installing Debian's prometheus package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package's service must not run: our tests start their own servers.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  exit 0
fi
echo "[prometheus] ERROR: no prometheus binary. Install it (Debian/Ubuntu: sudo apt-get install prometheus)" \
     "or set ROLLOUT_PROMETHEUS_BIN to a prometheus >= 2.40 binary." >&2
exit 1
