//! Prometheus metrics (prefix `hubwatch_`). Labels carry hub names, capabilities, stages and results only:
//! never user names or URLs. Observers only: nothing decides from these.

use crate::domain::{ProbeOutcome, ProbeResult};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::time::UNIX_EPOCH;

/// Probe durations reach the server probe's 10 m timeout.
const DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
const LAG_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub struct Metrics {
    registry: Registry,
    probe_runs: IntCounterVec,
    probe_failures: IntCounterVec,
    probe_duration: HistogramVec,
    last_success: GaugeVec,
    pub probes_in_flight: IntGauge,
    pub schedule_lag: Histogram,
    pub cleanup_failures: IntCounterVec,
    hubs: IntGaugeVec,
    affected_users: IntGaugeVec,
    incidents_open: IntGaugeVec,
    support_tickets: IntGaugeVec,
    pagerduty_events: IntCounterVec,
    pub pagerduty_unsent: IntGauge,
    pub pagerduty_oldest_unsent_seconds: prometheus::Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let probe_runs = IntCounterVec::new(
            Opts::new(
                "hubwatch_probe_runs_total",
                "Probe attempts by hub, capability and result (ok, failed, monitor_fault, blocked)",
            ),
            &["hub", "capability", "result"],
        )
        .expect("valid metric");
        let probe_failures = IntCounterVec::new(
            Opts::new(
                "hubwatch_probe_failures_total",
                "Failed probe attempts by hub, capability and the stage that failed",
            ),
            &["hub", "capability", "stage"],
        )
        .expect("valid metric");
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "hubwatch_probe_duration_seconds",
                "How long a probe took (blocked attempts are not observed)",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["hub", "capability", "result"],
        )
        .expect("valid metric");
        let last_success = GaugeVec::new(
            Opts::new(
                "hubwatch_probe_last_success_timestamp_seconds",
                "Unix time of the last successful probe of a capability, by any probe user",
            ),
            &["hub", "capability"],
        )
        .expect("valid metric");
        let probes_in_flight =
            IntGauge::new("hubwatch_probes_in_flight", "Probe rounds running now").expect("valid metric");
        let schedule_lag = Histogram::with_opts(
            HistogramOpts::new("hubwatch_schedule_lag_seconds", "How late a probe round started against its due time")
                .buckets(LAG_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let cleanup_failures = IntCounterVec::new(
            Opts::new(
                "hubwatch_cleanup_failures_total",
                "Probe servers, kernels or clusters that could not be removed after a round",
            ),
            &["hub", "capability"],
        )
        .expect("valid metric");
        let hubs = IntGaugeVec::new(Opts::new("hubwatch_probe_users", "Probe users configured per hub"), &["hub"])
            .expect("valid metric");
        let by_kind =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["hub", "kind"]).expect("valid metric");
        let affected_users = by_kind(
            "hubwatch_affected_users",
            "Distinct users affected now (probe users and real users), by hub and incident kind",
        );
        let incidents_open = by_kind("hubwatch_incidents_open", "1 while an incident is open for the hub and kind");
        let support_tickets = by_kind(
            "hubwatch_support_tickets",
            "1 while some users are affected but fewer than the incident threshold",
        );
        let pagerduty_events = IntCounterVec::new(
            Opts::new(
                "hubwatch_pagerduty_events_total",
                "PagerDuty deliveries by action (trigger, resolve, change, note) and outcome (sent, rejected, rate_limited, failed, dry_run)",
            ),
            &["action", "outcome"],
        )
        .expect("valid metric");
        let pagerduty_unsent = IntGauge::new(
            "hubwatch_pagerduty_unsent_events",
            "PagerDuty events (pages, not status notes) queued and not yet accepted",
        )
        .expect("valid metric");
        let pagerduty_oldest_unsent_seconds = prometheus::Gauge::new(
            "hubwatch_pagerduty_oldest_unsent_seconds",
            "Age of the oldest PagerDuty event (page, not status note) not yet accepted (0 when none)",
        )
        .expect("valid metric");
        let build_info =
            IntGaugeVec::new(Opts::new("hubwatch_build_info", "Always 1; the version in a label"), &["version"])
                .expect("valid metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        for collector in [
            Box::new(probe_runs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(probe_failures.clone()),
            Box::new(probe_duration.clone()),
            Box::new(last_success.clone()),
            Box::new(probes_in_flight.clone()),
            Box::new(schedule_lag.clone()),
            Box::new(cleanup_failures.clone()),
            Box::new(hubs.clone()),
            Box::new(build_info),
            Box::new(affected_users.clone()),
            Box::new(incidents_open.clone()),
            Box::new(support_tickets.clone()),
            Box::new(pagerduty_events.clone()),
            Box::new(pagerduty_unsent.clone()),
            Box::new(pagerduty_oldest_unsent_seconds.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process metrics register once");
        Metrics {
            registry,
            probe_runs,
            probe_failures,
            probe_duration,
            last_success,
            probes_in_flight,
            schedule_lag,
            cleanup_failures,
            hubs,
            affected_users,
            incidents_open,
            support_tickets,
            pagerduty_events,
            pagerduty_unsent,
            pagerduty_oldest_unsent_seconds,
        }
    }

    pub fn set_probe_users(&self, hub: &str, users: usize) {
        self.hubs.with_label_values(&[hub]).set(users as i64);
    }

    /// The state of one hub and kind: affected users, and whether that is an incident or a support ticket.
    pub fn set_affected(&self, hub: &str, kind: &str, affected: usize, open: bool) {
        self.affected_users.with_label_values(&[hub, kind]).set(affected as i64);
        self.incidents_open.with_label_values(&[hub, kind]).set(i64::from(open));
        self.support_tickets.with_label_values(&[hub, kind]).set(i64::from(affected > 0 && !open));
    }

    pub fn count_pagerduty_event(&self, action: &str, outcome: &str) {
        self.pagerduty_events.with_label_values(&[action, outcome]).inc();
    }

    pub fn observe(&self, outcome: &ProbeOutcome) {
        let capability = outcome.capability.as_str();
        let result = match &outcome.result {
            ProbeResult::Ok => "ok",
            ProbeResult::Blocked { .. } => "blocked",
            ProbeResult::Failed(f) if f.cause == crate::domain::FailureCause::Monitor => "monitor_fault",
            ProbeResult::Failed(_) => "failed",
        };
        self.probe_runs.with_label_values(&[&outcome.hub, capability, result]).inc();
        if let ProbeResult::Failed(failure) = &outcome.result {
            self.probe_failures.with_label_values(&[&outcome.hub, capability, failure.stage.as_str()]).inc();
        }
        if !matches!(outcome.result, ProbeResult::Blocked { .. }) {
            self.probe_duration
                .with_label_values(&[&outcome.hub, capability, result])
                .observe(outcome.duration.as_secs_f64());
        }
        if outcome.result == ProbeResult::Ok {
            let finished = outcome.started_at + outcome.duration;
            let seconds = finished.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            self.last_success.with_label_values(&[&outcome.hub, capability]).set(seconds);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("encoding to memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
