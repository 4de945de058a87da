#!/usr/bin/env bash
# The project's test command. Makes sure what the tests need is there, then runs them all:
# - exiftool, which validates the vignettes' EXIF (Debian: libimage-exiftool-perl);
# - Chromium and ChromeDriver, for the dashboard's browser test (Debian: chromium,
#   chromium-driver);
# - a real S3 server: a throw-away Garage on 127.0.0.1 (scripts/garage.sh; built once and
#   cached, about 11 minutes the first time), unless FLOWCAM_TEST_GARAGE names the folder of
#   one already running (as .ci/run does);
# - a real single-node SLURM cluster (scripts/slurm.sh: munge, slurmctld, slurmd from
#   Debian, installed with apt-get as root), unless `sinfo` finds one up.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v exiftool >/dev/null 2>&1 || missing+=(libimage-exiftool-perl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} for the tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need: ${missing[*]} (Debian/Ubuntu package names)" >&2
    exit 1
  fi
fi
stops=()
trap 'for s in "${stops[@]}"; do eval "$s"; done' EXIT
if [ -z "${FLOWCAM_TEST_GARAGE:-}" ]; then
  scripts/garage.sh start target/garage >/dev/null
  stops+=("scripts/garage.sh stop target/garage")
  export FLOWCAM_TEST_GARAGE="$PWD/target/garage"
fi
# A real SLURM cluster for the batch tests, unless one answers already (as on a cluster's
# login node, or when .ci/run started it).
if ! sinfo -h -o %a 2>/dev/null | grep -q up; then
  scripts/slurm.sh start target/slurm >/dev/null
  stops+=("scripts/slurm.sh stop target/slurm")
fi
cargo test "$@"
