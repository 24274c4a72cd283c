//! The configuration: parsed from YAML, validated in one pass that reports every problem with the file and
//! the key, then immutable. See docs/configuration.md for the reference.

mod probes;
mod routing;
mod secret;
mod walk;
mod web;

pub use probes::{DaskProbeConfig, Expect, KernelCell, KernelProbeConfig, ProbeSettings, Schedule, ServerProbeConfig};
pub use routing::{HubPaging, PageOverride, PageRoute, WebhookConfig, WebhookFormat, fingerprint};
pub use secret::EnvLookup;
pub use web::{TlsFiles, WebConfig};

use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;
use walk::{Problems, Table, boolean, duration, join, object, positive_integer, string, string_list};

use crate::domain::{Capability, Secret};

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub listen: SocketAddr,
    /// Authentication and TLS for the pages.
    pub web: WebConfig,
    /// Optional: `/metrics`, `/healthz` and `/readyz` only, never authenticated.
    pub metrics_listen: Option<SocketAddr>,
    /// Where people reach hubwatch's pages (links in pages); default `http://{listen}`.
    pub public_url: Url,
    pub state_path: PathBuf,
    pub state: StateConfig,
    pub scheduler: SchedulerConfig,
    pub incidents: IncidentsConfig,
    /// None: a dry run, incidents are logged and shown but never sent.
    pub pagerduty: Option<PagerDutyConfig>,
    pub kubernetes: KubernetesConfig,
    /// Several replicas, one leader (None: this replica always leads, state in `state_path` only).
    pub high_availability: Option<HaConfig>,
    pub hubs: Vec<HubConfig>,
    /// The webhook sink (optional): incidents and support tickets as JSON POSTs.
    pub webhook: Option<WebhookConfig>,
}

/// High availability: the Lease that elects the one replica that probes and pages, and the Secret its
/// state is mirrored to, both in `namespace`. Timings follow client-go's leader election.
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub namespace: String,
    pub lease: String,
    pub state_secret: String,
    /// Where an earlier release mirrored the state (read once after an upgrade, never written).
    pub legacy_state_configmap: String,
    /// How long a standby waits, after it last saw the lease change, before it takes the lease over.
    pub lease_duration: Duration,
    /// The leader stops everything it does when no renewal succeeded for this long (< lease_duration).
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks again.
    pub retry_period: Duration,
    /// Deadline of each Kubernetes call (`kubernetes.call_timeout`).
    pub call_timeout: Duration,
    /// This replica's name in the lease (the pod name, from HOSTNAME).
    pub identity: String,
}

/// The state database: how long closed incidents are kept, and how long writes may fail before /healthz
/// asks the kubelet for a restart.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub retention: Duration,
    pub unhealthy_after: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig { retention: Duration::from_secs(90 * 86_400), unhealthy_after: Duration::from_secs(600) }
    }
}

/// Kubernetes awareness: diagnostics on pages and real users' stuck pods as affected users.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Off: no diagnostics, no pod signals; everything else works.
    pub enabled: bool,
    /// How long a page waits for diagnostics before it goes out without them (they follow when collected).
    pub diagnostics_wait: Duration,
    /// Deadline of each Kubernetes API call.
    pub call_timeout: Duration,
    /// Lines of hub, proxy and gateway logs in the diagnostics (`kubectl logs --tail`).
    pub log_lines: u32,
    /// A user pod Pending longer than this makes its user affected.
    pub pending_after: Duration,
    /// Optional: hubs found in the cluster, watched without editing this config.
    pub discovery: Option<DiscoveryConfig>,
}

/// Discovery: hub Deployments labelled `component=hub` become hubs (named after their namespace) unless
/// `hubs` already names that hub or namespace: explicit config wins.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Where to look; empty: every namespace.
    pub namespaces: Vec<String>,
    /// Probe users on discovered hubs (a hub's `hubwatch.jupyter.org/users` annotation overrides).
    pub users: Vec<String>,
    /// Where hubwatch's service token for a discovered hub comes from.
    pub token: DiscoveryToken,
    /// Hosts a hub's URL annotation may name besides its namespace's Ingress hosts (`*.example.org`: one
    /// label under example.org, as Ingress wildcards).
    pub allowed_hosts: Vec<String>,
    /// How often to look again.
    pub every: Duration,
    /// The probe settings of discovered hubs (`defaults.probes`).
    pub probes: ProbeSettings,
}

