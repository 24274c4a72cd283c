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
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# The locked dependencies against the RustSec advisories, offline (skipped when no database is at hand).
python3 scripts/audit.py
lab/lab.sh install
# Every tier: a missing lab, browser, libfaketime or tmpfs is a failure here, never a skip (tests/it/support/tiers.rs): the tests that need one are #[ignore]d in a plain `cargo test`.
# --no-fail-fast: one run reports every failing test file, not only the first (the chart is checked anyway).
# TEST_THREADS=4 runs four tests at a time (a third faster here, and busier: see docs/testing.md); by default as
# many as the machine has cores.
status=0
threads=(); [[ -n "${TEST_THREADS:-}" ]] && threads=(--test-threads "$TEST_THREADS")
HUBWATCH_FULL_TESTS=1 cargo test --all-targets --no-fail-fast -- --include-ignored "${threads[@]}" || status=$?
scripts/test-chart.sh
exit "$status"
