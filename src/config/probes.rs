//! What each capability's probe does and how often. The built-in settings are [`ProbeSettings`]'s
//! defaults; `defaults.probes` and then a hub's `probes` are written over them key by key ([`merged`]),
//! so one type is the file's shape, the schema, the defaults and the settings in force.

use super::{Span, secs, section};
use crate::domain::Capability;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// How often each probe user's round runs.
    #[serde(with = "Span")]
    pub every: Duration,
    /// The probe's own deadline (clean-up runs after it anyway).
    #[serde(with = "Span")]
    pub timeout: Duration,
}

/// A kept server's schedule, unless it says otherwise.
impl Default for Schedule {
    fn default() -> Self {
        Schedule { every: secs(60), timeout: secs(30) }
    }
}

fn schedule(every: u64, timeout: u64) -> Schedule {
    Schedule { every: secs(every), timeout: secs(timeout) }
}

section! {
    pub struct ProbeSettings {
        pub login: Schedule = schedule(60, 30),
        pub server: ServerProbeConfig = ServerProbeConfig::default(),
        pub kernel: KernelProbeConfig = KernelProbeConfig::default(),
        /// Writing, reading back and deleting a small file in the probe user's home, on a server a round
        /// (or the kept server) has.
        pub home: Schedule = schedule(600, 60),
        pub dask_gateway: DaskProbeConfig = DaskProbeConfig::default(),
        /// Launching the hub's `binderhub` repository (a cached image: cheap).
        pub binderhub: Schedule = schedule(1800, 600),
        /// The first-login check (with a hub's `first_login`): a fresh user from creation to a saved file.
        pub first_login: Schedule = schedule(86400, 600),
    }
}

section! {
    pub struct ServerProbeConfig {
        #[serde(with = "Span")]
        pub every: Duration = secs(600),
        #[serde(with = "Span")]
        pub timeout: Duration = secs(600),
        /// A start whose progress stream says nothing new for this long fails at stage `progress` ("no
        /// progress for 3m; last: …") without waiting for `timeout`: a spawner that stopped watching the
        /// cluster, or a pod no node can take, ends here. The hub's keep-alives are not progress.
        #[serde(with = "Span")]
        pub stuck_after: Duration = secs(180),
        /// A start that succeeds but takes longer than this is `slow`: shown and counted, a support ticket
        /// when N or more users are slow, never a page.
        #[serde(with = "Span")]
        pub slow_after: Duration = secs(120),
        /// Sent with every spawn (a profile, an image): what the hub's spawner takes as user_options.
        #[serde(skip_serializing_if = "Map::is_empty")]
        pub user_options: Map<String, Value> = Map::new(),
    }
}

section! {
    pub struct KernelProbeConfig {
        #[serde(with = "Span")]
        pub every: Duration = secs(600),
        #[serde(with = "Span")]
        pub timeout: Duration = secs(120),
        /// Default: the server's default kernel.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub kernel_name: Option<String> = None,
        /// The one cell's code (a hub's `kernel_cells` gives several).
        pub code: String = "5 * 4".into(),
        /// What that cell must give.
        pub expect: String = "20".into(),
        /// What the probe runs, in order, on one kernel: the hub's `kernel_cells`, else `code` and `expect`.
        #[serde(skip)]
        pub cells: Vec<KernelCell> = Vec::new(),
    }
}

section! {
    pub struct DaskProbeConfig {
        #[serde(with = "Span")]
        pub every: Duration = secs(1800),
        #[serde(with = "Span")]
        pub timeout: Duration = secs(600),
        /// Workers the probe scales its cluster to.
        #[schemars(range(min = 1, max = 100))]
        pub workers: u32 = 1,
    }
}

/// One cell the kernel probe runs, and what its `text/plain` result (or, without one, its printed output)
/// must be: `expect`, text `expect_regex` finds, or anything as long as the cell raises nothing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelCell {
    pub code: String,
    /// Its result must be exactly this (surrounding whitespace aside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Or a regular expression its result must match.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "OptionalRegex")]
    pub expect_regex: Option<Regex>,
}

/// An optional regular expression, written as its text (its serde and its schema).
struct OptionalRegex;

impl OptionalRegex {
    fn serialize<S: Serializer>(pattern: &Option<Regex>, s: S) -> Result<S::Ok, S::Error> {
        pattern.as_ref().map(Regex::as_str).serialize(s)
    }

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| Regex::new(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

impl JsonSchema for OptionalRegex {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Regex".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "regex" })
    }
}

impl KernelCell {
    pub fn accepts(&self, got: &str) -> bool {
        let text = self.expect.as_ref().is_none_or(|text| got.trim() == text.trim());
        text && self.expect_regex.as_ref().is_none_or(|pattern| pattern.is_match(got))
    }

    /// "\"20\"", "text matching /^1\./", "anything": for a failure's reason.
    pub fn describe(&self) -> String {
        match (&self.expect, &self.expect_regex) {
            (Some(text), _) => format!("{:?}", text.trim()),
            (None, Some(pattern)) => format!("text matching /{}/", pattern.as_str()),
            (None, None) => "anything".to_string(),
        }
    }
}

impl ProbeSettings {
    pub fn schedule(&self, capability: Capability) -> Schedule {
        let (server, kernel, dask) = (&self.server, &self.kernel, &self.dask_gateway);
        match capability {
            Capability::Login => self.login,
            Capability::Server => Schedule { every: server.every, timeout: server.timeout },
            Capability::Kernel => Schedule { every: kernel.every, timeout: kernel.timeout },
            Capability::Home => self.home,
            Capability::DaskGateway => Schedule { every: dask.every, timeout: dask.timeout },
            Capability::Binder => self.binderhub,
            Capability::FirstLogin => self.first_login,
            // Peers are not probed by users: their checks have a schedule of their own.
            Capability::Monitor => self.login,
        }
    }
}

/// `base` with `over` (a `probes` mapping of the file) written over it: each key given replaces the one in
/// `base` (a `user_options` mapping as a whole).
pub fn merged(base: &ProbeSettings, over: &Value) -> Result<ProbeSettings, serde_json::Error> {
    let mut settings = serde_json::to_value(base)?;
    for (capability, keys) in over.as_object().into_iter().flatten() {
        for (key, value) in keys.as_object().into_iter().flatten() {
            settings[capability][key] = value.clone();
        }
    }
    serde_json::from_value(settings)
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        write!(f, "every {}, timeout {}", show(self.every), show(self.timeout))
    }
}