/// hubwatch's token for a discovered hub.
#[derive(Debug, Clone)]
pub enum DiscoveryToken {
    /// A Secret of hubwatch's own in each hub's namespace (read by name: RBAC grants exactly that name).
    Secret { name: String, key: String },
    /// One token for every discovered hub, held by hubwatch (no Secret is read at all).
    Held(Secret),
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            diagnostics_wait: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            log_lines: 50,
            pending_after: Duration::from_secs(300),
            discovery: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IncidentsConfig {
    /// N: an incident needs at least this many distinct affected users.
    pub min_affected_users: usize,
    /// How long a failed attempt keeps a user counted as affected.
    pub window: Duration,
    /// Successes in a row, per probe user and capability, before an incident recovers.
    pub recovery_successes: u32,
    /// Least time between two follow-up triggers of one incident.
    pub update_interval: Duration,
    /// How long a hub Deployment mid-rollout holds back its hub's pages.
    pub rollout_grace: Duration,
    /// How long an incident's hub must stay healthy (after the successes recovery needs) before it resolves; a
    /// failure inside it continues the same incident. `0s`: resolve at once.
    pub keep_open_for: Duration,
}

impl IncidentsConfig {
    /// What the detector decides by.
    pub fn detector(&self) -> crate::detector::DetectorSettings {
        crate::detector::DetectorSettings {
            min_affected_users: self.min_affected_users,
            window: self.window,
            recovery_successes: self.recovery_successes,
            keep_open_for: self.keep_open_for,
        }
    }
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            min_affected_users: 2,
            window: Duration::from_secs(900),
            recovery_successes: 2,
            update_interval: Duration::from_secs(600),
            rollout_grace: Duration::from_secs(300),
            keep_open_for: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    pub routing_key: Secret,
    pub events_url: Url,
    /// Change Events (hub upgrades); default: `events_url` with the path `/v2/change/enqueue`.
    pub change_events_url: Url,
    pub severity: Severity,
    /// First delay after a 5xx or network error (doubles, with jitter, up to 5 m).
    pub retry_delay: Duration,
    /// First delay after a 429 (doubles, with jitter, up to 10 m).
    pub rate_limit_delay: Duration,
    /// Status notes on the PagerDuty incident through the REST API (optional).
    pub status_updates: Option<StatusUpdatesConfig>,
    /// The priority set on every incident through the REST API (hubs may override it).
    pub priority: Option<String>,
}

/// `pagerduty.api_token` and friends: a note with the incident's state on its PagerDuty incident every
/// `every` while it is open, and one at resolution.
#[derive(Debug, Clone)]
pub struct StatusUpdatesConfig {
    pub api_token: Secret,
    /// The `From` header: the email of a valid PagerDuty user (required on writes).
    pub from_email: String,
    pub every: Duration,
    /// The REST API's base URL (default `https://api.pagerduty.com`).
    pub api_url: Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Probes running at once across all hubs.
    pub max_concurrent_probes: usize,
    /// On SIGTERM, how long running rounds get to clean up (stop servers, delete clusters).
    pub shutdown_grace: Duration,
    /// Time given to clean-up steps after a probe (they run even when the probe timed out).
    pub cleanup_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub name: String,
    pub url: Url,
    pub namespace: Option<String>,
    pub token: Secret,
    pub users: Vec<String>,
    pub login: LoginMethod,
    pub dask_gateway: Option<DaskGatewayConfig>,
    pub probes: ProbeSettings,
    /// The kept server: one probe user's server kept running and checked every `every` (`timeout`: the
    /// route check; the kernel and home probes on it keep their own).
    pub sentinel: Option<Schedule>,
    /// The hub's own PagerDuty routing key, severity and priority (per kind if needed).
    pub pagerduty: Option<HubPaging>,
}

impl HubConfig {
    /// The probe user whose server is kept running (the last one), when the hub has a kept server; the
    /// others go on starting and stopping theirs.
    pub fn sentinel_user(&self) -> Option<&str> {
        self.sentinel.and(self.users.last().map(String::as_str))
    }

    /// What is probed on this hub: every capability, Dask Gateway only with a gateway.
    pub fn capabilities(&self) -> Vec<Capability> {
        Capability::ALL.into_iter().filter(|c| *c != Capability::DaskGateway || self.dask_gateway.is_some()).collect()
    }
}

#[derive(Debug, Clone)]
pub enum LoginMethod {
    /// hubwatch's service token mints a short-lived token per probe user.
    Token,
    /// The browser flow: the login form with its `_xsrf` token, posted with the shared probe password.
    Form { password: Secret },
    /// The token flow, and the identity provider: `/hub/oauth_login` must lead to an authorize page the
    /// provider serves without an error (reachability; a full login would need the provider's credentials).
    OAuth,
}

#[derive(Debug, Clone)]
pub struct DaskGatewayConfig {
    pub url: Url,
    pub cluster_options: Map<String, Value>,
}

/// A configuration that failed to load or validate. Its `Display` is what `hubwatch` prints before exiting 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Unreadable { file: String, source: std::io::Error },
    #[error("{file}: not valid YAML: {message}")]
    Syntax { file: String, message: String },
    #[error("{}", render_problems(.file, .problems))]
    Invalid { file: String, problems: Vec<(String, String)> },
}

