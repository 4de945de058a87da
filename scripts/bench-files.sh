#!/usr/bin/env bash
# The full run against what its files cost the disk, and direct-to-bucket against the other
# ways of filling a bucket (a benchmark, not a test: figures only; issue 14).
#
#   scripts/bench-files.sh [SESSION]   SESSION defaults to the real 8,976-particle session
#
# Part 1, local vignettes. A bare loop (Python, no decoding, no metadata) creates exactly
# the files the pipeline creates, in the same layout: a folder per collage page, each
# page's files written under their own names (O_EXCL) into a hidden `.PAGE.partial`
# folder, one syncfs per page, the folder renamed into place, `vignettes/` synced; pages
# shared by 1 or 2 writer processes. In each of ROUNDS rounds (default 5) it alternates:
# loop with 1 writer, pipeline -j 1, loop with 2 writers, pipeline -j 2, each into a fresh
# folder. Prints the medians of wall, user and system time and, per round, the pipeline's
# ratio to the loop of the same round (their median). Each round then runs the same loop
# in the flat layout the pipeline had before (every page's temporaries in a staging
# folder of its own, each renamed into one shared `vignettes/` folder), with 1 and 2
# writers, to show what the layout buys.
#
# With DELETE_BEFORE=1 each run is preceded by deleting the output of the same kind of run
# of the round before (about 9,000 files), so that every run meets ext4 in its slow state
# (see below): the disk of a lab that deletes outputs and reruns, or of a busy server.
#
# Why ratios: on ext4 a new file's inode is found by scanning the block group's inode
# bitmap, and every inode freed in the last minutes is skipped only after reading its
# inode-table entry (`recently_deleted`, under ext4_create; `perf record -g` puts 75% of a
# run's samples there right after a deletion). Creating 8,976 files right after deleting
# 18,000 cost 3.58 s of system time, against 0.33 s with no deletion before (the bare
# loop, one writer): that, not the disk, is the "5 to 20 times" noise. Without
# DELETE_BEFORE this script never deletes between rounds; its clean-up at the end does, so
# a benchmark started right after it starts slow.
#
# Part 2, a bucket (a fresh local Garage on port 39100, scripts/garage.sh). In each of
# UPLOAD_ROUNDS rounds (default 3), alternating, each to a new key prefix:
#   upload alone          the pipeline on an output whose vignettes are already local
#   local then upload     a fresh output: vignettes written, then uploaded
#   direct                a fresh output with --no-local-vignettes
#   rclone copy           `rclone copy --transfers 32` of the same vignettes
# and the ratios of direct to the others (medians of the per-round ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
session=${1:-../shared/fixtures/flowcam/19_10_Tank25_blanksremoved}
rounds=${ROUNDS:-5}
upload_rounds=${UPLOAD_ROUNDS:-3}
[ -d "$session" ] || { echo "no session at $session" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
cargo build --release --quiet --bin flowcam-pipeline
bin=$PWD/target/release/flowcam-pipeline
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-bench-files.XXXXXX")
garage=""
trap '[ -n "$garage" ] && scripts/garage.sh stop "$garage"; rm -rf "$work"' EXIT
experiment=$(basename "$session")

# timed NAME COMMAND...: appends "NAME wall user system" to $work/times.
timed() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S" -o "$work/one.txt" "$@" >/dev/null
  echo "$name $(cat "$work/one.txt")" >>"$work/times"
}

# The files to make: a run's manifest (file, page, bytes), in the pipeline's own order.
"$bin" -d "$session" -o "$work/ref" --no-upload -q
manifest="$work/ref/$experiment/manifest.csv"

cat >"$work/bare.py" <<'EOF'
"""Creates the manifest's vignettes in the layout given, and nothing else."""
import csv, ctypes, multiprocessing as mp, os, sys
manifest, out, writers, layout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pages = {}
with open(manifest, newline="") as f:
    for row in csv.DictReader(f):
        if row["file"]:
            pages.setdefault(row["collage"], []).append((row["file"], int(row["bytes"])))
pages = list(pages.items())
libc = ctypes.CDLL(None, use_errno=True)
vignettes = os.path.join(out, "vignettes")
staging_root = os.path.join(out, ".state", "DecollageImages.staging")
os.makedirs(vignettes)
os.makedirs(staging_root)
data = os.urandom(max(b for _, files in pages for _, b in files))

def create(path, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data[:size])
    os.close(fd)

def sync(folder, whole_filesystem):
    fd = os.open(folder, os.O_RDONLY)
    libc.syncfs(fd) if whole_filesystem else os.fsync(fd)
    os.close(fd)

def page_folder(name, files):
    """The pipeline's layout: a page's files under their own names in a hidden folder that
    is renamed whole."""
    partial = os.path.join(vignettes, f".{name}.partial")
    os.mkdir(partial)
    for file, size in files:
        create(os.path.join(partial, file), size)
    sync(partial, True)
    os.rename(partial, os.path.join(vignettes, name))
    sync(vignettes, False)

def one_folder(name, files):
    """The flat layout the pipeline had before: each file renamed from its page's staging folder into one
    shared folder."""
    staging = os.path.join(staging_root, name)
    os.mkdir(staging)
    temps = []
    for file, size in files:
        temp = os.path.join(staging, f".{file}.partial")
        create(temp, size)
        temps.append((temp, os.path.join(vignettes, file)))
    sync(staging, True)
    for temp, final in temps:
        os.rename(temp, final)
    sync(vignettes, False)
    os.rmdir(staging)

