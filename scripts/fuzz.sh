#!/usr/bin/env bash
# fuzz.sh: runs each cargo-fuzz target (fuzz/: envelope, subject, pattern, config) for SECONDS
# (default 60) on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the flags libFuzzer needs).
# New corpus entries land in fuzz/corpus/<target>; a crash lands in fuzz/artifacts/<target> and
# is replayed by `cargo test -p herald --test fuzz_replay` once copied there.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in envelope subject pattern config; do
  echo "fuzz: $target for ${seconds}s" >&2
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | tail -5
done
