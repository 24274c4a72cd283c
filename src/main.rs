use clap::Parser;
use hubwatch::cli::{Cli, init_telemetry, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_telemetry(cli.log_format);
    hubwatch::http::install_crypto_provider();
    run(cli)
}
