#!/usr/bin/env bash
# Speed and memory of the pipeline (a benchmark, not a test: figures only).
#
#   scripts/bench.sh [SESSION]     SESSION defaults to ../shared/fixtures/flowcam/19_10_Tank25_blanksremoved
#
# First scripts/bench-files.sh: the full run as ratios to a bare loop creating the same
# files in the same layout (1 and 2 workers), and direct-to-bucket against local then
# upload, the upload alone and rclone copy, all alternating in one run.
#
# Then the local stages, with upload off:
# Prints, for the full real session: wall time, vignettes per second, peak RSS, the
# decode-only floor (the same binary decoding the collages and nothing else), their ratio,
# and the time of a no-op rerun; then peak RSS for synthetic sessions of 9,000 particles on
# 9 and on 36 pages, to show memory does not grow with the number of collages. Each run
# writes to a new folder.
#
# Then cron passes over a root: 200 sessions already complete (median of 5 passes), and 20
# new sessions of 1,000 particles (wall time, sessions per second, CPU utilisation).
#
# Then the upload stage, against a fresh local Garage (scripts/garage.sh, on port 39100):
# the session's vignettes and tables uploaded by the pipeline (objects per second), a no-op
# rerun, and the same vignettes copied by `rclone copy --transfers 32` (Debian package
# rclone) to the same server in the same run, with its no-op copy and the ratios.
#
# Then the dashboard (scripts/bench-serve.sh): page and gallery times cold and warm, and
# /api/sessions over 200 sessions under 64 concurrent clients.
#
# Then submit (scripts/bench-submit.sh): its overhead for 200 sessions, a pass over 200
# complete sessions, and the local executor, against a single-node SLURM.
#
# Then bytes per session with RGB and grey vignettes (scripts/bench-grey.sh).
#
# Last, one session of 1,000,000 particles on 1,000 pages (scripts/bench-split.sh): run
# locally (time, peak RSS), then as 8 shares of its pages on the single-node SLURM (time
# and peak RSS per task, the collect job's); about 15 minutes and 10 GB of disk, so
# SPLIT=0 leaves it out.
set -euo pipefail
cd "$(dirname "$0")/.."
session=${1:-../shared/fixtures/flowcam/19_10_Tank25_blanksremoved}
[ -d "$session" ] || { echo "no session at $session" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

cargo build --release --quiet --bin flowcam-pipeline --example make_session
scripts/bench-files.sh "$session"
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
printf 'no-op rerun (median of 5): %.1f ms (checks every vignette: one stat each)\n' "$(echo "$noop * 1000" | bc -l)"

# status, which checks the same and counts the vignettes on disk.
statuses=(); for i in 1 2 3 4 5; do
  t0=$(now); "$bin" status -d "$session" -o "$work/full1" >/dev/null; t1=$(now)
  statuses+=("$(echo "$t1 - $t0" | bc -l)")
done
printf 'status (median of 5):     %.1f ms\n' "$(echo "$(printf '%s\n' "${statuses[@]}" | median) * 1000" | bc -l)"

# Peak memory against workers and the page memory budget (--memory-limit, MiB).
for args in "-j 1" "-j 9" "-j 32" "-j 9 --memory-limit 64" "-j 32 --memory-limit 64"; do
  # shellcheck disable=SC2086
  run "$work/mem-$RANDOM" -d "$session" $args
  printf 'peak RSS with %-24s %d MB\n' "$args:" $((rss / 1024))
done

for pages in 9 36; do
  dir=$(target/release/examples/make_session --out "$work/synth$pages" --particles 9000 --pages "$pages" --prefix "synth$pages" | tail -1)
  run "$work/synth-out$pages" -d "$dir"
  printf 'synthetic, 9000 particles on %2d pages: %.3f s, peak RSS %d MB\n' "$pages" "$wall" $((rss / 1024))
done

# ---- cron passes over a root ---------------------------------------------------------
# Sessions are written just now, so --settle-seconds 0 (the default 60 would make them wait).
target/release/examples/make_session --out "$work/root200" --particles 20 --pages 1 --prefix done --count 200 >/dev/null
"$bin" -d "$work/root200" -o "$work/root200-out" --no-upload --settle-seconds 0 -q
passes=(); for i in 1 2 3 4 5; do
  t0=$(now); "$bin" -d "$work/root200" -o "$work/root200-out" --no-upload -q; t1=$(now)
  passes+=("$(echo "$t1 - $t0" | bc -l)")
done
pass=$(printf '%s\n' "${passes[@]}" | median)
printf 'cron pass, 200 complete sessions (median of 5): %.0f ms\n' "$(echo "$pass * 1000" | bc -l)"
target/release/examples/make_session --out "$work/root20" --particles 1000 --pages 2 --prefix new --count 20 >/dev/null
/usr/bin/time -f "%e %U %S" -o "$work/pass-cpu.txt" "$bin" -d "$work/root20" -o "$work/root20-out" --no-upload --settle-seconds 0 -q
read -r pwall puser psys <"$work/pass-cpu.txt"
printf 'cron pass, 20 new sessions of 1000 particles: %.2f s, %.1f sessions/s, CPU %.0f%% of %d cores (user %.2f s, system %.2f s)\n' \
  "$pwall" "$(echo "20 / $pwall" | bc -l)" "$(echo "($puser + $psys) * 100 / ($pwall * $(nproc))" | bc -l)" "$(nproc)" "$puser" "$psys"

# ---- upload stage -------------------------------------------------------------------
if ! command -v rclone >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null
  else
    echo "the upload stage needs rclone (apt-get install rclone)" >&2; exit 1
  fi
fi
GARAGE_S3_PORT=39100 GARAGE_BUCKET=bench scripts/garage.sh start "$work/garage" >"$work/garage.env" 2>/dev/null
trap 'scripts/garage.sh stop "$work/garage"; rm -rf "$work"' EXIT
set -a; . "$work/garage.env"; set +a
experiment=$(basename "$session")
objects=$((particles + 3))

# The pipeline: decollage is already complete in full1, so this times the upload alone.
t0=$(now); /usr/bin/time -f "%U %S" -o "$work/ours-cpu.txt" "$bin" -d "$session" -o "$work/full1" --s3-bucket bench --s3-prefix ours >"$work/upload.txt"; t1=$(now)
ours=$(echo "$t1 - $t0" | bc -l)
export RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other RCLONE_CONFIG_GARAGE_ENV_AUTH=true \
  RCLONE_CONFIG_GARAGE_ENDPOINT="$AWS_ENDPOINT_URL" RCLONE_CONFIG_GARAGE_REGION=garage
# rclone refuses to start while AWS_CA_BUNDLE is set (this environment sets it).
rclone() { env -u AWS_CA_BUNDLE rclone -q "$@"; }
sent=$(rclone size --json "garage:bench/ours/$experiment" | sed 's/.*"count":\([0-9]*\).*/\1/')
noops=(); for i in 1 2 3 4 5; do
  t0=$(now); "$bin" -d "$session" -o "$work/full1" --s3-bucket bench --s3-prefix ours >/dev/null; t1=$(now)
  noops+=("$(echo "$t1 - $t0" | bc -l)")
done
ours_noop=$(printf '%s\n' "${noops[@]}" | median)

remote="garage:bench/rclone/$experiment"
t0=$(now); /usr/bin/time -f "%U %S" -o "$work/rclone-cpu.txt" env -u AWS_CA_BUNDLE rclone -q copy --transfers 32 "$work/full1/$experiment/vignettes" "$remote"; t1=$(now)
theirs=$(echo "$t1 - $t0" | bc -l)
t0=$(now); rclone copy --transfers 32 "$work/full1/$experiment/vignettes" "$remote"; t1=$(now)
theirs_noop=$(echo "$t1 - $t0" | bc -l)

printf 'upload, pipeline:          %.2f s, %d objects (%s in the bucket), %.0f objects/s\n' "$ours" "$objects" "$sent" "$(echo "$objects / $ours" | bc -l)"
printf 'upload, rclone --transfers 32: %.2f s, %d objects, %.0f objects/s\n' "$theirs" "$particles" "$(echo "$particles / $theirs" | bc -l)"
cpu() { awk '{printf "%.2f s (user %.2f + system %.2f)", $1 + $2, $1, $2}' "$1"; }
printf 'upload CPU, pipeline:      %s\n' "$(cpu "$work/ours-cpu.txt")"
printf 'upload CPU, rclone:        %s\n' "$(cpu "$work/rclone-cpu.txt")"
printf 'rclone / pipeline:         %.2fx (per object)\n' "$(echo "($theirs / $particles) / ($ours / $objects)" | bc -l)"
printf 'no-op rerun, pipeline:     %.1f ms (median of 5)\n' "$(echo "$ours_noop * 1000" | bc -l)"
printf 'no-op copy, rclone:        %.2f s\n' "$theirs_noop"


# The dashboard: its own script, with its own figures.
scripts/bench-serve.sh "$session"

# The cost of submit (SLURM, and the local executor): its own script, with its own figures.
scripts/bench-submit.sh

# Bytes per session, RGB against grey vignettes.
scripts/bench-grey.sh "$session"

# A million particles, locally and split by pages across array tasks.
if [ "${SPLIT:-1}" != 0 ]; then
  scripts/bench-split.sh
fi
