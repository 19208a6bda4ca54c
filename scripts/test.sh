#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it: services up, format, lints, tests, and the
# demo without a network.
set -euo pipefail
cd "$(dirname "$0")/.."

export HERALD_REQUIRE_SERVICES="${HERALD_REQUIRE_SERVICES:-1}"
export HERALD_TEST_NATS_URL="${HERALD_TEST_NATS_URL:-nats://127.0.0.1:4222}"
export HERALD_TEST_DATABASE_URL="${HERALD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

bash scripts/services.sh
bash scripts/python-deps.sh
bash scripts/browser-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet

# The Python package (PyO3 + maturin) into .venv, and its pytest suite.
pylog="$(mktemp)"
trap 'rm -f "$log" "$pylog"' EXIT
bash scripts/python-package.sh 2>&1 | tee "$pylog"

# `herald demo` needs no server and no network.
cargo build -q --bin herald
if unshare -n true 2>/dev/null; then
  unshare -n target/debug/herald demo --quiet
else
  echo "test.sh: unshare -n unavailable here; running the demo with the network" >&2
  target/debug/herald demo --quiet
fi

# One closing line for the whole run, summed over every test binary.
sum() { grep -E '^test result:' "$log" | sed -E "s/.* ([0-9]+) $1.*/\\1/" | awk '{s += $1} END {print s + 0}'; }
pycount() { grep -Eo "[0-9]+ $1" "$pylog" | tail -1 | grep -Eo '[0-9]+' || echo 0; }
passed=$(( $(sum passed) + $(pycount passed) ))
failed=$(( $(sum failed) + $(pycount failed) ))
echo "herald: ${passed} passed, ${failed} failed"
