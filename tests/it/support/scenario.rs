//! A daemon test's world, built in one place: the real lab, the PagerDuty stand-in (and when asked the
//! Kubernetes stand-in), and `hubwatch run` on a config that starts from what every daemon test shares —
//! two probe users, logins every 2 s and server rounds every 4 s, two users make an outage, quick retries —
//! and takes each test's own keys as patches. The config is written as JSON (which is YAML) and checked by
//! the daemon's own schema, so a misspelt key fails the test at start.

use super::apiserver::ApiServer;
use super::daemon::{Daemon, StubHubs, free_port, fresh_state, stub_yaml_for, wait_for};
use super::lab::Lab;
use super::pagerduty::{API_TOKEN, FROM_EMAIL, PagerDuty, ROUTING_KEY};
use super::stub_hub::{Progress, SERVICE_TOKEN, Stub};
use super::tiers::{Needs, require};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Scenario {
    pub lab: Lab,
    pub pd: PagerDuty,
    /// The Kubernetes stand-in and its URL, after [`Scenario::with_api`].
    pub kube: Option<(ApiServer, String)>,
    pub listen: SocketAddr,
    pub config_path: PathBuf,
    /// The daemon's log (stderr), kept across restarts.
    pub log: PathBuf,
    /// The lab's service token, which the daemon reads from `HUBWATCH_TOKEN`.
    pub token: String,
    config: Value,
    env: Vec<(String, String)>,
}

impl Scenario {
    /// The lab `name` on ports `port`.., the PagerDuty stand-in, and the shared config.
    pub async fn on_lab(name: &str, port: u16) -> Scenario {
        Scenario::on_lab_with(name, port, &[]).await
    }

    /// As [`Scenario::on_lab`], the lab started with `lab_env` too (`LAB_USERS`, spawner settings).
    pub async fn on_lab_with(name: &str, port: u16, lab_env: &[(&str, &str)]) -> Scenario {
        require(&[Needs::Lab]);
        hubwatch::http::install_crypto_provider();
        let pd = PagerDuty::default();
        let events_url = pd.clone().start().await;
        let lab = Lab::start_for_daemon(name, port, lab_env);
        let listen = free_port();
        let log = lab.dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let config = json!({
            "listen": listen.to_string(),
            "state_path": fresh_state(&lab.dir, &format!("{name}-state.db")),
            "incidents": {"min_affected_users": 2, "window": "1m", "recovery_successes": 2, "update_interval": "10m",
                "keep_open_for": "0s"},
            "pagerduty": {"routing_key": {"env": "ROUTING_KEY"}, "events_url": events_url, "retry_delay": "1s",
                "rate_limit_delay": "2s"},
            "scheduler": {"shutdown_grace": "30s", "cleanup_timeout": "30s"},
            "defaults": {"probes": {
                "login": {"every": "2s", "timeout": "5s"},
                "server": {"every": "4s", "timeout": "30s"},
                "kernel": {"every": "4s", "timeout": "10s"},
            }},
            "hubs": [{"name": "lab", "url": lab.url.as_str(), "token": {"env": "HUBWATCH_TOKEN"},
                "users": ["probe-1", "probe-2"]}],
        });
        let token = lab.token();
        let env = vec![("HUBWATCH_TOKEN".into(), token.clone()), ("ROUTING_KEY".into(), ROUTING_KEY.into())];
        let config_path = lab.dir.join(format!("{name}.yaml"));
        Scenario { lab, pd, kube: None, listen, config_path, log, token, config, env }
    }

    /// The Kubernetes stand-in, loaded by `load` before it serves; the daemon reaches it through `KUBECONFIG`,
    /// with Kubernetes on. (A hub in its namespace: `.hub(json!({"namespace": NAMESPACE}))`.)
    pub async fn with_api(mut self, load: impl FnOnce(&ApiServer)) -> Scenario {
        let api = ApiServer::default();
        load(&api);
        let url = api.start().await;
        let kubeconfig = ApiServer::kubeconfig(&url, &self.lab.dir);
        self.kube = Some((api, url));
        self.env("KUBECONFIG", &kubeconfig.display().to_string())
            .config(json!({"kubernetes": {"enabled": true, "diagnostics_wait": "2s", "call_timeout": "5s"}}))
    }

    /// PagerDuty's REST API on the same stand-in (status notes, priorities), with its token.
    pub fn with_rest_api(self) -> Scenario {
        let events_url = self.config["pagerduty"]["events_url"].as_str().unwrap().to_string();
        let api_url = events_url.trim_end_matches("/v2/enqueue");
        self.env("PD_API_TOKEN", API_TOKEN).config(json!({"pagerduty": {
            "api_url": api_url, "api_token": {"env": "PD_API_TOKEN"}, "from_email": FROM_EMAIL,
        }}))
    }

    /// Merges `patch` into the config: objects key by key, anything else (arrays too) replaced.
    pub fn config(mut self, patch: Value) -> Scenario {
        merge(&mut self.config, patch);
        self
    }

