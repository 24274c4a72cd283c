use clap::Parser;
use hubwatch::cli::{Cli, init_telemetry, run};
use hubwatch::redact::Redactor;
use std::process::ExitCode;
use std::sync::Arc;

/// jemalloc: at 5,000 simulated hubs glibc's malloc spent a seventh of hubwatch's CPU keeping its free lists
/// (11.1% of a core in all); jemalloc 8.6–9.4% (docs/benchmarks.md).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas (not four a core) and freed pages given back within a second: with jemalloc's defaults 5,000
/// hubs held 136 MB, with these 116 MB, for the same CPU. Thread caches kept fuller (more slots, emptied after
/// 4 MiB of allocations rather than 64 KiB): the probes' thread makes each outcome and the recorder's frees
/// it, and refilling and flushing the caches was 6% of the CPU at 5,000 hubs; with these, 0.75 points of a
/// core less in five pairs of rows, the memory the same (docs/benchmarks.md). `_RJEM_MALLOC_CONF` in the
/// environment still overrides them.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 99] =
    b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0,lg_tcache_nslots_mul:3,tcache_gc_incr_bytes:4194304\0";

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let redactor = Arc::new(Redactor::new());
    init_telemetry(cli.log_format, redactor.clone());
    hubwatch::redact::install_panic_hook(redactor.clone());
    hubwatch::http::install_crypto_provider();
    run(cli, redactor)
}

/// glibc's malloc still serves the C code (SQLite): it gives each thread that allocates an arena of its own
/// (up to eight a core) and keeps what each held (70 MB resident above the heap at 5,000 hubs when it served
/// everything: docs/benchmarks.md). Two arenas serve those few threads with no measurable contention.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called first thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
