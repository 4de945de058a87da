#!/usr/bin/env bash
# Compares two builds' no-op rerun and `status` on one session, alternating them run by
# run (the disk's speed drifts from one minute to the next, so only same-run ratios count).
#
#   scripts/compare-noop.sh OLD_BIN NEW_BIN [SESSION] [ROUNDS]
#
# Each build first makes its own outputs of SESSION (default: the real session in
# ../shared), then ROUNDS (default 9) rounds run: old no-op rerun, new no-op rerun, old
# status, new status. Prints medians and the new/old ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2
session=${3:-../shared/fixtures/flowcam/19_10_Tank25_blanksremoved}
rounds=${4:-9}
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$old" -d "$session" -o "$work/old" -q --no-upload
"$new" -d "$session" -o "$work/new" -q --no-upload
python3 - "$old" "$new" "$session" "$work" "$rounds" <<'PY'
import statistics, subprocess, sys, time
old, new, session, work, rounds = sys.argv[1:6]
def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start
runs = {k: [] for k in ("old run", "new run", "old status", "new status")}
for _ in range(int(rounds)):
    for name, binary in (("old", old), ("new", new)):
        runs[f"{name} run"].append(timed([binary, "-d", session, "-o", f"{work}/{name}", "-q", "--no-upload"]))
    for name, binary in (("old", old), ("new", new)):
        runs[f"{name} status"].append(timed([binary, "status", "-d", session, "-o", f"{work}/{name}"]))
med = {k: statistics.median(v) * 1000 for k, v in runs.items()}
for k, v in med.items():
    print(f"{k:11} median {v:6.1f} ms (min {min(runs[k]) * 1000:.1f})")
print(f"no-op rerun new/old {med['new run'] / med['old run']:.2f}x, status new/old {med['new status'] / med['old status']:.2f}x")
PY
