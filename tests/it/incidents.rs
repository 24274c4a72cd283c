//! Incidents end to end without a hub: outcomes → detector → manager → SQLite outbox → notifier → a local
//! PagerDuty that checks every event against the documented schema.

use crate::support::pagerduty::{Fault, PagerDuty, ROUTING_KEY};
use hubwatch::app::pipeline::Pipeline;
use hubwatch::clock::Clock;
use hubwatch::config::Config;
use hubwatch::detector::Detector;
use hubwatch::domain::{Capability, IncidentKey, ProbeOutcome, ProbeResult, Stage, StepFailure, Transition};
use hubwatch::http::HttpClient;
use hubwatch::incident::IncidentManager;
use hubwatch::metrics::Metrics;
use hubwatch::notify::Notifier;
use hubwatch::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

struct Setup {
    config: Config,
    store: Arc<Store>,
    detector: Detector,
    manager: IncidentManager,
    notifier: Notifier,
    metrics: Arc<Metrics>,
}

fn config(events_url: Option<&str>, state: &Path) -> Config {
    let pagerduty = events_url
        .map(|url| format!("pagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: {url}}}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "state_path: {}\npublic_url: https://hubwatch.example.org\nincidents: {{update_interval: 10m, keep_open_for: 0s}}\n{pagerduty}hubs:\n  - name: temple\n    url: https://temple.example.org\n    token: {{env: T}}\n    users: [probe-1, probe-2, probe-3]\n",
        state.display()
    );
    let mut config = Config::parse(&yaml, Path::new("incidents.yaml"), &|name| match name {
        "ROUTING_KEY" => Some(ROUTING_KEY.into()),
        _ => Some("token".into()),
    })
    .unwrap();
    if let Some(pd) = config.pagerduty.as_mut() {
        // Short delays so retries happen within the test.
        pd.retry_delay = Duration::from_millis(50);
        pd.rate_limit_delay = Duration::from_millis(200);
    }
    config
}

/// The daemon's decision and delivery side as `hubwatch run` wires it ([`Pipeline`]), on `state`, with a
/// detector the test feeds.
fn setup(events_url: Option<&str>, state: &Path) -> Setup {
    hubwatch::http::install_crypto_provider();
    let config = config(events_url, state);
    let store = Arc::new(Store::open(&config.state_path).unwrap());
    let pipeline = Pipeline::new(&config, store.clone(), HttpClient::new().unwrap(), Clock::start());
    let mut detector = Detector::new(config.incidents.detector());
    // As the recorder does after a restart: the incidents open in the store are open for the detector.
    for incident in store.open_incidents().unwrap() {
        detector.resume(&incident.hub, incident.kind, incident.symptoms, SystemTime::now());
    }
    let manager = pipeline.manager(&Arc::new(config.clone()), None);
    let notifier = pipeline.notifier(Arc::new(config.clone())).with_send_timeout(Duration::from_millis(500));
    let metrics = pipeline.metrics.clone();
    Setup { config, store, detector, manager, notifier, metrics }
}

fn outcome(user: &str, capability: Capability, ok: bool) -> ProbeOutcome {
    ProbeOutcome {
        hub: "temple".into(),
        user: user.into(),
        capability,
        started_at: SystemTime::now(),
        duration: Duration::from_secs(1),
        result: if ok {
            ProbeResult::Ok
        } else {
            ProbeResult::Failed(StepFailure::hub(Stage::Progress, "Spawn failed: quota exceeded"))
        },
        stages: vec![],
    }
}

impl Setup {
    fn feed(&mut self, user: &str, capability: Capability, ok: bool, at: SystemTime) -> Vec<Transition> {
        let transitions = self.detector.observe(&outcome(user, capability, ok), at);
        for t in &transitions {
            self.manager.handle(t).unwrap();
        }
        transitions
    }

    /// Both probe users failing at `capability` at `at` (an outage: the incident opens).
    fn both_fail(&mut self, capability: Capability, at: SystemTime) {
        for user in ["probe-1", "probe-2"] {
            self.feed(user, capability, false, at);
        }
    }

    /// Runs deliveries until nothing is pending or `limit` passes (a deadline for a busy machine: it returns as
    /// soon as the outbox is empty).
    async fn deliver_until_done(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until {
            self.notifier.deliver_due(SystemTime::now()).await.unwrap();
            if self.store.unsent().unwrap().0 == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of the exported sample `series` (name and labels as exposed); a missing one fails.
    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    }
}

#[tokio::test]
async fn one_trigger_naming_both_users_then_one_resolve_with_the_same_key() {
    let (pd, url) = PagerDuty::running().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(Some(&url), &dir.path().join("state.db"));
    let t0 = SystemTime::now();
    assert!(s.feed("probe-1", Capability::Server, false, t0).is_empty(), "one user: a support ticket");
    s.deliver_until_done(Duration::from_secs(10)).await;
    assert_eq!(pd.requests(), 0, "support tickets are never paged");
    assert!(matches!(s.feed("probe-2", Capability::Server, false, t0).as_slice(), [Transition::Opened { .. }]));
    s.feed("probe-2", Capability::Server, false, t0 + Duration::from_secs(60));
    s.deliver_until_done(Duration::from_secs(5)).await;
    let accepted = pd.accepted();
    assert_eq!(pd.accepted_actions(), ["trigger"], "exactly one trigger");
    let trigger = &accepted[0];
    assert_eq!(trigger["payload"]["summary"], "temple: 2 users cannot start their servers");
    assert_eq!(
        trigger["payload"]["custom_details"]["affected_users"]["server"],
        serde_json::json!(["probe-1", "probe-2"])
    );
    assert_eq!(trigger["payload"]["custom_details"]["last_errors"][0]["reason"], "Spawn failed: quota exceeded");
    assert_eq!(trigger["payload"]["source"], "temple.example.org");
    assert_eq!(trigger["payload"]["class"], "hub_access");
    let key = IncidentKey::from(trigger["dedup_key"].as_str().unwrap());
    assert_eq!(trigger["links"][1]["href"], format!("https://hubwatch.example.org/incidents/{key}"));

    for minute in [2, 3] {
        for user in ["probe-1", "probe-2"] {
            s.feed(user, Capability::Server, true, t0 + Duration::from_secs(60 * minute));
        }
    }
    s.deliver_until_done(Duration::from_secs(5)).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"]);
    assert_eq!(pd.accepted()[1]["dedup_key"], key.as_str());
    assert!(pd.inner.lock().unwrap().open_alerts.is_empty());
    assert_eq!(s.metric("hubwatch_pagerduty_events_total{action=\"trigger\",outcome=\"sent\"}"), 1.0);
    let incident = s.store.incident(&key).unwrap().unwrap();
    assert!(!incident.open && incident.recovered_at.is_some());
    assert_eq!(
        incident.affected_ever[&Capability::Server].iter().collect::<Vec<_>>(),
        ["probe-1", "probe-2"],
        "everyone affected is kept"
    );
    let timeline: Vec<String> = s.store.timeline(&key).unwrap().into_iter().map(|e| e.text).collect();
    assert!(timeline[0].starts_with("the earliest failure among the affected users: probe-1 (server"), "{timeline:?}");
    assert!(
        timeline[1].starts_with("temple: 2 users cannot start their servers (threshold 2 users within 15m)"),
        "{timeline:?}"
    );
    assert!(
        timeline.iter().any(|e| e.starts_with("PagerDuty trigger sent"))
            && timeline.iter().any(|e| e.starts_with("nobody is affected any more")),
        "{timeline:?}"
    );
}

#[tokio::test]
async fn errors_and_rate_limits_delay_the_trigger_but_it_arrives_exactly_once() {
    let (pd, url) = PagerDuty::running().await;
    pd.queue_faults([Fault::Status(500), Fault::Status(503), Fault::Hang, Fault::Status(429), Fault::Status(502)]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(Some(&url), &dir.path().join("state.db"));
    let now = SystemTime::now();
    s.both_fail(Capability::Login, now);
    s.deliver_until_done(Duration::from_secs(15)).await;
    assert_eq!(pd.accepted_actions(), ["trigger"], "delivered once after the faults");
    assert_eq!(pd.requests(), 5, "four answered faults and the success; the hung one never answered");
    assert_eq!(s.metric("hubwatch_pagerduty_events_total{action=\"trigger\",outcome=\"rate_limited\"}"), 1.0);
    assert_eq!(s.metric("hubwatch_pagerduty_events_total{action=\"trigger\",outcome=\"failed\"}"), 4.0);
    assert_eq!(s.metric("hubwatch_pagerduty_unsent_events"), 0.0);
}

#[tokio::test]
async fn a_resolve_never_goes_before_its_trigger() {
    let (pd, url) = PagerDuty::running().await;
    pd.set_outage(Some(Fault::Status(500)));
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(Some(&url), &dir.path().join("state.db"));
    let t0 = SystemTime::now();
    s.both_fail(Capability::Kernel, t0);
    for minute in [1, 2] {
        for user in ["probe-1", "probe-2"] {
            s.feed(user, Capability::Kernel, true, t0 + Duration::from_secs(60 * minute));
        }
    }
    s.deliver_until_done(Duration::from_millis(500)).await;
    let attempted: Vec<String> = pd
        .inner
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|(_, e)| e["event_action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !attempted.is_empty() && attempted.iter().all(|a| a == "trigger"),
        "only the trigger is tried while it fails: {attempted:?}"
    );
    assert_eq!(s.store.unsent().unwrap().0, 2);
    pd.set_outage(None);
    s.deliver_until_done(Duration::from_secs(10)).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"]);
}

#[tokio::test]
async fn an_invalid_event_is_not_retried_and_is_counted() {
    let (pd, url) = PagerDuty::running().await;
    pd.queue_faults([Fault::Status(400)]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(Some(&url), &dir.path().join("state.db"));
    let now = SystemTime::now();
    s.both_fail(Capability::Login, now);
    s.deliver_until_done(Duration::from_secs(10)).await;
    s.notifier.deliver_due(SystemTime::now()).await.unwrap();
    assert_eq!(pd.requests(), 1, "a 400 is final");
    assert_eq!(s.metric("hubwatch_pagerduty_events_total{action=\"trigger\",outcome=\"rejected\"}"), 1.0);
}

#[tokio::test]
async fn after_a_restart_the_open_incident_is_not_paged_again_and_its_resolve_is_sent() {
    let (pd, url) = PagerDuty::running().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let t0 = SystemTime::now();
    {
        let mut s = setup(Some(&url), &state);
        s.both_fail(Capability::Server, t0);
        s.deliver_until_done(Duration::from_secs(5)).await;
        assert_eq!(pd.accepted_actions(), ["trigger"]);
    } // the process "dies": nothing in memory survives

    let mut s = setup(Some(&url), &state);
    assert_eq!(s.store.open_incidents().unwrap().len(), 1);
    assert!(s.detector.tick(SystemTime::now()).is_empty(), "no attempts since the restart is no evidence of recovery");
    for user in ["probe-1", "probe-2", "probe-3"] {
        let transitions = s.feed(user, Capability::Server, false, t0 + Duration::from_secs(60));
        assert!(!transitions.iter().any(|t| matches!(t, Transition::Opened { .. })), "{transitions:?}");
    }
    s.deliver_until_done(Duration::from_secs(5)).await;
    assert_eq!(pd.accepted_actions(), ["trigger"], "a material change within the update interval is held back");
    assert!(s.store.open_incidents().unwrap()[0].pending_update);
    s.manager.flush_pending_updates(t0 + Duration::from_secs(11 * 60)).unwrap();
    s.deliver_until_done(Duration::from_secs(5)).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "trigger"], "the held-back follow-up after the interval");
    assert_eq!(pd.accepted()[1]["payload"]["summary"], "temple: 3 users cannot start their servers");
    assert_eq!(pd.accepted()[0]["dedup_key"], pd.accepted()[1]["dedup_key"]);
    for minute in [2, 3] {
        for user in ["probe-1", "probe-2", "probe-3"] {
            s.feed(user, Capability::Server, true, t0 + Duration::from_secs(60 * minute));
        }
    }
    s.deliver_until_done(Duration::from_secs(5)).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "trigger", "resolve"]);
    assert_eq!(pd.accepted()[2]["dedup_key"], pd.accepted()[0]["dedup_key"]);
    let _ = &s.config;
}

