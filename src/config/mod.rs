//! The configuration, declared once: these types are what the YAML file holds (serde, unknown keys
//! refused, every default on its type), what `hubwatch config schema` prints (schemars, each doc comment a
//! description), and, once [`validate`] has resolved secrets and checked the rules that span keys, what
//! the daemon runs with — immutable from then on. A file is read in three steps that report every problem
//! at once, each with the file and the key path: the YAML itself, its shape against the schema
//! ([`crate::schema_check`]), then the rules across keys. See docs/configuration.md.

mod probes;
mod routing;
mod validate;

pub use probes::{DaskProbeConfig, KernelCell, KernelProbeConfig, ProbeSettings, Schedule, ServerProbeConfig};
pub use routing::{
    HeartbeatConfig, HeartbeatMethod, HubPaging, KindOverrides, PageOverride, PageRoute, WebhookConfig, WebhookFormat,
    fingerprint,
};
pub use validate::redact_url;

use crate::domain::{Capability, HubName, IncidentKind, Secret, Severity};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Reads the environment; injected so tests do not have to change the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A section of the file whose every field has its default beside it: the struct (serde: unknown keys
/// refused, a missing key takes its default) and its `Default`, from one list of `field: Type = default`.
macro_rules! section {
    ($(#[$attr:meta])* pub struct $name:ident {
        $($(#[$field_attr:meta])* pub $field:ident: $ty:ty = $default:expr,)*
    }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name { $($(#[$field_attr])* pub $field: $ty,)* }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }
    };
}
pub(crate) use section;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Keys that were renamed or dropped, with what to do instead of only "unknown key".
const MOVED: &[(&str, &str)] = &[(
    "high_availability.state_configmap",
    "the state is mirrored into a Secret now (it holds logs and user names): use state_secret",
)];

section! {
    pub struct Config {
        /// Where the pages, the API, /metrics, /healthz and /readyz are served.
        #[schemars(extend("format" = "hubwatch-address"))]
        pub listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9464)),
        /// Optional second address for /metrics, /healthz and /readyz only, never authenticated.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(extend("format" = "hubwatch-address"))]
        pub metrics_listen: Option<SocketAddr> = None,
        /// Who may read the pages, and TLS for them.
        pub web: WebConfig = WebConfig::default(),
        /// Where people reach hubwatch's pages (the links in pages and events); default http://LISTEN/.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub public_url: Option<Url> = None,
        /// The SQLite state (incidents, timelines, unsent events), relative to the config file.
        pub state_path: PathBuf = "hubwatch-state.db".into(),
        pub state: StateConfig = StateConfig::default(),
        pub scheduler: SchedulerConfig = SchedulerConfig::default(),
        pub incidents: IncidentsConfig = IncidentsConfig::default(),
        /// Leave out for a dry run: incidents are logged and shown, never sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub pagerduty: Option<PagerDutyConfig> = None,
        pub kubernetes: KubernetesConfig = KubernetesConfig::default(),
        /// Several replicas, one leader (a Kubernetes Lease); the state mirrored into a Secret.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub high_availability: Option<HaConfig> = None,
        pub defaults: Defaults = Defaults::default(),
        /// The hubs to watch (may be empty when discovery finds them).
        pub hubs: Vec<Arc<HubConfig>> = Vec::new(),
        /// A JSON POST per incident opened and resolved and per support ticket opened and closed.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub webhook: Option<WebhookConfig> = None,
        /// A dead-man's switch elsewhere (healthchecks.io, Cronitor, Dead Man's Snitch, an Opsgenie heartbeat):
        /// pinged every `every` while hubwatch leads and is healthy, so that its silence pages from there.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub heartbeat: Option<HeartbeatConfig> = None,
        /// hubwatch instances in other clusters, watched through their `/healthz` (the metrics listener's, which
        /// needs no credentials): one unreachable or unhealthy for `after` is an incident of kind `monitor`
        /// named after it (no threshold), resolved when it answers again.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub peers: Vec<PeerConfig> = Vec::new(),
        /// The file it was read from.
        #[serde(skip)]
        pub source: PathBuf = PathBuf::new(),
    }
}

/// A secret, given as `{env: NAME}` or `{file: PATH}` (relative to the config file), never inline.
// It never prints its value, and derefs to the `Secret` once `validate` has read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1, "x-secret" = true))]
pub struct SecretRef {
    /// An environment variable holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file holding it (surrounding whitespace is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip)]
    value: Secret,
}

impl SecretRef {
    /// A secret known already (a discovered hub's token).
    pub fn holding(value: Secret) -> Self {
        SecretRef { env: None, file: None, value }
    }
}

impl std::ops::Deref for SecretRef {
    type Target = Secret;

    fn deref(&self) -> &Secret {
        &self.value
    }
}

/// A duration as the file writes it: `30s`, `10m`, `1h30m` (at least 1s). Named in `#[serde(with)]`, it is
/// both the field's serde and its schema.
pub struct Span;

impl Span {
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Span::render(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime::parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    /// `90d`, `1h30m`, `30s`: whole units, largest first, as a person writes them.
    pub fn render(d: Duration) -> String {
        let mut left = d.as_secs();
        let mut text = String::new();
        for (unit, seconds) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if left >= seconds {
                text.push_str(&format!("{}{unit}", left / seconds));
                left %= seconds;
            }
        }
        if text.is_empty() { "0s".into() } else { text }
    }
}

impl JsonSchema for Span {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string", "format": "hubwatch-duration", "pattern": crate::schema_check::DURATION_PATTERN,
            "description": "a duration like 30s, 10m, 1h30m",
        })
    }
}

/// A [`Span`] that may also be `0s` (a damping turned off).
pub struct SpanOrZero;

impl SpanOrZero {
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        Span::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Span::deserialize(d)
    }
}

