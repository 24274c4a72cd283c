//! A small filesystem that can really be filled up: a tmpfs (root only; callers check `Needs::Mount`).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// A small tmpfs at `dir`, unmounted on drop; `None` where this process may not mount one.
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    pub fn mount(dir: PathBuf) -> Option<SmallDisk> {
        let _ = Command::new("umount").arg(&dir).status();
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(&dir).status();
        mounted.is_ok_and(|s| s.success()).then_some(SmallDisk { dir })
    }

    pub fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Writes until the filesystem has no byte left.
    pub fn fill(&self) {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let block = vec![0u8; chunk];
            while file.write_all(&block).is_ok() && file.sync_all().is_ok() {}
        }
    }

    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
