use clap::Parser;
use hubwatch::cli::{Cli, init_telemetry, run};
use hubwatch::redact::Redactor;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let redactor = Arc::new(Redactor::new());
    init_telemetry(cli.log_format, redactor.clone());
    hubwatch::redact::install_panic_hook(redactor.clone());
    hubwatch::http::install_crypto_provider();
    run(cli, redactor)
}

/// glibc gives each thread that allocates an arena of its own (up to eight a core) and keeps what each held:
/// at 5,000 hubs that was 70 MB resident above the heap (docs/benchmarks.md). Two arenas serve hubwatch's
/// few threads (the runtime's, SQLite's, the blocking pool) with no measurable contention.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called first thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