impl JsonSchema for SpanOrZero {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DurationOrZero".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string", "format": "hubwatch-duration-or-zero", "pattern": crate::schema_check::DURATION_PATTERN,
            "description": "a duration like 30s, 10m, 1h30m, or 0s",
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// User name to bcrypt hash (`hubwatch hash-password`), as Prometheus' web config; set: every path but
    /// /healthz and /readyz needs it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub basic_auth_users: BTreeMap<String, Hash>,
    /// TLS for the pages: PEM files relative to the config file (re-read when they change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Host names the pages are reached at besides public_url's, IP addresses and localhost (an ingress's,
    /// a Service's DNS name); a request naming another host is refused (DNS rebinding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Proxies (CIDRs, `10.0.0.0/8`) whose `X-Forwarded-For` names the client that failed logins are counted
    /// against; without them every client behind an ingress shares the ingress's count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<Cidr>")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A name that is a metric label, part of a key and of a URL: a hub's, a cluster's, a peer's, a profile's.
struct PlainName;

impl JsonSchema for PlainName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PlainName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$",
            "x-form": "up to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
        })
    }
}

/// How a Kubernetes object's name is written, for a problem's message.
const KUBE_NAME: &str = "a Kubernetes name: lowercase letters, digits and '-'";

/// An address block, `10.0.0.0/8` or `fd00::/8`.
struct Cidr;

impl JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "cidr", "description": "an address block like 10.0.0.0/8" })
    }
}

/// A bcrypt hash, inline (it opens nothing) or from a secret.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Hash {
    Inline(String),
    Secret(SecretRef),
}

impl Hash {
    pub fn text(&self) -> &str {
        match self {
            Hash::Inline(text) => text,
            Hash::Secret(secret) => secret.expose(),
        }
    }
}

