//! `hubwatch check`: every capability once for every probe user, as a table or JSON lines.

use super::table::{Output, write_columns};
use super::{BAD_CONFIG, load, until_signal};
use crate::config::Config;
use crate::domain::{ProbeOutcome, ProbeResult, round_ms};
use crate::http::HttpClient;
use crate::probe;
use crate::redact::Redactor;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs every probe user of the selected hubs through login, server with kernel, Dask Gateway and a Binder
/// launch (users and hubs in parallel, each user's capabilities in order). Returns the outcomes in a stable order.
pub async fn run_all(
    config: &Config,
    hub: Option<&str>,
    user: Option<&str>,
    cancel: &CancellationToken,
    redactor: &Arc<Redactor>,
) -> Result<Vec<ProbeOutcome>, crate::http::ClientError> {
    let http = HttpClient::new()?;
    let probers = probe::probers(config, &http, redactor);
    let mut rounds = tokio::task::JoinSet::new();
    for prober in probers.into_iter().filter(|p| hub.is_none_or(|h| p.hub.name == h)) {
        let users: Vec<String> =
            prober.hub.probe_users().filter(|u| user.is_none_or(|only| only == *u)).map(String::from).collect();
        for user in users {
            let (prober, cancel) = (prober.clone(), cancel.clone());
            rounds.spawn(async move { prober.check_user(&user, false, &cancel).await });
        }
    }
    let mut outcomes = Vec::new();
    while let Some(done) = rounds.join_next().await {
        outcomes.extend(done.expect("a probe round panicked"));
    }
    let order = |o: &ProbeOutcome| {
        let hub_index = config.hubs.iter().position(|h| h.name == o.hub).unwrap_or(usize::MAX);
        let user_index =
            config.hubs.get(hub_index).and_then(|h| h.probe_users().position(|u| u == o.user)).unwrap_or(usize::MAX);
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

fn table_row(outcome: &ProbeOutcome) -> [String; 7] {
    let (result, stage, reason) = match &outcome.result {
        ProbeResult::Ok => ("ok".to_string(), String::new(), String::new()),
        slow @ ProbeResult::Slow(why) => {
            ("slow".to_string(), why.stage().to_string(), slow.slowness().unwrap_or_default())
        }
        ProbeResult::Blocked { by } => ("blocked".to_string(), String::new(), format!("{by} failed first")),
        ProbeResult::Failed(f) => {
            let result = if f.cause == crate::domain::FailureCause::Monitor { "failed (monitor)" } else { "failed" };
            (result.to_string(), f.stage.to_string(), f.reason.clone())
        }
    };
    [
        outcome.hub.to_string(),
        outcome.capability.to_string(),
        outcome.user.clone(),
        result,
        format!("{:.3}", round_ms(outcome.duration.as_secs_f64())),
        stage,
        reason,
    ]
}

/// How long a check on demand may take: the longest probe (a server start) and its clean-up.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// `hubwatch check --url URL --hub NAME`: the running hubwatch checks the hub now; its rows printed as here.
pub fn remote(url: &url::Url, hub: &str, output: Output) -> ExitCode {
    crate::http::install_crypto_provider();
    let path = format!("api/v1/hubs/{}/check", crate::probe::user_path(hub));
    let answered = super::runtime().block_on(async {
        let http = HttpClient::new().map_err(|e| e.to_string())?;
        // A write is JSON (the API refuses other bodies: no form can post it cross-site).
        let body = Some(serde_json::json!({}));
        super::remote::call(&http, hyper::Method::POST, url, &path, body, REMOTE_TIMEOUT).await
    });
    let rows = match answered {
        Ok(Value::Array(rows)) => rows,
        Ok(other) => {
            eprintln!("hubwatch check: an answer that is not a list of results: {other}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("hubwatch check: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = print_rows(&rows, output, &mut std::io::stdout().lock()) {
        eprintln!("hubwatch: cannot write the results: {e}");
        return ExitCode::FAILURE;
    }
    if rows.iter().any(|row| row["result"] == "failed") { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The rows of a check's JSON answer, as `write` prints outcomes.
fn print_rows(rows: &[Value], output: Output, out: &mut impl Write) -> std::io::Result<()> {
    if output == Output::Json {
        return rows.iter().try_for_each(|row| writeln!(out, "{row}"));
    }
    let text = |row: &Value, key: &str| match &row[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let header = ["HUB", "CAPABILITY", "USER", "RESULT", "SECONDS", "STAGE", "REASON"].map(String::from);
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            let reason = match text(row, "blocked_by") {
                by if !by.is_empty() => format!("{by} failed first"),
                _ => text(row, "reason"),
            };
            let keys = ["hub", "capability", "user", "result", "seconds", "stage"];
            let [hub, capability, user, result, seconds, stage] = keys.map(|key| text(row, key));
            [hub, capability, user, result, seconds, stage, reason]
        })
        .collect();
    write_columns(&header, &table, out)
}

pub fn command(
    path: &Path,
    hub: Option<String>,
    user: Option<String>,
    output: Output,
    redactor: Arc<Redactor>,
) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    redactor.learn(config.secrets());
    if let Err(problem) = check_selection(&config, hub.as_deref(), user.as_deref()) {
        eprintln!("hubwatch: {}: {problem}", config.source.display());
        return ExitCode::from(BAD_CONFIG);
    }
    until_signal(|cancel| async move {
        let outcomes = match run_all(&config, hub.as_deref(), user.as_deref(), &cancel, &redactor).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                eprintln!("hubwatch: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = write(&outcomes, output, &mut std::io::stdout().lock()) {
            eprintln!("hubwatch: cannot write the results: {e}");
            return ExitCode::FAILURE;
        }
        // A slow start passed; blocked steps follow a failure that is counted already.
        let failed = outcomes.iter().any(|o| matches!(o.result, ProbeResult::Failed(_)));
        if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
    })
}

/// `--hub` must name a hub of the config, and `--user` a probe user of the selected hubs.
fn check_selection(config: &Config, hub: Option<&str>, user: Option<&str>) -> Result<(), String> {
    if let Some(name) = hub
        && config.hub(name).is_none()
    {
        let known: Vec<&str> = config.hubs.iter().map(|h| h.name.as_str()).collect();
        return Err(format!("--hub {name:?} is not a hub in this config (hubs: {})", known.join(", ")));
    }
    if let Some(name) = user
        && !config
            .hubs
            .iter()
            .filter(|h| hub.is_none_or(|only| h.name == only))
            .any(|h| h.probe_users().any(|u| u == name))
    {
        return Err(format!("--user {name:?} is not a probe user of the selected hubs"));
    }
    Ok(())
}
