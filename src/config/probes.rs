//! What each capability's probe does and how often: the settings in force ([`ProbeSettings`]), and the
//! overrides `defaults.probes` and a hub's `probes` write over them ([`ProbeOverrides`]).

use super::Span;
use crate::domain::Capability;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub every: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub login: Schedule,
    pub server: ServerProbeConfig,
    pub kernel: KernelProbeConfig,
    /// Saving to the home directory, on a server a round (or the kept server) has.
    pub home: Schedule,
    pub dask_gateway: DaskProbeConfig,
}

#[derive(Debug, Clone)]
pub struct ServerProbeConfig {
    pub schedule: Schedule,
    pub user_options: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct KernelProbeConfig {
    pub schedule: Schedule,
    /// None: the server's default kernel.
    pub kernel_name: Option<String>,
    /// What the probe runs, in order, on one kernel (default: `5 * 4`, expecting `20`).
    pub cells: Vec<KernelCell>,
}

/// One cell the kernel probe runs, and what it must give.
#[derive(Debug, Clone)]
pub struct KernelCell {
    pub code: String,
    pub expect: Expect,
}

/// What a cell's `text/plain` result (or, without one, its printed output) must be.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Anything, as long as the cell raises nothing.
    Anything,
    /// Exactly this text (surrounding whitespace aside).
    Text(String),
    /// Text this pattern finds.
    Matches(Regex),
}

impl Expect {
    pub fn accepts(&self, got: &str) -> bool {
        match self {
            Expect::Anything => true,
            Expect::Text(text) => got.trim() == text.trim(),
            Expect::Matches(pattern) => pattern.is_match(got),
        }
    }

