#!/usr/bin/env bash
# The main job on the bundled sample session, end to end, on a machine with no object store:
# starts a throw-away local S3 server (Garage, scripts/garage.sh; built once and cached,
# about 11 minutes the first time), writes its endpoint and keys to a .env file in a work
# folder, and from there runs
#
#   flowcam-pipeline --directory fixtures/19_10_Tank25_blanksremoved --s3-bucket flowcam-demo
#
# twice: the first run makes the vignettes and uploads them, the second finds everything
# complete. Outputs go to ./output; the server is stopped at the end and keeps its data in
# target/demo-garage for the next demo.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cargo build --release --quiet --bin flowcam-pipeline
bin=$root/target/release/flowcam-pipeline

# The server keeps its data between demos, as the upload ledger in ./output remembers it.
server=$root/target/demo-garage
if [ -f "$server/env" ]; then
  scripts/garage.sh restart "$server"
else
  GARAGE_S3_PORT=${GARAGE_S3_PORT:-39200} GARAGE_BUCKET=flowcam-demo \
    scripts/garage.sh start "$server" >/dev/null
fi
trap '"$root/scripts/garage.sh" stop "$server"' EXIT

# The .env a user would write (see .env.example), here pointing at the local server.
work=$root/target/demo
mkdir -p "$work"
grep -E '^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|ENDPOINT_URL|REGION)=' "$server/env" >"$work/.env"
chmod 600 "$work/.env"

cd "$work"
for run in first second; do
  echo "== $run run" >&2
  "$bin" --directory "$root/fixtures/19_10_Tank25_blanksremoved" \
    --output-directory "$root/output" --s3-bucket flowcam-demo
done
ledger=$(ls "$root"/output/19_10_Tank25_blanksremoved/uploads/ledger-*.tsv)
echo "== $(($(wc -l <"$ledger") - 1)) objects confirmed in s3://flowcam-demo (ledger: ${ledger#"$root"/})" >&2
