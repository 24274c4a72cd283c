//! Prometheus metrics (prefix `hubwatch_`). Labels carry hub names, capabilities, stages, results and task
//! names only: never user names or URLs. Observers only: nothing decides from these.

mod tallies;

use crate::domain::{
    Channel, EventAction, FailureCause, HubName, IncidentKind, NoticeEvent, ProbeOutcome, ProbeResult,
    SERVER_START_BUCKETS,
};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::time::UNIX_EPOCH;
use tallies::{ProbeTallies, Run, RunResult};

/// What became of one heartbeat (the `outcome` label of `hubwatch_heartbeat_pings_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Sent,
    /// Not answered, or refused.
    Failed,
    /// Not sent: hubwatch is not healthy, and its silence is the alarm.
    Withheld,
}

impl Ping {
    pub fn as_str(self) -> &'static str {
        match self {
            Ping::Sent => "sent",
            Ping::Failed => "failed",
            Ping::Withheld => "withheld",
        }
    }
}

/// Whose server start a `hubwatch_server_start_seconds` observation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSource {
    Probe,
    /// Real users, from the hub's log ("User NAME took X seconds to start").
    Users,
}

impl StartSource {
    pub fn as_str(self) -> &'static str {
        match self {
            StartSource::Probe => "probe",
            StartSource::Users => "users",
        }
    }
}

/// Probe durations reach the server probe's 10 m timeout.
const DURATION_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
const LAG_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// What became of one delivery (the `outcome` label of `hubwatch_pagerduty_events_total` and
/// `hubwatch_webhook_deliveries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    /// Refused as invalid: never retried.
    Rejected,
    /// PagerDuty refused the routing key (retried slowly).
    KeyRefused,
    RateLimited,
    /// Not answered, or answered with an error worth retrying.
    Failed,
    /// No sink configured: logged, never sent.
    DryRun,
}

impl Delivered {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivered::Sent => "sent",
            Delivered::Rejected => "rejected",
            Delivered::KeyRefused => "key_refused",
            Delivered::RateLimited => "rate_limited",
            Delivered::Failed => "failed",
            Delivered::DryRun => "dry_run",
        }
    }
}

pub struct Metrics {
    probes: ProbeMetrics,
    pub probes_in_flight: IntGauge,
    pub schedule_lag: Histogram,
    pub cleanup_failures: IntCounterVec,
    incidents: IncidentMetrics,
    pagerduty_events: IntCounterVec,
    webhook_deliveries: IntCounterVec,
    heartbeat_pings: IntCounterVec,
    peer_up: IntGaugeVec,
    pub pagerduty_unsent: IntGauge,
    pub pagerduty_oldest_unsent_seconds: Gauge,
    delivery: DeliveryMetrics,
    task_restarts: IntCounterVec,
    tasks_failed: IntGauge,
    state: StateMetrics,
    ha: HaMetrics,
    /// The last rendering's length: the next one is written into a buffer of about that size at once (growing
    /// by doubling from empty peaked at twice the text, 31 MB at 5,000 hubs).
    rendered_len: std::sync::atomic::AtomicUsize,
    /// Every collector (the builder's registry checked that their names are unique), each collected and
    /// written out in turn: gathering them all at once held every series twice more (40 MB at 5,000 hubs).
    collectors: Vec<Box<dyn Collector>>,
}

/// What the probes did: runs, failures by stage, the latest duration and the last success per hub and
/// capability (the tallies), durations over every hub, server starts, probe users.
struct ProbeMetrics {
    tallies: ProbeTallies,
    duration: HistogramVec,
    server_start: HistogramVec,
    users: IntGaugeVec,
    certificate_expiry: GaugeVec,
    certificate_check_failures: IntCounterVec,
}

/// Per hub and kind: the users affected, and whether that is an incident or a support ticket.
struct IncidentMetrics {
    affected_users: IntGaugeVec,
    open: IntGaugeVec,
    support_tickets: IntGaugeVec,
}

