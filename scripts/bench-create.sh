#!/usr/bin/env bash
# What creating small files costs on this disk, by layout and number of writers (a
# benchmark, not a test: figures only; the groundwork of issue 14). A bare loop creates
# FILES files of SIZE bytes (default: the real session's 8,976 vignettes of about 4.7 KB,
# as 9 pages), each written then renamed from a temporary as the pipeline does:
#
#   one folder,      1 writer
#   one folder,      2 writers (processes), each its own pages
#   folder per page, 1 and 2 writers
#   temporaries in a folder per page, renamed into the one folder, 2 writers
#
# alternating, ROUNDS rounds (default 5), each into a fresh folder; prints the median wall,
# user and system time of each, and their ratios to the first.
set -euo pipefail
files=${FILES:-8976}
size=${SIZE:-4748}
pages=${PAGES:-9}
rounds=${ROUNDS:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-bench-create.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$files" "$size" "$pages" "$rounds" <<'EOF'
import os, sys, time, statistics, multiprocessing as mp
work, files, size, pages, rounds = sys.argv[1], *map(int, sys.argv[2:])
data = os.urandom(size)
per_page = -(-files // pages)

def write(folder, page, layout):
    # "page": files and temporaries in a folder per page; "staged": temporaries in a
    # folder per page, renamed into the one folder; else both in the one folder.
    out = os.path.join(folder, f"p{page}") if layout == "page" else folder
    staging = os.path.join(folder, f".staging-{page}") if layout == "staged" else out
    os.makedirs(out, exist_ok=True)
    os.makedirs(staging, exist_ok=True)
    for i in range(page * per_page, min(files, (page + 1) * per_page)):
        final = os.path.join(out, f"S_{i}.tif")
        temp = os.path.join(staging, f".S_{i}.tif.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.rename(temp, final)

def writer(folder, mine, layout):
    for page in mine:
        write(folder, page, layout)

def run(name, writers, layout, n):
    folder = os.path.join(work, f"{name}-{n}")
    os.makedirs(folder)
    before, t0 = os.times(), time.perf_counter()
    procs = [mp.Process(target=writer, args=(folder, range(w, pages, writers), layout))
             for w in range(writers)]
    for p in procs: p.start()
    for p in procs: p.join()
    wall, after = time.perf_counter() - t0, os.times()
    return wall, after.children_user - before.children_user, after.children_system - before.children_system

layouts = [("one folder, 1 writer", 1, "one"), ("one folder, 2 writers", 2, "one"),
           ("folder per page, 1 writer", 1, "page"), ("folder per page, 2 writers", 2, "page"),
           ("staged per page, 2 writers", 2, "staged")]
results = {name: [] for name, _, _ in layouts}
for n in range(rounds):
    for name, writers, layout in layouts:
        results[name].append(run(name.replace(" ", "_").replace(",", ""), writers, layout, n))
base = None
print(f"{files} files of {size} B on {pages} pages, median of {rounds} alternating rounds:")
for name, _, _ in layouts:
    wall, user, sys_ = (statistics.median(r[k] for r in results[name]) for k in range(3))
    base = base or (wall, sys_)
    print(f"  {name:<28} wall {wall:6.3f} s ({wall / base[0]:.2f}x)  user {user:6.3f} s  "
          f"system {sys_:6.3f} s ({sys_ / base[1]:.2f}x)")
EOF
