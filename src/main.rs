use clap::Parser;
use hubwatch::cli::{Cli, init_telemetry, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_telemetry(cli.log_format);
    // reqwest and tokio-tungstenite both use rustls; one process-wide provider (ring) avoids the ambiguity panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    run(cli)
}