def writer(w):
    page = page_folder if layout == "page-folders" else one_folder
    for index in range(w, len(pages), writers):
        page(*pages[index])

procs = [mp.Process(target=writer, args=(w,)) for w in range(writers)]
for p in procs: p.start()
for p in procs: p.join()
sys.exit(max(p.exitcode for p in procs))
EOF

echo "session: $session ($(nproc) cores), $(($(wc -l <"$manifest") - 1)) vignettes${DELETE_BEFORE:+, each run right after a deletion of ~9,000 files}"
: >"$work/times"
# fresh KIND N: a new output folder for run KIND of round N; with DELETE_BEFORE, the
# folder of round N-1 is deleted first.
fresh() {
  if [ -n "${DELETE_BEFORE:-}" ] && [ "$2" -gt 1 ]; then rm -rf "$work/$1-$(($2 - 1))"; fi
  echo "$work/$1-$2"
}
for n in $(seq "$rounds"); do
  timed "loop-1" python3 "$work/bare.py" "$manifest" "$(fresh loop1 "$n")" 1 page-folders
  timed "pipeline-j1" "$bin" -d "$session" -o "$(fresh j1 "$n")" --no-upload -q -j 1
  timed "loop-2" python3 "$work/bare.py" "$manifest" "$(fresh loop2 "$n")" 2 page-folders
  timed "pipeline-j2" "$bin" -d "$session" -o "$(fresh j2 "$n")" --no-upload -q -j 2
  timed "one-folder-1" python3 "$work/bare.py" "$manifest" "$(fresh of1 "$n")" 1 one-folder
  timed "one-folder-2" python3 "$work/bare.py" "$manifest" "$(fresh of2 "$n")" 2 one-folder
done

report() {
  python3 - "$work/times" "$@" <<'EOF'
import statistics, sys
times, pairs = sys.argv[1], sys.argv[2:]
runs = {}
for line in open(times):
    name, wall, user, system = line.split()
    runs.setdefault(name, []).append((float(wall), float(user), float(system)))
names = [name for name in runs if any(name in pair.split("/") for pair in pairs)]
n = len(runs[names[0]])
print(f"median of {n} alternating rounds:")
for name in names:
    wall, user, system = (statistics.median(r[k] for r in runs[name]) for k in range(3))
    print(f"  {name:<20} wall {wall:6.3f} s  user {user:6.3f} s  system {system:6.3f} s")
for pair in pairs:
    a, b = pair.split("/")
    ratios = [[x[k] / y[k] if y[k] > 0 else float("nan") for k in range(3)]
              for x, y in zip(runs[a], runs[b])]
    wall, user, system = (statistics.median(r[k] for r in ratios) for k in range(3))
    spread = ", ".join(f"{r[0]:.2f}" for r in ratios)
    print(f"  {a + ' / ' + b:<38} wall {wall:5.2f}x  user {user:5.2f}x  system {system:5.2f}x"
          f"  (wall per round: {spread})")
EOF
}

echo "== local vignettes: the pipeline against the bare loop of the same files and layout"
report pipeline-j1/loop-1 pipeline-j2/loop-2 pipeline-j2/pipeline-j1 loop-2/loop-1
echo "== the same files in the flat layout of before (a bare loop): what a folder per page buys"
report one-folder-2/one-folder-1 loop-1/one-folder-1 loop-2/one-folder-2

# ---- part 2: a bucket ----------------------------------------------------------------
[ "$upload_rounds" -gt 0 ] || exit 0
if ! command -v rclone >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null
  else
    echo "part 2 needs rclone (apt-get install rclone)" >&2; exit 1
  fi
fi
garage="$work/garage"
GARAGE_S3_PORT=39100 GARAGE_BUCKET=bench scripts/garage.sh start "$garage" >"$work/garage.env" 2>/dev/null
set -a; . "$work/garage.env"; set +a
export RCLONE_CONFIG="$work/rclone.conf"; : >"$RCLONE_CONFIG"
export RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other RCLONE_CONFIG_GARAGE_ENV_AUTH=true \
  RCLONE_CONFIG_GARAGE_ENDPOINT="$AWS_ENDPOINT_URL" RCLONE_CONFIG_GARAGE_REGION=garage
: >"$work/times"
for n in $(seq "$upload_rounds"); do
  timed "upload-alone" "$bin" -d "$session" -o "$work/ref" -q --s3-bucket bench --s3-prefix alone$n
  timed "local-then-upload" "$bin" -d "$session" -o "$work/lu-$n" -q --s3-bucket bench --s3-prefix lu$n
  timed "direct" "$bin" -d "$session" -o "$work/d-$n" -q --s3-bucket bench --s3-prefix d$n --no-local-vignettes
  # rclone refuses to start while AWS_CA_BUNDLE is set (this environment sets it).
  timed "rclone-copy" env -u AWS_CA_BUNDLE rclone -q copy --transfers 32 \
    "$work/ref/$experiment/vignettes" "garage:bench/rc$n/$experiment"
done
count() { env -u AWS_CA_BUNDLE rclone size --json "garage:bench/$1" | sed 's/.*"count":\([0-9]*\).*/\1/'; }
echo "== a bucket (objects in round 1: upload alone $(count alone1), local then upload $(count lu1), direct $(count d1), rclone $(count rc1))"
report direct/upload-alone direct/local-then-upload direct/rclone-copy local-then-upload/upload-alone
du -sk "$work/lu-1/$experiment" "$work/d-1/$experiment" | awk '{printf "  local output: %s %d KB\n", ($2 ~ /lu-1/ ? "local then upload" : "direct"), $1}'
