#!/usr/bin/env bash
# Speed and memory of the pipeline, with upload off (a benchmark, not a test: figures only).
#
#   scripts/bench.sh [SESSION]     SESSION defaults to ../shared/fixtures/flowcam/19_10_Tank25_blanksremoved
#
# Prints, for the full real session: wall time, vignettes per second, peak RSS, the
# decode-only floor (the same binary decoding the collages and nothing else), their ratio,
# and the time of a no-op rerun; then peak RSS for synthetic sessions of 9,000 particles on
# 9 and on 36 pages, to show memory does not grow with the number of collages. Each run
# writes to a new folder.
set -euo pipefail
cd "$(dirname "$0")/.."
session=${1:-../shared/fixtures/flowcam/19_10_Tank25_blanksremoved}
[ -d "$session" ] || { echo "no session at $session" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

cargo build --release --quiet --example make_session
bin=target/release/flowcam-pipeline
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
# run OUT ARGS...: runs the pipeline, leaves wall seconds in $wall and peak RSS (KB) in $rss
run() {
  local out=$1; shift
  local t0 t1
  t0=$(now)
  /usr/bin/time -v -o "$work/time.txt" "$bin" "$@" -o "$out" --no-upload >"$work/stdout.txt"
  t1=$(now)
  wall=$(echo "$t1 - $t0" | bc -l)
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time.txt")
  user=$(awk -F': ' '/User time/ {print $2}' "$work/time.txt")
  sys=$(awk -F': ' '/System time/ {print $2}' "$work/time.txt")
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "session: $session ($(nproc) cores)"
particles=$(($(wc -l < "$(ls "$session"/*.lst)") - 2 - $(sed -n 2p "$(ls "$session"/*.lst)" | cut -d'|' -f2)))

floors=(); for i in 1 2 3; do
  t0=$(now); "$bin" decode-only --directory "$session" >/dev/null; t1=$(now)
  floors+=("$(echo "$t1 - $t0" | bc -l)")
done
floor=$(printf '%s\n' "${floors[@]}" | median)

walls=(); rsss=(); cpu=()
for i in 1 2 3; do
  run "$work/full$i" -d "$session"
  walls+=("$wall"); rsss+=("$rss"); cpu+=("user ${user} s, system ${sys} s")
done
full=$(printf '%s\n' "${walls[@]}" | median)
peak=$(printf '%s\n' "${rsss[@]}" | sort -g | tail -1)

noops=(); for i in 1 2 3 4 5; do run "$work/full1" -d "$session"; noops+=("$wall"); done
noop=$(printf '%s\n' "${noops[@]}" | median)

printf 'full run (median of 3):   %.3f s, %d vignettes, %.0f vignettes/s\n' "$full" "$particles" "$(echo "$particles / $full" | bc -l)"
printf 'CPU of the 3 runs:         %s\n' "$(IFS=';'; echo "${cpu[*]}")"
printf 'peak RSS:                 %d MB\n' $((peak / 1024))
printf 'decode-only floor:        %.3f s (median of 3)\n' "$floor"
printf 'full / floor:             %.2fx\n' "$(echo "$full / $floor" | bc -l)"
printf 'no-op rerun (median of 5): %.1f ms\n' "$(echo "$noop * 1000" | bc -l)"

for pages in 9 36; do
  dir=$(target/release/examples/make_session --out "$work/synth$pages" --particles 9000 --pages "$pages" --prefix "synth$pages" | tail -1)
  run "$work/synth-out$pages" -d "$dir"
  printf 'synthetic, 9000 particles on %2d pages: %.3f s, peak RSS %d MB\n' "$pages" "$wall" $((rss / 1024))
done
