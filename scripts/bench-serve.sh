#!/usr/bin/env bash
# The dashboard's speed (a benchmark, not a test: figures only), on loopback:
#
#   scripts/bench-serve.sh [SESSION]   SESSION defaults to ../shared/fixtures/flowcam/19_10_Tank25_blanksremoved
#
# - the real session's page, and its first gallery page with its 100 thumbnails, cold (a
#   new server: no status and no thumbnail made yet) and warm (the same again), 3 times
#   each, alternating;
# - /api/sessions over a root of 200 sessions (hard-linked copies of the bundled session,
#   processed first), under 64 concurrent clients: requests per second, p50 and p99;
#   then warm pages under the same 64 clients;
# - the server's peak RSS (VmHWM) after all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
session=${1:-../shared/fixtures/flowcam/19_10_Tank25_blanksremoved}
[ -d "$session" ] || { echo "no session at $session" >&2; exit 1; }
cargo build --release --quiet --bin flowcam-pipeline --example http_load
target=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
bin=$target/release/flowcam-pipeline
load=$target/release/examples/http_load
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-bench-serve.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# serve ROOT OUT: starts a server, leaves its pid in $pid and its address in $address.
serve() {
  "$bin" serve -d "$1" -o "$2" --listen 127.0.0.1:0 --settle-seconds 0 >"$work/serve.txt" 2>/dev/null &
  pid=$!
  for _ in $(seq 1 100); do
    address=$(sed -n 's|.*http://\([0-9.:]*\)/.*|\1|p' "$work/serve.txt")
    [ -n "$address" ] && return 0
    sleep 0.1
  done
  echo "the server did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

name=$(basename "$session")
mkdir -p "$work/one"
ln -s "$(cd "$session" && pwd)" "$work/one/$name"
"$bin" -d "$work/one/$name" -o "$work/one-out" --no-upload -q

echo "== the real session ($name), one server per cold round"
for round in 1 2 3; do
  serve "$work/one" "$work/one-out"
  echo "-- round $round, cold"
  "$load" page "$address" "/sessions/$name"
  "$load" page "$address" "/sessions/$name/gallery"
  echo "-- round $round, warm"
  "$load" page "$address" "/sessions/$name"
  "$load" page "$address" "/sessions/$name/gallery"
  stop
done

echo "== a root of 200 sessions"
mkdir -p "$work/many"
for i in $(seq -w 1 200); do
  cp -al fixtures/19_10_Tank25_blanksremoved "$work/many/S${i}_54.0143_-2.7770_04052023_1"
done
t0=$(date +%s.%N)
"$bin" -d "$work/many" -o "$work/many-out" --no-upload --settle-seconds 0 -q
printf 'processing the 200 sessions: %.1f s\n' "$(echo "$(date +%s.%N) - $t0" | bc -l)"
serve "$work/many" "$work/many-out"
t0=$(date +%s.%N)
"$load" load "$address" /api/sessions 1 1 >/dev/null
printf 'first /api/sessions (every status computed): %.0f ms\n' "$(echo "($(date +%s.%N) - $t0) * 1000" | bc -l)"
"$load" load "$address" /api/sessions 64 10
"$load" load "$address" / 64 10
"$load" load "$address" "/sessions/S001_54.0143_-2.7770_04052023_1" 64 10
"$load" load "$address" "/sessions/S001_54.0143_-2.7770_04052023_1/gallery" 64 10
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")"
stop
