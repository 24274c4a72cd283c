//! `hubwatch report KEY`: the incident report draft (Markdown on stdout), from the state the config names.

use super::{BAD_CONFIG, load};
use crate::domain::IncidentKey;
use crate::incident::report::{self, ReportSettings};
use crate::store::Store;
use std::path::Path;
use std::process::ExitCode;

pub fn command(path: &Path, key: &str) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let settings = ReportSettings { public_url: config.public_url(), threshold: config.incidents.min_affected_users };
    let hub_url = |hub: &str| config.hub(hub).map(|h| h.url.clone());
    match Store::open_read_only(&config.state_path)
        .and_then(|store| report::draft(&store, &IncidentKey::from(key), hub_url, &settings))
    {
        Ok(Some(markdown)) => {
            print!("{markdown}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "hubwatch: no incident {key:?} in {} (`hubwatch incidents` lists them)",
                config.state_path.display()
            );
            ExitCode::from(BAD_CONFIG)
        }
        Err(e) => {
            eprintln!("hubwatch: {e}");
            ExitCode::FAILURE
        }
    }
}