/// Every channel's backlog, refused routing keys, and hubwatch's own time against the host's.
struct DeliveryMetrics {
    unsent: IntGaugeVec,
    oldest_unsent_seconds: GaugeVec,
    routing_key_refused: IntGaugeVec,
    clock_offset_seconds: Gauge,
    decisions_dropped: IntCounter,
}

/// The state database: whether writes reach it, what waits for them, and how large it is.
struct StateMetrics {
    write_failures: IntCounter,
    writable: IntGauge,
    unstored: IntGauge,
    bytes: IntGauge,
    pruned: IntCounter,
}

/// High availability: whether this replica leads, and how its state reaches the mirror.
struct HaMetrics {
    leader: IntGauge,
    mirror_bytes: IntGauge,
    mirror_complete: IntGauge,
    mirror_failures: IntCounter,
    restore_rejected: IntCounter,
}

/// Registers metrics in one registry; every name and label set is fixed here, so creation cannot fail.
struct Builder {
    registry: Registry,
    /// Every collector, in the order added: rendered one at a time.
    collectors: std::cell::RefCell<Vec<Box<dyn Collector>>>,
}

impl Builder {
    fn add<C: Collector + Clone + 'static>(&self, collector: C) -> C {
        self.registry.register(Box::new(collector.clone())).expect("metric names are unique");
        self.collectors.borrow_mut().push(Box::new(collector.clone()));
        collector
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid metric"))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let b = Builder { registry: Registry::new(), collectors: Default::default() };
        let metrics = Metrics {
            probes: ProbeMetrics::new(&b),
            probes_in_flight: b.gauge("hubwatch_probes_in_flight", "Probe rounds running now"),
            schedule_lag: b.histogram(
                "hubwatch_schedule_lag_seconds",
                "How late a probe round started against its due time",
                LAG_BUCKETS,
            ),
            cleanup_failures: b.counters(
                "hubwatch_cleanup_failures_total",
                "Probe servers, kernels or clusters that could not be removed after a round",
                &["hub", "capability"],
            ),
            incidents: IncidentMetrics::new(&b),
            pagerduty_events: b.counters(
                "hubwatch_pagerduty_events_total",
                "PagerDuty deliveries by action (trigger, resolve, change, note) and outcome (sent, rejected, rate_limited, failed, dry_run)",
                &["action", "outcome"],
            ),
            webhook_deliveries: b.counters(
                "hubwatch_webhook_deliveries_total",
                "Webhook sink deliveries by event (incident_opened, incident_resolved, ticket_opened, ticket_closed) and outcome (sent, rejected, failed)",
                &["event", "outcome"],
            ),
            heartbeat_pings: b.counters(
                "hubwatch_heartbeat_pings_total",
                "Pings of the dead-man's switch (heartbeat.url) by outcome (sent, failed, withheld while unhealthy)",
                &["outcome"],
            ),
            peer_up: b.gauges(
                "hubwatch_peer_up",
                "1 while a peer hubwatch (peers[].name) answers /healthz with 200 at the latest look, else 0",
                &["peer"],
            ),
            pagerduty_unsent: b.gauge(
                "hubwatch_pagerduty_unsent_events",
                "PagerDuty events (pages, not status notes) queued and not yet accepted",
            ),
            pagerduty_oldest_unsent_seconds: b.float_gauge(
                "hubwatch_pagerduty_oldest_unsent_seconds",
                "Age of the oldest PagerDuty event (page, not status note) not yet accepted (0 when none)",
            ),
            delivery: DeliveryMetrics::new(&b),
            task_restarts: b.counters(
                "hubwatch_task_restarts_total",
                "Long-running tasks (probe lanes, the recorder, the notifier, watches, ...) restarted after a panic",
                &["task"],
            ),
            tasks_failed: b.gauge(
                "hubwatch_tasks_failed",
                "Tasks that panicked too often and were given up (while above 0, /healthz fails)",
            ),
            state: StateMetrics::new(&b),
            ha: HaMetrics::new(&b),
            rendered_len: Default::default(),
            collectors: Vec::new(),
        };
        let build_info = b.gauges("hubwatch_build_info", "Always 1; the version in a label", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Nothing left out until a mirror write says so (and replicas that do not mirror never do).
        metrics.ha.mirror_complete.set(1);
        metrics.state.writable.set(1);
        #[cfg(target_os = "linux")]
        b.collectors.borrow_mut().push(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        Metrics { collectors: b.collectors.into_inner(), ..metrics }
    }

    pub fn set_certificate_expiry(&self, hub: &HubName, at: std::time::SystemTime) {
        let seconds = at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.probes.certificate_expiry.with_label_values(&[hub]).set(seconds);
    }

    pub fn count_certificate_check_failure(&self, hub: &HubName) {
        self.probes.certificate_check_failures.with_label_values(&[hub]).inc();
    }

    pub fn set_probe_users(&self, hub: &HubName, users: usize) {
        self.probes.users.with_label_values(&[hub]).set(users as i64);
    }

    /// The state of one hub and kind: affected users, and whether that is an incident or a support ticket.
    pub fn set_affected(&self, hub: &HubName, kind: IncidentKind, affected: usize, open: bool) {
        let labels = [hub, kind.as_str()];
        self.incidents.affected_users.with_label_values(&labels).set(affected as i64);
        self.incidents.open.with_label_values(&labels).set(i64::from(open));
        self.incidents.support_tickets.with_label_values(&labels).set(i64::from(affected > 0 && !open));
    }

    pub fn count_pagerduty_event(&self, action: EventAction, outcome: Delivered) {
        self.pagerduty_events.with_label_values(&[action.as_str(), outcome.as_str()]).inc();
    }

    /// `None`: a body an older version stored whose event this one does not know.
    pub fn count_webhook_delivery(&self, event: Option<NoticeEvent>, outcome: Delivered) {
        let event = event.map_or("unknown", NoticeEvent::as_str);
        self.webhook_deliveries.with_label_values(&[event, outcome.as_str()]).inc();
    }

    pub fn set_peer_up(&self, peer: &str, up: bool) {
        self.peer_up.with_label_values(&[peer]).set(i64::from(up));
    }

    pub fn count_heartbeat(&self, ping: Ping) {
        self.heartbeat_pings.with_label_values(&[ping.as_str()]).inc();
    }

    /// One channel's backlog (events, rest, webhook): how many wait and how old the oldest is.
    pub fn set_unsent(&self, channel: Channel, count: u64, oldest: std::time::Duration) {
        self.delivery.unsent.with_label_values(&[channel.as_str()]).set(count as i64);
        self.delivery.oldest_unsent_seconds.with_label_values(&[channel.as_str()]).set(oldest.as_secs_f64());
    }

    /// Whether PagerDuty refuses the routing key `rule` (a config key path) names.
    pub fn set_routing_key_refused(&self, rule: &str, refused: bool) {
        self.delivery.routing_key_refused.with_label_values(&[rule]).set(i64::from(refused));
    }

    pub fn set_clock_offset(&self, seconds: f64) {
        self.delivery.clock_offset_seconds.set(seconds);
    }

    pub fn count_decision_dropped(&self) {
        self.delivery.decisions_dropped.inc();
    }

    pub fn count_task_restart(&self, task: &str) {
        self.task_restarts.with_label_values(&[task]).inc();
    }

    pub fn set_tasks_failed(&self, failed: usize) {
        self.tasks_failed.set(failed as i64);
    }

    /// The state database as it is now: its write failures so far (a total), whether the last write
    /// succeeded, the decisions waiting to be stored, and its size on disk.
    pub fn set_state(&self, write_failures: u64, writable: bool, unstored: usize, bytes: u64) {
        let counted = self.state.write_failures.get();
        if write_failures > counted {
            self.state.write_failures.inc_by(write_failures - counted);
        }
        self.state.writable.set(i64::from(writable));
        self.state.unstored.set(unstored as i64);
        self.state.bytes.set(bytes as i64);
    }

    pub fn count_pruned(&self, rows: usize) {
        self.state.pruned.inc_by(rows as u64);
    }

    pub fn set_leader(&self, leading: bool) {
        self.ha.leader.set(i64::from(leading));
    }

    pub fn set_mirror(&self, bytes: usize, complete: bool) {
        self.ha.mirror_bytes.set(bytes as i64);
        self.ha.mirror_complete.set(i64::from(complete));
    }

    pub fn count_mirror_failure(&self) {
        self.ha.mirror_failures.inc();
    }

    pub fn count_restore_rejected(&self, rows: usize) {
        self.ha.restore_rejected.inc_by(rows as u64);
    }

    pub fn observe(&self, outcome: &ProbeOutcome) {
        let result = match &outcome.result {
            ProbeResult::Ok => RunResult::Ok,
            ProbeResult::Slow(_) => RunResult::Slow,
            ProbeResult::Blocked { .. } => RunResult::Blocked,
            ProbeResult::Failed(f) if f.cause == FailureCause::Monitor => RunResult::MonitorFault,
            ProbeResult::Failed(_) => RunResult::Failed,
        };
        let failed_at = match &outcome.result {
            ProbeResult::Failed(failure) => Some(failure.stage),
            _ => None,
        };
        // Successes only: a failure's time is mostly its timeout. The distribution is per capability (a
        // histogram per hub was 70% of /metrics at 5,000 hubs); per hub, the latest duration.
        let success = outcome.result.is_success().then(|| {
            let seconds = outcome.duration.as_secs_f64();
            self.probes.duration.with_label_values(&[outcome.capability.as_str()]).observe(seconds);
            let finished = outcome.started_at + outcome.duration;
            (seconds, finished.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0))
        });
        let run = Run { hub: &outcome.hub, capability: outcome.capability, result, failed_at, success };
        self.probes.tallies.count(&run);
        if let Some(took) = outcome.start_time() {
            self.observe_server_start(&outcome.hub, StartSource::Probe, took);
        }
    }

