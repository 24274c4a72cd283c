//! Prometheus metrics (prefix `hubwatch_`). Labels carry hub names, capabilities, stages and results only:
//! never user names or URLs. Observers only: nothing decides from these.

use crate::probe::{ProbeOutcome, ProbeResult};
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
        }
    }

    pub fn set_probe_users(&self, hub: &str, users: usize) {
        self.hubs.with_label_values(&[hub]).set(users as i64);
    }

    pub fn observe(&self, outcome: &ProbeOutcome) {
        let capability = outcome.capability.as_str();
        let result = match &outcome.result {
            ProbeResult::Ok => "ok",
            ProbeResult::Blocked { .. } => "blocked",
            ProbeResult::Failed(f) if f.cause == crate::probe::FailureCause::Monitor => "monitor_fault",
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