#[tokio::test]
async fn without_a_pagerduty_section_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(None, &dir.path().join("state.db"));
    s.both_fail(Capability::DaskGateway, SystemTime::now());
    s.deliver_until_done(Duration::from_secs(10)).await;
    assert_eq!(s.store.unsent().unwrap().0, 0);
    assert_eq!(s.metric("hubwatch_pagerduty_events_total{action=\"trigger\",outcome=\"dry_run\"}"), 1.0);
    assert_eq!(s.store.open_incidents().unwrap().len(), 1, "the incident is still recorded and shown");
}

#[test]
fn the_stand_in_refuses_what_pagerduty_refuses() {
    use crate::support::pagerduty::validate;
    use serde_json::json;
    let good = json!({"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "k",
                      "payload": {"summary": "s", "source": "h", "severity": "critical"}});
    assert!(validate(&good).is_empty());
    let mut bad = good.clone();
    bad["payload"]["severity"] = json!("urgent");
    assert!(validate(&bad)[0].contains("severity"));
    assert!(validate(&json!({"routing_key": ROUTING_KEY, "event_action": "resolve"}))[0].contains("dedup_key"));
    let mut long = good.clone();
    long["payload"]["summary"] = json!("x".repeat(1025));
    assert!(!validate(&long).is_empty());
    let mut stray = good;
    stray["payload"]["client"] = json!("x");
    stray["clients"] = json!("x");
    assert!(validate(&stray).iter().any(|e| e.contains("'clients'")));
}

