#!/usr/bin/env bash
# The project's test command: makes sure the one system tool the tests use (exiftool, which
# validates the vignettes' EXIF) is installed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v exiftool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing exiftool (libimage-exiftool-perl) for the EXIF tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libimage-exiftool-perl >/dev/null
  else
    echo "the tests need exiftool: install libimage-exiftool-perl (Debian/Ubuntu) or perl-Image-ExifTool" >&2
    exit 1
  fi
fi
exec cargo test "$@"
