//! The integration tests: one crate (one build, one link), a module per area. Tests that need the real
//! JupyterHub lab, Chromium, libfaketime or a tmpfs are `#[ignore]`d with the reason; `scripts/test.sh` runs
//! them all (`-- --include-ignored`). How to add one: docs/testing.md.

mod support;

mod architecture;
mod availability;
mod below_threshold;
mod certificates;
mod config_validation;
mod daemon;
mod diagnostics;
mod faults;
mod folds;
mod ha;
mod hostile_hub;
mod incident_record;
mod incidents;
mod kept_server;
mod kubernetes;
mod on_call;
mod paging;
mod peers;
mod real_lab;
mod redaction;
mod responses;
mod rollouts;
mod silences;
mod status_pages;
mod web;
