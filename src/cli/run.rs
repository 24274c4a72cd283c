//! `hubwatch run`: the daemon, until SIGTERM or Ctrl-C.

use super::{load, until_signal};
use crate::app::App;
use std::path::Path;
use std::process::ExitCode;

pub fn command(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    until_signal(|shutdown| async move {
        let run = async { App::build(config).await?.run_until(shutdown).await };
        match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hubwatch: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
