#!/usr/bin/env bash
# The whole test suite, from a clean checkout: formatting, the real lab (installed into .cache/ on first use),
# then every test (unit, config fixtures, hostile stub hub, the real JupyterHub lab, the daemon, the status
# pages in headless Chromium), linted by clippy as they compile, with the Helm chart's checks beside them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
# Headless Chromium checks the status pages (tests/it/status_pages.rs).
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
# libfaketime runs an HA replica with its clock an hour off (tests/it/ha.rs).
[[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; }

# Jobs that run beside the main line, their output kept for when they are joined; `nice`d ones take only
# the CPU the main line leaves idle.
declare -A beside_pid beside_log
beside() {
  local name="$1"; shift
  beside_log[$name]="$(mktemp)"
  "$@" > "${beside_log[$name]}" 2>&1 &
  beside_pid[$name]=$!
}
# Waits for a job, prints its output, and fails the run if it failed.
joined() {
  local name="$1" status=0
  wait "${beside_pid[$name]}" || status=$?
  cat "${beside_log[$name]}" >&2 && rm -f "${beside_log[$name]}"
  (( status == 0 )) || { echo "$name failed (exit $status)" >&2; exit 1; }
}

cargo fmt --all -- --check
# The lints run in the test build: clippy-driver compiles hubwatch's own targets (lib, bin, tests, benches) and
# lints them as it goes, with what `cargo clippy --all-targets -- -D warnings` passes it (CLIPPY_ARGS), so the
# dependencies are compiled once, not twice (a check build of clippy's own was 179 s of both cores from a fresh
# clone). Both cargo commands below see the same wrapper, or the second would rebuild.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# A clean checkout builds once: incremental compilation's bookkeeping would only cost it (9 s of 83 measured).
if [[ "${CI:-}" == true ]]; then export CARGO_INCREMENTAL=0; fi
# Without the jemalloc feature (Cargo.toml says why), in every cargo command below, or one would rebuild.
features=(--no-default-features)
# The lab installs into .cache/ (pip and npm, mostly waiting on the network and the disk) while the tests compile.
beside "the lab's install" lab/lab.sh install
cargo test --all-targets "${features[@]}" --no-run --quiet
# The locked dependencies against the RustSec advisories, offline (skipped when no database is at hand).
python3 scripts/audit.py
joined "the lab's install"
# The chart's check and the benchmarks' smoke runs (seconds each under `cargo test`; the latency one starts a
# lab) run beside the tests, at the lowest priority: they need only the CPU the tests leave idle.
beside "the chart's check" nice -n 19 scripts/test-chart.sh
mapfile -t benches < <(cargo test --all-targets "${features[@]}" --no-run --quiet --message-format=json | python3 -c '
import json, sys
for message in map(json.loads, sys.stdin):
    if message.get("reason") == "compiler-artifact" and message["target"]["kind"] == ["bench"]:
        print(message["executable"])')
smoke_runs() { for bench in "$@"; do echo "$bench"; HUBWATCH_FULL_TESTS=1 nice -n 19 "$bench" || return; done; }
beside "the benchmarks' smoke runs" smoke_runs "${benches[@]}"
# Every tier: a missing lab, browser, libfaketime or tmpfs is a failure here, never a skip (tests/it/support/tiers.rs): the tests that need one are #[ignore]d in a plain `cargo test`.
# --no-fail-fast: one run reports every failing test file, not only the first (the chart is joined anyway).
# Two tests more than the machine has cores: the lab and daemon tests spend much of their time waiting on real
# processes (three at a time kept this 2-core machine 71% busy once the lab forked its servers and kernels;
# four took 586 s instead of about 700: docs/testing.md). TEST_THREADS=N overrides.
status=0
threads="${TEST_THREADS:-$(($(nproc) + 2))}"
HUBWATCH_FULL_TESTS=1 cargo test --lib --bins --tests "${features[@]}" --no-fail-fast -- --include-ignored \
  --test-threads "$threads" || status=$?
joined "the benchmarks' smoke runs"
joined "the chart's check"
exit "$status"