    pub fn observe_server_start(&self, hub: &HubName, source: StartSource, took: std::time::Duration) {
        self.probes.server_start.with_label_values(&[hub, source.as_str()]).observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        use std::sync::atomic::Ordering;
        let last = self.rendered_len.load(Ordering::Relaxed);
        let mut buffer = Vec::with_capacity(last + last / 16);
        let encoder = TextEncoder::new();
        for collector in &self.collectors {
            let families: Vec<_> = collector.collect().into_iter().filter(|f| !f.get_metric().is_empty()).collect();
            encoder.encode(&families, &mut buffer).expect("encoding to memory cannot fail");
        }
        let mut text = String::from_utf8(buffer).expect("the text format is UTF-8");
        self.probes.tallies.render(&mut text);
        self.rendered_len.store(text.len(), Ordering::Relaxed);
        text
    }
}

impl ProbeMetrics {
    fn new(b: &Builder) -> Self {
        ProbeMetrics {
            tallies: ProbeTallies::default(),
            duration: b.histograms(
                "hubwatch_probe_duration_seconds",
                "How long successful probes (ok or slow) took, over every hub",
                DURATION_BUCKETS,
                &["capability"],
            ),
            server_start: b.histograms(
                "hubwatch_server_start_seconds",
                "How long servers took to start, from the spawn request to ready: probe users' (source=probe) and real users' from the hub's log (source=users)",
                &SERVER_START_BUCKETS,
                &["hub", "source"],
            ),
            users: b.gauges("hubwatch_probe_users", "Probe users configured per hub", &["hub"]),
            certificate_expiry: b.add(
                GaugeVec::new(
                    Opts::new(
                        "hubwatch_tls_certificate_expiry_timestamp_seconds",
                        "Unix time when the TLS certificate an https hub serves expires (read every hour)",
                    ),
                    &["hub"],
                )
                .expect("valid metric"),
            ),
            certificate_check_failures: b.counters(
                "hubwatch_tls_certificate_check_failures_total",
                "Times a hub's TLS certificate could not be read (no connection, no handshake)",
                &["hub"],
            ),
        }
    }
}

