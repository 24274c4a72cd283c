//! Detection latency on the real lab: from the moment a fault is switched on to the trigger arriving at a
//! local PagerDuty, and from healing to the resolve. Faults: spawning fails for both probe users; kernels
//! crash; the proxy is frozen.
//!
//! `cargo bench --bench latency` uses fast intervals (login every 5 s, server and kernel every 10 s);
//! `cargo bench --bench latency -- --default-intervals` the defaults (login 1 m, server and kernel 10 m),
//! which takes about 45 minutes. Under `cargo test --all-targets` it runs the first case only.

#[path = "../tests/support/lab.rs"]
mod lab;
#[path = "../tests/support/pagerduty.rs"]
mod pagerduty;
mod support;

use pagerduty::{PagerDuty, ROUTING_KEY};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Probe intervals and timeouts in seconds.
struct Intervals {
    login_every: u64,
    login_timeout: u64,
    server_every: u64,
    server_timeout: u64,
    kernel_timeout: u64,
}

const FAST: Intervals =
    Intervals { login_every: 5, login_timeout: 5, server_every: 10, server_timeout: 20, kernel_timeout: 8 };
/// hubwatch's defaults (docs/configuration.md).
const DEFAULT: Intervals =
    Intervals { login_every: 60, login_timeout: 30, server_every: 600, server_timeout: 600, kernel_timeout: 120 };

/// A fault: switched on with `true`, healed with `false`.
type Fault<'a> = Box<dyn Fn(bool) + 'a>;

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "no {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn main() {
    let stamp = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/lab/installed.stamp");
    let full = std::env::var("HUBWATCH_FULL_TESTS").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
    if support::smoke() && !stamp.exists() && !full {
        eprintln!("SKIPPED the latency benchmark's smoke run: needs the JupyterHub lab (lab/lab.sh install)");
        return;
    }
    let defaults = std::env::args().any(|a| a == "--default-intervals");
    let Intervals { login_every, login_timeout, server_every, server_timeout, kernel_timeout } =
        if defaults { DEFAULT } else { FAST };
    hubwatch::http::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pd = PagerDuty::default();
    let events_url = runtime.block_on(pd.clone().start());
    // LATENCY_LAB_PORT moves the lab, so a long run can go on beside the test suite (which runs this too).
    let port = std::env::var("LATENCY_LAB_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(18950);
    let lab = lab::Lab::start_for_daemon("latency", port);
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let state = lab.dir.join("latency-state.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    let config = lab.dir.join("latency.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {listen}\nstate_path: {}\nincidents: {{window: 2m}}\npagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: \"{events_url}\", retry_delay: 1s}}\n\
             defaults:\n  probes:\n    login: {{every: {login_every}s, timeout: {login_timeout}s}}\n    server: {{every: {server_every}s, timeout: {server_timeout}s}}\n    kernel: {{every: {server_every}s, timeout: {kernel_timeout}s}}\n\
             hubs:\n  - name: lab\n    url: {}\n    token: {{env: HUBWATCH_TOKEN}}\n    users: [probe-1, probe-2]\n",
            state.display(),
            lab.url
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_hubwatch"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HUBWATCH_TOKEN", lab.token())
        .env("ROUTING_KEY", ROUTING_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let the lanes run healthy for a while (the first server round comes at a random phase).
    std::thread::sleep(Duration::from_secs((server_every * 2).min(120)));

    println!(
        "| fault | probe interval / timeout (s) | fault → trigger (s) | target: interval + 5 s | heal → resolve (s) | target: 2 × interval |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let cases: [(&str, u64, u64, Fault); 3] = [
        (
            "spawn fails for both users",
            server_every,
            server_timeout,
            Box::new(|on| if on { lab.set_flag("spawn-fail", None, "") } else { lab.clear_flags() }),
        ),
        (
            "kernels crash",
            server_every,
            kernel_timeout,
            Box::new(|on| if on { lab.set_flag("kernel-crash", None, "") } else { lab.clear_flags() }),
        ),
        (
            "proxy frozen",
            login_every,
            login_timeout,
            Box::new(|on| lab.signal("PROXY_PID", if on { "STOP" } else { "CONT" })),
        ),
    ];
    // Under `cargo test` the first case only: it still runs end to end, in well under a minute.
    let cases = cases.into_iter().take(if support::smoke() { 1 } else { 3 });
    for (name, every, timeout, fault) in cases {
        let before = pd.accepted().len();
        // Since the fault: a follow-up trigger (more users) must not pass for the resolve.
        let sent = |action: &str| pd.accepted().iter().skip(before).any(|e| e["event_action"] == action);
        fault(true);
        let paged = wait("trigger", Duration::from_secs(every + timeout + 60), || sent("trigger"));
        fault(false);
        let resolved = wait("resolve", Duration::from_secs(every * 4 + timeout + 60), || sent("resolve"));
        println!(
            "| {name} | {every} / {timeout} | {:.1} | {} | {:.1} | {} |",
            paged.as_secs_f64(),
            every + 5,
            resolved.as_secs_f64(),
            every * 2
        );
        // Quiet time so the next fault starts from a healthy hub.
        std::thread::sleep(Duration::from_secs(every.min(60)));
    }
    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let _ = daemon.wait();
}
