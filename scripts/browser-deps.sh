#!/usr/bin/env bash
# browser-deps.sh: Debian's chromium, for the live page's headless browser test.
# Idempotent: does nothing when chromium is already installed.
set -euo pipefail

log() { echo "browser-deps: $*" >&2; }

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
log "installing chromium"
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
command -v chromium >/dev/null || { log "chromium did not install"; exit 1; }