impl IncidentMetrics {
    fn new(b: &Builder) -> Self {
        let by_kind = |name: &str, help: &str| b.gauges(name, help, &["hub", "kind"]);
        IncidentMetrics {
            affected_users: by_kind(
                "hubwatch_affected_users",
                "Distinct users affected now (probe users and real users), by hub and incident kind",
            ),
            open: by_kind("hubwatch_incidents_open", "1 while an incident is open for the hub and kind"),
            support_tickets: by_kind(
                "hubwatch_support_tickets",
                "1 while some users are affected but fewer than the incident threshold",
            ),
        }
    }
}

impl DeliveryMetrics {
    fn new(b: &Builder) -> Self {
        let unsent = b.gauges(
            "hubwatch_outbox_unsent_events",
            "Events queued and not yet accepted, by channel (events: PagerDuty triggers, resolves and change events; \
             rest: status notes and priorities; webhook)",
            &["channel"],
        );
        let oldest_unsent_seconds = b.add(
            GaugeVec::new(
                Opts::new(
                    "hubwatch_outbox_oldest_unsent_seconds",
                    "Age of the oldest event of the channel not yet accepted (0 when none)",
                ),
                &["channel"],
            )
            .expect("valid metric"),
        );
        for channel in ["events", "rest", "webhook"] {
            unsent.with_label_values(&[channel]).set(0);
            oldest_unsent_seconds.with_label_values(&[channel]).set(0.0);
        }
        DeliveryMetrics {
            unsent,
            oldest_unsent_seconds,
            routing_key_refused: b.gauges(
                "hubwatch_pagerduty_routing_key_refused",
                "1 while PagerDuty refuses the routing key the config key `rule` names (401, 403, 404, an invalid or \
                 missing key): its events wait and are retried every few minutes",
                &["rule"],
            ),
            clock_offset_seconds: b.float_gauge(
                "hubwatch_clock_offset_seconds",
                "The host's wall clock minus hubwatch's own time (the wall clock at start plus the monotonic time \
                 since): a wall-clock step since start",
            ),
            decisions_dropped: b.counter(
                "hubwatch_decisions_dropped_total",
                "Incident decisions the state database refused for good (not a full disk: a constraint or a \
                 corrupt row); reported in the log and skipped, so later decisions are not held behind them",
            ),
        }
    }
}

