//! `hubwatch validate`: exit 0 when the config is valid, 2 with every problem listed when not.

use super::load;
use std::path::Path;
use std::process::ExitCode;

pub fn command(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            let users: usize = config.hubs.iter().map(|h| h.users.len()).sum();
            println!("{}: valid ({} hubs, {} probe users)", config.source.display(), config.hubs.len(), users);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
