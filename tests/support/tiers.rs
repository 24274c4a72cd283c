//! Test tiers. A plain `cargo test` runs what needs nothing but Rust; a test that needs the JupyterHub lab,
//! Chromium, libfaketime or a mountable tmpfs runs when that is there and otherwise says on stderr that it
//! was skipped and how to run it. `scripts/test.sh` (and CI) sets `HUBWATCH_FULL_TESTS=1` after installing
//! everything: then a missing prerequisite is a failure, never a skip.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// What a test needs beyond Rust.
#[derive(Debug, Clone, Copy)]
pub enum Needs {
    /// The real JupyterHub lab (`lab/lab.sh install`).
    Lab,
    /// Debian's Chromium, for the status pages.
    Chromium,
    /// libfaketime, to run a replica with its clock off.
    Faketime,
    /// Permission to mount a tmpfs (root), for a really full disk.
    Mount,
}

pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn lab_stamp() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var("HUBWATCH_LAB_CACHE").map(PathBuf::from).unwrap_or_else(|_| repo.join(".cache/lab"));
    cache.join("installed.stamp")
}

fn present(needs: Needs) -> bool {
    match needs {
        Needs::Lab => lab_stamp().exists(),
        Needs::Chromium => Path::new("/usr/bin/chromium").exists(),
        Needs::Faketime => Path::new(LIBFAKETIME).exists(),
        Needs::Mount => {
            let probe = std::env::temp_dir().join(format!("hubwatch-mount-probe-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&probe);
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                .arg(&probe)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if mounted {
                let _ = std::process::Command::new("umount").arg(&probe).status();
            }
            let _ = std::fs::remove_dir(&probe);
            mounted
        }
    }
}

fn how(needs: Needs) -> &'static str {
    match needs {
        Needs::Lab => "lab/lab.sh install",
        Needs::Chromium => "apt-get install chromium",
        Needs::Faketime => "apt-get install faketime",
        Needs::Mount => "run as root",
    }
}

/// True when `test` can run. Otherwise, under `scripts/test.sh` (or CI) it fails; elsewhere it says on
/// stderr (past the test harness's capture) that it skips, and returns false.
pub fn can_run(test: &str, needs: &[Needs]) -> bool {
    let missing: Vec<Needs> = needs.iter().copied().filter(|n| !present(*n)).collect();
    if missing.is_empty() {
        return true;
    }
    let full = std::env::var("HUBWATCH_FULL_TESTS").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
    let what: Vec<String> = missing.iter().map(|n| format!("{n:?} ({})", how(*n))).collect();
    assert!(!full, "{test} needs {}: scripts/test.sh installs it", what.join(", "));
    let line = format!("SKIPPED {test}: needs {}; scripts/test.sh runs every tier\n", what.join(", "));
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}
