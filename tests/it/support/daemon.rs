//! Running the `hubwatch` binary in tests, and reading what it serves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub async fn get(url: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    match request.send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

pub async fn wait_for(what: &str, limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

/// Waits for `runs` more `capability` probes ending in `result` ("ok" or "failed") in what `metrics` reads:
/// decisions the daemon made and could have paged for, after which "nothing more was sent" may be asserted.
pub async fn more_probe_runs(mut metrics: impl AsyncFnMut() -> String, capability: &str, result: &str, runs: f64) {
    let labels = [format!("capability=\"{capability}\""), format!("result=\"{result}\"")];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let from = sample(&metrics().await, "hubwatch_probe_runs_total", &labels).unwrap_or(0.0);
    wait_for("more rounds of probes", Duration::from_secs(90), async || {
        sample(&metrics().await, "hubwatch_probe_runs_total", &labels).unwrap_or(0.0) >= from + runs
    })
    .await;
}

/// The sum of the samples of `name` whose labels contain every one of `labels`; `None` when no such sample
/// is exported (a counter vector exports nothing until its first count).
pub fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// As [`sample`], for a metric that must be exported: a missing one is a failure, never a 0.
pub fn metric(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    sample(metrics, name, labels).unwrap_or_else(|| panic!("no sample of {name} with {labels:?} in:\n{metrics}"))
}

/// `hubwatch run` with stderr in `log`.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, listen: std::net::SocketAddr, env: &[(&str, &str)], log: PathBuf) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hubwatch"));
        command.args(["run", "--config", config.to_str().unwrap()]).env("RUST_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        Daemon { child, base: format!("http://{listen}"), log }
    }

    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.base);
        wait_for("/readyz", Duration::from_secs(60), async || get(&url, None).await.0 == 200).await;
    }

    pub async fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.base), None).await.1
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit code.
    pub async fn stop(mut self, limit: Duration) -> Option<i32> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.wait_exit(limit).await
    }

    /// Waits until the daemon exits by itself; its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(started.elapsed() < limit, "the daemon did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9`: nothing in memory survives.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A state database path in `dir` with nothing left from an earlier run (the file, its WAL and shared memory).
pub fn fresh_state(dir: &Path, name: &str) -> PathBuf {
    let state = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    state
}

/// The config of a daemon watching the stub hub (its two probe users log in and spawn every second, so an
/// outage is seen within seconds), paging `events_url`, with `extra` top-level sections (high availability,
/// kubernetes, metrics_listen, …).
pub fn stub_yaml(listen: std::net::SocketAddr, state: &Path, hub_url: &str, events_url: &str, extra: &str) -> String {
    stub_yaml_for(&StubHubs::One, listen, state, hub_url, events_url, extra)
}

/// The hub entries a config of the stub holds.
#[derive(Debug, Clone, Copy, Default)]
pub enum StubHubs {
    /// One hub, `stub`.
    #[default]
    One,
    /// These hubs on cluster east, all on the stub (probe users NAME-1 and NAME-2), folding when all of them
    /// fail within 4 s.
    Cluster(&'static [&'static str]),
}

/// [`stub_yaml`] with `hubs` as its hub entries.
pub fn stub_yaml_for(
    hubs: &StubHubs,
    listen: std::net::SocketAddr,
    state: &Path,
    hub_url: &str,
    events_url: &str,
    extra: &str,
) -> String {
    let entry = |name: &str, cluster: &str, users: &str| {
        format!("{{name: {name},{cluster} url: \"{hub_url}\", token: {{env: HUB_TOKEN}}, users: [{users}]}}")
    };
    let (fold, entries) = match hubs {
        StubHubs::One => ("0".to_string(), entry("stub", "", "probe-1, probe-2")),
        StubHubs::Cluster(names) => (
            names.len().to_string(),
            names
                .iter()
                .map(|name| entry(name, " cluster: east,", &format!("{name}-1, {name}-2")))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    };
    format!(
        r#"listen: {listen}
state_path: {state}
incidents: {{min_affected_users: 2, window: 1m, recovery_successes: 2, keep_open_for: 0s, fold: {{min_hubs: {fold}, within: 4s}}}}
pagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: "{events_url}", retry_delay: 1s}}
{extra}scheduler: {{shutdown_grace: 20s, cleanup_timeout: 5s}}
defaults: {{probes: {{login: {{every: 1s, timeout: 5s}}, server: {{every: 1s, timeout: 10s}}}}}}
hubs: [{entries}]
"#,
        state = state.display()
    )
}

/// The environment that runs a process whose wall clock is off by what `file` says (e.g. "+0", "-1h"), read
/// again at every clock read: a test steps the clock by writing the file. The monotonic clock is untouched.
pub fn clock_from(file: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", super::tiers::LIBFAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
    ]
}

/// The environment that runs a process with its wall clock `offset` off (e.g. "+1h", "-1h"), its
/// monotonic clock untouched: a host whose clock is wrong (libfaketime; callers check `Needs::Faketime`).
pub fn clock_off(offset: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", super::tiers::LIBFAKETIME.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
    ]
}
