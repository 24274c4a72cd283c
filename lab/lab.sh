#!/usr/bin/env bash
# hubwatch's local lab: a real JupyterHub + configurable-http-proxy + single-user servers + Dask Gateway,
# all on 127.0.0.1, with fault flags. See lab/README.md.
#   lab/lab.sh install              install into ${HUBWATCH_LAB_CACHE:-.cache/lab} (a no-op when installed)
#   lab/lab.sh start DIR PORT       start a lab with its state in DIR on ports PORT..PORT+5; returns once ready
#   lab/lab.sh stop DIR             stop every process of that lab
set -euo pipefail

LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$LAB")"
CACHE="$(realpath -m "${HUBWATCH_LAB_CACHE:-$REPO/.cache/lab}")"
VENV="$CACHE/venv"
NODE="$CACHE/node"
START_TIMEOUT="${LAB_START_TIMEOUT:-90}"
DEFAULT_TOKEN="hubwatch-0123456789abcdef0123456789abcdef"
log() { echo "lab: $*" >&2; }
# Removed after the install: rfc3987-syntax (jsonschema's format-nongpl extra, through jupyter-events) compiles 35
# Lark parsers whenever it is imported, to check an `iri` format no Jupyter schema uses (jupyter-server issue
# #1559): 1.7 s of CPU in every single-user server's and hub's start here, 40% of a server's whole life and a
# fifth of the suite's CPU. Without it jsonschema skips that one format.
LEFT_OUT=(rfc3987-syntax)

install_wanted() {
  { cat "$LAB/requirements.txt" "$LAB/package.json" "$LAB/package-lock.json"; echo "${LEFT_OUT[*]}"; } \
    | sha256sum | cut -d' ' -f1
}

installed() {
  [[ -f "$CACHE/installed.stamp" && "$(cat "$CACHE/installed.stamp")" == "$1" \
    && -x "$VENV/bin/jupyterhub" && -x "$VENV/bin/dask-gateway-server" \
    && -x "$NODE/node_modules/.bin/configurable-http-proxy" ]]
}

install() {
  local want; want="$(install_wanted)"
  installed "$want" && return 0
  mkdir -p "$CACHE"
  # Two labs starting at once on a cold cache must not install into the same venv together.
  exec 9> "$CACHE/install.lock"
  flock 9
  if installed "$want"; then exec 9>&-; return 0; fi
  rm -f "$CACHE/installed.stamp"
  local t0=$SECONDS
  log "installing JupyterHub, jupyter-server, ipykernel and Dask Gateway (lab/requirements.txt) into $VENV"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$LAB/requirements.txt" >&2
  "$VENV/bin/python" -m pip uninstall --quiet --yes "${LEFT_OUT[@]}" >&2
  log "installing configurable-http-proxy (lab/package-lock.json) into $NODE"
  mkdir -p "$NODE"
  cp "$LAB/package.json" "$LAB/package-lock.json" "$NODE/"
  npm ci --prefix "$NODE" --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$CACHE/installed.stamp"
  log "installed in $((SECONDS - t0)) s"
  exec 9>&-
}

# Every process of a lab carries HUBWATCH_LAB_ID=<its dir> in its environment: single-user servers, kernels,
# the gateway's schedulers and workers all start new sessions, so a process group is not enough.
lab_pids() {
  grep -lzxF "HUBWATCH_LAB_ID=$1" /proc/[0-9]*/environ 2>/dev/null \
    | sed -e 's#^/proc/##' -e 's#/environ$##' | grep -vxF "$$" || true
}

stop() {
  local dir pids; dir="$(realpath -m "$1")"
  pids="$(lab_pids "$dir")"
  [[ -z "$pids" ]] && return 0
  log "stopping the lab in $dir"
  # A frozen (SIGSTOPped) process would never act on SIGTERM.
  # shellcheck disable=SC2086
  kill -CONT $pids 2>/dev/null || true
  # The hub first, politely: it stops its servers, the proxy and the gateway (which stops its clusters).
  if [[ -f "$dir/state/hub.pid" ]]; then kill -TERM "$(cat "$dir/state/hub.pid")" 2>/dev/null || true; fi
  for _ in $(seq 1 50); do
    pids="$(lab_pids "$dir")"; [[ -z "$pids" ]] && return 0
    sleep 0.2
  done
  log "terminating what is left: $(echo $pids)"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 10); do
    pids="$(lab_pids "$dir")"; [[ -z "$pids" ]] && return 0
    sleep 0.2
  done
  log "killing what is left: $(echo $pids)"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 1 25); do
    pids="$(lab_pids "$dir")"; [[ -z "$pids" ]] && return 0
    sleep 0.2
  done
  log "processes still left: $(echo $pids)"
  return 1
}

