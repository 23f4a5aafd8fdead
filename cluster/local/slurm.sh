#!/usr/bin/env bash
# A real one-node SLURM on this machine, for tests and for trying orch's SLURM paths.
#   cluster/local/slurm.sh up | down | status
# Idempotent. Needs root: it installs Debian's slurm packages (and MariaDB for accounting) when
# missing and starts munged, mariadbd, slurmdbd, slurmctld and slurmd by hand (no systemd).
# Accounting (slurmdbd on MariaDB, over its unix socket as root) makes `sacct` and submitit's
# job states work; orch's own SLURM backend reads squeue/scontrol and submitit's result files.
set -euo pipefail

STATE=${SLURM_STATE_DIR:-/var/lib/orch-slurm}
CONF_DIR=/etc/slurm
NODE=$(hostname -s)

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

configure() {
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" /var/log/slurm /run/munge /etc/munge
  local cpus mem
  # At least 8 schedulable CPUs even on a 2-core machine (config_overrides lets slurmd accept
  # more than the hardware): a training allocation and its eval jobs then run side by side.
  cpus=$(( $(nproc) > 8 ? $(nproc) : 8 ))
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))
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
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
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
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
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

up() {
  local t0=$SECONDS
  install
  configure
  running munged || su -s /bin/sh munge -c "/usr/sbin/munged --force" || /usr/sbin/munged --force
  database
  dbd
  running slurmctld || slurmctld
  running slurmd || slurmd
  for _ in $(seq 1 60); do
    if sinfo -h -N -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; then
      echo "slurm.sh: up in $((SECONDS - t0)) s ($(sinfo -h -N -o '%N %c CPUs %m MB %T'))"
      return
    fi
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  die "the node did not become idle in 30 s; see /var/log/slurm/*.log"
}

down() {
  local t0=$SECONDS
  scancel --quiet --full -u root 2>/dev/null || true
  local daemons="slurmd slurmctld slurmdbd mariadbd munged"
  for d in $daemons; do pkill -x "$d" 2>/dev/null || true; done
  for _ in $(seq 1 300); do
    local left=""
    for d in $daemons; do running "$d" && left="$left $d"; done
    [ -z "$left" ] && { echo "slurm.sh: down in $((SECONDS - t0)) s"; return; }
    sleep 0.1
  done
  for d in $daemons; do pkill -9 -x "$d" 2>/dev/null || true; done
  echo "slurm.sh: down (killed) in $((SECONDS - t0)) s"
}

status() {
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if running "$d"; then echo "$d: running"; else echo "$d: stopped"; fi
  done
  if running slurmctld; then sinfo; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
