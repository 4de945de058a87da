#!/usr/bin/env bash
# A real, throw-away S3 server for the tests and the benchmark: a single-node Garage
# (https://garagehq.deuxfleurs.fr, crates.io package `garage`) on 127.0.0.1.
#
#   scripts/garage.sh install        build Garage once and cache it (about 11 min on 2 cores)
#   scripts/garage.sh start [DIR]    a fresh server with its data in DIR (default target/garage,
#                                    wiped first), one bucket and one access key; writes the
#                                    endpoint and keys to DIR/env (NAME=value lines) and prints them
#   scripts/garage.sh restart DIR    start the server of DIR again on its existing data
#   scripts/garage.sh stop [DIR]     stop it
#
# Environment: GARAGE_S3_PORT (default: a free port) and GARAGE_RPC_PORT (default S3 port
# + 1) for the ports; GARAGE_BIN for a Garage binary of your own; FLOWCAM_CACHE for the cache folder
# (default ~/.cache/flowcam-pipeline); GARAGE_BUCKET (default flowcam-test).
# The keys are random per server and only ever guard this throw-away data folder.
set -euo pipefail
cd "$(dirname "$0")/.."

GARAGE_VERSION=2.5.0
CACHE="${FLOWCAM_CACHE:-$HOME/.cache/flowcam-pipeline}"

garage_bin() {
  if [ -n "${GARAGE_BIN:-}" ]; then
    echo "$GARAGE_BIN"
  elif [ -x "$CACHE/garage/bin/garage" ]; then
    echo "$CACHE/garage/bin/garage"
  elif command -v garage >/dev/null 2>&1; then
    command -v garage
  else
    return 1
  fi
}

install() {
  if garage_bin >/dev/null; then
    return 0
  fi
  echo "building garage $GARAGE_VERSION into $CACHE/garage (once; about 11 minutes on 2 cores)" >&2
  cargo install garage --version "$GARAGE_VERSION" --locked --root "$CACHE/garage" >&2
}

# A port P such that P and P+1 are free on 127.0.0.1 (so that a server left behind by an
# earlier run never collides with this one).
free_port_pair() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
      ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port pair found" >&2
  return 1
}

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

wait_until_up() {
  local bin=$1 dir=$2
  for _ in $(seq 1 100); do
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "garage exited at start; its log:" >&2
      tail -20 "$dir/garage.log" >&2
      return 1
    fi
    if "$bin" -c "$dir/garage.toml" status >/dev/null 2>&1 &&
      (exec 3<>"/dev/tcp/127.0.0.1/$(cat "$dir/s3-port")") 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "garage did not come up within 20 s; its log: $dir/garage.log" >&2
  return 1
}

launch() {
  local bin=$1 dir=$2
  nohup "$bin" -c "$dir/garage.toml" server >>"$dir/garage.log" 2>&1 &
  echo $! >"$dir/pid"
  wait_until_up "$bin" "$dir"
}

start() {
  local dir=${1:-target/garage}
  install
  local bin
  bin=$(garage_bin)
  stop "$dir" 2>/dev/null || true
  rm -rf "$dir"
  mkdir -p "$dir/meta" "$dir/data"
  dir=$(cd "$dir" && pwd)
  local s3_port=${GARAGE_S3_PORT:-$(free_port_pair)}
  local rpc_port=${GARAGE_RPC_PORT:-$((s3_port + 1))}
  local bucket=${GARAGE_BUCKET:-flowcam-test}
  echo "$s3_port" >"$dir/s3-port"
  cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
EOF
  chmod 600 "$dir/garage.toml"
  launch "$bin" "$dir"
  local g=("$bin" -c "$dir/garage.toml")
  local node
  node=$("${g[@]}" node id -q 2>/dev/null | cut -d@ -f1)
  "${g[@]}" layout assign -z dc1 -c 1G "$node" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  local key_id="GK$(random_hex 12)" secret
  secret=$(random_hex 32)
  "${g[@]}" key import --yes -n flowcam-test "$key_id" "$secret" >/dev/null
  "${g[@]}" key allow --create-bucket "$key_id" >/dev/null
  "${g[@]}" bucket create "$bucket" >/dev/null
  "${g[@]}" bucket allow --read --write --owner "$bucket" --key "$key_id" >/dev/null
  cat >"$dir/env" <<EOF
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$secret
AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port
AWS_REGION=garage
FLOWCAM_TEST_BUCKET=$bucket
GARAGE_DIR=$dir
EOF
  chmod 600 "$dir/env"
  echo "garage is up (pid $(cat "$dir/pid")) on 127.0.0.1:$s3_port; endpoint and keys in $dir/env" >&2
  cat "$dir/env"
}

restart() {
  local dir=${1:?restart needs the server folder}
  [ -f "$dir/garage.toml" ] || { echo "no garage server folder at $dir" >&2; exit 1; }
  stop "$dir" 2>/dev/null || true
  launch "$(garage_bin)" "$(cd "$dir" && pwd)"
}

stop() {
  local dir=${1:-target/garage}
  [ -f "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  restart) restart "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *)
    echo "usage: $0 install | start [DIR] | restart DIR | stop [DIR]" >&2
    exit 2
    ;;
esac