write_kernelspec() { # DIR NAME DISPLAY [FAULT]
  local d="$1/share/jupyter/kernels/$2" fault=""
  if [[ -n "${4:-}" ]]; then fault=", \"--lab-fault=$4\""; fi
  mkdir -p "$d"
  cat > "$d/kernel.json" <<JSON
{"argv": ["$VENV/bin/python", "$LAB/kernel_launcher.py", "-f", "{connection_file}"$fault],
 "display_name": "$3", "language": "python",
 "metadata": {"kernel_provisioner": {"provisioner_name": "lab-forked"}}}
JSON
}

start() {
  local dir port; dir="$(realpath -m "$1")"; port="$2"
  [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1024 && "$port" -le 65530 ]] || { log "bad PORT: $port"; exit 2; }
  install
  stop "$dir"
  rm -rf "$dir/state" "$dir/home" "$dir/flags" "$dir/dask-clusters" "$dir/dask-scratch" "$dir/share" \
    "$dir/hub.log" "$dir/lab.env"
  mkdir -p "$dir/state" "$dir/home" "$dir/flags"
  write_kernelspec "$dir" python3 "Python 3 (lab)"
  write_kernelspec "$dir" crash "Python 3 (lab, always crashes)" crash
  write_kernelspec "$dir" hang "Python 3 (lab, always hangs)" hang
  local token="${HUBWATCH_TOKEN:-$DEFAULT_TOKEN}" password="${PROBE_PASSWORD:-probe-password}"
  log "starting a lab on 127.0.0.1:$port..$((port + 5)) (state in $dir, log in $dir/hub.log)"
  # setsid: the hub leads its own session and process group, away from the caller's terminal and signals.
  (
    cd "$dir"
    export LAB_DIR="$dir" HUBWATCH_LAB_ID="$dir" HUB_PORT="$port" LAB_NODE_BIN="$NODE/node_modules/.bin" \
      HUBWATCH_TOKEN="$token" PROBE_PASSWORD="$password" PATH="$VENV/bin:$PATH"
    exec setsid "$VENV/bin/jupyterhub" -f "$LAB/jupyterhub_config.py" > "$dir/hub.log" 2>&1 < /dev/null
  ) &
  local hub=$! base="http://127.0.0.1:$port" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$hub" 2>/dev/null; then
      log "the hub exited during start-up; the end of $dir/hub.log:"
      tail -40 "$dir/hub.log" >&2
      stop "$dir" || true
      return 1
    fi
    if curl -fsS -m 2 -o /dev/null "$base/hub/api/" 2>/dev/null \
      && curl -fsS -m 2 -o /dev/null "$base/services/dask-gateway/api/health" 2>/dev/null; then
      local gateway
      gateway="$(ps --ppid "$hub" -o pid=,args= | awk '/dask-gateway-server/ {print $1; exit}')"
      cat > "$dir/lab.env" <<ENV
HUB_URL=$base
HUBWATCH_TOKEN=$token
PROBE_PASSWORD=$password
PROBE_USERS="probe-1 probe-2"
LAB_USERS="probe-1 probe-2 probe-3 probe-4"
DASK_GATEWAY_URL=$base/services/dask-gateway
HUB_PID=$hub
PROXY_PID=$(cat "$dir/state/proxy.pid")
GATEWAY_PID=$gateway
LAB_DIR=$dir
ENV
      log "ready in $((SECONDS - deadline + START_TIMEOUT)) s: $base (see $dir/lab.env)"
      return 0
    fi
    sleep 0.3
  done
  log "the lab did not become ready in $START_TIMEOUT s; the end of $dir/hub.log:"
  tail -40 "$dir/hub.log" >&2
  stop "$dir" || true
  return 1
}

case "${1:-}" in
  install) [[ $# -eq 1 ]] || { echo "usage: lab.sh install" >&2; exit 2; }; install ;;
  start) [[ $# -eq 3 ]] || { echo "usage: lab.sh start DIR PORT" >&2; exit 2; }; start "$2" "$3" ;;
  stop) [[ $# -eq 2 ]] || { echo "usage: lab.sh stop DIR" >&2; exit 2; }; stop "$2" ;;
  *) echo "usage: lab.sh install | start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