fn render_problems(file: &str, problems: &[(String, String)]) -> String {
    let mut out = format!(
        "{file}: invalid configuration ({} problem{})",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for (key, problem) in problems {
        out.push_str(&format!("\n  {file}: {key}: {problem}"));
    }
    out
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "metrics_listen",
    "web",
    "public_url",
    "state_path",
    "state",
    "scheduler",
    "incidents",
    "pagerduty",
    "kubernetes",
    "high_availability",
    "defaults",
    "hubs",
    "webhook",
];
const HA_KEYS: &[&str] =
    &["enabled", "namespace", "lease", "state_secret", "lease_duration", "renew_deadline", "retry_period"];
const STATE_KEYS: &[&str] = &["retention", "unhealthy_after"];
const INCIDENTS_KEYS: &[&str] =
    &["min_affected_users", "window", "recovery_successes", "update_interval", "rollout_grace", "keep_open_for"];
const PAGERDUTY_KEYS: &[&str] = &[
    "routing_key",
    "events_url",
    "change_events_url",
    "severity",
    "retry_delay",
    "rate_limit_delay",
    "api_token",
    "from_email",
    "status_update_every",
    "api_url",
    "priority",
];
const KUBERNETES_KEYS: &[&str] =
    &["enabled", "diagnostics_wait", "call_timeout", "log_lines", "pending_after", "discovery"];
const DISCOVERY_KEYS: &[&str] =
    &["enabled", "namespaces", "users", "token", "token_secret", "token_key", "allowed_hosts", "every"];
/// z2jh's Secret: the hub's cookie secret, the proxy's token and every service's token. Never hubwatch's to read.
const Z2JH_HUB_SECRET: &str = "hub";
const SCHEDULER_KEYS: &[&str] = &["max_concurrent_probes", "shutdown_grace", "cleanup_timeout"];
const HUB_KEYS: &[&str] = &[
    "name",
    "url",
    "namespace",
    "token",
    "users",
    "login",
    "dask_gateway",
    "probes",
    "kernel_cells",
    "sentinel",
    "pagerduty",
];

impl Config {
    /// Reads and validates `path`, resolving secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Unreadable { file: path.display().to_string(), source })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Validates YAML `text` that was read from `path` (used for messages and relative secret files).
    pub fn parse(text: &str, path: &Path, env: EnvLookup) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let tree: Value = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Syntax { file: file.clone(), message: e.to_string() })?;
        let config_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut problems = Problems::default();
        let mut validator = Validator { config_dir: &config_dir, env, problems: &mut problems };
        let config = validator.config(&tree, path);
        if let Some(config) = &config {
            validator.check_paging(config);
        }
        match config {
            Some(config) if problems.list.is_empty() => Ok(config),
            _ => {
                if problems.list.is_empty() {
                    problems.add("(top level)", "invalid configuration");
                }
                Err(ConfigError::Invalid { file, problems: problems.list })
            }
        }
    }

    pub fn hub(&self, name: &str) -> Option<&HubConfig> {
        self.hubs.iter().find(|h| h.name == name)
    }

    /// Every secret value the config holds, for the redactor: hub tokens, probe passwords, the routing key,
    /// the PagerDuty REST token, and the web users' hashes (not secrets that open anything, but nothing to show).
    pub fn secrets(&self) -> Vec<&str> {
        let mut secrets: Vec<&str> = Vec::new();
        for hub in &self.hubs {
            secrets.push(hub.token.expose());
            if let LoginMethod::Form { password } = &hub.login {
                secrets.push(password.expose());
            }
        }
        if let Some(DiscoveryToken::Held(token)) = self.kubernetes.discovery.as_ref().map(|d| &d.token) {
            secrets.push(token.expose());
        }
        for hub in &self.hubs {
            let Some(paging) = &hub.pagerduty else { continue };
            let overrides = std::iter::once(&paging.hub).chain(paging.kinds.values());
            secrets.extend(overrides.filter_map(|o| o.routing_key.as_ref()).map(Secret::expose));
        }
        if let Some(webhook) = &self.webhook {
            secrets.extend(webhook.headers.iter().map(|(_, value)| value.expose()));
        }
        if let Some(pagerduty) = &self.pagerduty {
            secrets.push(pagerduty.routing_key.expose());
            if let Some(updates) = &pagerduty.status_updates {
                secrets.push(updates.api_token.expose());
            }
        }
        secrets.extend(self.web.basic_auth_users.values().map(String::as_str));
        secrets
    }
}

struct Validator<'a> {
    config_dir: &'a Path,
    env: EnvLookup<'a>,
    problems: &'a mut Problems,
}

