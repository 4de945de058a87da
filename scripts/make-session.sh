#!/usr/bin/env bash
# Writes synthetic FlowCam sessions (see src/synthetic.rs) for tests and scale benchmarks.
#
# Usage:
#   scripts/make-session.sh --out DIR --particles N --pages P
#       [--lat X --lon Y --date DDMMYYYY [--depth D]] [--prefix NAME] [--seed S]
#       [--extra-fields K] [--page-width W] [--count C]
#
# Examples:
#   scripts/make-session.sh --out /tmp/sessions --particles 5000 --pages 3
#   scripts/make-session.sh --out /tmp/sessions --particles 100000 --pages 20 \
#       --lat 56.4500 --lon -2.9700 --date 03052024 --depth 5 --prefix tay --count 10
#
# Prints the path of every session written. Builds the example in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run --quiet --release --example make_session -- "$@"
