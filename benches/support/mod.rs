#![allow(dead_code)]
pub mod hubsim;
pub mod measure;

/// `cargo bench` passes `--bench`; under `cargo test --all-targets` a benchmark only checks that it still
/// runs, in seconds (a debug build's figures mean nothing).
pub fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}
