//! Detection latency on the real lab: from the moment a fault is switched on to the trigger arriving at a
//! local PagerDuty, and from healing to the resolve. Faults: spawning fails for both probe users; kernels
//! crash; the proxy is frozen. Then, with a kept server (`sentinel`) and the hub's log followed through the
//! Kubernetes stand-in: home full, routes lost (a real user's browser looping), kernels crash.
//!
//! `cargo bench --bench latency` uses fast intervals (login every 5 s, server and kernel every 10 s; with the
//! kept server every 10 s, server rounds every 60 s); `cargo bench --bench latency -- --default-intervals`
//! the defaults (login 1 m, server and kernel 10 m, the kept server 1 m), which takes about an hour; `--only
//! TEXT` runs only the probe-round cases whose name contains TEXT (`--only stuck`), without the kept server's.
//! Under `cargo test --all-targets` it runs the first case only.

#[path = "../tests/it/support/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;
#[path = "../tests/it/support/k8s_fixtures.rs"]
#[allow(dead_code)]
mod k8s_fixtures;
#[path = "../tests/it/support/lab.rs"]
#[allow(dead_code)]
mod lab;
#[path = "../tests/it/support/pagerduty.rs"]
#[allow(dead_code)]
mod pagerduty;
#[path = "../tests/it/support/serve.rs"]
#[allow(dead_code)]
mod serve;
mod support;

use pagerduty::{PagerDuty, ROUTING_KEY};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Probe intervals and timeouts in seconds.
struct Intervals {
    login_every: u64,
    login_timeout: u64,
    server_every: u64,
    server_timeout: u64,
    /// `probes.server.stuck_after`: a start silent that long fails.
    stuck_after: u64,
    kernel_timeout: u64,
    /// With a kept server: its interval, and the other users' server rounds'.
    sentinel_every: u64,
    sentinel_server_every: u64,
}

const FAST: Intervals = Intervals {
    login_every: 5,
    login_timeout: 5,
    server_every: 10,
    server_timeout: 20,
    stuck_after: 10,
    kernel_timeout: 8,
    sentinel_every: 10,
    sentinel_server_every: 60,
};
/// hubwatch's defaults (docs/configuration.md), and a kept server every minute.
const DEFAULT: Intervals = Intervals {
    login_every: 60,
    login_timeout: 30,
    server_every: 600,
    server_timeout: 600,
    stuck_after: 180,
    kernel_timeout: 120,
    sentinel_every: 60,
    sentinel_server_every: 600,
};

/// The incidents' window in these runs (`incidents.window: 2m`), in seconds.
const LOG_WINDOW: u64 = 120;

/// A fault: switched on with `true`, healed with `false`.
type Fault<'a> = Box<dyn Fn(bool) + 'a>;

/// One row: the fault's name, the interval it should be seen within, the probe's timeout, the fault, and the
/// interval its end should be seen within.
struct Case<'a> {
    name: &'static str,
    every: u64,
    timeout: u64,
    fault: Fault<'a>,
    resolve_every: u64,
}

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
    let intervals = if std::env::args().any(|a| a == "--default-intervals") { DEFAULT } else { FAST };
    hubwatch::http::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pd = PagerDuty::default();
    let events_url = runtime.block_on(pd.clone().start());
    // LATENCY_LAB_PORT moves the lab, so a long run can go on beside the test suite (which runs this too).
    let port = std::env::var("LATENCY_LAB_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(18950);
    let lab = lab::Lab::start_for_daemon("latency", port, &[]);
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    probe_rounds(&lab, &pd, &events_url, &intervals, only.as_deref());
    if !support::smoke() && only.is_none() {
        kept_server(&runtime, &lab, &pd, &events_url, &intervals);
    }
}

