//! The four families with a series per hub and capability — probe runs by result, failures by stage, the
//! latest duration and the last success — kept as plain numbers and written straight into the text format
//! at each scrape. The prometheus crate keeps each series as an object with its own copy of its labels and
//! its family's description (about 400 bytes): at 5,000 hubs these four were a quarter of the heap, and
//! updating them hashed every label of every probe's outcome four times.

use crate::domain::lookup::{NameMap, named, paired};
use crate::domain::{Capability, Stage};
use crate::sync::lock;
use std::fmt::Write as _;
use std::sync::Mutex;

/// A probe run's result, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Ok,
    Slow,
    Failed,
    MonitorFault,
    Blocked,
}

impl RunResult {
    const ALL: [RunResult; 5] =
        [RunResult::Ok, RunResult::Slow, RunResult::Failed, RunResult::MonitorFault, RunResult::Blocked];

    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Slow => "slow",
            RunResult::Failed => "failed",
            RunResult::MonitorFault => "monitor_fault",
            RunResult::Blocked => "blocked",
        }
    }
}

/// One hub's capability: what its probes did so far.
#[derive(Debug, Default)]
struct Tally {
    runs: [u64; RunResult::ALL.len()],
    failures: Vec<(Stage, u64)>,
    last_duration: Option<f64>,
    last_success: Option<f64>,
}

/// One probe run, as the tallies count it.
pub struct Run<'a> {
    pub hub: &'a str,
    pub capability: Capability,
    pub result: RunResult,
    /// The stage that failed, for a failed run.
    pub failed_at: Option<Stage>,
    /// For a success: how long it took, and when it ended (Unix seconds).
    pub success: Option<(f64, f64)>,
}

#[derive(Debug, Default)]
pub struct ProbeTallies {
    hubs: Mutex<NameMap<String, Vec<(Capability, Tally)>>>,
}

/// A family's name, help and type (its `# HELP` and `# TYPE` lines).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

const RUNS: Family = Family {
    name: "hubwatch_probe_runs_total",
    help: "Probe attempts by hub, capability and result (ok, slow, failed, monitor_fault, blocked)",
    kind: "counter",
};
const FAILURES: Family = Family {
    name: "hubwatch_probe_failures_total",
    help: "Failed probe attempts by hub, capability and the stage that failed",
    kind: "counter",
};
const LAST_DURATION: Family = Family {
    name: "hubwatch_probe_last_duration_seconds",
    help: "How long the latest successful probe of a capability on a hub took",
    kind: "gauge",
};
const LAST_SUCCESS: Family = Family {
    name: "hubwatch_probe_last_success_timestamp_seconds",
    help: "Unix time of the last successful probe of a capability, by any probe user",
    kind: "gauge",
};

