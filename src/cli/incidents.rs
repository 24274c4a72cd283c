//! `hubwatch incidents`: the incidents in the state database, newest last.

use super::load;
use super::table::{Output, write_columns};
use crate::domain::wording::summary_of;
use crate::store::{IncidentRecord, Store};
use crate::timefmt::rfc3339 as when;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Everyone affected during the incident.
fn users(incident: &IncidentRecord) -> BTreeSet<&str> {
    incident.affected_ever.values().flatten().map(String::as_str).collect()
}

pub fn write(incidents: &[IncidentRecord], output: Output, out: &mut impl Write) -> std::io::Result<()> {
    match output {
        Output::Json => {
            for i in incidents {
                let line = serde_json::json!({
                    "key": i.key, "hub": i.hub, "kind": i.kind, "status": if i.open { "open" } else { "recovered" },
                    "users": users(i),
                    "summary": summary_of(&i.hub, i.kind, users(i).len(), &i.affected_ever.keys().copied().collect()),
                    "impact_start": when(i.impact_start), "opened": when(i.opened_at), "impact_end": i.recovered_at.map(when),
                });
                writeln!(out, "{line}")?;
            }
        }
        Output::Table => {
            let header = ["KEY", "HUB", "KIND", "STATUS", "USERS", "IMPACT START", "IMPACT END"].map(String::from);
            let rows: Vec<[String; 7]> = incidents
                .iter()
                .map(|i| {
                    [
                        i.key.to_string(),
                        i.hub.to_string(),
                        i.kind.as_str().to_string(),
                        (if i.open { "open" } else { "recovered" }).to_string(),
                        users(i).into_iter().collect::<Vec<_>>().join(","),
                        when(i.impact_start),
                        i.recovered_at.map(when).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            write_columns(&header, &rows, out)?;
        }
    }
    Ok(())
}

pub fn command(path: &Path, output: Output) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let listed = Store::open_read_only(&config.state_path)
        .and_then(|store| store.all_incidents())
        .map_err(|e| e.to_string())
        .and_then(|incidents| write(&incidents, output, &mut std::io::stdout().lock()).map_err(|e| e.to_string()));
    match listed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubwatch: {e}");
            ExitCode::FAILURE
        }
    }
}
