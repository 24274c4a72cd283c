//! Detection latency on the real lab: from the moment a fault is switched on to the trigger arriving at a
//! local PagerDuty, and from healing to the resolve, with fast intervals (login every 5 s, server and kernel
//! every 10 s). Faults: spawning fails for both probe users; kernels crash; the proxy is frozen.
//!
//! `cargo bench --bench latency`

#[path = "../tests/support/lab.rs"]
mod lab;
#[path = "../tests/support/pagerduty.rs"]
mod pagerduty;

use pagerduty::{PagerDuty, ROUTING_KEY};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOGIN_EVERY: u64 = 5;
const LOGIN_TIMEOUT: u64 = 5;
const SERVER_EVERY: u64 = 10;
const SERVER_TIMEOUT: u64 = 20;
const KERNEL_TIMEOUT: u64 = 8;

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
    hubwatch::probe::http::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pd = PagerDuty::default();
    let events_url = runtime.block_on(pd.clone().start());
    let lab = lab::Lab::start("latency", 18900);
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
             defaults:\n  probes:\n    login: {{every: {LOGIN_EVERY}s, timeout: {LOGIN_TIMEOUT}s}}\n    server: {{every: {SERVER_EVERY}s, timeout: {SERVER_TIMEOUT}s}}\n    kernel: {{every: {SERVER_EVERY}s, timeout: {KERNEL_TIMEOUT}s}}\n\
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
    // Let every lane run once healthy.
    std::thread::sleep(Duration::from_secs(SERVER_EVERY * 2));

    println!(
        "| fault | probe interval / timeout (s) | fault → trigger (s) | target: interval + 5 s | heal → resolve (s) | target: 2 × interval |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let cases: [(&str, u64, u64, Fault); 3] = [
        (
            "spawn fails for both users",
            SERVER_EVERY,
            SERVER_TIMEOUT,
            Box::new(|on| if on { lab.set_flag("spawn-fail", None, "") } else { lab.clear_flags() }),
        ),
        (
            "kernels crash",
            SERVER_EVERY,
            KERNEL_TIMEOUT,
            Box::new(|on| if on { lab.set_flag("kernel-crash", None, "") } else { lab.clear_flags() }),
        ),
        (
            "proxy frozen",
            LOGIN_EVERY,
            LOGIN_TIMEOUT,
            Box::new(|on| lab.signal("PROXY_PID", if on { "STOP" } else { "CONT" })),
        ),
    ];
    for (name, every, timeout, fault) in cases {
        let before = pd.accepted().len();
        fault(true);
        let paged = wait("trigger", Duration::from_secs(every + timeout + 60), || pd.accepted().len() > before);
        fault(false);
        let resolved =
            wait("resolve", Duration::from_secs(every * 4 + timeout + 60), || pd.accepted().len() > before + 1);
        println!(
            "| {name} | {every} / {timeout} | {:.1} | {} | {:.1} | {} |",
            paged.as_secs_f64(),
            every + 5,
            resolved.as_secs_f64(),
            every * 2
        );
        // Quiet time so the next fault starts from a healthy hub.
        std::thread::sleep(Duration::from_secs(every));
    }
    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let _ = daemon.wait();
}