impl StateMetrics {
    fn new(b: &Builder) -> Self {
        StateMetrics {
            write_failures: b.counter(
                "hubwatch_state_write_failures_total",
                "Writes to the state database that failed (a full disk, an I/O error); each is retried",
            ),
            writable: b.gauge("hubwatch_state_writable", "1 when the last write to the state database succeeded"),
            unstored: b.gauge(
                "hubwatch_state_unstored_decisions",
                "Incident decisions (open, change, recovery, diagnostics) waiting to be stored: nothing is paged for them yet",
            ),
            bytes: b.gauge("hubwatch_state_database_bytes", "Size of the state database and its write-ahead log"),
            pruned: b.counter(
                "hubwatch_state_pruned_rows_total",
                "Rows deleted by retention (closed incidents, their timelines and delivered events)",
            ),
        }
    }
}

impl HaMetrics {
    fn new(b: &Builder) -> Self {
        HaMetrics {
            leader: b.gauge("hubwatch_ha_leader", "1 while this replica leads (probes and pages)"),
            mirror_bytes: b.gauge("hubwatch_ha_mirror_bytes", "Size of the last state snapshot mirrored (compressed)"),
            mirror_complete: b.gauge(
                "hubwatch_ha_mirror_complete",
                "0 when the mirrored state had to leave out part of an open incident (it did not fit in a Secret)",
            ),
            mirror_failures: b.counter("hubwatch_ha_mirror_failures_total", "Mirror writes that failed (retried)"),
            restore_rejected: b.counter(
                "hubwatch_state_restore_rejected_rows_total",
                "Rows of a mirrored state a restore refused (unknown tables, columns or values)",
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