impl WebConfig {
    /// User name to bcrypt hash.
    pub fn users(&self) -> BTreeMap<String, String> {
        self.basic_auth_users.iter().map(|(user, h)| (user.clone(), h.text().to_string())).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

section! {
    /// The state database: how long closed incidents are kept, and how long writes may fail before /healthz
    /// asks the kubelet for a restart.
    pub struct StateConfig {
        /// Closed incidents (with timelines and events) are deleted after this long.
        #[serde(with = "Span")]
        pub retention: Duration = secs(90 * 86_400),
        /// /healthz fails when the state database has taken no write for this long.
        #[serde(with = "Span")]
        pub unhealthy_after: Duration = secs(600),
    }
}

section! {
    pub struct SchedulerConfig {
        /// Probe rounds running at once, over all hubs.
        #[schemars(range(min = 1, max = 100_000))]
        pub max_concurrent_probes: usize = 256,
        /// On SIGTERM, how long running rounds get to clean up (stop servers, delete clusters).
        #[serde(with = "Span")]
        pub shutdown_grace: Duration = secs(60),
        /// Deadline of each clean-up step after a probe (they run even when the probe timed out).
        #[serde(with = "Span")]
        pub cleanup_timeout: Duration = secs(120),
    }
}

section! {
    pub struct IncidentsConfig {
        /// N: an incident needs at least this many distinct affected users.
        #[schemars(range(min = 1, max = 10_000))]
        pub min_affected_users: usize = 2,
        /// How long a failed attempt keeps a user counted as affected.
        #[serde(with = "Span")]
        pub window: Duration = secs(900),
        /// Successes in a row, per probe user and capability, before an incident recovers.
        #[schemars(range(min = 1, max = 100))]
        pub recovery_successes: u32 = 2,
        /// Least time between two follow-up triggers of one incident.
        #[serde(with = "Span")]
        pub update_interval: Duration = secs(600),
        /// How long a hub Deployment mid-rollout holds back its hub's pages.
        #[serde(with = "Span")]
        pub rollout_grace: Duration = secs(300),
        /// How long a hub must stay healthy before its incident resolves; a failure inside it continues the
        /// same incident (`0s`: at once).
        #[serde(with = "SpanOrZero")]
        pub keep_open_for: Duration = secs(120),
        /// How long a problem must stay below the threshold before its support ticket opens: the first of two
        /// users to meet an outage is no ticket for the seconds the others' rounds take to corroborate it.
        #[serde(with = "SpanOrZero")]
        pub ticket_after: Duration = secs(30),
        /// One page for one cause: hubs of one cluster (`hubs[].cluster`) failing together page one cluster
        /// incident.
        pub fold: FoldConfig = FoldConfig::default(),
    }
}

section! {
    /// When `min_hubs` or more hubs of one cluster that page the same PagerDuty service open incidents of one
    /// kind within `within`, one cluster incident is paged for them; each such hub's page waits up to `within`
    /// to see whether others follow.
    pub struct FoldConfig {
        /// Hubs that make a cluster incident (`0`: never fold, every hub pages at once; else at least 2).
        #[schemars(range(min = 0, max = 10_000))]
        pub min_hubs: usize = 3,
        /// How long a clustered hub's page waits for the others.
        #[serde(with = "Span")]
        pub within: Duration = secs(120),
    }
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

section! {
    pub struct PagerDutyConfig {
        /// The 32-character integration key (Events API v2).
        pub routing_key: SecretRef = SecretRef::default(),
        /// events.eu.pagerduty.com for EU accounts.
        pub events_url: Url = Url::parse("https://events.pagerduty.com/v2/enqueue").expect("a URL"),
        /// Change Events (hub upgrades); default: the events URL's host with /v2/change/enqueue.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub change_events_url: Option<Url> = None,
        pub severity: Severity = Severity::Critical,
        /// First delay after a 5xx or network error (doubles, with jitter, up to 5m).
        #[serde(with = "Span")]
        pub retry_delay: Duration = secs(2),
        /// First delay after a 429 without Retry-After, and after a refused routing key.
        #[serde(with = "Span")]
        pub rate_limit_delay: Duration = secs(60),
        /// A REST API token: status notes, priorities, and reconciling with PagerDuty at start (needs
        /// from_email).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub api_token: Option<SecretRef> = None,
        /// The email of a PagerDuty user, sent as From on REST writes.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub from_email: Option<String> = None,
        /// How often an open incident gets a status note.
        #[serde(with = "Span")]
        pub status_update_every: Duration = secs(3 * 3600),
        /// How often the open incidents' acknowledgements, assignments and resolves are read back from
        /// PagerDuty (with api_token; a 429 waits as long as PagerDuty asks).
        #[serde(with = "Span")]
        pub read_back_every: Duration = secs(60),
        /// The REST API's base URL.
        pub api_url: Url = Url::parse("https://api.pagerduty.com").expect("a URL"),
        /// The priority set on every incident through the REST API (hubs may override it).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub priority: Option<String> = None,
        /// Status notes and priorities (with api_token and from_email).
        #[serde(skip)]
        pub status_updates: Option<StatusUpdatesConfig> = None,
    }
}

impl PagerDutyConfig {
    pub fn change_events_url(&self) -> Url {
        self.change_events_url.clone().unwrap_or_else(|| {
            let mut url = self.events_url.clone();
            url.set_path("/v2/change/enqueue");
            url
        })
    }
}

/// What the REST API needs: a note on the incident's PagerDuty incident every `every` while it is open.
#[derive(Debug, Clone)]
pub struct StatusUpdatesConfig {
    pub api_token: Secret,
    pub from_email: String,
    pub every: Duration,
    pub api_url: Url,
    /// How often responses are read back.
    pub read_back_every: Duration,
}

section! {
    /// Kubernetes awareness: diagnostics on pages, real users' stuck pods, change events, discovery.
    pub struct KubernetesConfig {
        /// In-cluster config or KUBECONFIG; off: no diagnostics, no pod signals, no discovery.
        pub enabled: bool = false,
        /// How long a page waits for its diagnostics (they follow when collected later).
        #[serde(with = "Span")]
        pub diagnostics_wait: Duration = secs(5),
        /// Deadline of each Kubernetes API call.
        #[serde(with = "Span")]
        pub call_timeout: Duration = secs(10),
        /// Lines of hub, proxy and gateway logs in diagnostics.
        #[schemars(range(min = 1, max = 10_000))]
        pub log_lines: u32 = 50,
        /// A user pod Pending longer than this makes its user affected.
        #[serde(with = "Span")]
        pub pending_after: Duration = secs(300),
        #[serde(skip_serializing_if = "Option::is_none")]
        pub discovery: Option<DiscoveryConfig> = None,
        /// The cluster autoscaler's status ConfigMap, shown in diagnostics while pods are Pending; a node group
        /// backing off after a failed scale-up, or at its maximum size, is named as the likely cause.
        pub autoscaler_status: AutoscalerStatusConfig = AutoscalerStatusConfig::default(),
    }
}

section! {
    /// Where the cluster autoscaler writes its status (its `--namespace` and `--status-config-map-name`). None
    /// there (no autoscaler, or a managed one that keeps its status to itself): nothing is shown.
    pub struct AutoscalerStatusConfig {
        pub enabled: bool = true,
        #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"), extend("x-form" = KUBE_NAME))]
        pub namespace: String = "kube-system".into(),
        #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"), extend("x-form" = KUBE_NAME))]
        pub name: String = "cluster-autoscaler-status".into(),
    }
}

impl AutoscalerStatusConfig {
    /// Its namespace and name, when it is read.
    pub fn place(&self) -> Option<(String, String)> {
        self.enabled.then(|| (self.namespace.clone(), self.name.clone()))
    }
}

section! {
    /// Hub Deployments labelled `component=hub` become hubs named after their namespace, unless `hubs` names
    /// that hub or namespace.
    pub struct DiscoveryConfig {
        pub enabled: bool = true,
        /// Where to look; empty: every namespace.
        pub namespaces: Vec<String> = Vec::new(),
        /// Probe users on discovered hubs (the Deployment's hubwatch.jupyter.org/users annotation overrides).
        pub users: Vec<String> = Vec::new(),
        /// One token for every discovered hub, held by hubwatch (no Secret is read); else token_secret.
        #[serde(rename = "token", skip_serializing_if = "Option::is_none")]
        pub held_token: Option<SecretRef> = None,
        /// A Secret of hubwatch's own in each hub's namespace holding its token (default `hubwatch`; never
        /// z2jh's hub Secret).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub token_secret: Option<String> = None,
        /// The key of that Secret holding the token (default `token`).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub token_key: Option<String> = None,
        /// The cluster discovered hubs run on (the one hubwatch runs in), as `hubs[].cluster` names it.
        #[schemars(with = "PlainName")]
        pub cluster: String = "local".to_string(),
        /// Hosts a hub's URL annotation may name besides its namespace's Ingress hosts (`*.example.org`).
        pub allowed_hosts: Vec<String> = Vec::new(),
        /// How often to look again.
        #[serde(with = "Span")]
        pub every: Duration = secs(300),
        #[serde(skip)]
        pub token: DiscoveryToken = DiscoveryToken::default(),
        /// The probe settings of discovered hubs (`defaults.probes`).
        #[serde(skip)]
        pub probes: ProbeSettings = ProbeSettings::default(),
    }
}

/// hubwatch's token for a discovered hub.
#[derive(Debug, Clone)]
pub enum DiscoveryToken {
    /// A Secret of hubwatch's own in each hub's namespace (read by name: RBAC grants exactly that name).
    Secret { name: String, key: String },
    /// One token for every discovered hub, held by hubwatch.
    Held(Secret),
}

impl Default for DiscoveryToken {
    fn default() -> Self {
        DiscoveryToken::Secret { name: "hubwatch".into(), key: "token".into() }
    }
}

section! {
    /// Timings follow client-go's leader election; the Lease and the state's Secret are in `namespace`.
    pub struct HaConfig {
        pub enabled: bool = true,
        /// Default: POD_NAMESPACE (the chart sets it).
        pub namespace: String = String::new(),
        pub lease: String = "hubwatch-leader".into(),
        /// The Secret the leader mirrors incidents, timelines and unsent events into.
        pub state_secret: String = "hubwatch-state".into(),
        /// How long a standby waits, after it last saw the lease change, before it takes over.
        #[serde(with = "Span")]
        pub lease_duration: Duration = secs(15),
        /// The leader stops everything when no renewal succeeded for this long (< lease_duration).
        #[serde(with = "Span")]
        pub renew_deadline: Duration = secs(10),
        /// How often the leader renews and a standby looks again.
        #[serde(with = "Span")]
        pub retry_period: Duration = secs(2),
        /// `kubernetes.call_timeout`.
        #[serde(skip)]
        pub call_timeout: Duration = Duration::ZERO,
        /// This replica's name in the Lease (HOSTNAME, the pod's name).
        #[serde(skip)]
        pub identity: String = String::new(),
    }
}

/// `defaults.probes`: every hub's probe settings unless the hub says otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Written over the built-in settings, key by key.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schemars(with = "ProbeSettings")]
    pub probes: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// It is in metric labels, keys and URLs.
    #[schemars(with = "PlainName")]
    pub name: HubName,
    /// The hub's public URL.
    pub url: Url,
    /// The cluster it runs on (named like a hub): hubs of one cluster failing together page once
    /// (`incidents.fold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<PlainName>")]
    pub cluster: Option<String>,
    /// For diagnostics, real-user signals and change events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A JupyterHub service token with the role in docs/kubernetes.md.
    #[serde(default)]
    pub token: SecretRef,
    /// Probe users (at least two; three with a kept server).
    pub users: Vec<String>,
    #[serde(default)]
    pub login: LoginMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dask_gateway: Option<DaskGatewayConfig>,
    /// Server options users choose (a GPU profile, a large node, an image), each with probe users of its own
    /// who start servers with its `user_options` (and run the kernel and home probes on them). They add to
    /// the hub's users for the threshold; an incident of theirs names the profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ProfileConfig>,
    /// The first-login check (opt-in): every `probes.first_login.every` (a day), a fresh user
    /// `hubwatch-first-<random>` is created, gets a token, starts a server, saves a file in their home, stops
    /// it and is deleted. A failure is a support ticket naming the stage, never a page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_login: Option<FirstLoginConfig>,
    /// The BinderHub that launches servers on this hub (`probes.binderhub` says how often).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binderhub: Option<BinderHubConfig>,
    /// Written over `defaults.probes` for this hub, key by key; the settings in force once validated.
    #[serde(default, rename = "probes", skip_serializing_if = "Value::is_null")]
    #[schemars(with = "ProbeSettings")]
    pub probe_overrides: Value,
    /// What the kernel probe runs, in order, on one kernel (default `5 * 4` giving `20`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cells: Option<Vec<KernelCell>>,
    /// Keep the last probe user's server running and check it this often (default every 1m, timeout 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<Schedule>,
    /// The hub's own routing key, severity and priority (and per incident kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagerduty: Option<HubPaging>,
    /// The probe settings in force (defaults, overrides, kernel cells).
    #[serde(skip)]
    pub probes: ProbeSettings,
}

impl HubConfig {
    /// A hub found rather than configured (discovery), with the token already read and `probes` in force.
    pub fn found(name: &str, url: Url, token: Secret, users: Vec<String>, probes: ProbeSettings) -> Self {
        HubConfig {
            name: HubName::new(name),
            url,
            cluster: None,
            namespace: None,
            token: SecretRef::holding(token),
            users,
            login: LoginMethod::Token,
            dask_gateway: None,
            profiles: Vec::new(),
            first_login: None,
            binderhub: None,
            probe_overrides: Value::Null,
            kernel_cells: None,
            sentinel: None,
            pagerduty: None,
            probes,
        }
    }

    /// Every probe user: the hub's, then each profile's.
    pub fn probe_users(&self) -> impl Iterator<Item = &str> {
        let profiles = self.profiles.iter().flat_map(|p| p.users.iter());
        self.users.iter().chain(profiles).map(String::as_str)
    }

    /// Whether hubwatch itself stops `user`'s servers as a matter of course: every probe user's but the kept
    /// server's (rounds stop theirs), and the first-login check's fresh users. Their servers going away is
    /// never a lost session.
    pub fn stops_own_servers(&self, user: &str) -> bool {
        (self.probe_users().any(|u| u == user) && self.sentinel_user() != Some(user)) || user.starts_with(FRESH_PREFIX)
    }

    /// Whether `user` probes `capability`: a profile's users only start its servers and use them.
    /// The first-login check runs once per hub: in the first probe user's lane.
    pub fn user_probes(&self, user: &str, capability: Capability) -> bool {
        match (self.profile_of(user), capability) {
            (Some(_), capability) => matches!(capability, Capability::Server | Capability::Kernel | Capability::Home),
            (None, Capability::FirstLogin) => {
                self.first_login.is_some() && self.users.first().is_some_and(|u| u == user)
            }
            (None, _) => true,
        }
    }

    /// The profile `user` probes, if it is a profile's probe user.
    pub fn profile_of(&self, user: &str) -> Option<&ProfileConfig> {
        self.profiles.iter().find(|p| p.users.iter().any(|u| u == user))
    }

    /// The probe user whose server is kept running (the last one), when the hub has a kept server.
    pub fn sentinel_user(&self) -> Option<&str> {
        self.sentinel.and(self.users.last().map(String::as_str))
    }

    /// What is probed on this hub: every capability, Dask Gateway only with a gateway, Binder only with a
    /// BinderHub.
    pub fn capabilities(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| match c {
                Capability::DaskGateway => self.dask_gateway.is_some(),
                Capability::Binder => self.binderhub.is_some(),
                Capability::FirstLogin => self.first_login.is_some(),
                Capability::Monitor => false,
                _ => true,
            })
            .collect()
    }

    /// The incident kinds its capabilities can make (its metrics and tickets exist for these only).
    pub fn kinds(&self) -> Vec<IncidentKind> {
        let capabilities = self.capabilities();
        IncidentKind::ALL.into_iter().filter(|k| k.capabilities().iter().any(|c| capabilities.contains(c))).collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum LoginMethod {
    /// hubwatch's service token mints a short-lived token per probe user.
    #[default]
    Token,
    /// The browser flow: the login form with its `_xsrf` token, posted with the probe users' password.
    Form {
        #[serde(default)]
        password: SecretRef,
    },
    /// The token flow, and the identity provider: /hub/oauth_login must reach its authorize page.
    #[serde(rename = "oauth")]
    OAuth {
        /// The origins (`https://github.com`) the hub may send the check to; empty: any https origin at a
        /// public address (never loopback, link-local, private or cluster-internal).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        identity_providers: Vec<Url>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaskGatewayConfig {
    pub url: Url,
    /// Sent with every cluster created (the gateway's cluster options).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub cluster_options: Map<String, Value>,
    /// Also try the gateway from inside a user server, as users do: on a server round when the Dask probe is
    /// due, the server's kernel runs `Gateway()` with the server's own settings, creates a cluster, connects
    /// a client to its scheduler (`gateway://` through the gateway's TLS proxy), computes a small sum and shuts
    /// the cluster down (stage `connect_from_server`, the exception as the reason). A NetworkPolicy that
    /// blocks user servers from the scheduler leaves the probe from hubwatch's pod green; this one fails.
    #[serde(default)]
    pub from_server: bool,
}

/// Another hubwatch instance, watched.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// How its incident is named (like a hub), e.g. the cluster's name.
    #[schemars(with = "PlainName")]
    pub name: HubName,
    /// Its metrics listener: `GET {url}healthz` must answer 200.
    pub url: Url,
    /// How long it may fail before it is an incident.
    #[serde(default = "peer_after", with = "Span")]
    pub after: Duration,
}

fn peer_after() -> Duration {
    secs(180)
}

/// The first-login check's fresh users' names start with this (the start-up clean-up looks for it).
pub const FRESH_PREFIX: &str = "hubwatch-first-";

/// The first-login check's own credentials.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstLoginConfig {
    /// A token of a service of its own whose role has `admin:users`, `admin:servers`, `tokens` and
    /// `access:servers` (the users it makes have random names, so no scope can name them): close to an
    /// admin's, which is why the check is opt-in and its token is not the hub token.
    pub token: SecretRef,
}

/// One server option users choose, probed by users of its own.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Short, as users know it: `gpu`, `large`, `r-image`.
    #[schemars(with = "PlainName")]
    pub name: String,
    /// Sent with every spawn of this profile (KubeSpawner's `{"profile": "gpu"}`, an image choice).
    pub user_options: Map<String, Value>,
    /// Its probe users (one or more; not the hub's own, nor another profile's).
    pub users: Vec<String>,
}

/// A BinderHub that launches servers on the hub: each probe user's round checks its `/health`, asks it to
/// build and launch `repo` at `ref` (`GET /build/{repo}/{ref}`, an event stream), reaches the launched server
/// with the token it returns, and shuts it down.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BinderHubConfig {
    pub url: Url,
    /// The provider and repository, as in a Binder URL: `gh/binder-examples/requirements`.
    #[schemars(regex(pattern = r"^[a-z]+/[^\s]+[^/\s]$"), extend("x-form" = "a provider and a repository, like gh/binder-examples/requirements"))]
    pub repo: String,
    /// Pin it to a commit: its image is cached, so each round is a launch only (seconds, no build).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// A rarer real build: a branch that something commits to (a scheduled CI job pushing a timestamp), so
    /// that the ref resolves to a new commit each time; every `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BinderBuild>,
    /// Sent as `Authorization: token …` when the BinderHub needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BinderBuild {
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(with = "Span")]
    #[schemars(with = "Span")]
    pub every: Duration,
}

