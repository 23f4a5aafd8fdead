#!/usr/bin/env bash
# A local Ray head on 127.0.0.1, for tests and for trying `orch submit --address`.
#   cluster/local/ray.sh up | down | status
# Idempotent. Uses the project's venv (or RAY=/path/to/ray). Token authentication is on: the
# token lives in ~/.ray/auth_token, where orch's client (and Ray's) finds it.
# Ports: ORCH_RAY_PORT (GCS, default 6390) and ORCH_RAY_DASHBOARD_PORT (default 8266), chosen
# away from Ray's defaults so an embedded `orch submit` on the same machine never collides.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/../.." && pwd)
RAY=${RAY:-$HERE/.venv/bin/ray}
PORT=${ORCH_RAY_PORT:-6390}
DASHBOARD_PORT=${ORCH_RAY_DASHBOARD_PORT:-8266}
TMP=${ORCH_RAY_TMP:-/tmp/orch-ray-local}
CPUS=${ORCH_RAY_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
PIDFILE="$TMP/head.pgid"

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

up() {
  local t0=$SECONDS
  if alive && ready; then
    echo "ray.sh: already up (dashboard http://127.0.0.1:$DASHBOARD_PORT)"
    return
  fi
  # Ray's unix sockets live under TMP/session_<date>_<pid>/sockets/ and an AF_UNIX path holds
  # 107 bytes at most: a longer TMP starts a head whose dashboard never answers.
  [ ${#TMP} -le 40 ] || die "ORCH_RAY_TMP=$TMP is too long for Ray's socket paths (40 characters at most here): use a short folder such as /tmp/orch-ray-NAME"
  mkdir -p "$TMP"
  # Ray 2.60's `ray start --head` runs without authentication when no token exists yet: make one
  # (~/.ray/auth_token, mode 600 by umask below) and require it.
  export RAY_AUTH_MODE=token
  (umask 077; "$RAY" get-auth-token --generate >"$TMP/token.log" 2>&1)
  # Its own session and process group, so `down` stops exactly this head and nothing else.
  setsid "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --ray-client-server-port=$((PORT + 1)) --dashboard-agent-listen-port=$((PORT + 2)) \
    --temp-dir="$TMP" --num-cpus="$CPUS" --disable-usage-stats >"$TMP/start.log" 2>&1 &
  local pgid=$!
  echo "$pgid" >"$PIDFILE"
  wait "$pgid" || { cat "$TMP/start.log" >&2; die "ray start failed (log above)"; }
  for _ in $(seq 1 120); do
    if ready; then
      echo "ray.sh: up in $((SECONDS - t0)) s: GCS port $PORT (token required), dashboard and Jobs API" \
        "http://127.0.0.1:$DASHBOARD_PORT, $CPUS CPUs"
      return
    fi
    sleep 0.5
  done
  die "the dashboard did not answer in 60 s; see $TMP/session_latest/logs"
}

down() {
  local t0=$SECONDS
  if [ -s "$PIDFILE" ]; then
    local pgid
    pgid=$(cat "$PIDFILE")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      kill -0 -- "-$pgid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  # Anything of this head that left the group (workers name the head's temp dir).
  pkill -KILL -f -- "$TMP/" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "ray.sh: down in $((SECONDS - t0)) s"
}

status() {
  if alive && ready; then
    echo "ray head: running (GCS 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT)"
  else
    echo "ray head: stopped"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
