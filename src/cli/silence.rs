//! `hubwatch silence add|list|expire --url URL`: talks to a running hubwatch's `/api/v1/silences` as amtool
//! talks to Alertmanager; credentials from `HUBWATCH_WEB_USER` / `HUBWATCH_WEB_PASSWORD` when its pages need
//! them. Exit 0 on success, 1 when hubwatch refuses or cannot be reached (its message on stderr).

use super::remote::call;
use super::table::{Output, write_columns};
use crate::http::{HttpClient, install_crypto_provider};
use clap::Subcommand;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;
use url::Url;

/// Long enough for a busy hubwatch, short enough for a human at a terminal.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence a hub (or one kind on it): incidents are recorded and shown, nothing is paged until it ends.
    Add {
        /// hubwatch's address (as its pages are served, e.g. http://127.0.0.1:9464).
        #[arg(long, env = "HUBWATCH_URL")]
        url: Url,
        #[arg(long)]
        hub: String,
        /// hub_access, dask_gateway, binder or monitor; every kind when absent.
        #[arg(long)]
        kind: Option<String>,
        /// How long, from now or from --from (90m, 2h, 1d).
        #[arg(long = "for", conflicts_with = "until", required_unless_present = "until")]
        duration: Option<String>,
        /// Planned: from when (RFC 3339, e.g. 2026-12-05T22:00:00Z); default now.
        #[arg(long = "from")]
        from: Option<String>,
        /// Recurring: the same window again every so often (1w, 1d; at least 1h), until expired.
        #[arg(long)]
        every: Option<String>,
        /// Until when (RFC 3339, e.g. 2026-12-01T06:00:00Z).
        #[arg(long)]
        until: Option<String>,
        /// Why nobody should be paged (required).
        #[arg(long)]
        reason: String,
        /// Who is silencing, when the pages need no login (default: $USER); with a login, hubwatch records
        /// the user it authenticated.
        #[arg(long)]
        created_by: Option<String>,
    },
    /// The silences: active ones and those that ended in the last day.
    List {
        #[arg(long, env = "HUBWATCH_URL")]
        url: Url,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// End a silence now.
    Expire {
        #[arg(long, env = "HUBWATCH_URL")]
        url: Url,
        /// The silence's id (`hubwatch silence list` shows it).
        id: String,
    },
}

pub fn command(command: SilenceCommand) -> ExitCode {
    install_crypto_provider();
    let result = super::runtime().block_on(async {
        let http = HttpClient::new().map_err(|e| e.to_string())?;
        match command {
            SilenceCommand::Add { url, hub, kind, duration, from, every, until, reason, created_by } => {
                let author = created_by
                    .or_else(|| std::env::var("HUBWATCH_WEB_USER").ok())
                    .or_else(|| std::env::var("USER").ok());
                let body = json!({"hub": hub, "kind": kind, "duration": duration, "ends_at": until,
                    "starts_at": from, "every": every, "reason": reason, "created_by": author});
                let silence = call(&http, hyper::Method::POST, &url, "api/v1/silences", Some(body), TIMEOUT).await?;
                println!("{}", silence["id"].as_str().unwrap_or_default());
                let field = |key: &str| silence[key].as_str().unwrap_or_default().to_string();
                let every = silence["every"].as_str().map(|e| format!(", every {e}")).unwrap_or_default();
                eprintln!("silenced {} from {} until {}{every}", field("hub"), field("starts_at"), field("ends_at"));
                Ok(())
            }
            SilenceCommand::List { url, output } => {
                let list = call(&http, hyper::Method::GET, &url, "api/v1/silences", None, TIMEOUT).await?;
                print_list(list.as_array().map_or(&[][..], Vec::as_slice), output).map_err(|e| e.to_string())
            }
            SilenceCommand::Expire { url, id } => {
                call(&http, hyper::Method::DELETE, &url, &format!("api/v1/silences/{id}"), None, TIMEOUT).await?;
                eprintln!("silence {id} expired");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubwatch silence: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_list(silences: &[Value], output: Output) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        for silence in silences {
            use std::io::Write;
            writeln!(out, "{silence}")?;
        }
        return Ok(());
    }
    let header = ["ID", "HUB", "KIND", "ENDS", "ACTIVE", "CREATED BY", "REASON"].map(String::from);
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_string();
    let rows: Vec<[String; 7]> = silences
        .iter()
        .map(|s| {
            let kind = s["kind"].as_str().unwrap_or("every kind").to_string();
            let active = if s["active"].as_bool() == Some(true) { "yes" } else { "ended" }.to_string();
            [text(s, "id"), text(s, "hub"), kind, text(s, "ends_at"), active, text(s, "created_by"), text(s, "reason")]
        })
        .collect();
    write_columns(&header, &rows, &mut out)
}