impl Validator<'_> {
    fn config(&mut self, tree: &Value, path: &Path) -> Option<Config> {
        if tree.is_null() {
            self.problems.add("(top level)", "the file is empty");
            return None;
        }
        let mut top = Table::new(tree, "", TOP_KEYS, self.problems)?;
        let listen = match top.get("listen") {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some(v) => self.address(v, "listen"),
        };
        let state_path = match top.get("state_path") {
            None => Some(self.config_dir.join("hubwatch-state.db")),
            Some(v) => string(v, "state_path", self.problems).map(|p| self.config_dir.join(p)),
        };
        let public_url = match (top.get("public_url"), listen) {
            (Some(v), _) => self.url(v, "public_url"),
            (None, Some(addr)) => Url::parse(&format!("http://{addr}/")).ok(),
            (None, None) => None,
        };
        let web = self.web(top.get("web"));
        let metrics_listen = self.metrics_listen(top.get("metrics_listen"));
        let state = self.state(top.get("state"));
        let scheduler = self.scheduler(top.get("scheduler"));
        let incidents = self.incidents(top.get("incidents"));
        let pagerduty = match top.get("pagerduty") {
            None => Some(None),
            Some(v) => self.pagerduty(v).map(Some),
        };
        let defaults = match top.get("defaults") {
            None => Some(ProbeSettings::default()),
            Some(v) => self.defaults(v),
        };
        let kubernetes = self.kubernetes(top.get("kubernetes"), defaults.as_ref());
        let high_availability = match top.get("high_availability") {
            None => Some(None),
            Some(v) => self.high_availability(v, kubernetes.as_ref()),
        };
        let discovering = kubernetes.as_ref().is_some_and(|k| k.enabled && k.discovery.is_some());
        let hubs = self.top_hubs(&mut top, discovering, defaults.as_ref());
        let webhook = match top.get("webhook") {
            None => Some(None),
            Some(v) => self.webhook(v).map(Some),
        };
        top.finish(self.problems);
        Some(Config {
            source: path.to_path_buf(),
            listen: listen?,
            web: web?,
            metrics_listen: metrics_listen?,
            public_url: public_url?,
            state_path: state_path?,
            state: state?,
            scheduler: scheduler?,
            incidents: incidents?,
            pagerduty: pagerduty?,
            kubernetes: kubernetes?,
            high_availability: high_availability?,
            hubs: hubs?,
            webhook: webhook?,
        })
    }

    /// An address like `127.0.0.1:9464`.
    fn address(&mut self, value: &Value, path: &str) -> Option<SocketAddr> {
        string(value, path, self.problems).and_then(|s| match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problems.add(path, format!("expected an address like 127.0.0.1:9464, found {s:?}"));
                None
            }
        })
    }

    /// `hubs`: required, unless discovery finds them (then it may be empty or absent).
    fn top_hubs(
        &mut self,
        top: &mut Table,
        discovering: bool,
        defaults: Option<&ProbeSettings>,
    ) -> Option<Vec<HubConfig>> {
        let value = if discovering { top.get("hubs") } else { top.required("hubs", self.problems) };
        match (value, defaults) {
            (None, Some(_)) if discovering => Some(Vec::new()),
            (Some(Value::Array(items)), Some(_)) if discovering && items.is_empty() => Some(Vec::new()),
            (Some(v), Some(defaults)) => self.hubs(v, defaults),
            (Some(v), None) => {
                // Still report the hubs' own problems when the defaults are broken.
                self.hubs(v, &ProbeSettings::default());
                None
            }
            _ => None,
        }
    }

    fn incidents(&mut self, value: Option<&Value>) -> Option<IncidentsConfig> {
        let mut config = IncidentsConfig::default();
        let Some(value) = value else { return Some(config) };
        let mut table = Table::new(value, "incidents", INCIDENTS_KEYS, self.problems)?;
        let mut ok = true;
        if let Some(v) = table.get("min_affected_users") {
            match positive_integer(v, "incidents.min_affected_users", 10_000, self.problems) {
                Some(n) => config.min_affected_users = n as usize,
                None => ok = false,
            }
        }
        if let Some(v) = table.get("recovery_successes") {
            match positive_integer(v, "incidents.recovery_successes", 100, self.problems) {
                Some(n) => config.recovery_successes = n as u32,
                None => ok = false,
            }
        }
        ok &= self.durations(
            &mut table,
            [
                ("window", &mut config.window),
                ("update_interval", &mut config.update_interval),
                ("rollout_grace", &mut config.rollout_grace),
            ],
        );
        if let Some(v) = table.get("keep_open_for") {
            match walk::duration_or_zero(v, "incidents.keep_open_for", self.problems) {
                Some(d) => config.keep_open_for = d,
                None => ok = false,
            }
        }
        table.finish(self.problems);
        ok.then_some(config)
    }

    fn pagerduty(&mut self, value: &Value) -> Option<PagerDutyConfig> {
        let mut table = Table::new(value, "pagerduty", PAGERDUTY_KEYS, self.problems)?;
        let routing_key =
            table.required("routing_key", self.problems).and_then(|v| self.routing_key(v, "pagerduty.routing_key"));
        let priority = match table.get("priority") {
            None => Some(None),
            Some(v) => self.priority(v, "pagerduty.priority").map(Some),
        };
        let (events_url, change_events_url, api_url) = self.pagerduty_endpoints(&mut table);
        let severity = match table.get("severity") {
            None => Some(Severity::Critical),
            Some(v) => self.severity(v, "pagerduty.severity"),
        };
        let (mut retry_delay, mut rate_limit_delay) = (Duration::from_secs(2), Duration::from_secs(60));
        let mut status_update_every = Duration::from_secs(3 * 3600);
        let delays_ok = self.durations(
            &mut table,
            [
                ("retry_delay", &mut retry_delay),
                ("rate_limit_delay", &mut rate_limit_delay),
                ("status_update_every", &mut status_update_every),
            ],
        );
        let status_updates = self.status_updates(&mut table, status_update_every, api_url);
        table.finish(self.problems);
        delays_ok.then_some(())?;
        Some(PagerDutyConfig {
            routing_key: routing_key?,
            events_url: events_url?,
            change_events_url: change_events_url?,
            severity: severity?,
            retry_delay,
            rate_limit_delay,
            status_updates: status_updates?,
            priority: priority?,
        })
    }

    /// A routing key: a secret of 32 characters (only its length is ever said).
    fn routing_key(&mut self, value: &Value, path: &str) -> Option<Secret> {
        let key = secret::resolve(value, path, self.config_dir, self.env, self.problems)?;
        if key.expose().len() != 32 {
            let found = key.expose().len();
            self.problems.add(path, format!("a routing key has 32 characters, this one has {found}"));
            return None;
        }
        Some(key)
    }

    fn severity(&mut self, value: &Value, path: &str) -> Option<Severity> {
        string(value, path, self.problems).and_then(|s| match s.as_str() {
            "critical" => Some(Severity::Critical),
            "error" => Some(Severity::Error),
            "warning" => Some(Severity::Warning),
            "info" => Some(Severity::Info),
            other => {
                self.problems
                    .add(path, format!("unknown severity {other:?} (expected critical, error, warning or info)"));
                None
            }
        })
    }

    /// The events, change events and REST API URLs (each used as given; the defaults are PagerDuty's).
    fn pagerduty_endpoints(&mut self, table: &mut Table) -> (Option<Url>, Option<Url>, Option<Url>) {
        let mut endpoint = |key: &'static str| {
            table.get(key).map(|v| {
                self.url(v, &format!("pagerduty.{key}")).map(|mut url| {
                    // url() adds a slash for joining; an endpoint is used as given.
                    let trimmed = url.path().trim_end_matches('/').to_string();
                    url.set_path(&trimmed);
                    url
                })
            })
        };
        let events_url =
            endpoint("events_url").unwrap_or_else(|| Url::parse("https://events.pagerduty.com/v2/enqueue").ok());
        let change_events_url = endpoint("change_events_url").unwrap_or_else(|| {
            events_url.clone().map(|mut url| {
                url.set_path("/v2/change/enqueue");
                url
            })
        });
        let api_url = endpoint("api_url").unwrap_or_else(|| Url::parse("https://api.pagerduty.com").ok());
        (events_url, change_events_url, api_url)
    }

    /// `api_token` and `from_email` come together; without them there are no status notes (`Some(None)`).
    fn status_updates(
        &mut self,
        table: &mut Table,
        every: Duration,
        api_url: Option<Url>,
    ) -> Option<Option<StatusUpdatesConfig>> {
        let api_token = match table.get("api_token") {
            Some(v) => Some(secret::resolve(v, "pagerduty.api_token", self.config_dir, self.env, self.problems)?),
            None => None,
        };
        let from_email = match table.get("from_email") {
            Some(v) => {
                let email = string(v, "pagerduty.from_email", self.problems)?;
                let looks_like_email = email.split_once('@').is_some_and(|(name, domain)| {
                    !name.is_empty() && domain.contains('.') && !email.chars().any(char::is_whitespace)
                });
                if !looks_like_email {
                    self.problems.add(
                        "pagerduty.from_email",
                        format!("{email:?} is not an email address (PagerDuty needs a user's email in From)"),
                    );
                    return None;
                }
                Some(email)
            }
            None => None,
        };
        match (api_token, from_email) {
            (Some(api_token), Some(from_email)) => {
                Some(Some(StatusUpdatesConfig { api_token, from_email, every, api_url: api_url? }))
            }
            (None, None) => Some(None),
            (Some(_), None) => {
                self.problems.add(
                    "pagerduty.from_email",
                    "required with api_token: PagerDuty's REST API needs the email of a PagerDuty user in From",
                );
                None
            }
            (None, Some(_)) => {
                self.problems
                    .add("pagerduty.api_token", "required with from_email (status notes need a REST API token)");
                None
            }
        }
    }

    fn kubernetes(&mut self, value: Option<&Value>, defaults: Option<&ProbeSettings>) -> Option<KubernetesConfig> {
        let mut config = KubernetesConfig::default();
        let Some(value) = value else { return Some(config) };
        let mut table = Table::new(value, "kubernetes", KUBERNETES_KEYS, self.problems)?;
        let mut ok = true;
        if let Some(v) = table.get("discovery") {
            match self.discovery(v, defaults) {
                Some(discovery) => config.discovery = discovery,
                None => ok = false,
            }
        }
        if let Some(v) = table.get("enabled") {
            match boolean(v, "kubernetes.enabled", self.problems) {
                Some(enabled) => config.enabled = enabled,
                None => ok = false,
            }
        }
        if let Some(v) = table.get("log_lines") {
            match positive_integer(v, "kubernetes.log_lines", 10_000, self.problems) {
                Some(n) => config.log_lines = n as u32,
                None => ok = false,
            }
        }
        ok &= self.durations(
            &mut table,
            [
                ("diagnostics_wait", &mut config.diagnostics_wait),
                ("call_timeout", &mut config.call_timeout),
                ("pending_after", &mut config.pending_after),
            ],
        );
        table.finish(self.problems);
        ok.then_some(config)
    }

    /// `Some(None)`: present but switched off.
    fn high_availability(&mut self, value: &Value, kubernetes: Option<&KubernetesConfig>) -> Option<Option<HaConfig>> {
        if value.get("state_configmap").is_some() {
            self.problems.add(
                "high_availability.state_configmap",
                "the state is mirrored into a Secret now (it holds logs and user names): use state_secret",
            );
            return None;
        }
        let mut table = Table::new(value, "high_availability", HA_KEYS, self.problems)?;
        let mut ok = true;
        let enabled =
            table.get("enabled").map_or(Some(true), |v| boolean(v, "high_availability.enabled", self.problems));
        ok &= enabled.is_some();
        let enabled = enabled.unwrap_or(false);
        let mut text = |key: &'static str, problems: &mut Problems| {
            table.get(key).map(|v| string(v, &format!("high_availability.{key}"), problems))
        };
        let namespace = text("namespace", self.problems);
        let lease = text("lease", self.problems).unwrap_or_else(|| Some("hubwatch-leader".into()));
        let state_secret = text("state_secret", self.problems).unwrap_or_else(|| Some("hubwatch-state".into()));
        let (mut lease_duration, mut renew_deadline, mut retry_period) =
            (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2));
        ok &= self.durations(
            &mut table,
            [
                ("lease_duration", &mut lease_duration),
                ("renew_deadline", &mut renew_deadline),
                ("retry_period", &mut retry_period),
            ],
        );
        table.finish(self.problems);
        if !enabled {
            return ok.then_some(None);
        }
        ok &= self.election_timings(lease_duration, renew_deadline, retry_period);
        if kubernetes.is_some_and(|k| !k.enabled) {
            self.problems.add(
                "high_availability",
                "needs kubernetes.enabled: true (the lease and the state live in the cluster)",
            );
            ok = false;
        }
        let namespace = namespace.unwrap_or_else(|| self.pod_namespace());
        let identity =
            (self.env)("HOSTNAME").filter(|h| !h.is_empty()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !ok {
            return None;
        }
        let state_secret = state_secret?;
        Some(Some(HaConfig {
            namespace: namespace?,
            lease: lease?,
            legacy_state_configmap: state_secret.clone(),
            state_secret,
            lease_duration,
            renew_deadline,
            retry_period,
            call_timeout: kubernetes.map_or(KubernetesConfig::default().call_timeout, |k| k.call_timeout),
            identity,
        }))
    }

    /// The namespace the pod runs in (the chart sets POD_NAMESPACE), for the lease and the state.
    fn pod_namespace(&mut self) -> Option<String> {
        (self.env)("POD_NAMESPACE").filter(|n| !n.is_empty()).or_else(|| {
            self.problems.add(
                "high_availability.namespace",
                "missing: set it, or POD_NAMESPACE in the environment (the Helm chart does)",
            );
            None
        })
    }

    /// client-go's rules: the leader must stop (renew deadline) before a standby may take over (lease
    /// duration), and it must get several renewal attempts (retry period) within the deadline.
    fn election_timings(&mut self, lease_duration: Duration, renew_deadline: Duration, retry_period: Duration) -> bool {
        let mut ok = true;
        if renew_deadline >= lease_duration {
            self.problems.add(
                "high_availability.renew_deadline",
                "must be shorter than lease_duration: the leader has to stop before a standby may take over",
            );
            ok = false;
        }
        if retry_period.mul_f64(1.2) >= renew_deadline {
            self.problems.add(
                "high_availability.retry_period",
                "must be well under renew_deadline (client-go: renew_deadline > 1.2 x retry_period)",
            );
            ok = false;
        }
        if lease_duration < Duration::from_secs(1) {
            self.problems.add("high_availability.lease_duration", "must be at least 1s (the Lease counts seconds)");
            ok = false;
        }
        ok
    }

    fn state(&mut self, value: Option<&Value>) -> Option<StateConfig> {
        let mut config = StateConfig::default();
        let Some(value) = value else { return Some(config) };
        let mut table = Table::new(value, "state", STATE_KEYS, self.problems)?;
        let ok = self.durations(
            &mut table,
            [("retention", &mut config.retention), ("unhealthy_after", &mut config.unhealthy_after)],
        );
        table.finish(self.problems);
        ok.then_some(config)
    }

    fn discovery(&mut self, value: &Value, defaults: Option<&ProbeSettings>) -> Option<Option<DiscoveryConfig>> {
        const PATH: &str = "kubernetes.discovery";
        let mut table = Table::new(value, PATH, DISCOVERY_KEYS, self.problems)?;
        let enabled = table.get("enabled").map_or(Some(true), |v| boolean(v, &join(PATH, "enabled"), self.problems));
        let mut list = |key: &'static str, problems: &mut Problems| match table.get(key) {
            None => Some(Vec::new()),
            Some(v) => string_list(v, &join(PATH, key), problems),
        };
        let namespaces = list("namespaces", self.problems);
        let users = list("users", self.problems);
        let allowed_hosts = list("allowed_hosts", self.problems);
        let token = self.discovery_token(&mut table);
        let mut every = Duration::from_secs(300);
        let durations_ok = self.durations(&mut table, [("every", &mut every)]);
        table.finish(self.problems);
        let (enabled, users, allowed_hosts) = (enabled?, users?, allowed_hosts?);
        if enabled && users.len() < 2 {
            self.problems.add(
                &join(PATH, "users"),
                "at least two probe users are needed for discovered hubs (one user alone never makes an incident)",
            );
            return None;
        }
        if let Some(host) = allowed_hosts.iter().find(|h| !host_pattern(h)) {
            self.problems
                .add(&join(PATH, "allowed_hosts"), format!("{host:?} is not a host name or a *.domain wildcard"));
            return None;
        }
        let (namespaces, token) = (namespaces?, token?);
        if !durations_ok {
            return None;
        }
        if !enabled {
            return Some(None);
        }
        Some(Some(DiscoveryConfig { namespaces, users, token, allowed_hosts, every, probes: defaults?.clone() }))
    }

    /// `token` (held by hubwatch) or `token_secret`/`token_key` (a Secret of hubwatch's own per namespace),
    /// never z2jh's `hub` Secret.
    fn discovery_token(&mut self, table: &mut Table) -> Option<DiscoveryToken> {
        const PATH: &str = "kubernetes.discovery";
        let (held, name, key) = (table.get("token"), table.get("token_secret"), table.get("token_key"));
        if let Some(held) = held {
            if name.is_some() || key.is_some() {
                self.problems.add(&join(PATH, "token"), "give either token or token_secret/token_key, not both");
                return None;
            }
            let token = secret::resolve(held, &join(PATH, "token"), self.config_dir, self.env, self.problems)?;
            return Some(DiscoveryToken::Held(token));
        }
        let text = |value: Option<&Value>, key: &str, default: &str, problems: &mut Problems| match value {
            None => Some(default.to_string()),
            Some(v) => string(v, &join(PATH, key), problems),
        };
        let name = text(name, "token_secret", "hubwatch", self.problems);
        let key = text(key, "token_key", "token", self.problems);
        let name = name?;
        if name == Z2JH_HUB_SECRET {
            self.problems.add(
                &join(PATH, "token_secret"),
                "z2jh's hub Secret holds the hub's cookie secret, the proxy's token and every service's token; \
                 hubwatch reads only a Secret of its own: put its token in one (default name hubwatch, key token)",
            );
            return None;
        }
        Some(DiscoveryToken::Secret { name, key: key? })
    }

    fn scheduler(&mut self, value: Option<&Value>) -> Option<SchedulerConfig> {
        let mut config = SchedulerConfig {
            max_concurrent_probes: 256,
            shutdown_grace: Duration::from_secs(60),
            cleanup_timeout: Duration::from_secs(120),
        };
        let Some(value) = value else { return Some(config) };
        let mut table = Table::new(value, "scheduler", SCHEDULER_KEYS, self.problems)?;
        let mut ok = true;
        if let Some(v) = table.get("max_concurrent_probes") {
            match positive_integer(v, "scheduler.max_concurrent_probes", 100_000, self.problems) {
                Some(n) => config.max_concurrent_probes = n as usize,
                None => ok = false,
            }
        }
        ok &= self.durations(
            &mut table,
            [("shutdown_grace", &mut config.shutdown_grace), ("cleanup_timeout", &mut config.cleanup_timeout)],
        );
        table.finish(self.problems);
        ok.then_some(config)
    }

    /// Reads each duration key present in `table` into its slot (absent keys keep their default); false if
    /// any is invalid.
    fn durations<const N: usize>(&mut self, table: &mut Table, slots: [(&'static str, &mut Duration); N]) -> bool {
        let mut ok = true;
        for (key, slot) in slots {
            if let Some(v) = table.get(key) {
                match duration(v, &table.key_path(key), self.problems) {
                    Some(d) => *slot = d,
                    None => ok = false,
                }
            }
        }
        ok
    }

    fn hubs(&mut self, value: &Value, defaults: &ProbeSettings) -> Option<Vec<HubConfig>> {
        let Value::Array(items) = value else {
            self.problems.add("hubs", format!("expected a list of hubs, found {}", walk::type_name(value)));
            return None;
        };
        if items.is_empty() {
            self.problems.add("hubs", "at least one hub is required");
            return None;
        }
        let mut hubs: Vec<HubConfig> = Vec::new();
        let mut names = HashSet::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("hubs[{i}]");
            match self.hub(item, &path, defaults) {
                Some(hub) => {
                    if !names.insert(hub.name.clone()) {
                        self.problems.add(&join(&path, "name"), format!("duplicate hub name {:?}", hub.name));
                        ok = false;
                    }
                    // Two entries for the same hub may not share a probe user: their rounds would stop each
                    // other's servers and the failures would look like an outage.
                    for (j, user) in hub.users.iter().enumerate() {
                        if let Some(other) = hubs.iter().find(|h| h.url == hub.url && h.users.contains(user)) {
                            self.problems.add(
                                &format!("{path}.users[{j}]"),
                                format!("probe user {user:?} is also a probe user of hub {:?} at the same URL; give each entry its own probe users", other.name),
                            );
                            ok = false;
                        }
                    }
                    hubs.push(hub);
                }
                None => ok = false,
            }
        }
        ok.then_some(hubs)
    }

    fn hub(&mut self, value: &Value, path: &str, defaults: &ProbeSettings) -> Option<HubConfig> {
        let mut table = Table::new(value, path, HUB_KEYS, self.problems)?;
        let name = table.required("name", self.problems).and_then(|v| self.hub_name(v, &join(path, "name")));
        let url = table.required("url", self.problems).and_then(|v| self.url(v, &join(path, "url")));
        let namespace = match table.get("namespace") {
            None => Some(None),
            Some(v) => string(v, &join(path, "namespace"), self.problems).map(Some),
        };
        let token = table
            .required("token", self.problems)
            .and_then(|v| secret::resolve(v, &join(path, "token"), self.config_dir, self.env, self.problems));
        let users = table.required("users", self.problems).and_then(|v| self.users(v, &join(path, "users")));
        let login = match table.get("login") {
            None => Some(LoginMethod::Token),
            Some(v) => self.login_method(v, &join(path, "login")),
        };
        let dask_gateway = match table.get("dask_gateway") {
            None => Some(None),
            Some(v) => self.dask_gateway(v, &join(path, "dask_gateway")).map(Some),
        };
        let mut probes = match table.get("probes") {
            None => Some(defaults.clone()),
            Some(v) => self.probe_settings(v, &join(path, "probes"), defaults),
        };
        if let Some(v) = table.get("kernel_cells") {
            match (self.kernel_cells(v, &join(path, "kernel_cells")), probes.as_mut()) {
                (Some(cells), Some(probes)) => probes.kernel.cells = cells,
                _ => probes = None,
            }
        }
        let sentinel = match table.get("sentinel") {
            None => Some(None),
            Some(v) => self.sentinel(v, &join(path, "sentinel"), users.as_deref()).map(Some),
        };
        let pagerduty = match table.get("pagerduty") {
            None => Some(None),
            Some(v) => self.hub_paging(v, &join(path, "pagerduty")).map(Some),
        };
        table.finish(self.problems);
        Some(HubConfig {
            name: name?,
            url: url?,
            namespace: namespace?,
            token: token?,
            users: users?,
            login: login?,
            dask_gateway: dask_gateway?,
            probes: probes?,
            sentinel: sentinel?,
            pagerduty: pagerduty?,
        })
    }

    /// A hub's kept server: `{every, timeout}` (defaults 1m and 30s). Its user is the last probe user, so a
    /// hub with a kept server lists three: two go on starting servers, enough to see an outage of two.
    fn sentinel(&mut self, value: &Value, path: &str, users: Option<&[String]>) -> Option<Schedule> {
        let mut table = Table::new(value, path, probes::SCHEDULE_KEYS, self.problems)?;
        let mut schedule = Schedule { every: Duration::from_secs(60), timeout: Duration::from_secs(30) };
        let ok = self.durations(&mut table, [("every", &mut schedule.every), ("timeout", &mut schedule.timeout)]);
        table.finish(self.problems);
        if ok && schedule.every < Duration::from_secs(1) {
            self.problems.add(&join(path, "every"), "at least 1s: the kept server is checked that often");
            return None;
        }
        if let Some(users) = users
            && users.len() < 3
        {
            self.problems.add(
                path,
                format!("a kept server needs three probe users (found {}): the last keeps its server, the others go on starting theirs", users.len()),
            );
            return None;
        }
        ok.then_some(schedule)
    }

    /// Hub names appear in metric labels, incident keys and URLs, so they are kept plain.
    fn hub_name(&mut self, value: &Value, path: &str) -> Option<String> {
        let name = string(value, path, self.problems)?;
        let plain = name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !plain {
            self.problems.add(
                path,
                format!("{name:?} is not a valid hub name: use up to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"),
            );
            return None;
        }
        Some(name)
    }

    fn url(&mut self, value: &Value, path: &str) -> Option<Url> {
        let text = string(value, path, self.problems)?;
        let url = match Url::parse(&text) {
            Ok(url) => url,
            Err(e) => {
                self.problems.add(path, format!("{text:?} is not a URL: {e}"));
                return None;
            }
        };
        let problem = if !matches!(url.scheme(), "http" | "https") {
            Some("must start with http:// or https://")
        } else if !url.username().is_empty() || url.password().is_some() {
            Some("must not carry credentials; use token instead")
        } else if url.query().is_some() || url.fragment().is_some() {
            Some("must not have a query or fragment")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.problems.add(path, format!("{problem} (found {})", redact_url(&url)));
            return None;
        }
        // Paths are joined onto the URL, so it always ends with a slash.
        let mut url = url;
        if !url.path().ends_with('/') {
            let with_slash = format!("{}/", url.path());
            url.set_path(&with_slash);
        }
        Some(url)
    }

    fn users(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        let users = string_list(value, path, self.problems)?;
        let mut seen = HashSet::new();
        for (i, user) in users.iter().enumerate() {
            if !seen.insert(user) {
                self.problems.add(&format!("{path}[{i}]"), format!("duplicate probe user {user:?}"));
                return None;
            }
        }
        if users.len() < 2 {
            self.problems.add(
                path,
                format!("at least two probe users are needed, so that one probe user alone never makes an incident (found {})", users.len()),
            );
            return None;
        }
        Some(users)
    }

    fn login_method(&mut self, value: &Value, path: &str) -> Option<LoginMethod> {
        let mut table = Table::new(value, path, &["method", "password"], self.problems)?;
        let method =
            table.required("method", self.problems).and_then(|v| string(v, &join(path, "method"), self.problems));
        let password = table.get("password");
        table.finish(self.problems);
        match (method?.as_str(), password) {
            ("token", None) => Some(LoginMethod::Token),
            ("oauth", None) => Some(LoginMethod::OAuth),
            ("token" | "oauth", Some(_)) => {
                self.problems.add(&join(path, "password"), "only used with method: form");
                None
            }
            ("form", Some(v)) => secret::resolve(v, &join(path, "password"), self.config_dir, self.env, self.problems)
                .map(|password| LoginMethod::Form { password }),
            ("form", None) => {
                self.problems.add(&join(path, "password"), "is required with method: form");
                None
            }
            (other, _) => {
                self.problems.add(
                    &join(path, "method"),
                    format!("unknown login method {other:?} (expected token, form or oauth)"),
                );
                None
            }
        }
    }

    fn dask_gateway(&mut self, value: &Value, path: &str) -> Option<DaskGatewayConfig> {
        let mut table = Table::new(value, path, &["url", "cluster_options"], self.problems)?;
        let url = table.required("url", self.problems).and_then(|v| self.url(v, &join(path, "url")));
        let cluster_options = match table.get("cluster_options") {
            None => Some(Map::new()),
            Some(v) => object(v, &join(path, "cluster_options"), self.problems),
        };
        table.finish(self.problems);
        Some(DaskGatewayConfig { url: url?, cluster_options: cluster_options? })
    }
}

/// A URL for messages: scheme, host and path only.
/// A host name (`hub.example.org`) or a wildcard of one label (`*.example.org`).
fn host_pattern(text: &str) -> bool {
    let name = text.strip_prefix("*.").unwrap_or(text);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}

pub fn redact_url(url: &Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "every {}, timeout {}",
            humantime::format_duration(self.every),
            humantime::format_duration(self.timeout)
        )
    }
}