#[tokio::test]
async fn a_snapshot_restored_into_another_store_carries_incidents_timelines_and_unsent_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = setup(None, &dir.path().join("leader.db"));
    let t0 = SystemTime::now();
    leader.both_fail(Capability::Server, t0);
    let snapshot = leader.store.snapshot().unwrap();

    // The standby already holds an older copy with rows referencing each other: replaced whole.
    let standby = setup(None, &dir.path().join("standby.db"));
    standby.store.restore(&snapshot).unwrap();
    standby.store.restore(&snapshot).unwrap();
    let open = standby.store.open_incidents().unwrap();
    assert_eq!(open, leader.store.open_incidents().unwrap());
    let key = &open[0].key;
    assert_eq!(standby.store.timeline(key).unwrap(), leader.store.timeline(key).unwrap());
    assert_eq!(standby.store.unsent().unwrap().0, 1, "the unsent trigger comes along");
    assert_eq!(standby.store.snapshot().unwrap(), snapshot);

    // An older leader's snapshot restores (store unit tests); one from a newer hubwatch is refused.
    let mut newer = snapshot.clone();
    newer["schema_version"] = 99.into();
    assert!(standby.store.restore(&newer).unwrap_err().to_string().contains("schema version 99, newer than"));
}

#[tokio::test]
async fn an_older_leaders_unsent_page_in_its_mirror_is_sent_as_that_version_rendered_it() {
    let (pd, url) = PagerDuty::running().await;
    let dir = tempfile::tempdir().unwrap();
    let mut leader = setup(None, &dir.path().join("leader.db"));
    leader.both_fail(Capability::Server, SystemTime::now());
    // What schema version 9 mirrored: the trigger already in PagerDuty's format (without the routing key).
    let mut snapshot = leader.store.snapshot().unwrap();
    snapshot["schema_version"] = 9.into();
    let row = &mut snapshot["tables"]["outbox"][0];
    let key = IncidentKey::from(row["key"].as_str().unwrap());
    let message = hubwatch::domain::Message::read(row["body"].as_str().unwrap()).unwrap();
    let rendered = hubwatch::notify::pagerduty::event(&key, &message).unwrap();
    row["body"] = rendered.to_string().into();

    let standby = setup(Some(&url), &dir.path().join("standby.db"));
    standby.store.restore(&snapshot).unwrap();
    let diagnostics = hubwatch::diagnostics::Diagnostics { collected_at: SystemTime::now(), sections: Vec::new() };
    // Diagnostics for it release it as it is: they wait on hubwatch's page.
    standby.manager.attach_diagnostics(&key, &diagnostics, SystemTime::now()).unwrap();
    standby.deliver_until_done(Duration::from_secs(20)).await;
    let accepted = pd.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let mut expected = rendered;
    expected["routing_key"] = ROUTING_KEY.into();
    assert_eq!(accepted[0], expected, "sent as it was stored, with the routing key added");
}
