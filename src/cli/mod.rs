//! The command line (a contract: see docs/configuration.md). Exit codes: 0 fine, 1 a probe failed or the daemon could
//! not run, 2 a bad config or bad arguments.

mod availability;
mod check;
mod hash_password;
mod incidents;
mod remote;
mod report;
mod run;
mod silence;
mod table;
mod validate;

pub use check::run_all;
pub use table::Output;

use crate::config::Config;
use crate::redact::Redactor;
use clap::{Parser, Subcommand, ValueEnum};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
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
    /// Every capability once for every probe user; exit 0 when all pass, 1 when any fails. With --url, a
    /// running hubwatch checks --hub now (its outcomes count, and are noted on the hub's open incidents).
    Check {
        #[arg(long, env = "HUBWATCH_CONFIG", required_unless_present = "url")]
        config: Option<PathBuf>,
        /// A running hubwatch's address (as its pages are served): it runs the check.
        #[arg(long, requires = "hub", conflicts_with = "user")]
        url: Option<url::Url>,
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
    /// Availability per hub and incident kind over a period, from the state the config names.
    Availability {
        #[arg(long, env = "HUBWATCH_CONFIG")]
        config: PathBuf,
        /// The period, back from now (30d, 7d, 12h).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The bcrypt hash of the password given on stdin, for `web.basic_auth_users`.
    HashPassword,
    /// Silences of a running hubwatch (through its API): add, list, expire.
    #[command(subcommand)]
    Silence(Box<silence::SilenceCommand>),
    /// The configuration's own description: its JSON Schema, or every default written out.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Draft the incident report of one incident (Markdown on stdout), from the state the config names.
    Report {
        /// The incident key (`hubwatch incidents` lists them).
        key: String,
        #[arg(long, env = "HUBWATCH_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The JSON Schema of the configuration file (draft 7), each key with its description.
    Schema,
    /// The configuration with every default filled in (YAML), so you see what you get.
    Defaults,
}

const BAD_CONFIG: u8 = 2;

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("hubwatch: {e}");
        ExitCode::from(BAD_CONFIG)
    })
}

/// Runs the command; `redactor` is the one the log writes through (the config's secrets are added to it).
pub fn run(cli: Cli, redactor: Arc<Redactor>) -> ExitCode {
    match cli.command {
        Command::Validate { config } => validate::command(&config),
        Command::Check { url: Some(url), hub, output, .. } => check::remote(&url, &hub.unwrap_or_default(), output),
        Command::Check { config, hub, user, output, .. } => {
            check::command(&config.unwrap_or_default(), hub, user, output, redactor)
        }
        Command::Incidents { config, output } => incidents::command(&config, output),
        Command::Availability { config, since, output } => availability::command(&config, since, output),
        Command::Report { key, config } => report::command(&config, &key),
        Command::Run { config } => run::command(&config, redactor),
        Command::HashPassword => hash_password::command(),
        Command::Silence(command) => silence::command(*command),
        Command::Config(ConfigCommand::Schema) => print(&crate::config::schema()),
        Command::Config(ConfigCommand::Defaults) => {
            let yaml = serde_saphyr::to_string(&Config::defaults_document()).expect("the defaults serialize");
            print!("{yaml}");
            ExitCode::SUCCESS
        }
    }
}

fn print(json: &serde_json::Value) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(json).expect("JSON serializes"));
    ExitCode::SUCCESS
}

/// Runs `work` on the runtime until it is done; a SIGTERM or Ctrl-C cancels the token it is given.
fn until_signal<F: Future<Output = ExitCode>>(work: impl FnOnce(CancellationToken) -> F) -> ExitCode {
    runtime().block_on(async {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let listener = tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("signal received: starting nothing new");
            on_signal.cancel();
        });
        let code = work(cancel).await;
        listener.abort();
        code
    })
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

/// The log: to stderr, every record through `redactor`.
pub fn init_telemetry(format: LogFormat, redactor: Arc<Redactor>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, not in `kubectl logs` or a file.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colours).with_writer(RedactedStderr(redactor));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Makes a writer per log record that redacts the whole record before it reaches stderr (the formatter
/// writes a record in pieces; a secret split across two pieces is still caught).
struct RedactedStderr(Arc<Redactor>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedRecord;

    fn make_writer(&'a self) -> RedactedRecord {
        RedactedRecord { redactor: self.0.clone(), record: Vec::new() }
    }
}

struct RedactedRecord {
    redactor: Arc<Redactor>,
    record: Vec<u8>,
}

impl std::io::Write for RedactedRecord {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.record.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedRecord {
    fn drop(&mut self) {
        let text = self.redactor.redact(&String::from_utf8_lossy(&self.record));
        // Nowhere to report a failed write to stderr.
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
    }
}