    /// Merges `patch` into the (one) hub's entry.
    pub fn hub(mut self, patch: Value) -> Scenario {
        merge(&mut self.config["hubs"][0], patch);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Scenario {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn api(&self) -> &ApiServer {
        &self.kube.as_ref().expect("the scenario has the Kubernetes stand-in (Scenario::with_api)").0
    }

    /// The Kubernetes stand-in's URL.
    pub fn api_url(&self) -> &str {
        &self.kube.as_ref().expect("the scenario has the Kubernetes stand-in (Scenario::with_api)").1
    }

    /// Writes the config and starts `hubwatch run` on it (again after a stop or a kill: the same state).
    pub fn daemon(&self) -> Daemon {
        run(&self.config, &self.config_path, self.listen, &self.env, self.log.clone())
    }

    /// Another `hubwatch run` on this config as replica `name` (its own address, state database, config
    /// file and log), with `env` added to the scenario's.
    pub fn replica(&self, name: &str, env: &[(&str, String)]) -> Daemon {
        let (mut config, listen) = (self.config.clone(), free_port());
        config["listen"] = listen.to_string().into();
        config["state_path"] = json!(fresh_state(&self.lab.dir, &format!("{name}.db")));
        let log = self.lab.dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut all = self.env.clone();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        run(&config, &self.lab.dir.join(format!("{name}.yaml")), listen, &all, log)
    }

    /// As [`Scenario::daemon`], once it is ready.
    pub async fn start(&self) -> Daemon {
        let daemon = self.daemon();
        daemon.wait_ready().await;
        daemon
    }
}

/// `hubwatch run` on `config`, written to `path`.
fn run(config: &Value, path: &Path, listen: SocketAddr, env: &[(String, String)], log: PathBuf) -> Daemon {
    std::fs::write(path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Daemon::start(path, listen, &env, log)
}

fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, patch) => *into = patch,
    }
}

/// Replicas of `hubwatch run` watching the stub hub (login and server rounds every second: an outage is seen
/// within seconds), one PagerDuty stand-in, one Kubernetes API stand-in.
pub struct StubReplicas {
    pub stub: Stub,
    pub pd: PagerDuty,
    pub api: ApiServer,
    api_url: String,
    events_url: String,
    hub_url: String,
    pub dir: tempfile::TempDir,
    /// The hub entries each replica's config holds.
    pub hubs: StubHubs,
}

/// The lease and call timings of the stub replicas (fast, as in the lab pair).
pub const FAST_HA: &str = "high_availability: {lease_duration: 4s, renew_deadline: 3s, retry_period: 1s}\n\
                       kubernetes: {enabled: true, call_timeout: 2s}\n";

impl StubReplicas {
    pub async fn start() -> StubReplicas {
        hubwatch::http::install_crypto_provider();
        let stub = Stub::default();
        let hub_url = stub.clone().start().await;
        let pd = PagerDuty::default();
        let events_url = pd.clone().start().await;
        let api = ApiServer::default();
        let api_url = api.start().await;
        let dir = tempfile::tempdir().unwrap();
        StubReplicas { stub, pd, api, api_url, events_url, hub_url, dir, hubs: StubHubs::One }
    }

    /// A replica named `name` (its own state file `DIR/NAME.db`, its own API token) with `extra` in its config
    /// (its lease settings).
    pub fn replica(&self, name: &str, extra: &str) -> Daemon {
        self.replica_with(name, extra, &[])
    }

    /// As [`StubReplicas::replica`], with `env` added.
    pub fn replica_with(&self, name: &str, extra: &str, env: &[(&str, String)]) -> Daemon {
        let listen = free_port();
        let state = self.dir.path().join(format!("{name}.db"));
        let config = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config, stub_yaml_for(&self.hubs, listen, &state, &self.hub_url, &self.events_url, extra))
            .unwrap();
        let kubeconfig = ApiServer::kubeconfig_for(&self.api_url, self.dir.path(), name, &token_of(name));
        let mut all: Vec<(&str, String)> = vec![
            ("HUB_TOKEN", SERVICE_TOKEN.into()),
            ("ROUTING_KEY", ROUTING_KEY.into()),
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("POD_NAMESPACE", "monitoring".into()),
            ("HOSTNAME", name.into()),
        ];
        all.extend(env.iter().cloned());
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Daemon::start(&config, listen, &all, self.dir.path().join(format!("{name}.log")))
    }

    /// Both probe users' spawns fail (`true`) or work.
    pub fn outage(&self, on: bool) {
        self.stub.behaviour.lock().unwrap().progress = if on { Progress::FailedEmpty } else { Progress::Ready };
    }

    pub async fn wait_leader(&self, who: impl Fn(&str) -> bool, limit: Duration) -> String {
        wait_for("a leader", limit, async || who(&lease_holder(&self.api))).await;
        lease_holder(&self.api)
    }

    /// Waits for PagerDuty to have accepted an event with `action` after the first `seen`, looking every 5 ms
    /// (a kill must land within 100 ms of the 202). By action, not by count: a new leader may repeat the last
    /// event its predecessor sent but was killed before marking sent, after the test counted what was seen.
    pub async fn wait_accepted(&self, seen: usize, action: &str, limit: Duration) {
        let started = std::time::Instant::now();
        while !self.pd.accepted().iter().skip(seen).any(|e| e["event_action"] == action) {
            assert!(started.elapsed() < limit, "no PagerDuty event within {limit:?}: {:#?}", self.pd.received());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The lease's holder in the Kubernetes stand-in ("" when there is none).
pub fn lease_holder(api: &ApiServer) -> String {
    api.inner
        .lock()
        .unwrap()
        .objects
        .get("leases")
        .and_then(|l| l.first().cloned())
        .map_or(String::new(), |l| l["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
}

/// The Kubernetes API token replica `replica` uses (its kubeconfig's).
pub fn token_of(replica: &str) -> String {
    format!("token-of-{replica}")
}
