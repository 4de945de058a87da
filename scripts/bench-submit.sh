#!/usr/bin/env bash
# The cost of `submit` (a benchmark, not a test: figures only), against the single-node
# SLURM cluster of scripts/slurm.sh (started here when none answers):
#
# - the submit overhead for 200 new sessions: planning, the submission folder and the two
#   sbatch calls (the jobs held with --hold and cancelled after, so nothing runs), against a
#   bare `sbatch --hold` of an empty script and the cron pass's own planning over the same
#   root (`status`), alternating, 3 rounds;
# - a submit pass over 200 complete sessions (what cron pays every few minutes) against a
#   cron run over the same complete root, alternating, median of 5;
# - --executor local over 20 new sessions of 1,000 particles against a plain pass over 20
#   copies, alternating (the cost of a process per array task).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin flowcam-pipeline --example make_session
target=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
bin=$target/release/flowcam-pipeline
make=$target/release/examples/make_session
if ! sinfo -h -o %a 2>/dev/null | grep -q up; then
  scripts/slurm.sh start target/slurm >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-bench-submit.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
since() { echo "$(now) - $1" | bc -l; }

"$make" --out root200 --particles 20 --pages 1 --prefix new --count 200 >/dev/null
printf '#!/bin/sh\ntrue\n' >empty.sh
submits=(); bares=(); plans=()
for i in 1 2 3; do
  t0=$(now)
  "$bin" submit -d root200 -o "out$i" --settle-seconds 0 --no-upload -q --sbatch-arg=--hold >submit.txt
  submits+=("$(since "$t0")")
  "$bin" cancel "$(sed -n 's/^submission \([^:]*\):.*/\1/p' submit.txt)" -o "out$i" >/dev/null
  t0=$(now); job=$(sbatch --parsable --hold -o /dev/null empty.sh); bares+=("$(since "$t0")"); scancel "$job"
  t0=$(now); "$bin" status -d root200 -o "out$i" --settle-seconds 0 >/dev/null; plans+=("$(since "$t0")")
done
submit=$(printf '%s\n' "${submits[@]}" | median)
bare=$(printf '%s\n' "${bares[@]}" | median)
plan=$(printf '%s\n' "${plans[@]}" | median)
printf 'submit, 200 new sessions (median of 3):  %.0f ms (%d array tasks + collect, jobs held)\n' "$(echo "$submit * 1000" | bc -l)" 200
printf 'bare sbatch --hold (median of 3):        %.0f ms; two of them are %.0f%% of submit\n' "$(echo "$bare * 1000" | bc -l)" "$(echo "2 * $bare * 100 / $submit" | bc -l)"
printf 'status over the same root (median of 3): %.0f ms; submit / status: %.2fx\n' "$(echo "$plan * 1000" | bc -l)" "$(echo "$submit / $plan" | bc -l)"

"$bin" -d root200 -o done --no-upload --settle-seconds 0 -q
cron=(); passes=()
for i in 1 2 3 4 5; do
  t0=$(now); "$bin" submit -d root200 -o done --no-upload -q >/dev/null; passes+=("$(since "$t0")")
  t0=$(now); "$bin" -d root200 -o done --no-upload -q >/dev/null; cron+=("$(since "$t0")")
done
pass=$(printf '%s\n' "${passes[@]}" | median)
run=$(printf '%s\n' "${cron[@]}" | median)
printf 'submit pass, 200 complete sessions (median of 5): %.0f ms; a cron run over them: %.0f ms; ratio %.2fx\n' \
  "$(echo "$pass * 1000" | bc -l)" "$(echo "$run * 1000" | bc -l)" "$(echo "$pass / $run" | bc -l)"

"$make" --out root20 --particles 1000 --pages 2 --prefix twenty --count 20 >/dev/null
locals=(); plain=()
for i in 1 2 3; do
  t0=$(now); "$bin" submit -d root20 -o "local$i" --settle-seconds 0 --no-upload -q --executor local --max-running 2 --cores 1 >/dev/null; locals+=("$(since "$t0")")
  t0=$(now); "$bin" -d root20 -o "plain$i" --settle-seconds 0 --no-upload -q --sessions 2 -j 2 >/dev/null; plain+=("$(since "$t0")")
done
l=$(printf '%s\n' "${locals[@]}" | median)
p=$(printf '%s\n' "${plain[@]}" | median)
printf 'executor local, 20 new sessions of 1000 particles (median of 3): %.2f s; a plain pass: %.2f s; ratio %.2fx\n' "$l" "$p" "$(echo "$l / $p" | bc -l)"
