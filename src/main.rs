use clap::Parser;
use hubwatch::cli::{Cli, init_telemetry, run};
use hubwatch::redact::Redactor;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let redactor = Arc::new(Redactor::new());
    init_telemetry(cli.log_format, redactor.clone());
    hubwatch::redact::install_panic_hook(redactor.clone());
    hubwatch::http::install_crypto_provider();
    run(cli, redactor)
}
