//! Test tiers. A plain `cargo test` runs what needs nothing but Rust; a test that needs the JupyterHub lab,
//! Chromium, libfaketime or a mountable tmpfs is `#[ignore = "needs …"]` and calls [`require`], which fails
//! it, saying how to install the missing piece, when it is run without. `scripts/test.sh` (and CI) installs
//! everything and runs `cargo test -- --include-ignored`: a missing prerequisite is a failure, never a skip.

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

/// Fails the test, saying how to install what it needs, when something is missing. Every test that calls
/// this (or starts the lab, which does) is `#[ignore = "needs …"]`, so a plain `cargo test` lists it as
/// ignored rather than passing it; `scripts/test.sh` installs every tier and runs them with
/// `-- --include-ignored`.
pub fn require(needs: &[Needs]) {
    let missing: Vec<String> = needs.iter().filter(|n| !present(**n)).map(|n| format!("{n:?} ({})", how(*n))).collect();
    assert!(missing.is_empty(), "this test needs {}: scripts/test.sh installs every tier", missing.join(", "));
}
