#!/usr/bin/env bash
# python-deps.sh: python3 with nats-py, for the test that talks to a seed 004 Python peer.
# Idempotent: does nothing when `import nats` already works.
set -euo pipefail

log() { echo "python-deps: $*" >&2; }

if ! command -v python3 >/dev/null; then
  log "installing python3"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip >&2
fi
if python3 -c 'import nats' 2>/dev/null; then
  exit 0
fi
log "installing nats-py"
python3 -m pip install --quiet --disable-pip-version-check nats-py >&2 \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages nats-py >&2
python3 -c 'import nats' || { log "nats-py did not install"; exit 1; }
