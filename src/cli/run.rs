//! `hubwatch run`: the daemon, until SIGTERM or Ctrl-C.

use super::{load, until_signal};
use crate::app::App;
use crate::redact::Redactor;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub fn command(path: &Path, redactor: Arc<Redactor>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    redactor.learn(config.secrets());
    until_signal(|shutdown| async move {
        let run = async { App::build(config, redactor).await?.run_until(shutdown).await };
        match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hubwatch: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