    /// "\"20\"", "text matching /^1\./": for a failure's reason.
    pub fn describe(&self) -> String {
        match self {
            Expect::Anything => "anything".to_string(),
            Expect::Text(text) => format!("{:?}", text.trim()),
            Expect::Matches(pattern) => format!("text matching /{}/", pattern.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DaskProbeConfig {
    pub schedule: Schedule,
    pub workers: u32,
}

impl ProbeSettings {
    pub fn schedule(&self, capability: Capability) -> Schedule {
        match capability {
            Capability::Login => self.login,
            Capability::Server => self.server.schedule,
            Capability::Kernel => self.kernel.schedule,
            Capability::Home => self.home,
            Capability::DaskGateway => self.dask_gateway.schedule,
        }
    }
}

impl Default for ProbeSettings {
    fn default() -> Self {
        let schedule =
            |every, timeout| Schedule { every: Duration::from_secs(every), timeout: Duration::from_secs(timeout) };
        ProbeSettings {
            login: schedule(60, 30),
            server: ServerProbeConfig { schedule: schedule(600, 600), user_options: Map::new() },
            kernel: KernelProbeConfig {
                schedule: schedule(600, 120),
                kernel_name: None,
                cells: vec![KernelCell { code: "5 * 4".into(), expect: Expect::Text("20".into()) }],
            },
            home: schedule(600, 60),
            dask_gateway: DaskProbeConfig { schedule: schedule(1800, 600), workers: 1 },
        }
    }
}

/// serde for optional durations.
mod span_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::super::span::render(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// `every` and `timeout`, each over what is in force.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// How often each probe user's round runs.
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub every: Option<Duration>,
    /// The probe's own deadline (clean-up runs after it anyway).
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub timeout: Option<Duration>,
}

impl ScheduleSpec {
    pub fn over(&self, base: Schedule) -> Schedule {
        Schedule { every: self.every.unwrap_or(base.every), timeout: self.timeout.unwrap_or(base.timeout) }
    }

    fn of(schedule: Schedule) -> Self {
        ScheduleSpec { every: Some(schedule.every), timeout: Some(schedule.timeout) }
    }
}

/// Probe settings over the defaults (`defaults.probes`) or over those (a hub's `probes`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<ScheduleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelSpec>,
    /// Writing, reading back and deleting a small file in the probe user's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<ScheduleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dask_gateway: Option<DaskSpec>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub every: Option<Duration>,
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub timeout: Option<Duration>,
    /// Sent with every spawn (a profile, an image): what the hub's spawner takes as user_options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_options: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub every: Option<Duration>,
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub timeout: Option<Duration>,
    /// Default: the server's default kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_name: Option<String>,
    /// The one cell's code (a hub's `kernel_cells` gives several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What that cell must give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaskSpec {
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub every: Option<Duration>,
    #[serde(default, with = "span_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Span>")]
    pub timeout: Option<Duration>,
    /// Workers the probe scales its cluster to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub workers: Option<u32>,
}

/// One cell of a hub's `kernel_cells`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelCellSpec {
    pub code: String,
    /// Its result must be exactly this (else anything, as long as it raises nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Or a regular expression its result must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_regex: Option<String>,
}

impl ProbeOverrides {
    /// `base` with these overrides written over it.
    pub fn over(&self, base: &ProbeSettings) -> ProbeSettings {
        let mut settings = base.clone();
        let schedule =
            |every: Option<Duration>, timeout: Option<Duration>, base| ScheduleSpec { every, timeout }.over(base);
        if let Some(login) = &self.login {
            settings.login = login.over(base.login);
        }
        if let Some(home) = &self.home {
            settings.home = home.over(base.home);
        }
        if let Some(server) = &self.server {
            settings.server.schedule = schedule(server.every, server.timeout, base.server.schedule);
            if let Some(options) = &server.user_options {
                settings.server.user_options = options.clone();
            }
        }
        if let Some(kernel) = &self.kernel {
            let kernel_settings = &mut settings.kernel;
            kernel_settings.schedule = schedule(kernel.every, kernel.timeout, base.kernel.schedule);
            kernel_settings.kernel_name = kernel.kernel_name.clone().or(base.kernel.kernel_name.clone());
            // `code` and `expect` set the one cell of the default list.
            if kernel.code.is_some() || kernel.expect.is_some() {
                let (code, expect) = match base.kernel.cells.first() {
                    Some(KernelCell { code, expect: Expect::Text(text) }) => (code.clone(), text.clone()),
                    _ => (String::new(), String::new()),
                };
                let code = kernel.code.clone().unwrap_or(code);
                let expect = Expect::Text(kernel.expect.clone().unwrap_or(expect));
                kernel_settings.cells = vec![KernelCell { code, expect }];
            }
        }
        if let Some(dask) = &self.dask_gateway {
            settings.dask_gateway.schedule = schedule(dask.every, dask.timeout, base.dask_gateway.schedule);
            settings.dask_gateway.workers = dask.workers.unwrap_or(base.dask_gateway.workers);
        }
        settings
    }
}

/// Every setting written out (`hubwatch config defaults`).
impl From<&ProbeSettings> for ProbeOverrides {
    fn from(s: &ProbeSettings) -> Self {
        let (server, kernel, dask) = (s.server.schedule, s.kernel.schedule, s.dask_gateway.schedule);
        let cell = s.kernel.cells.first();
        ProbeOverrides {
            login: Some(ScheduleSpec::of(s.login)),
            server: Some(ServerSpec {
                every: Some(server.every),
                timeout: Some(server.timeout),
                user_options: Some(s.server.user_options.clone()),
            }),
            kernel: Some(KernelSpec {
                every: Some(kernel.every),
                timeout: Some(kernel.timeout),
                kernel_name: s.kernel.kernel_name.clone(),
                code: cell.map(|c| c.code.clone()),
                expect: cell.and_then(|c| match &c.expect {
                    Expect::Text(text) => Some(text.clone()),
                    _ => None,
                }),
            }),
            home: Some(ScheduleSpec::of(s.home)),
            dask_gateway: Some(DaskSpec {
                every: Some(dask.every),
                timeout: Some(dask.timeout),
                workers: Some(s.dask_gateway.workers),
            }),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        write!(f, "every {}, timeout {}", show(self.every), show(self.timeout))
    }
}
