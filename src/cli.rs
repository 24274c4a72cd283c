//! The command line (a contract: see README.md). Exit codes: 0 fine, 1 a probe failed or the daemon could
//! not run, 2 a bad config or bad arguments.

use crate::check::{self, Output};
use crate::config::Config;
use crate::daemon;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "hubwatch",
    version,
    about = "Watches JupyterHubs the way their users use them and pages when N >= 2 users are affected"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HUBWATCH_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: probe every hub on schedule, serve /metrics, /healthz and /readyz.
    Run {
        #[arg(long, env = "HUBWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Every capability once for every probe user; exit 0 when all pass, 1 when any fails.
    Check {
        #[arg(long, env = "HUBWATCH_CONFIG")]
        config: PathBuf,
        /// Only this hub.
        #[arg(long)]
        hub: Option<String>,
        /// Only this probe user.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Validate the config file: exit 0 when valid, 2 with every problem listed when not.
    Validate {
        #[arg(long, env = "HUBWATCH_CONFIG")]
        config: PathBuf,
    },
    /// List the incidents (open and past) kept in the state the config names.
    Incidents {
        #[arg(long, env = "HUBWATCH_CONFIG")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Draft the incident report of one incident (Markdown on stdout), from the state the config names.
    Report {
        /// The incident key (`hubwatch incidents` lists them).
        key: String,
        #[arg(long, env = "HUBWATCH_CONFIG")]
        config: PathBuf,
    },
}

const BAD_CONFIG: u8 = 2;

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("hubwatch: {e}");
        ExitCode::from(BAD_CONFIG)
    })
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { config } => match load(&config) {
            Ok(config) => {
                let users: usize = config.hubs.iter().map(|h| h.users.len()).sum();
                println!("{}: valid ({} hubs, {} probe users)", config.source.display(), config.hubs.len(), users);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Check { config, hub, user, output } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(name) = &hub
                && config.hub(name).is_none()
            {
                let known: Vec<&str> = config.hubs.iter().map(|h| h.name.as_str()).collect();
                eprintln!(
                    "hubwatch: {}: --hub {name:?} is not a hub in this config (hubs: {})",
                    config.source.display(),
                    known.join(", ")
                );
                return ExitCode::from(BAD_CONFIG);
            }
            if let Some(name) = &user
                && !config
                    .hubs
                    .iter()
                    .filter(|h| hub.as_ref().is_none_or(|only| *only == h.name))
                    .any(|h| h.users.contains(name))
            {
                eprintln!(
                    "hubwatch: {}: --user {name:?} is not a probe user of the selected hubs",
                    config.source.display()
                );
                return ExitCode::from(BAD_CONFIG);
            }
            runtime().block_on(async {
                let cancel = CancellationToken::new();
                let on_signal = cancel.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    on_signal.cancel();
                });
                match check::run_all(&config, hub.as_deref(), user.as_deref(), &cancel).await {
                    Ok(outcomes) => {
                        let mut stdout = std::io::stdout().lock();
                        if let Err(e) = check::write(&outcomes, output, &mut stdout) {
                            eprintln!("hubwatch: cannot write the results: {e}");
                            return ExitCode::FAILURE;
                        }
                        if outcomes.iter().all(|o| o.result == crate::probe::ProbeResult::Ok) {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                    Err(e) => {
                        eprintln!("hubwatch: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Incidents { config, output } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let listed = crate::incident::store::Store::open(&config.state_path)
                .and_then(|store| store.all_incidents())
                .map_err(|e| e.to_string())
                .and_then(|incidents| {
                    crate::incident::list::write(&incidents, output, &mut std::io::stdout().lock())
                        .map_err(|e| e.to_string())
                });
            match listed {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hubwatch: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Report { key, config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let settings = crate::incident::report::ReportSettings {
                public_url: config.public_url.clone(),
                threshold: config.incidents.min_affected_users,
            };
            let hub_url = |hub: &str| config.hub(hub).map(|h| h.url.clone());
            let drafted = crate::incident::store::Store::open(&config.state_path)
                .and_then(|store| crate::incident::report::draft(&store, &key, hub_url, &settings));
            match drafted {
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
        Command::Run { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            runtime().block_on(async {
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("signal received: starting nothing new");
                    on_signal.cancel();
                });
                match daemon::run(config, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("hubwatch: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// One thread: probing is waiting on the network. Measured with 1,000 hubs, a multi-threaded runtime spent
/// more CPU waking its threads than on the probes (docs/benchmarks.md).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("the tokio runtime starts")
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

pub fn init_telemetry(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
