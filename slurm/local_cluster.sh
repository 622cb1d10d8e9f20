#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying the job scripts and for the tests.
#
#   sudo slurm/local_cluster.sh start     # installs slurm-wlm + munge (Debian/Ubuntu) when missing
#   export SLURM_CONF=/tmp/wf-slurm/slurm.conf   # printed by start; sbatch/squeue/scontrol read it
#   sbatch slurm/train_audio.sh config/audio/demo.yaml ...
#   sudo slurm/local_cluster.sh status
#   sudo slurm/local_cluster.sh stop      # cancels the jobs, stops exactly the daemons it started
#
# Everything lives in one folder of its own (WF_SLURM_DIR, default /tmp/wf-slurm): slurm.conf, a munge
# key and socket, PID files, logs, spool and state, the job completion log (jobcomp.txt; there is no
# slurmdbd, so `sacct` does not work: use `scontrol show job ID` (kept MinJobAge=600 s) or that file).
# /etc/slurm and a system munged are never touched. No cgroups (proctrack/linuxproc, task/none), so
# it runs without systemd; JobRequeue=1. The node's CPUs and memory are the machine's (`slurmd -C`).
# Ports: WF_SLURM_PORT (slurmctld, default 6817) and the next one (slurmd). Needs root (slurmd does).
set -euo pipefail

DIR=${WF_SLURM_DIR:-/tmp/wf-slurm}
PORT=${WF_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
SOCKET=$MUNGE_DIR/munge.socket
# every daemon we start (and the slurmstepd processes of its jobs) carries this in its environment
MARK="WF_SLURM_LOCAL=$DIR"

die() { echo "local_cluster: $*" >&2; exit 1; }
say() { echo "local_cluster: $*" >&2; }

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd runs as root); run it with sudo"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurmctld/slurmd/munged not found and apt-get is missing: install Slurm and munge"
  say "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null
  } || die "apt-get install slurm-wlm munge failed"
}

pid_of() {  # pid_of NAME: the PID in our PID file when that process is alive and is NAME
  local f=$DIR/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ -d "/proc/$pid" ] || return 1
  grep -q "$1" "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_conf() {
  local hw cpus mem
  hw=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from 'slurmd -C': $hw"
  cat >"$CONF" <<EOF
# written by slurm/local_cluster.sh: a single-node cluster in $DIR
ClusterName=wflocal
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$SOCKET
SlurmUser=root
SlurmdUser=root
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
JobRequeue=1
ReturnToService=2
MinJobAge=600
KillWait=10
InactiveLimit=0
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if pid_of munged >/dev/null; then return; fi
  mkdir -p "$MUNGE_DIR"
  [ -s "$MUNGE_DIR/munge.key" ] || dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
  chown -R munge:munge "$MUNGE_DIR"
  chmod 755 "$MUNGE_DIR"
  chmod 400 "$MUNGE_DIR/munge.key"
  env "$MARK" runuser -u munge -- munged --socket="$SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
    || die "munged did not start (see $MUNGE_DIR/munged.log)"
  cp "$MUNGE_DIR/munged.pid" "$DIR/munged.pid"
}

wait_idle() {
  local state=""
  for _ in $(seq 1 150); do
    state=$(SLURM_CONF=$CONF sinfo -h -n localhost -o %t 2>/dev/null || true)
    case "$state" in
      idle*|mix*|alloc*) return 0 ;;
    esac
    sleep 0.2
  done
  say "node state '$state' after 30 s; last lines of $DIR/slurmd.log and slurmctld.log:"
  tail -5 "$DIR/slurmd.log" "$DIR/slurmctld.log" >&2 || true
  return 1
}

start() {
  need_root
  install_packages
  if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null; then
    say "already running ($DIR)"
  else
    for p in "$PORT" $((PORT + 1)); do
      port_busy "$p" && die "port $p is in use (another Slurm?); choose others with WF_SLURM_PORT=N"
    done
    mkdir -p "$DIR/spool" "$DIR/state"
    chmod 755 "$DIR"
    write_conf
    start_munge
    export SLURM_CONF=$CONF
    # -c: start from a clean state (no jobs of an earlier run of this cluster)
    env "$MARK" slurmctld -c -f "$CONF" || die "slurmctld did not start (see $DIR/slurmctld.log)"
    env "$MARK" slurmd -c -f "$CONF" -N localhost || die "slurmd did not start (see $DIR/slurmd.log)"
  fi
  wait_idle || { stop; die "the node did not become idle"; }
  say "up: partition debug, node localhost ($(SLURM_CONF=$CONF sinfo -h -n localhost -o '%c CPUs, %m MB'))"
  echo "export SLURM_CONF=$CONF"
}

ours() {  # PIDs of live processes carrying our mark (daemons and their slurmstepd children)
  local env_file pid
  for env_file in /proc/[0-9]*/environ; do
    pid=${env_file#/proc/}; pid=${pid%/environ}
    [ "$pid" = "$$" ] && continue
    if { tr '\0' '\n' <"$env_file"; } 2>/dev/null | grep -qx "$MARK"; then echo "$pid"; fi
  done
}

stop_pid() {  # stop_pid NAME: TERM the daemon from its PID file, wait up to 10 s, then KILL
  local pid
  pid=$(pid_of "$1") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$DIR/$1.pid"
}

stop() {
  need_root
  [ -f "$CONF" ] || { say "not running (no $CONF)"; return 0; }
  if pid_of slurmctld >/dev/null; then
    # cancel this cluster's jobs first: slurmstepd processes outlive slurmd by design
    SLURM_CONF=$CONF scancel --full --quiet --partition=debug 2>/dev/null || true
    for _ in $(seq 1 75); do
      [ -z "$(SLURM_CONF=$CONF squeue -h -t R,CG -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  stop_pid slurmd
  stop_pid slurmctld
  stop_pid munged
  local left
  left=$(ours | tr '\n' ' ')
  if [ -n "${left// /}" ]; then
    say "ending leftover processes of this cluster: $left"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
  fi
  say "stopped"
}

status() {
  local d pid rc=0
  for d in munged slurmctld slurmd; do
    if pid=$(pid_of "$d"); then echo "$d: running (pid $pid)"; else echo "$d: stopped"; rc=3; fi
  done
  if [ "$rc" = 0 ]; then
    echo "SLURM_CONF=$CONF"
    SLURM_CONF=$CONF sinfo -N -o "%N %t %c CPUs %m MB"
    SLURM_CONF=$CONF squeue
  fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env   (folder: WF_SLURM_DIR=$DIR, port: WF_SLURM_PORT=$PORT)" >&2; exit 2 ;;
esac
