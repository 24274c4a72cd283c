#!/usr/bin/env bash
# The whole test suite, from a clean checkout: formatting, lints, the real lab (installed into .cache/ on
# first use), then every test (unit, config fixtures, hostile stub hub, the real JupyterHub lab, the daemon,
# the status pages in headless Chromium), then the Helm chart (scripts/test-chart.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
# Headless Chromium checks the status pages (tests/it/status_pages.rs).
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
# libfaketime runs an HA replica with its clock an hour off (tests/it/ha.rs).
[[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; }
# The lab installs into .cache/ (pip and npm, mostly waiting on the network and the disk) while clippy compiles.
lab_log="$(mktemp)"
lab/lab.sh install > "$lab_log" 2>&1 &
lab_install=$!
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# The locked dependencies against the RustSec advisories, offline (skipped when no database is at hand).
python3 scripts/audit.py
wait "$lab_install" || { cat "$lab_log" >&2; echo "the lab did not install" >&2; exit 1; }
cat "$lab_log" >&2 && rm -f "$lab_log"
# Every tier: a missing lab, browser, libfaketime or tmpfs is a failure here, never a skip (tests/it/support/tiers.rs): the tests that need one are #[ignore]d in a plain `cargo test`.
# --no-fail-fast: one run reports every failing test file, not only the first (the chart is checked anyway).
# One test more than the machine has cores: the lab and daemon tests spend most of their time waiting on real
# processes (three at a time kept this 2-core machine about 70% busy: docs/testing.md). TEST_THREADS=N overrides.
status=0
threads="${TEST_THREADS:-$(($(nproc) + 1))}"
HUBWATCH_FULL_TESTS=1 cargo test --all-targets --no-fail-fast -- --include-ignored --test-threads "$threads" || status=$?
scripts/test-chart.sh
exit "$status"
