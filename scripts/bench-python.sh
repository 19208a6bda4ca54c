#!/usr/bin/env bash
# bench-python.sh: `herald bench python`'s figures: Herald's EventBridge and EventBus from
# Python beside the seeds' own (pyee; pure Python), same run. Builds the package in release
# mode into .venv first (scripts/python-package.sh sets .venv up).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-package.sh --build-only
.venv/bin/python -c 'import pyee' 2>/dev/null || .venv/bin/pip install --quiet --disable-pip-version-check pyee
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" \
  .venv/bin/maturin develop --release --quiet -m crates/herald-py/Cargo.toml >&2
.venv/bin/python crates/herald-py/bench/bench_python.py "${1:-50000}"