impl ProbeTallies {
    /// Counts one run (a hub's name is copied only the first time it is seen).
    pub fn count(&self, run: &Run) {
        let mut hubs = lock(&self.hubs);
        let tally = paired(named(&mut hubs, run.hub), run.capability);
        let result = RunResult::ALL.iter().position(|r| *r == run.result).expect("every result is in ALL");
        tally.runs[result] += 1;
        if let Some(stage) = run.failed_at {
            match tally.failures.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, n)) => *n += 1,
                None => tally.failures.push((stage, 1)),
            }
        }
        if let Some((took, ended)) = run.success {
            (tally.last_duration, tally.last_success) = (Some(took), Some(ended));
        }
    }

    /// The four families in the text exposition format, hubs in name order.
    pub fn render(&self, out: &mut String) {
        let hubs = lock(&self.hubs);
        let mut names: Vec<&String> = hubs.keys().collect();
        names.sort();
        let each = |out: &mut String, family: &Family, series: &dyn Fn(&mut String, &str, Capability, &Tally)| {
            let start = out.len();
            let _ = write!(out, "# HELP {} {}\n# TYPE {} {}\n", family.name, family.help, family.name, family.kind);
            let header = out.len();
            for name in &names {
                for (capability, tally) in &hubs[*name] {
                    series(out, name, *capability, tally);
                }
            }
            if out.len() == header {
                out.truncate(start); // no series: no family, as the prometheus crate renders it
            }
        };
        each(out, &RUNS, &|out, hub, capability, tally| {
            for (result, n) in RunResult::ALL.iter().zip(tally.runs).filter(|(_, n)| *n > 0) {
                sample(
                    out,
                    RUNS.name,
                    &[("capability", capability.as_str()), ("hub", hub), ("result", result.as_str())],
                    &n.to_string(),
                );
            }
        });
        each(out, &FAILURES, &|out, hub, capability, tally| {
            for (stage, n) in &tally.failures {
                sample(
                    out,
                    FAILURES.name,
                    &[("capability", capability.as_str()), ("hub", hub), ("stage", stage.as_str())],
                    &n.to_string(),
                );
            }
        });
        each(out, &LAST_DURATION, &|out, hub, capability, tally| {
            if let Some(seconds) = tally.last_duration {
                sample(out, LAST_DURATION.name, &[("capability", capability.as_str()), ("hub", hub)], &float(seconds));
            }
        });
        each(out, &LAST_SUCCESS, &|out, hub, capability, tally| {
            if let Some(at) = tally.last_success {
                sample(out, LAST_SUCCESS.name, &[("capability", capability.as_str()), ("hub", hub)], &float(at));
            }
        });
    }
}

/// `name{label="value",…} value`, label values escaped as the text format requires.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    out.push('{');
    for (i, (label, text)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(label);
        out.push_str("=\"");
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(value);
    out.push('\n');
}

/// A float as the text format writes it.
fn float(value: f64) -> String {
    match value {
        v if v.is_nan() => "NaN".into(),
        v if v.is_infinite() && v > 0.0 => "+Inf".into(),
        v if v.is_infinite() => "-Inf".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_prometheus_reads_and_escapes_label_values() {
        let tallies = ProbeTallies::default();
        let run =
            |hub, result, failed_at, success| Run { hub, capability: Capability::Login, result, failed_at, success };
        tallies.count(&run("b", RunResult::Ok, None, Some((0.25, 1_800_000_000.5))));
        tallies.count(&run("b", RunResult::Ok, None, Some((0.5, 1_800_000_010.0))));
        tallies.count(&run("a\"x", RunResult::Failed, Some(Stage::WhoAmI), None));
        let mut text = String::new();
        tallies.render(&mut text);
        assert_eq!(
            text,
            "# HELP hubwatch_probe_runs_total Probe attempts by hub, capability and result (ok, slow, failed, monitor_fault, blocked)\n\
             # TYPE hubwatch_probe_runs_total counter\n\
             hubwatch_probe_runs_total{capability=\"login\",hub=\"a\\\"x\",result=\"failed\"} 1\n\
             hubwatch_probe_runs_total{capability=\"login\",hub=\"b\",result=\"ok\"} 2\n\
             # HELP hubwatch_probe_failures_total Failed probe attempts by hub, capability and the stage that failed\n\
             # TYPE hubwatch_probe_failures_total counter\n\
             hubwatch_probe_failures_total{capability=\"login\",hub=\"a\\\"x\",stage=\"whoami\"} 1\n\
             # HELP hubwatch_probe_last_duration_seconds How long the latest successful probe of a capability on a hub took\n\
             # TYPE hubwatch_probe_last_duration_seconds gauge\n\
             hubwatch_probe_last_duration_seconds{capability=\"login\",hub=\"b\"} 0.5\n\
             # HELP hubwatch_probe_last_success_timestamp_seconds Unix time of the last successful probe of a capability, by any probe user\n\
             # TYPE hubwatch_probe_last_success_timestamp_seconds gauge\n\
             hubwatch_probe_last_success_timestamp_seconds{capability=\"login\",hub=\"b\"} 1800000010\n"
        );
        let empty = ProbeTallies::default();
        let mut none = String::new();
        empty.render(&mut none);
        assert_eq!(none, "", "no series, no families");
    }
}
