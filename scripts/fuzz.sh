#!/usr/bin/env bash
# Fuzzes the local pipeline for SECONDS (default 60): see examples/fuzz.rs and README.md's
# Development section. Extra arguments go to the driver (--seed N, --known TAG, --jobs J,
# --timeout S, --cases N, --verbose). Exits non-zero when a case failed; each failure is
# saved under target/fuzz-failures/ with the command that replays it.
#
# The driver is built in the dev profile by default, the one `cargo test` already built
# every dependency in, so after the tests it costs only the example's own compile;
# FUZZ_PROFILE=release builds it optimised (about 3x the cases per second, but a release
# build of the dev-dependencies the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
[ "$#" -gt 0 ] && shift
profile=()
[ "${FUZZ_PROFILE:-dev}" = release ] && profile=(--release)
exec cargo run --quiet --locked "${profile[@]}" --example fuzz -- "$seconds" "$@"
