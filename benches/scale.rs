//! Scale: one hubwatch watching 100, 1,000 and 5,000 simulated hubs (2 probe users each; login every 10 s,
//! the other capabilities at their defaults) for a fixed time. Prints hubwatch's CPU (% of one core), peak
//! RSS, probes per second, schedule lag (p50/p99, as histogram bucket bounds) and the per-hub cost.
//!
//! The hubs are spread over `--origins` (64) loopback ports of the simulator: real hubs each have an origin
//! of their own, and a single one (`--origins 1`) measures the client's connection pool churning (it keeps
//! four idle connections an origin) rather than hubwatch.
//!
//! `cargo bench --bench scale -- [--hubs 100,1000,5000] [--seconds 60] [--origins 64]` (under `cargo test`: 20 hubs, 2 s); with `SCALE_DEBUG=1` it also prints the
//! probe runs by capability and result (how the probes/s figure was made up); with `SCALE_HEAPTRACK=DIR` each
//! row runs under heaptrack (`heaptrack_print DIR/heaptrack-5000.*` shows where the memory went); with
//! `SCALE_BIN=PATH` it measures that hubwatch binary instead of this build's (to alternate two builds, A B A B,
//! as the machine's speed drifts by more than a change's effect).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{hubsim, measure};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn main() {
    let (default_hubs, default_seconds) = if support::smoke() { ("20", "2") } else { ("100,1000,5000", "60") };
    let hubs: Vec<usize> = arg("--hubs", default_hubs).split(',').map(|n| n.parse().unwrap()).collect();
    let seconds: u64 = arg("--seconds", default_seconds).parse().unwrap();
    let origins: usize = arg("--origins", "64").parse().unwrap();
    let bases = hubsim::start_origins(1, origins);
    println!(
        "| hubs | probe users | lanes | start-up to ready (s) | CPU (% of one core) | CPU per hub (% of one core) | peak RSS (MB) | RSS per hub (KB) | probes/s | lag p50 ≤ (s) | lag p99 ≤ (s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in hubs {
        run(n, seconds, &bases);
    }
}

fn run(hubs: usize, seconds: u64, bases: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = format!(
        "listen: {listen}\nstate_path: {}\nscheduler: {{max_concurrent_probes: 256}}\ndefaults:\n  probes:\n    login: {{every: 10s, timeout: 30s}}\nhubs:\n",
        dir.path().join("state.db").display()
    );
    for i in 0..hubs {
        let base = &bases[i % bases.len()];
        config.push_str(&format!(
            "  - name: h{i}\n    url: {base}/h{i}/\n    token: {{env: SIM_TOKEN}}\n    users: [u1, u2]\n    dask_gateway: {{url: {base}/h{i}/services/dask-gateway}}\n"
        ));
    }
    let path = dir.path().join("hubwatch.yaml");
    std::fs::File::create(&path).unwrap().write_all(config.as_bytes()).unwrap();

    let started = Instant::now();
    // SCALE_HEAPTRACK=DIR: a heap profile of this row in DIR/heaptrack-HUBS.* (the figures are then heaptrack's).
    let profile =
        std::env::var_os("SCALE_HEAPTRACK").map(|dir| std::path::PathBuf::from(dir).join(format!("heaptrack-{hubs}")));
    let binary = std::env::var_os("SCALE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hubwatch").into());
    let mut command = match &profile {
        Some(out) => {
            let mut c = Command::new("heaptrack");
            c.arg("-o").arg(out).arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    let mut child = command
        .args(["run", "--config", path.to_str().unwrap()])
        .env("SIM_TOKEN", "sim-service")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let metrics_base = format!("http://{listen}");
    loop {
        let ready = Command::new("curl")
            .args(["-fs", "-o", "/dev/null", &format!("{metrics_base}/readyz")])
            .status()
            .unwrap()
            .success();
        if ready {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let startup = started.elapsed();
    // One login interval of warm-up: every lane has started at its random phase.
    std::thread::sleep(Duration::from_secs(if support::smoke() { 1 } else { 10 }));

    let cpu_before = measure::cpu_time(pid);
    let metrics_before = measure::scrape(&metrics_base);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = measure::cpu_time(pid) - cpu_before;
    let elapsed = window.elapsed();
    let metrics_after = measure::scrape(&metrics_base);
    // SCALE_METRICS=FILE: the last scrape, to see what /metrics costs per hub.
    if let Some(file) = std::env::var_os("SCALE_METRICS") {
        std::fs::write(file, &metrics_after).unwrap();
    }
    let peak_kb = measure::status_kb(pid, "VmHWM:");

    let runs = measure::sum(&metrics_after, "hubwatch_probe_runs_total")
        - measure::sum(&metrics_before, "hubwatch_probe_runs_total");
    let failed = measure::sum(&metrics_after, "hubwatch_probe_failures_total");
    let lag_before = measure::buckets(&metrics_before, "hubwatch_schedule_lag_seconds");
    let lag_after = measure::buckets(&metrics_after, "hubwatch_schedule_lag_seconds");
    let lanes = hubs * 2 * 3;
    let cpu_percent = 100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64();
    println!(
        "| {hubs} | {} | {lanes} | {:.1} | {:.2} | {:.4} | {:.1} | {:.1} | {:.1} | {} | {} |",
        hubs * 2,
        startup.as_secs_f64(),
        cpu_percent,
        cpu_percent / hubs as f64,
        peak_kb as f64 / 1024.0,
        peak_kb as f64 / hubs as f64,
        runs / elapsed.as_secs_f64(),
        measure::quantile_bound(&lag_before, &lag_after, 0.5),
        measure::quantile_bound(&lag_before, &lag_after, 0.99),
    );
    if std::env::var_os("SCALE_DEBUG").is_some() {
        let mut by: std::collections::BTreeMap<String, f64> = Default::default();
        for line in metrics_after.lines().filter(|l| l.starts_with("hubwatch_probe_runs_total{")) {
            let capability = line.split("capability=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            let result = line.split("result=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *by.entry(format!("{capability}/{result}")).or_default() += value;
        }
        eprintln!("runs by capability/result: {by:?}");
    }
    if failed > 0.0 {
        eprintln!("note: {failed} probe failures against the simulator with {hubs} hubs");
    }
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    if profile.is_some() {
        // heaptrack runs hubwatch as its child: that one must end for the profile to be written.
        let _ = Command::new("pkill").args(["-TERM", "-f", &format!("run --config {}", path.display())]).status();
    }
    let _ = child.wait();
}
