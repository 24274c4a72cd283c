#!/usr/bin/env bash
# The local demo: with HUBWATCH_CONFIG set, check and watch those hubs; without it, set up the real lab
# (JupyterHub + proxy + Dask Gateway on 127.0.0.1:18000, installed into .cache/), run `hubwatch check`
# against it, then `hubwatch run` (status page on http://127.0.0.1:9464/, metrics on /metrics) until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --quiet
HUBWATCH=target/debug/hubwatch

if [[ -n "${HUBWATCH_CONFIG:-}" ]]; then
  "$HUBWATCH" check --config "$HUBWATCH_CONFIG" || true
  exec "$HUBWATCH" run --config "$HUBWATCH_CONFIG"
fi

LAB_DIR="$PWD/.cache/demo-lab"
PORT="${HUBWATCH_DEMO_PORT:-18000}"
lab/lab.sh start "$LAB_DIR" "$PORT"
trap 'lab/lab.sh stop "$LAB_DIR"' EXIT
# shellcheck disable=SC1091
source "$LAB_DIR/lab.env"
export HUBWATCH_TOKEN PROBE_PASSWORD

cat > "$LAB_DIR/hubwatch.yaml" <<YAML
# hubwatch's demo config, watching the local lab. Faults: touch $LAB_DIR/flags/spawn-fail (see lab/README.md).
listen: 127.0.0.1:9464
state_path: hubwatch-state.db
defaults:
  probes:
    login:        {every: 30s, timeout: 30s}
    server:       {every: 2m,  timeout: 2m}
    kernel:       {every: 2m,  timeout: 1m}
    dask_gateway: {every: 5m,  timeout: 2m}
hubs:
  - name: lab
    url: $HUB_URL
    token: {env: HUBWATCH_TOKEN}
    users: [probe-1, probe-2]
    dask_gateway: {url: $DASK_GATEWAY_URL}
  - name: lab-form-login
    url: $HUB_URL
    token: {env: HUBWATCH_TOKEN}
    users: [probe-3, probe-4]             # a probe user belongs to one entry of a hub
    login: {method: form, password: {env: PROBE_PASSWORD}}
YAML

echo
echo "== hubwatch check (every capability once, for every probe user) =="
"$HUBWATCH" check --config "$LAB_DIR/hubwatch.yaml" || true
echo
echo "== hubwatch run: status page at http://127.0.0.1:9464/ (metrics at /metrics); inject a fault with: touch $LAB_DIR/flags/spawn-fail; Ctrl-C to stop =="
"$HUBWATCH" run --config "$LAB_DIR/hubwatch.yaml"
