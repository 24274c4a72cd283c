//! `defaults.probes` and a hub's `probes`: each capability's schedule and what it does, and a hub's
//! `kernel_cells` (the code its users really run).

use super::Validator;
use super::walk::{Table, join, object, positive_integer, string, type_name};
use crate::domain::Capability;
use regex::Regex;
use serde_json::{Map, Value};
use std::time::Duration;

/// Reads one probe's keys from its table into the settings; false if any is invalid.
type ProbeReader = fn(&mut Validator, &mut Table, &mut ProbeSettings) -> bool;
const PROBES_KEYS: &[&str] = &["login", "server", "kernel", "home", "dask_gateway"];
pub(super) const SCHEDULE_KEYS: &[&str] = &["every", "timeout"];
const SERVER_PROBE_KEYS: &[&str] = &["every", "timeout", "user_options"];
const KERNEL_PROBE_KEYS: &[&str] = &["every", "timeout", "kernel_name", "code", "expect"];
const DASK_PROBE_KEYS: &[&str] = &["every", "timeout", "workers"];
const KERNEL_CELL_KEYS: &[&str] = &["code", "expect", "expect_regex"];

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

impl Validator<'_> {
    pub(super) fn defaults(&mut self, value: &Value) -> Option<ProbeSettings> {
        let mut table = Table::new(value, "defaults", &["probes"], self.problems)?;
        let settings = match table.get("probes") {
            None => Some(ProbeSettings::default()),
            Some(v) => self.probe_settings(v, "defaults.probes", &ProbeSettings::default()),
        };
        table.finish(self.problems);
        settings
    }

    /// Probe settings at `path`, each key overriding `base` (the defaults, for a hub).
    pub(super) fn probe_settings(&mut self, value: &Value, path: &str, base: &ProbeSettings) -> Option<ProbeSettings> {
        let mut table = Table::new(value, path, PROBES_KEYS, self.problems)?;
        let mut settings = base.clone();
        let mut ok = true;
        let probes: [(&str, &[&str], ProbeReader); 5] = [
            ("login", SCHEDULE_KEYS, |v, t, s| v.schedule(t, &mut s.login)),
            ("home", SCHEDULE_KEYS, |v, t, s| v.schedule(t, &mut s.home)),
            ("server", SERVER_PROBE_KEYS, |v, t, s| v.server_probe(t, s)),
            ("kernel", KERNEL_PROBE_KEYS, |v, t, s| v.kernel_probe(t, s)),
            ("dask_gateway", DASK_PROBE_KEYS, |v, t, s| v.dask_probe(t, s)),
        ];
        for (key, keys, read) in probes {
            let Some(v) = table.get(key) else { continue };
            match Table::new(v, &join(path, key), keys, self.problems) {
                Some(mut t) => {
                    ok &= read(self, &mut t, &mut settings);
                    t.finish(self.problems);
                }
                None => ok = false,
            }
        }
        table.finish(self.problems);
        ok.then_some(settings)
    }

    fn server_probe(&mut self, t: &mut Table, settings: &mut ProbeSettings) -> bool {
        let mut ok = self.schedule(t, &mut settings.server.schedule);
        if let Some(v) = t.get("user_options") {
            match object(v, &t.key_path("user_options"), self.problems) {
                Some(map) => settings.server.user_options = map,
                None => ok = false,
            }
        }
        ok
    }

    fn kernel_probe(&mut self, t: &mut Table, settings: &mut ProbeSettings) -> bool {
        let mut ok = self.schedule(t, &mut settings.kernel.schedule);
        let kernel = &mut settings.kernel;
        if let Some(v) = t.get("kernel_name") {
            kernel.kernel_name = string(v, &t.key_path("kernel_name"), self.problems);
            ok &= kernel.kernel_name.is_some();
        }
        // `code` and `expect` set the one cell of the default list.
        let (code, expect) = (t.get("code"), t.get("expect"));
        if code.is_some() || expect.is_some() {
            let mut text = |value: Option<&Value>, key: &str, default: String| match value {
                None => Some(default),
                Some(v) => string(v, &t.key_path(key), self.problems),
            };
            let (old_code, old_expect) = match kernel.cells.first() {
                Some(KernelCell { code, expect: Expect::Text(text) }) => (code.clone(), text.clone()),
                _ => (String::new(), String::new()),
            };
            match (text(code, "code", old_code), text(expect, "expect", old_expect)) {
                (Some(code), Some(expect)) => kernel.cells = vec![KernelCell { code, expect: Expect::Text(expect) }],
                _ => ok = false,
            }
        }
        ok
    }

    /// A hub's `kernel_cells`: the code its users really run, each cell with what it must give.
    pub(super) fn kernel_cells(&mut self, value: &Value, path: &str) -> Option<Vec<KernelCell>> {
        let Value::Array(items) = value else {
            self.problems.add(path, format!("expected a list of cells, found {}", type_name(value)));
            return None;
        };
        if items.is_empty() {
            self.problems.add(path, "at least one cell is needed (leave kernel_cells out for the default 5 * 4)");
            return None;
        }
        let cells: Vec<Option<KernelCell>> =
            items.iter().enumerate().map(|(i, item)| self.kernel_cell(item, &format!("{path}[{i}]"))).collect();
        cells.into_iter().collect()
    }

    fn kernel_cell(&mut self, value: &Value, path: &str) -> Option<KernelCell> {
        let mut table = Table::new(value, path, KERNEL_CELL_KEYS, self.problems)?;
        let code = table.required("code", self.problems).and_then(|v| string(v, &join(path, "code"), self.problems));
        let expect = match (table.get("expect"), table.get("expect_regex")) {
            (Some(_), Some(_)) => {
                self.problems.add(path, "give either expect or expect_regex, not both");
                None
            }
            (Some(v), None) => string(v, &join(path, "expect"), self.problems).map(Expect::Text),
            (None, Some(v)) => {
                let text = string(v, &join(path, "expect_regex"), self.problems)?;
                match Regex::new(&text) {
                    Ok(pattern) => Some(Expect::Matches(pattern)),
                    Err(e) => {
                        self.problems.add(&join(path, "expect_regex"), format!("not a regular expression: {e}"));
                        None
                    }
                }
            }
            (None, None) => Some(Expect::Anything),
        };
        table.finish(self.problems);
        Some(KernelCell { code: code?, expect: expect? })
    }

    fn dask_probe(&mut self, t: &mut Table, settings: &mut ProbeSettings) -> bool {
        let mut ok = self.schedule(t, &mut settings.dask_gateway.schedule);
        if let Some(v) = t.get("workers") {
            match positive_integer(v, &t.key_path("workers"), 100, self.problems) {
                Some(n) => settings.dask_gateway.workers = n as u32,
                None => ok = false,
            }
        }
        ok
    }

    /// Reads `every` and `timeout` from `table` into `schedule`; false if either is invalid.
    fn schedule(&mut self, table: &mut Table, schedule: &mut Schedule) -> bool {
        self.durations(table, [("every", &mut schedule.every), ("timeout", &mut schedule.timeout)])
    }
}
