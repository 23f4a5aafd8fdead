#!/usr/bin/env bash
# A local Ray cluster on 127.0.0.1, for tests and for trying `orch submit --address`.
#   cluster/local/ray.sh up [--nodes N] | down | status | kill-node K
# --nodes N (default 1): the head plus N-1 more Ray nodes that join it, each a raylet of its own
# (its own node id, node name orch-node-K and label orch-node=orch-node-K, K = 2..N; the head is
# orch-node-1), every node with ORCH_RAY_CPUS logical CPUs: several nodes on one machine, as
# Ray's own multi-node tests run them. Idempotent. Uses the project's venv (or RAY=/path/to/ray). Token authentication is on: the
# token lives in ~/.ray/auth_token, where orch's client (and Ray's) finds it.
# ORCH_RAY_HEAD_CPUS (default ORCH_RAY_CPUS): the head's logical CPUs, when it should differ.
# `kill-node K` loses node orch-node-K (K >= 2) as a machine dies: SIGKILL to its raylet, its
# process group and every process under its raylet (Ray workers run in process groups of their
# own), no clean shutdown; Ray notices through its health checks.
# Ports: ORCH_RAY_PORT (GCS, default 6390) and ORCH_RAY_DASHBOARD_PORT (default 8266), chosen
# away from Ray's defaults so an embedded `orch submit` on the same machine never collides.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/../.." && pwd)
RAY=${RAY:-$HERE/.venv/bin/ray}
PORT=${ORCH_RAY_PORT:-6390}
DASHBOARD_PORT=${ORCH_RAY_DASHBOARD_PORT:-8266}
TMP=${ORCH_RAY_TMP:-/tmp/orch-ray-local}
CPUS=${ORCH_RAY_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
HEAD_CPUS=${ORCH_RAY_HEAD_CPUS:-$CPUS}
PIDFILE="$TMP/head.pgid"
NODES_FILE="$TMP/nodes"  # how many nodes `up` started (read by down and status)

die() { echo "ray.sh: $*" >&2; exit 2; }
[ -x "$RAY" ] || command -v "$RAY" >/dev/null || die "no ray at $RAY (run make setup, or RAY=...)"

alive() {
  [ -s "$PIDFILE" ] && kill -0 -- "-$(cat "$PIDFILE")" 2>/dev/null
}

ready() {
  # The Jobs API answers (with the token: every dashboard route needs it).
  python3 - "http://127.0.0.1:$DASHBOARD_PORT/api/version" 2>/dev/null <<'PY'
import os, pathlib, sys, urllib.request
path = os.environ.get("RAY_AUTH_TOKEN_PATH", pathlib.Path.home() / ".ray" / "auth_token")
token = os.environ.get("RAY_AUTH_TOKEN") or pathlib.Path(path).read_text().strip()
request = urllib.request.Request(sys.argv[1], headers={"Authorization": f"Bearer {token}"})
urllib.request.urlopen(request, timeout=2)
PY
}

# The cluster's alive nodes, one line each: name, node id, IP, CPUs (Ray's state API, with the token).
nodes() {
  python3 - "http://127.0.0.1:$DASHBOARD_PORT/api/v0/nodes?limit=1000&detail=1" <<'PY'
import json, os, pathlib, sys, urllib.request
path = os.environ.get("RAY_AUTH_TOKEN_PATH", pathlib.Path.home() / ".ray" / "auth_token")
token = os.environ.get("RAY_AUTH_TOKEN") or pathlib.Path(path).read_text().strip()
request = urllib.request.Request(sys.argv[1], headers={"Authorization": f"Bearer {token}"})
rows = json.load(urllib.request.urlopen(request, timeout=5))["data"]["result"]["result"]
for n in sorted(rows, key=lambda n: n.get("node_name") or ""):
    if n["state"] == "ALIVE":
        cpus = n.get("resources_total", {}).get("CPU", 0)
        head = " (head)" if n.get("is_head_node") else ""
        print(f"{n.get('node_name')} {n['node_id']} {n['node_ip']} {cpus:g} CPUs{head}")
PY
}

node_alive() {
  local f="$TMP/node-$1.pgid"
  [ -s "$f" ] && kill -0 -- "-$(cat "$f")" 2>/dev/null
}

# Node K (2..N) joins the head: a raylet of its own, in its own process group, at 127.0.0.K
# (the whole of 127/8 reaches this host's loopback). An address of its own, not only a node id:
# Ray Train counts nodes by IP (node_rank, local_rank), and the ranks' process group then talks
# across addresses as on separate hosts.
join() {
  local k=$1
  # Every node on this host needs its own dashboard agent port (Ray's default is one fixed
  # port); the other ports are picked free by Ray.
  setsid "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address="127.0.0.$k" \
    --node-name="orch-node-$k" --labels="orch-node=orch-node-$k" \
    --dashboard-agent-listen-port=$((PORT + 100 + k)) \
    --temp-dir="$TMP" --num-cpus="$CPUS" --disable-usage-stats >"$TMP/start-$k.log" 2>&1 &
  local pgid=$!
  echo "$pgid" >"$TMP/node-$k.pgid"
  wait "$pgid" || { cat "$TMP/start-$k.log" >&2; die "ray start of node orch-node-$k failed (log above)"; }
}

up() {
  local t0=$SECONDS want=$1
  if alive && ready; then
    local had
    had=$(cat "$NODES_FILE" 2>/dev/null || echo 1)
    [ "$want" -ge "$had" ] || die "$had nodes are up and --nodes $want asks for fewer: ray.sh down first"
    local missing=0
    for k in $(seq 2 "$want"); do node_alive "$k" || missing=$((missing + 1)); done
    if [ "$missing" = 0 ]; then
      echo "ray.sh: already up, $want node(s) (dashboard http://127.0.0.1:$DASHBOARD_PORT)"
      return
    fi
  fi
  # Ray's unix sockets live under TMP/session_<date>_<pid>/sockets/ and an AF_UNIX path holds
  # 107 bytes at most: a longer TMP starts a head whose dashboard never answers.
  [ ${#TMP} -le 40 ] || die "ORCH_RAY_TMP=$TMP is too long for Ray's socket paths (40 characters at most here): use a short folder such as /tmp/orch-ray-NAME"
  mkdir -p "$TMP"
  export RAY_AUTH_MODE=token
  if ! { alive && ready; }; then
    start_head
  fi
  for k in $(seq 2 "$want"); do node_alive "$k" || join "$k"; done
  echo "$want" >"$NODES_FILE"
  for _ in $(seq 1 120); do
    local up_now
    up_now=$(nodes 2>/dev/null | wc -l || true)
    if [ "$up_now" -ge "$want" ]; then
      echo "ray.sh: up in $((SECONDS - t0)) s: GCS port $PORT (token required), dashboard and Jobs API" \
        "http://127.0.0.1:$DASHBOARD_PORT, $want node(s) of $CPUS CPUs$( [ "$HEAD_CPUS" = "$CPUS" ] || echo " (the head $HEAD_CPUS)")"
      if [ "$want" -gt 1 ]; then nodes; fi
      return
    fi
    sleep 0.5
  done
  nodes >&2 || true
  die "$want nodes did not all join in 60 s; see $TMP/session_latest/logs"
}

start_head() {
  # Ray 2.60's `ray start --head` runs without authentication when no token exists yet: make one
  # (~/.ray/auth_token, mode 600 by umask below) and require it.
  (umask 077; "$RAY" get-auth-token --generate >"$TMP/token.log" 2>&1)
  # Its own session and process group, so `down` stops exactly this head and nothing else.
  setsid "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" --node-name=orch-node-1 \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --ray-client-server-port=$((PORT + 1)) --dashboard-agent-listen-port=$((PORT + 2)) \
    --temp-dir="$TMP" --num-cpus="$HEAD_CPUS" --disable-usage-stats >"$TMP/start.log" 2>&1 &
  local pgid=$!
  echo "$pgid" >"$PIDFILE"
  wait "$pgid" || { cat "$TMP/start.log" >&2; die "ray start failed (log above)"; }
  for _ in $(seq 1 120); do
    ready && return
    sleep 0.5
  done
  die "the dashboard did not answer in 60 s; see $TMP/session_latest/logs"
}

stop_group() {
  local file=$1
  [ -s "$file" ] || return 0
  local pgid
  pgid=$(cat "$file")
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 -- "-$pgid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pgid" 2>/dev/null || true
  rm -f "$file"
}

down() {
  local t0=$SECONDS
  # The joined nodes first (their raylets would otherwise log the head's loss), then the head.
  for f in "$TMP"/node-*.pgid; do [ -e "$f" ] && stop_group "$f"; done
  stop_group "$PIDFILE"
  # Anything of this cluster that left the groups (its processes name its temp dir).
  pkill -KILL -f -- "$TMP/" 2>/dev/null || true
  rm -f "$NODES_FILE"
  echo "ray.sh: down in $((SECONDS - t0)) s"
}

# Node K's processes: its process group, and everything under its raylet (Ray starts each
# worker in a process group of its own), pids one per line.
node_pids() {
  local pgid=$1
  ps -eo pid=,ppid=,pgid= | awk -v g="$pgid" '
    { parent[$1] = $2; group[$1] = $3 }
    END {
      for (p in group) if (group[p] == g) keep[p] = 1
      do { more = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; more = 1 }
      } while (more)
      for (p in keep) print p
    }'
}

kill_node() {
  local k=$1 f="$TMP/node-$1.pgid"
  [[ "$k" =~ ^[0-9]+$ ]] && [ "$k" -ge 2 ] || die "kill-node ${k:-(missing)}: expected a node number >= 2 (orch-node-K; the head is 1)"
  node_alive "$k" || die "kill-node $k: orch-node-$k is not running (ray.sh status lists the nodes)"
  local pids
  pids=$(node_pids "$(cat "$f")")
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  kill -KILL -- "-$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
  echo "ray.sh: killed orch-node-$k ($(echo "$pids" | wc -w) processes)"
}

status() {
  if alive && ready; then
    echo "ray head: running (GCS 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT)"
    nodes
  else
    echo "ray head: stopped"
    return 1
  fi
}

case "${1:-}" in
  up)
    n=1
    if [ "${2:-}" = "--nodes" ]; then
      n=${3:-}
    elif [ -n "${2:-}" ]; then
      die "usage: $0 up [--nodes N]"
    fi
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--nodes ${n:-(missing)}: expected a whole number >= 1"
    up "$n"
    ;;
  down) down ;;
  status) status ;;
  kill-node) kill_node "${2:-}" ;;
  *) die "usage: $0 up [--nodes N] | down | status | kill-node K" ;;
esac
