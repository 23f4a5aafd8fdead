#!/usr/bin/env bash
# A real SLURM on this machine, for tests and for trying orch's SLURM paths.
#   cluster/local/slurm.sh up [--nodes N] | down | status
# --nodes N (default 1: one node named after this host): N nodes orch-node-1..N, each its own
# slurmd (`slurmd -N orch-node-K`, its own port, spool dir, pid and log file). Debian's
# slurm-wlm is built with --enable-multiple-slurmd (`scontrol show config` says
# MULTIPLE_SLURMD = Yes), which is what lets several slurmd share one host. Idempotent: an `up`
# with another node count than the running one restarts the daemons with the new one. Needs root: it installs Debian's slurm packages (and MariaDB for accounting) when
# missing and starts munged, mariadbd, slurmdbd, slurmctld and slurmd by hand (no systemd).
# Accounting (slurmdbd on MariaDB, over its unix socket as root) makes `sacct` and submitit's
# job states work; orch's own SLURM backend reads squeue/scontrol and submitit's result files.
set -euo pipefail

STATE=${SLURM_STATE_DIR:-/var/lib/orch-slurm}
CONF_DIR=/etc/slurm
NODE=$(hostname -s)
NODES_FILE="$STATE/nodes"  # the node count the running daemons were configured with
SLURMD_BASE_PORT=6830  # node K listens on 6830+K (6817: slurmctld, 6818: the one-node slurmd, 6819: slurmdbd)

die() { echo "slurm.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons); on a shared cluster use its SLURM instead"

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null && command -v slurmdbd >/dev/null \
     && command -v mariadbd >/dev/null; then
    return
  fi
  local t0=$SECONDS
  apt-get update -qq
  # policy-rc.d: the packages' scripts must not start daemons (we start them, our way).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
  rm -f /usr/sbin/policy-rc.d
  echo "slurm.sh: installed slurm packages in $((SECONDS - t0)) s"
}

# The node names for N nodes: this host's name for one, orch-node-1..N for more.
node_names() {
  if [ "$1" = 1 ]; then echo "$NODE"; else seq -f "orch-node-%g" 1 "$1"; fi
}

configure() {
  local n=$1
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" /var/log/slurm /run/munge /etc/munge
  local cpus mem
  # At least 8 schedulable CPUs even on a 2-core machine (config_overrides lets slurmd accept
  # more than the hardware): a training allocation and its eval jobs then run side by side.
  cpus=$(( $(nproc) > 8 ? $(nproc) : 8 ))
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 / n ))
  # One slurmd per node: with several on this host, each has its own port, and %n (the node
  # name) keeps their spool dirs, pid and log files apart.
  local spool="$STATE/d" pidfile="$STATE/slurmd.pid" log=/var/log/slurm/slurmd.log nodes partition
  if [ "$n" = 1 ]; then
    nodes="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    partition=$NODE
  else
    spool="$STATE/d/%n" pidfile="$STATE/slurmd-%n.pid" log=/var/log/slurm/slurmd-%n.log
    nodes=$(for k in $(seq 1 "$n"); do
      echo "NodeName=orch-node-$k NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$((SLURMD_BASE_PORT + k))" \
        "CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    done)
    partition="orch-node-[1-$n]"
  fi
  # DefMemPerCPU: as on many clusters, a job without --mem gets memory per CPU and exports
  # SLURM_MEM_PER_CPU, which a job submitted from inside it must not inherit (orch's sbatch
  # drops it); the --cluster slurm test submits with such defaults to keep that honest.
  cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=orch-local
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
MailProg=/bin/true
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$pidfile
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=$log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MinJobAge=600
$nodes
PartitionName=debug Nodes=$partition Default=YES MaxTime=INFINITE State=UP
CONF
  cat > "$CONF_DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
  chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
}

running() { pgrep -x "$1" >/dev/null; }

