#!/usr/bin/env bash
# Runs the benchmarks and writes docs/benchmarks.md (figures, not pass/fail: the targets are read off the
# tables). Needs what scripts/test.sh needs; installs jhub-client 0.1.7 into .cache/bench for the comparison.
#   SCALE_HUBS=100,1000,5000 SCALE_SECONDS=60 PAIRS=5 scripts/bench.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --quiet
lab/lab.sh install
JHUB_VENV=.cache/bench/jhub-venv
if [[ ! -x "$JHUB_VENV/bin/jhubctl" ]]; then
  python3 -m venv "$JHUB_VENV"
  "$JHUB_VENV/bin/pip" install --quiet --disable-pip-version-check jhub-client==0.1.7
fi
cargo bench --no-run --quiet 2>/dev/null || cargo bench --no-run

OUT=docs/benchmarks.md
mkdir -p docs
TMP="$(mktemp)"
LAB_DIR="$PWD/.cache/bench-lab"
trap 'lab/lab.sh stop "$LAB_DIR" || true; rm -f "$TMP"' EXIT
{
  echo "# Benchmarks"
  echo
  echo "Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%dT%H:%MZ): $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "$(free -g | awk '/Mem:/ {print $2}') GB, $(uname -sr); $(rustc --version); hubwatch $(target/release/hubwatch --version | cut -d' ' -f2) (release build);"
  echo "JupyterHub $(.cache/lab/venv/bin/jupyterhub --version), jhub-client $("$JHUB_VENV/bin/pip" show jhub-client | awk '/^Version/ {print $2}')."
  echo
  echo "## A probe round against a peer (real lab, alternating A B)"
  echo
  lab/lab.sh start "$LAB_DIR" 18800 >&2
  python3 bench/round_vs_peers.py "$PWD/target/release/hubwatch" "$PWD/$JHUB_VENV/bin/jhubctl" "$LAB_DIR" "${PAIRS:-5}"
  lab/lab.sh stop "$LAB_DIR" >&2
  echo
  echo "## Scale (simulated hubs, ${SCALE_SECONDS:-60} s each, after a 10 s warm-up)"
  echo
  cargo bench --quiet --bench scale -- --hubs "${SCALE_HUBS:-100,1000,5000}" --seconds "${SCALE_SECONDS:-60}"
  echo
  echo "## Hostile hubs (\`hubwatch check\`, probe timeouts 10 s)"
  echo
  cargo bench --quiet --bench hostile
  echo
  echo "## Detection latency (real lab, local PagerDuty, fast intervals; then with a kept server)"
  echo
  cargo bench --quiet --bench latency
} > "$TMP"
mv "$TMP" "$OUT"
trap - EXIT
lab/lab.sh stop "$LAB_DIR" || true
echo "wrote $OUT" >&2
