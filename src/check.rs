//! `hubwatch check`: every capability once for every probe user, as a table or JSON lines.

use crate::config::Config;
use crate::daemon::build_probers;
use crate::probe::http::HttpClient;
use crate::probe::{ProbeOutcome, ProbeResult, round_ms};
use std::io::Write;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Runs every probe user of the selected hubs through login, server with kernel, and Dask Gateway (users
/// and hubs in parallel, each user's capabilities in order). Returns the outcomes in a stable order.
pub async fn run_all(
    config: &Config,
    hub: Option<&str>,
    user: Option<&str>,
    cancel: &CancellationToken,
) -> Result<Vec<ProbeOutcome>, reqwest::Error> {
    let http = HttpClient::new()?;
    let probers = build_probers(config, &http);
    let mut rounds = tokio::task::JoinSet::new();
    for prober in probers.into_iter().filter(|p| hub.is_none_or(|h| p.hub.name == h)) {
        let users: Vec<String> =
            prober.hub.users.iter().filter(|u| user.is_none_or(|only| only == *u)).cloned().collect();
        for user in users {
            let (prober, cancel) = (prober.clone(), cancel.clone());
            rounds.spawn(async move {
                let Some(login) = prober.probe_login(&user, &cancel).await else { return Vec::new() };
                if login.result != ProbeResult::Ok {
                    // A user who cannot log in cannot do the rest: those are blocked, not tried.
                    let blocked = prober.blocked_after_login(&login);
                    return std::iter::once(login).chain(blocked).collect();
                }
                let mut outcomes = vec![login];
                outcomes.extend(prober.probe_server(&user, true, &cancel).await);
                outcomes.extend(prober.probe_dask_gateway(&user, &cancel).await);
                outcomes
            });
        }
    }
    let mut outcomes = Vec::new();
    while let Some(done) = rounds.join_next().await {
        outcomes.extend(done.expect("a probe round panicked"));
    }
    let order = |o: &ProbeOutcome| {
        let hub_index = config.hubs.iter().position(|h| h.name == o.hub).unwrap_or(usize::MAX);
        let user_index =
            config.hubs.get(hub_index).and_then(|h| h.users.iter().position(|u| *u == o.user)).unwrap_or(usize::MAX);
        (hub_index, o.capability, user_index)
    };
    outcomes.sort_by_key(order);
    Ok(outcomes)
}

pub fn write(outcomes: &[ProbeOutcome], output: Output, out: &mut impl Write) -> std::io::Result<()> {
    match output {
        Output::Json => {
            for outcome in outcomes {
                writeln!(out, "{}", outcome.to_json())?;
            }
        }
        Output::Table => {
            let header = ["HUB", "CAPABILITY", "USER", "RESULT", "SECONDS", "STAGE", "REASON"].map(String::from);
            let rows: Vec<[String; 7]> = outcomes.iter().map(table_row).collect();
            write_columns(&header, &rows, out)?;
        }
    }
    Ok(())
}

/// Left-aligned columns separated by two spaces; a column of numbers ("SECONDS") is right-aligned.
pub fn write_columns<const N: usize>(
    header: &[String; N],
    rows: &[[String; N]],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == N - 1 {
                line.push_str(cell);
            } else if header[i] == "SECONDS" {
                line.push_str(&format!("{}{cell}  ", " ".repeat(pad)));
            } else {
                line.push_str(&format!("{cell}{}  ", " ".repeat(pad)));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn table_row(outcome: &ProbeOutcome) -> [String; 7] {
    let (result, stage, reason) = match &outcome.result {
        ProbeResult::Ok => ("ok".to_string(), String::new(), String::new()),
        ProbeResult::Blocked { by } => ("blocked".to_string(), String::new(), format!("{by} failed first")),
        ProbeResult::Failed(f) => {
            let result = if f.cause == crate::probe::FailureCause::Monitor { "failed (monitor)" } else { "failed" };
            (result.to_string(), f.stage.to_string(), f.reason.clone())
        }
    };
    [
        outcome.hub.clone(),
        outcome.capability.to_string(),
        outcome.user.clone(),
        result,
        format!("{:.3}", round_ms(outcome.duration.as_secs_f64())),
        stage,
        reason,
    ]
}
