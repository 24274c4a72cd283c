//! Hostile hubs: a hub that streams progress events forever, one that answers with a 1 GB body, one that
//! holds the kernel's websocket handshake — next to a healthy one. For each, `hubwatch check` runs as its
//! own process: every probe must end by its timeout, and its peak RSS must stay where the healthy run's is.
//!
//! `cargo bench --bench hostile`

mod support;

use axum::Router;
use axum::body::Body;
use axum::extract::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{hubsim, measure};

/// Probe timeouts: 10 s when measuring, 2 s as a smoke run under `cargo test`.
fn timeout_seconds() -> u64 {
    if support::smoke() { 2 } else { 10 }
}

fn hostile_router() -> Router {
    Router::new()
        // Progress events every 5 ms, forever.
        .route(
            "/endless/hub/api/users/{user}/server/progress",
            get(|| async {
                let events = futures_util::stream::unfold(0u64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Some((
                        Ok::<_, std::io::Error>(format!(
                            "data: {{\"progress\": 50, \"message\": \"still going {n}\"}}\n\n"
                        )),
                        n + 1,
                    ))
                });
                ([("content-type", "text/event-stream")], Body::from_stream(events))
            }),
        )
        // A 1 GB answer to the token request, streamed without a length.
        .route(
            "/huge/hub/api/users/{user}/tokens",
            post(|| async {
                let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
                let body = futures_util::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
                (StatusCode::CREATED, [("content-type", "application/json")], Body::from_stream(body))
            }),
        )
        // The kernel's websocket handshake is never answered.
        .route(
            "/held/user/{user}/api/kernels/{id}/channels",
            get(|_upgrade: WebSocketUpgrade| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK.into_response()
            }),
        )
        .merge(hubsim::router())
}

fn main() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, hostile_router()).await.unwrap();
        });
    });
    let base = format!("http://{}", rx.recv().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let timeout = timeout_seconds();
    let mut config = format!(
        "state_path: {}\ndefaults:\n  probes:\n    login: {{timeout: {timeout}s}}\n    server: {{timeout: {timeout}s}}\n    kernel: {{timeout: {timeout}s}}\nhubs:\n",
        dir.path().join("state.db").display()
    );
    for hub in ["healthy", "endless", "huge", "held"] {
        config.push_str(&format!(
            "  - name: {hub}\n    url: {base}/{hub}/\n    token: {{env: SIM_TOKEN}}\n    users: [u1, u2]\n"
        ));
    }
    let path = dir.path().join("hubwatch.yaml");
    std::fs::write(&path, config).unwrap();

    println!("| hub | what it does | outcome (stage: reason) | longest probe (s) | timeout (s) | peak RSS (MB) |");
    println!("|---|---|---|---:|---:|---:|");
    for (hub, what) in [
        ("healthy", "answers everything at once (baseline)"),
        ("endless", "streams progress events forever"),
        ("huge", "answers the token request with 1 GB"),
        ("held", "holds the kernel websocket handshake"),
    ] {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hubwatch"))
            .args(["check", "--config", path.to_str().unwrap(), "--hub", hub, "--output", "json"])
            .env("SIM_TOKEN", "sim-service")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak_kb = 0;
        while child.try_wait().unwrap().is_none() {
            peak_kb = peak_kb.max(measure::status_kb(pid, "VmHWM:"));
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child.wait_with_output().unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let longest = lines.iter().filter_map(|l| l["seconds"].as_f64()).fold(0.0, f64::max);
        let failures: Vec<String> = lines
            .iter()
            .filter(|l| l["result"] == "failed")
            .map(|l| {
                format!(
                    "{} {}: {}",
                    l["capability"].as_str().unwrap_or(""),
                    l["stage"].as_str().unwrap_or(""),
                    l["reason"].as_str().unwrap_or("")
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let outcome = if failures.is_empty() { "all ok".to_string() } else { failures.join("; ") };
        println!(
            "| {hub} | {what} | {} | {longest:.2} | {timeout} | {:.1} |",
            outcome.replace('|', "/"),
            peak_kb as f64 / 1024.0
        );
        assert!(started.elapsed() < Duration::from_secs(timeout * 4 + 30), "{hub}: check did not end");
    }
}