# MariaDB for slurmdbd: its own data dir under $STATE, unix socket only, root by socket auth.
database() {
  local data="$STATE/mysql"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if [ ! -d "$data/mysql" ]; then
    mkdir -p "$data" && chown mysql:mysql "$data"
    mariadb-install-db --user=mysql --datadir="$data" --skip-test-db >/dev/null 2>&1 \
      || die "mariadb-install-db failed"
  fi
  if ! running mariadbd; then
    mariadbd --user=mysql --datadir="$data" --socket=/run/mysqld/mysqld.sock \
      --skip-networking --log-error=/var/log/slurm/mariadb.log </dev/null >/dev/null 2>&1 &
  fi
  for _ in $(seq 1 100); do
    mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1 && return
    sleep 0.2
  done
  die "MariaDB did not start in 20 s; see /var/log/slurm/mariadb.log"
}

dbd() {
  running slurmdbd || slurmdbd
  for _ in $(seq 1 100); do
    sacctmgr -n list cluster >/dev/null 2>&1 && break
    sleep 0.2
  done
  sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx orch-local \
    || sacctmgr -i add cluster orch-local >/dev/null \
    || die "sacctmgr could not register the cluster; see /var/log/slurm/slurmdbd.log"
}

# The slurmd of node $1 (one node: the plain `slurmd` of this host, as before).
slurmd_running() {
  if [ "$N" = 1 ]; then running slurmd; else pgrep -f "^slurmd -N $1\$" >/dev/null; fi
}

up() {
  local t0=$SECONDS
  install
  local had
  had=$(cat "$NODES_FILE" 2>/dev/null || echo 1)
  if [ "$had" != "$N" ] && { running slurmctld || running slurmd; }; then
    echo "slurm.sh: running with $had node(s), --nodes $N asks for another layout: restarting"
    down
  fi
  configure "$N"
  mkdir -p "$STATE" && echo "$N" >"$NODES_FILE"
  running munged || su -s /bin/sh munge -c "/usr/sbin/munged --force" || /usr/sbin/munged --force
  database
  dbd
  running slurmctld || slurmctld
  local names
  names=$(node_names "$N")
  for name in $names; do
    slurmd_running "$name" && continue
    if [ "$N" = 1 ]; then slurmd; else slurmd -N "$name"; fi
  done
  for _ in $(seq 1 60); do
    local ready
    ready=$(sinfo -h -N -o "%T" 2>/dev/null | grep -cE "^(idle|mixed|allocated)" || true)
    if [ "$ready" -ge "$N" ]; then
      echo "slurm.sh: up in $((SECONDS - t0)) s ($(sinfo -h -N -o '%N %c CPUs %m MB %T' | paste -sd ';' | sed 's/;/; /g'))"
      return
    fi
    for name in $names; do
      scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true
    done
    sleep 0.5
  done
  die "the node(s) did not become idle in 30 s; see /var/log/slurm/*.log"
}

down() {
  local t0=$SECONDS
  scancel --quiet --full -u root 2>/dev/null || true
  local daemons="slurmd slurmctld slurmdbd mariadbd munged"
  for d in $daemons; do pkill -x "$d" 2>/dev/null || true; done
  for _ in $(seq 1 300); do
    local left=""
    for d in $daemons; do running "$d" && left="$left $d"; done
    [ -z "$left" ] && { rm -f "$NODES_FILE"; echo "slurm.sh: down in $((SECONDS - t0)) s"; return; }
    sleep 0.1
  done
  for d in $daemons; do pkill -9 -x "$d" 2>/dev/null || true; done
  rm -f "$NODES_FILE"
  echo "slurm.sh: down (killed) in $((SECONDS - t0)) s"
}

status() {
  for d in munged mariadbd slurmdbd slurmctld; do
    if running "$d"; then echo "$d: running"; else echo "$d: stopped"; fi
  done
  local n
  n=$(pgrep -x slurmd | wc -l || true)
  if [ "$n" -gt 0 ]; then echo "slurmd: running ($n)"; else echo "slurmd: stopped"; fi
  if running slurmctld; then sinfo -N -o '%N %c %m %T'; fi
}

N=1
case "${1:-}" in
  up)
    if [ "${2:-}" = "--nodes" ]; then
      N=${3:-}
    elif [ -n "${2:-}" ]; then
      die "usage: $0 up [--nodes N]"
    fi
    [[ "$N" =~ ^[1-9][0-9]*$ ]] || die "--nodes ${N:-(missing)}: expected a whole number >= 1"
    up
    ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up [--nodes N] | down | status" ;;
esac
