//! `hubwatch availability`: per hub and incident kind over a period, from the state database — the monthly
//! report's figures.

use super::load;
use super::table::{Output, write_columns};
use crate::domain::HubName;
use crate::incident::availability::{Availability, from_store, shown};
use crate::store::Store;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

pub fn write(rows: &[Availability], output: Output, out: &mut impl Write) -> std::io::Result<()> {
    match output {
        Output::Json => {
            for row in rows {
                writeln!(out, "{}", row.to_json())?;
            }
        }
        Output::Table => {
            let header =
                ["HUB", "KIND", "AVAILABILITY", "INCIDENTS", "IMPACT (MIN)", "TIME TO PAGE", "TIME TO RESOLVE"]
                    .map(String::from);
            let rows: Vec<[String; 7]> = rows
                .iter()
                .map(|r| {
                    [
                        r.hub.to_string(),
                        r.kind.as_str().to_string(),
                        r.percent(),
                        r.incidents.to_string(),
                        format!("{:.1}", r.impact_minutes),
                        shown(r.mean_time_to_page),
                        shown(r.mean_time_to_resolve),
                    ]
                })
                .collect();
            write_columns(&header, &rows, out)?;
        }
    }
    Ok(())
}

pub fn command(path: &Path, since: Duration, output: Output) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let hubs: Vec<(HubName, bool)> = config.hubs.iter().map(|h| (h.name.clone(), h.dask_gateway.is_some())).collect();
    let now = SystemTime::now();
    let written = Store::open_read_only(&config.state_path)
        .and_then(|store| from_store(&store, &hubs, now.checked_sub(since).unwrap_or(std::time::UNIX_EPOCH), now))
        .map_err(|e| e.to_string())
        .and_then(|rows| write(&rows, output, &mut std::io::stdout().lock()).map_err(|e| e.to_string()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubwatch: {e}");
            ExitCode::FAILURE
        }
    }
}
