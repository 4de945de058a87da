#!/usr/bin/env bash
# One very large session (a benchmark, not a test: figures only): 1,000,000 synthetic
# particles on 1,000 pages (PARTICLES and PAGES change them), first run locally (wall
# time, user and system time, peak RSS), then submitted as 8 shares of its pages to the
# single-node SLURM cluster of scripts/slurm.sh (started here when none answers): each
# task's time and peak RSS (from its report), the collect job's finishing time and peak
# RSS. Needs about 10 GB of free disk (two runs of a million vignettes).
#
# The cluster here is one node of this machine's cores, so the 8 tasks queue two at a time:
# the figures per task are what a node of a real cluster would see; the total is not.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin flowcam-pipeline --example make_session
target=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
bin=$target/release/flowcam-pipeline
make=$target/release/examples/make_session
particles=${PARTICLES:-1000000}
pages=${PAGES:-1000}
shares=8
if ! sinfo -h -o %a 2>/dev/null | grep -q up; then
  scripts/slurm.sh start target/slurm >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-bench-split.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The tasks run the binary submit ran: a copy, so that a rebuild meanwhile changes nothing.
cp "$bin" "$work/flowcam-pipeline"
bin=$work/flowcam-pipeline
cd "$work"
"$make" --out root --particles "$particles" --pages "$pages" --prefix big --page-width 1024 >/dev/null
session=$(ls root)

/usr/bin/time -f '%e %U %S %M' -o local.time \
  "$bin" -d "root/$session" -o local --settle-seconds 0 --no-upload -q
read -r wall user sys rss <local.time
printf 'local run, %d particles on %d pages: %.1f s (user %.1f s, system %.1f s), peak RSS %d MB\n' \
  "$particles" "$pages" "$wall" "$user" "$sys" "$((rss / 1024))"
rm -rf local

per=$(((pages + shares - 1) / shares))
start=$(date +%s.%N)
"$bin" submit -d root -o split --settle-seconds 0 --no-upload -q \
  --pages-per-task "$per" --cores 1 --memory 1000M >submit.txt
id=$(sed -n 's/^submission \([^:]*\):.*/\1/p' submit.txt)
folder=split/.submissions/$id
until [ -f "$folder/summary.json" ]; do sleep 2; done
end=$(date +%s.%N)
python3 - "$folder" "$start" "$end" <<'EOF'
import json, os, sys
from datetime import datetime
folder, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
seconds = lambda a, b: (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
reports = sorted(os.listdir(os.path.join(folder, "reports")))
for name in reports:
    r = json.load(open(os.path.join(folder, "reports", name)))
    line = r["sessions"][0]
    pages = line.get("pages", {})
    print(f"  task {r['task']}: pages {pages.get('first', 0) + 1}-{pages.get('end') or 'end'}: "
          f"{seconds(r['started_at'], r['finished_at']):.1f} s, peak RSS "
          f"{(r.get('peak_rss_kib') or 0) // 1024} MB, {line['outcome']['state']}")
s = json.load(open(os.path.join(folder, "summary.json")))
print(f"  collect (finishes the session): {seconds(s['started_at'], s['finished_at']):.1f} s, "
      f"peak RSS {(s.get('peak_rss_kib') or 0) // 1024} MB, "
      f"{s['finished'][0]['outcome']['state']}")
print(f"  submit to summary: {end - start:.1f} s ({len(reports)} tasks on this one node)")
EOF
