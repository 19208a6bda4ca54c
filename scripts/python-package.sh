#!/usr/bin/env bash
# python-package.sh: builds Herald's Python package (crates/herald-py, PyO3 + maturin) into
# the virtualenv .venv and runs its pytest suite. Idempotent; installs what it needs from
# PyPI (maturin, pytest, pytest-asyncio, pydantic, nats-py) into .venv only.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "python-package: $*" >&2; }

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing python3-venv"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >&2
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import maturin, pytest, pytest_asyncio, pydantic, nats' 2>/dev/null; then
  log "installing maturin, pytest, pytest-asyncio, pydantic, nats-py into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "maturin>=1.5,<2" pytest pytest-asyncio "pydantic>=2" nats-py >&2
fi
log "building and installing the package (maturin develop)"
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" \
  .venv/bin/maturin develop --quiet -m crates/herald-py/Cargo.toml >&2
if [ "${1:-}" != "--build-only" ]; then
  log "running pytest"
  .venv/bin/python -m pytest -q crates/herald-py/tests
fi