/// A configuration that failed to load or validate. Its `Display` is what `hubwatch` prints before exiting 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Unreadable { file: String, source: std::io::Error },
    #[error("{file}: not valid YAML: {message}")]
    Syntax { file: String, message: String },
    #[error("{}", render_problems(.file, .problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

/// What is wrong at one key path, and where the file has it (line and column, when the parser gives them).
#[derive(Debug)]
pub struct Problem {
    pub key: String,
    pub at: Option<(u64, u64)>,
    pub problem: String,
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let plural = if problems.len() == 1 { "" } else { "s" };
    let mut out = format!("{file}: invalid configuration ({} problem{plural})", problems.len());
    for Problem { key, at, problem } in problems {
        let at = at.map(|(line, column)| format!(":{line}:{column}")).unwrap_or_default();
        out.push_str(&format!("\n  {file}{at}: {key}: {problem}"));
    }
    out
}

impl Config {
    /// Reads and validates `path`, resolving secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Unreadable { file: path.display().to_string(), source })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Validates YAML `text` that was read from `path` (for messages and relative files): its shape against
    /// the schema, then the rules across keys, each step reporting every problem it finds.
    pub fn parse(text: &str, path: &Path, env: EnvLookup) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let invalid = |problems: Vec<(String, String)>| {
            // Where each key is written: read again with positions only for a file that has problems.
            let located: Option<crate::schema_check::Located> = serde_saphyr::from_str(text).ok();
            let at = |key: &str| located.as_ref().and_then(|tree| tree.find(key));
            let mut problems: Vec<_> =
                problems.into_iter().map(|(key, problem)| Problem { at: at(&key), key, problem }).collect();
            // In the file's order, as an editor shows them.
            problems.sort_by_key(|p| p.at.unwrap_or((u64::MAX, 0)));
            ConfigError::Invalid { file: file.clone(), problems }
        };
        let tree: Value = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Syntax { file: file.clone(), message: e.to_string() })?;
        if tree.is_null() {
            return Err(invalid(vec![("(top level)".into(), "the file is empty".into())]));
        }
        let checked = crate::schema_check::against(&schema(), &tree, MOVED);
        // What has the schema's shape is still checked across keys: every problem at once. A value that cannot
        // be read is left out for that, and nothing is said twice of one key.
        let hubs_given = tree.get("hubs").is_some();
        let mut pruned = tree;
        checked.unreadable.iter().for_each(|at| crate::schema_check::remove(&mut pruned, at));
        let mut problems = checked.problems;
        let config_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if let Ok(mut config) = serde_json::from_value::<Config>(pruned) {
            config.source = path.to_path_buf();
            match validate::validate(config, &config_dir, env, hubs_given) {
                Ok(config) if problems.is_empty() => return Ok(config),
                Ok(_) => {}
                Err(more) => {
                    let said = |at: &str| problems.iter().any(|(p, _)| at == p || at.starts_with(&format!("{p}.")));
                    let new: Vec<_> = more.into_iter().filter(|(at, _)| !said(at)).collect();
                    problems.extend(new);
                }
            }
        }
        if problems.is_empty() {
            problems.push(("(top level)".into(), "not a configuration hubwatch can read".into()));
        }
        Err(invalid(problems))
    }

    pub fn hub(&self, name: &str) -> Option<&HubConfig> {
        self.hubs.iter().find(|h| h.name == name).map(|h| &**h)
    }

    /// Where people reach hubwatch's pages.
    pub fn public_url(&self) -> Url {
        let listen = Url::parse(&format!("http://{}/", self.listen)).expect("an address makes a URL");
        self.public_url.clone().unwrap_or(listen)
    }

    /// Every secret value the config holds, for the redactor (web users' hashes too: nothing to show).
    pub fn secrets(&self) -> Vec<&str> {
        let mut secrets: Vec<&str> = Vec::new();
        for hub in &self.hubs {
            secrets.push(hub.token.expose());
            if let LoginMethod::Form { password } = &hub.login {
                secrets.push(password.expose());
            }
            secrets.extend(hub.pagerduty.iter().flat_map(HubPaging::routing_keys).map(|s| s.expose()));
            secrets.extend(hub.binderhub.iter().filter_map(|b| b.token.as_ref()).map(|s| s.expose()));
            secrets.extend(hub.first_login.iter().map(|f| f.token.expose()));
        }
        if let Some(DiscoveryToken::Held(token)) = self.kubernetes.discovery.as_ref().map(|d| &d.token) {
            secrets.push(token.expose());
        }
        secrets.extend(self.webhook.iter().flat_map(|w| w.headers.values()).map(|s| s.expose()));
        secrets.extend(self.heartbeat.iter().flat_map(|h| h.headers.values()).map(|s| s.expose()));
        if let Some(pagerduty) = &self.pagerduty {
            secrets.push(pagerduty.routing_key.expose());
            secrets.extend(pagerduty.api_token.iter().map(|s| s.expose()));
        }
        secrets.extend(self.web.basic_auth_users.values().map(Hash::text));
        secrets.retain(|s| !s.is_empty());
        secrets
    }

    /// The configuration with every default filled in (`hubwatch config defaults`).
    pub fn defaults_document() -> Value {
        let mut config: Config = serde_json::from_value(serde_json::json!({})).expect("every key has a default");
        config.defaults.probes = serde_json::to_value(ProbeSettings::default()).expect("probe settings serialize");
        config.pagerduty = Some(PagerDutyConfig::default());
        config.kubernetes.discovery = Some(DiscoveryConfig::default());
        config.high_availability = Some(HaConfig::default());
        serde_json::to_value(&config).expect("the configuration serializes")
    }
}

/// The JSON Schema of the configuration file (draft 7, as Helm validates values with it).
pub fn schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    generator.into_root_schema_for::<Config>().to_value()
}
