#!/usr/bin/env bash
# hubwatch's local lab: a real JupyterHub + configurable-http-proxy + single-user servers + Dask Gateway,
# all on 127.0.0.1. See lab/README.md.
#   lab/lab.sh install              install (cached in .cache/lab; a second run takes well under a second)
#   lab/lab.sh start DIR PORT       start a lab with its state in DIR on ports PORT..PORT+5; waits until ready
#   lab/lab.sh stop DIR             stop every process of that lab
set -euo pipefail

LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$LAB")"
CACHE="${HUBWATCH_LAB_CACHE:-$REPO/.cache/lab}"
VENV="$CACHE/venv"
NODE="$CACHE/node"
log() { echo "lab: $*" >&2; }

install() {
  local stamp="$CACHE/installed.stamp" want
  want="$(cat "$LAB/requirements.txt" "$LAB/package.json" "$LAB/package-lock.json" | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$VENV/bin/jupyterhub" && -x "$NODE/node_modules/.bin/configurable-http-proxy" ]]; then
    return 0
  fi
  mkdir -p "$CACHE" "$NODE"
  log "installing JupyterHub, jupyter-server, ipykernel and Dask Gateway into $VENV"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$LAB/requirements.txt"
  log "installing configurable-http-proxy into $NODE"
  cp "$LAB/package.json" "$LAB/package-lock.json" "$NODE/"
  (cd "$NODE" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" > "$stamp"
  log "installed"
}

# Every process of a lab carries HUBWATCH_LAB_ID=<its dir> in its environment (servers start new sessions,
# so a process group is not enough).
lab_pids() {
  local id="HUBWATCH_LAB_ID=$1" pid
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"; pid="${pid%/environ}"
    [[ "$pid" == "$$" ]] && continue
    if { tr '\0' '\n' < "$environ"; } 2>/dev/null | grep -qxF "$id"; then echo "$pid"; fi
  done
}

stop() {
  local dir; dir="$(realpath -m "$1")"
  local pids; pids="$(lab_pids "$dir")"
  [[ -z "$pids" ]] && return 0
  log "stopping the lab in $dir"
  # The hub first, politely: it stops its servers and services on the way out.
  if [[ -f "$dir/state/hub.pid" ]]; then kill -TERM "$(cat "$dir/state/hub.pid")" 2>/dev/null || true; fi
  for _ in $(seq 1 50); do
    pids="$(lab_pids "$dir")"; [[ -z "$pids" ]] && return 0
    sleep 0.2
  done
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  sleep 1
  pids="$(lab_pids "$dir")"
  # shellcheck disable=SC2086
  [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 1 25); do [[ -z "$(lab_pids "$dir")" ]] && return 0; sleep 0.2; done
  log "processes still left: $(lab_pids "$dir" | tr '\n' ' ')"
  return 1
}

start() {
  local dir port; dir="$(realpath -m "$1")"; port="$2"
  install
  stop "$dir"
  rm -rf "$dir/state" "$dir/home" "$dir/flags" "$dir/dask-clusters" "$dir/hub.log" "$dir/lab.env"
  mkdir -p "$dir/state" "$dir/home" "$dir/flags" "$dir/share/jupyter/kernels/python3"
  cat > "$dir/share/jupyter/kernels/python3/kernel.json" <<JSON
{"argv": ["$VENV/bin/python", "$LAB/kernel_launcher.py", "-f", "{connection_file}"],
 "display_name": "Python 3 (lab)", "language": "python"}
JSON
  local token="${HUBWATCH_TOKEN:-hubwatch-0123456789abcdef0123456789abcdef}"
  log "starting a hub on 127.0.0.1:$port (state in $dir)"
  (
    cd "$dir"
    export LAB_DIR="$dir" HUBWATCH_LAB_ID="$dir" HUB_PORT="$port" LAB_NODE_BIN="$NODE/node_modules/.bin" \
      HUBWATCH_TOKEN="$token" PATH="$VENV/bin:$PATH"
    setsid "$VENV/bin/jupyterhub" -f "$LAB/jupyterhub_config.py" > "$dir/hub.log" 2>&1 < /dev/null &
  )
  local base="http://127.0.0.1:$port"
  for _ in $(seq 1 180); do
    if curl -fsS -o /dev/null "$base/hub/api/" 2>/dev/null \
      && curl -fsS -o /dev/null "$base/services/dask-gateway/api/health" 2>/dev/null; then
      local gateway_pid
      gateway_pid="$(pgrep -f "dask-gateway-server -f $LAB/dask_gateway_config.py" | while read -r p; do
        { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qxF "HUBWATCH_LAB_ID=$dir" && echo "$p"; done | head -1)"
      cat > "$dir/lab.env" <<ENV
HUB_URL=$base
HUBWATCH_TOKEN=$token
PROBE_PASSWORD=${PROBE_PASSWORD:-probe-password}
PROBE_USERS="probe-1 probe-2 probe-3 probe-4"
DASK_GATEWAY_URL=$base/services/dask-gateway
HUB_PID=$(cat "$dir/state/hub.pid")
PROXY_PID=$(cat "$dir/state/proxy.pid")
GATEWAY_PID=$gateway_pid
ENV
      log "ready: $base"
      return 0
    fi
    sleep 0.5
  done
  log "the hub did not become ready in 90 s; the end of $dir/hub.log:"
  tail -40 "$dir/hub.log" >&2
  stop "$dir" || true
  return 1
}

case "${1:-}" in
  install) install ;;
  start) [[ $# -eq 3 ]] || { echo "usage: lab.sh start DIR PORT" >&2; exit 2; }; start "$2" "$3" ;;
  stop) [[ $# -eq 2 ]] || { echo "usage: lab.sh stop DIR" >&2; exit 2; }; stop "$2" ;;
  *) echo "usage: lab.sh install | start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