/// hubwatch on the lab hub with two probe users and `extra` hub keys and top-level config.
fn start_daemon(lab: &lab::Lab, config_text: &str, env: &[(&str, &str)]) -> Child {
    let state = lab.dir.join("latency-state.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = lab.dir.join("latency.yaml");
    std::fs::write(&config, format!("listen: {listen}\nstate_path: {}\n{config_text}", state.display())).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hubwatch"));
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HUBWATCH_TOKEN", lab.token())
        .env("ROUTING_KEY", ROUTING_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

fn stop_daemon(mut daemon: Child) {
    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let _ = daemon.wait();
}

/// `incidents.keep_open_for` in seconds: the default (2 m) when measuring, so that the resolve latency is the
/// one an operator gets; none in the smoke run under `cargo test`, which must stay short.
fn keep_open_for() -> u64 {
    if support::smoke() { 0 } else { 120 }
}

/// Each case: the fault on until the trigger, then healed until the resolve; one table row each.
fn measure(pd: &PagerDuty, cases: Vec<Case>) {
    let keep = keep_open_for();
    println!(
        "| fault | probe interval / timeout (s) | fault → trigger (s) | target: interval + 5 s | heal → resolve (s) | target: 2 × interval + keep_open_for ({keep} s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (index, Case { name, every, timeout, fault, resolve_every }) in cases.into_iter().enumerate() {
        if index > 0 {
            // Quiet time so the next fault starts from a healthy hub.
            std::thread::sleep(Duration::from_secs(resolve_every.min(60)));
        }
        let before = pd.accepted().len();
        // Since the fault: a follow-up trigger (more users) must not pass for the resolve.
        let sent = |action: &str| pd.accepted().iter().skip(before).any(|e| e["event_action"] == action);
        fault(true);
        // The second user's corroborating round must time out (or go stuck) too.
        let paged = wait("trigger", Duration::from_secs(every + 2 * timeout + 60), || sent("trigger"));
        eprintln!("{name}: paged {:.1} s after the fault", paged.as_secs_f64());
        fault(false);
        let limit = Duration::from_secs(resolve_every * 4 + timeout + keep + 60);
        let resolved = wait("resolve", limit, || sent("resolve"));
        println!(
            "| {name} | {every} / {timeout} | {:.1} | {} | {:.1} | {} |",
            paged.as_secs_f64(),
            every + 5,
            resolved.as_secs_f64(),
            resolve_every * 2 + keep
        );
    }
}

/// The probe rounds alone.
fn probe_rounds(lab: &lab::Lab, pd: &PagerDuty, events_url: &str, intervals: &Intervals, only: Option<&str>) {
    let Intervals { login_every, login_timeout, server_every, server_timeout, stuck_after, kernel_timeout, .. } =
        *intervals;
    let keep = keep_open_for();
    let daemon = start_daemon(
        lab,
        &format!(
            "incidents: {{window: 2m, keep_open_for: {keep}s}}\npagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: \"{events_url}\", retry_delay: 1s}}\n\
             defaults:\n  probes:\n    login: {{every: {login_every}s, timeout: {login_timeout}s}}\n    server: {{every: {server_every}s, timeout: {server_timeout}s, stuck_after: {stuck_after}s}}\n    kernel: {{every: {server_every}s, timeout: {kernel_timeout}s}}\n\
             hubs:\n  - name: lab\n    url: {}\n    token: {{env: HUBWATCH_TOKEN}}\n    users: [probe-1, probe-2]\n",
            lab.url
        ),
        &[],
    );
    // Let the lanes run healthy for a while (the first server round comes at a random phase); the smoke run's
    // figures mean nothing, so it switches its fault on at once.
    if !support::smoke() {
        std::thread::sleep(Duration::from_secs((server_every * 2).min(120)));
    }
    let cases = vec![
        Case {
            name: "spawn fails for both users",
            every: server_every,
            timeout: server_timeout,
            fault: Box::new(|on| if on { lab.set_flag("spawn-fail", None, "") } else { lab.clear_flags() }),
            resolve_every: server_every,
        },
        Case {
            name: "spawns stuck for both users (timeout column: stuck_after)",
            every: server_every,
            timeout: stuck_after,
            fault: Box::new(|on| if on { lab.set_flag("spawn-hang", None, "") } else { lab.clear_flags() }),
            resolve_every: server_every,
        },
        Case {
            name: "kernels crash",
            every: server_every,
            timeout: kernel_timeout,
            fault: Box::new(|on| if on { lab.set_flag("kernel-crash", None, "") } else { lab.clear_flags() }),
            resolve_every: server_every,
        },
        Case {
            name: "proxy frozen",
            every: login_every,
            timeout: login_timeout,
            fault: Box::new(|on| lab.signal("PROXY_PID", if on { "STOP" } else { "CONT" })),
            resolve_every: login_every,
        },
    ];
    // Under `cargo test` the first case only: it still runs end to end, in well under a minute.
    let cases = cases.into_iter().filter(|case| only.is_none_or(|text| case.name.contains(text)));
    measure(pd, cases.take(if support::smoke() { 1 } else { 4 }).collect());
    stop_daemon(daemon);
}

/// With a kept server (probe-3's) and the hub's log followed through the Kubernetes stand-in (the lab's
/// real log mirrored into it): the faults only a server already running shows, or that users show first.
fn kept_server(runtime: &tokio::runtime::Runtime, lab: &lab::Lab, pd: &PagerDuty, events_url: &str, i: &Intervals) {
    let api = apiserver::ApiServer::default();
    k8s_fixtures::load_control_pods(&api, std::time::SystemTime::now());
    let api_url = runtime.block_on(api.start());
    let kubeconfig = apiserver::ApiServer::kubeconfig(&api_url, &lab.dir).display().to_string();
    let stop = CancellationToken::new();
    runtime.spawn(k8s_fixtures::mirror_lab_log(lab.dir.join("hub.log"), api.clone(), stop.clone()));
    let browsing = Arc::new(AtomicBool::new(false));
    runtime.spawn(real_user_browsing(lab.url.clone(), runtime.block_on(real_user_server(lab)), browsing.clone()));
    let Intervals {
        login_every,
        login_timeout,
        sentinel_every,
        sentinel_server_every: server_every,
        kernel_timeout,
        ..
    } = *i;
    let keep = keep_open_for();
    let daemon = start_daemon(
        lab,
        &format!(
            "incidents: {{window: 2m, keep_open_for: {keep}s}}\npagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: \"{events_url}\", retry_delay: 1s}}\n\
             kubernetes: {{enabled: true, call_timeout: 5s, diagnostics_wait: 2s}}\n\
             defaults:\n  probes:\n    login: {{every: {login_every}s, timeout: {login_timeout}s}}\n    server: {{every: {server_every}s, timeout: {}s}}\n    \
             kernel: {{every: {server_every}s, timeout: {kernel_timeout}s}}\n    home: {{every: {server_every}s, timeout: {kernel_timeout}s}}\n\
             hubs:\n  - name: lab\n    url: {}\n    namespace: {}\n    token: {{env: HUBWATCH_TOKEN}}\n    users: [probe-1, probe-2, probe-3]\n    \
             sentinel: {{every: {sentinel_every}s, timeout: 10s}}\n",
            i.server_timeout,
            lab.url,
            k8s_fixtures::NAMESPACE,
        ),
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    println!(
        "\nWith a kept server every {sentinel_every} s (probe-3's; the other users' server rounds every {server_every} s) and \
         the hub's log followed (a real user, probe-4, working in their server):\n"
    );
    std::thread::sleep(Duration::from_secs((sentinel_every * 3).min(120)));
    let routes = std::sync::Mutex::new(Vec::new());
    let cases = vec![
        Case {
            name: "home full (kept server)",
            every: sentinel_every,
            timeout: kernel_timeout,
            fault: Box::new(|on| if on { lab.set_flag("home-full", None, "") } else { lab.clear_flags() }),
            resolve_every: server_every,
        },
        Case {
            name: "routes lost (kept server, a real user's browser)",
            every: sentinel_every,
            timeout: 10,
            fault: Box::new(|on| {
                let mut routes = routes.lock().unwrap();
                if on {
                    for user in ["probe-3", "probe-4"] {
                        let path = format!("/user/{user}");
                        routes.push((path.clone(), runtime.block_on(lab.delete_route(&path))));
                    }
                } else {
                    for (path, target) in routes.drain(..) {
                        runtime.block_on(lab.add_route(&path, &target));
                    }
                }
                browsing.store(on, Ordering::Relaxed);
            }),
            // A real user seen failing in the log counts for the incidents' window: the resolve waits for it.
            resolve_every: LOG_WINDOW,
        },
        Case {
            name: "kernels crash (kept server)",
            every: sentinel_every,
            timeout: kernel_timeout,
            fault: Box::new(|on| if on { lab.set_flag("kernel-crash", None, "") } else { lab.clear_flags() }),
            resolve_every: server_every,
        },
    ];
    measure(pd, cases);
    stop_daemon(daemon);
    stop.cancel();
}

/// Starts probe-4's server, as a real user working in it; returns a token of theirs.
async fn real_user_server(lab: &lab::Lab) -> String {
    let token = lab.mint_user_token("probe-4").await;
    let client = reqwest::Client::new();
    let started = client
        .post(format!("{}/hub/api/users/probe-4/server", lab.url))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success(), "{}", started.status());
    while !lab.has_server("probe-4").await {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    token
}

/// While `browsing`, the real user's browser reaches their server every 2 s, following redirects: with its
/// route lost, that is the login loop the hub ends with `500 … ?redirects=4`.
async fn real_user_browsing(hub: String, token: String, browsing: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    loop {
        if browsing.load(Ordering::Relaxed) {
            let _ = client
                .get(format!("{hub}/user/probe-4/api/status"))
                .header("Authorization", format!("token {token}"))
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
