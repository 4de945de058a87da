#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the `submit` tests and benchmarks.
#
#   scripts/slurm.sh start [DIR]   install (Debian packages, as root) and start munged,
#                                  slurmctld and slurmd with their state under DIR
#                                  (default target/slurm); prints DIR
#   scripts/slurm.sh stop [DIR]    stop them
#   scripts/slurm.sh status [DIR]  sinfo
#
# One node named after `hostname -s`, one partition `debug` (the default), CPUs and memory
# from `slurmd -C`. Accounting storage is off (no slurmdbd): `sacct` answers "accounting
# storage is disabled", so job states come from `scontrol`/`squeue`, which the code falls
# back to. See ../shared/DESIGN.md for why each setting is there.
set -euo pipefail
cd "$(dirname "$0")/.."
command="${1:-}"
DIR="$(realpath -m "${2:-target/slurm}")"

install_packages() {
  local missing=()
  command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || missing+=(munge)
  command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || [ -x /usr/sbin/slurmd ] || missing+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "slurm.sh: needs ${missing[*]} (Debian packages) and root to install them" >&2
      exit 1
    fi
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start() {
  install_packages
  local host
  host="$(hostname -s)"
  getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >>/etc/hosts
  mkdir -p "$DIR"/{spool,state,log}
  # munge: its key comes with the package; the daemon runs as munge.
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    install -d -o munge -g munge /run/munge
    [ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  local node memory
  node="$(slurmd -C | head -1 | sed 's/ UpTime=.*//')"
  memory="$(awk '/MemAvailable/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
  node="$(echo "$node" | sed "s/RealMemory=[0-9]*/RealMemory=$memory/")"
  mkdir -p /etc/slurm
  cat >/etc/slurm/slurm.conf <<EOF
ClusterName=flowcam
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SchedulerParameters=batch_sched_delay=0,kill_invalid_depend
ReturnToService=2
SlurmctldPidFile=$DIR/state/slurmctld.pid
SlurmdPidFile=$DIR/state/slurmd.pid
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MaxArraySize=100001
MinJobAge=600
DefMemPerCPU=1000
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if ! scontrol ping >/dev/null 2>&1 || ! scontrol ping | grep -q UP; then
    /usr/sbin/slurmctld
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  fi
  pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
  for _ in $(seq 150); do
    state="$(sinfo -h -N -o %t 2>/dev/null | head -1)"
    case "$state" in idle|mix|alloc) break ;; down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;; esac
    sleep 0.2
  done
  sinfo -h -N -o %t | grep -Eq 'idle|mix|alloc' || { echo "slurm.sh: the node did not come up; see $DIR/log" >&2; exit 1; }
  echo "$DIR"
}

stop() {
  for daemon in slurmd slurmctld; do
    local pid="$DIR/state/$daemon.pid"
    if [ -f "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; fi
  done
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 100); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 0.1
  done
}

case "$command" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: scripts/slurm.sh start|stop|status [DIR]" >&2; exit 2 ;;
esac
