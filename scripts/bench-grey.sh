#!/usr/bin/env bash
# Bytes per session with RGB and with grey vignettes (a benchmark, not a test: figures
# only): SESSION, by default the real 8,976-particle session of ../shared/fixtures (or the
# bundled one), run with --ecotaxa both ways; the TIFFs, the EcoTaxa PNGs and the zip, in
# bytes and per vignette.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin flowcam-pipeline
bin=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/flowcam-pipeline
session=${1:-../shared/fixtures/flowcam/19_10_Tank25_blanksremoved}
[ -d "$session" ] || session=fixtures/19_10_Tank25_blanksremoved
session=$(cd "$session" && pwd)
name=$(basename "$session")
work=$(mktemp -d "${TMPDIR:-/tmp}/flowcam-bench-grey.XXXXXX")
trap 'rm -rf "$work"' EXIT
bytes() { find "$1" -type f -name "$2" -printf '%s\n' | awk '{s+=$1; n++} END {printf "%d %d", s, n}'; }
for mode in rgb grey; do
  flag=(); [ "$mode" = grey ] && flag=(--grey-vignettes)
  "$bin" -d "$session" -o "$work/$mode" --settle-seconds 0 --no-upload --ecotaxa -q "${flag[@]}"
  out=$work/$mode/$name
  read -r tiff n <<<"$(bytes "$out/vignettes" '*.tif')"
  read -r png _ <<<"$(bytes "$out/ecotaxa" '*.png')"
  zip=$(stat -c %s "$out"/ecotaxa_*.zip)
  printf '%-4s %d vignettes: TIFFs %.1f MB (%d B each), PNGs %.1f MB (%d B each), zip %.1f MB\n' \
    "$mode" "$n" "$(echo "$tiff / 1000000" | bc -l)" "$((tiff / n))" \
    "$(echo "$png / 1000000" | bc -l)" "$((png / n))" "$(echo "$zip / 1000000" | bc -l)"
  eval "${mode}_tiff=$tiff ${mode}_png=$png ${mode}_zip=$zip"
done
printf 'grey / rgb: TIFFs %.2f, PNGs %.2f, zip %.2f\n' \
  "$(echo "$grey_tiff / $rgb_tiff" | bc -l)" "$(echo "$grey_png / $rgb_png" | bc -l)" \
  "$(echo "$grey_zip / $rgb_zip" | bc -l)"
