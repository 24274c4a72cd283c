//! The incident record from a scripted incident (every time is an argument; nothing waits on the clock):
//! its timeline and report draft against golden files, and the status notes it posts to the local
//! PagerDuty's REST API (headers and bodies checked there), on their interval, and not after the resolve.

use crate::support::golden::assert_golden;
use crate::support::outcomes::finished;
use crate::support::pagerduty::{API_TOKEN, FROM_EMAIL, Fault, PagerDuty, ROUTING_KEY};
use hubwatch::app::pipeline::Pipeline;
use hubwatch::clock::Clock;
use hubwatch::config::Config;
use hubwatch::detector::Detector;
use hubwatch::diagnostics::{Diagnostics, Keep, Section};
use hubwatch::domain::{Capability, HubChange, IncidentKey, Transition};
use hubwatch::http::HttpClient;
use hubwatch::incident::IncidentManager;
use hubwatch::incident::report::{self, ReportSettings};
use hubwatch::notify::Notifier;
use hubwatch::store::{Store, TimelineKind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2026-11-20T08:53:20Z: where the script's clock starts.
fn t(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_164_800 + seconds)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

struct Script {
    pipeline: Pipeline,
    store: Arc<Store>,
    detector: Detector,
    manager: Arc<IncidentManager>,
    notifier: Notifier,
    config: Config,
}

fn config(pd_base: &str, state: &Path) -> Config {
    let yaml = format!(
        "state_path: {}
public_url: https://hubwatch.example.org
incidents: {{update_interval: 10m, keep_open_for: 0s}}
pagerduty:
  routing_key: {{env: ROUTING_KEY}}
  events_url: {pd_base}/v2/enqueue
  api_url: {pd_base}
  api_token: {{env: API_TOKEN}}
  from_email: {FROM_EMAIL}
kubernetes: {{enabled: true, diagnostics_wait: 5s}}
hubs:
  - name: temple
    url: https://temple.example.org
    namespace: temple
    token: {{env: T}}
    users: [probe-1, probe-2, probe-3]
",
        state.display()
    );
    let mut config = Config::parse(&yaml, Path::new("record.yaml"), &|name| match name {
        "ROUTING_KEY" => Some(ROUTING_KEY.into()),
        "API_TOKEN" => Some(API_TOKEN.into()),
        _ => Some("token".into()),
    })
    .unwrap();
    let pd = config.pagerduty.as_mut().unwrap();
    pd.retry_delay = Duration::from_secs(1);
    config
}

/// The daemon's decision and delivery side as `hubwatch run` wires it ([`Pipeline`]), on `state`.
fn script(pd_base: &str, state: &Path) -> Script {
    hubwatch::http::install_crypto_provider();
    let config = config(pd_base, state);
    let store = Arc::new(Store::open(&config.state_path).unwrap());
    let pipeline = Pipeline::new(&config, store.clone(), HttpClient::new().unwrap(), Clock::start());
    pipeline.board.set_hubs(&config.hubs);
    let detector = Detector::new(config.incidents.detector());
    let manager = Arc::new(pipeline.manager(&Arc::new(config.clone()), None));
    let notifier = pipeline.notifier(Arc::new(config.clone())).with_send_timeout(Duration::from_secs(5));
    Script { pipeline, store, detector, manager, notifier, config }
}

impl Script {
    fn probe(&mut self, user: &str, capability: Capability, failure: Option<&str>, at: SystemTime) -> Vec<Transition> {
        let outcome = finished("temple", user, capability, failure, at);
        self.pipeline.board.record(&outcome);
        let transitions = self.detector.observe(&outcome, at);
        for transition in &transitions {
            self.manager.handle(transition).unwrap();
        }
        transitions
    }

    fn key(&self) -> IncidentKey {
        self.store.all_incidents().unwrap()[0].key.clone()
    }

    fn report(&self) -> String {
        let settings = ReportSettings { public_url: self.config.public_url(), threshold: 2 };
        let hub_url = |_: &str| Some(self.config.hubs[0].url.clone());
        report::draft(&self.store, &self.key(), hub_url, &settings).unwrap().unwrap()
    }
}

fn diagnostics(at: SystemTime) -> Diagnostics {
    Diagnostics {
        collected_at: at,
        sections: vec![
            Section::ok(
                "kubectl -n temple get pods -o wide",
                "NAME                  READY   STATUS    RESTARTS   AGE   IP          NODE       NOMINATED NODE   READINESS GATES\n\
                 hub-7d9f8b6c5-x2k4p   1/1     Running   0          24h   10.8.0.12   pool-a-1   <none>           <none>\n\
                 jupyter-probe-1       0/1     Pending   0          2m    <none>      <none>     <none>           <none>\n\
                 jupyter-probe-2       0/1     Pending   0          1m    <none>      <none>     <none>           <none>\n"
                    .into(),
                Keep::Head,
            ),
            Section::ok(
                "kubectl -n temple get events --field-selector type=Warning --sort-by=.lastTimestamp",
                "LAST SEEN   TYPE      REASON             OBJECT                MESSAGE\n\
                 60s         Warning   FailedScheduling   pod/jupyter-probe-1   0/3 nodes are available: 3 Insufficient memory.\n\
                 30s         Warning   FailedScheduling   pod/jupyter-probe-2   0/3 nodes are available: 3 Insufficient memory.\n"
                    .into(),
                Keep::Head,
            ),
            Section::failed("kubectl get nodes", "forbidden: nodes is forbidden: cannot list resource \"nodes\""),
        ],
    }
}

/// The server probes go on failing every ten minutes (no transition: the same people, the same failure).
fn keep_failing(s: &mut Script, minutes: std::ops::RangeInclusive<u64>, users: &[&str]) {
    for minute in minutes.step_by(10) {
        for user in users {
            let reason = format!("Spawn failed: pod jupyter-{user} did not start in 300 seconds");
            let transitions = s.probe(user, Capability::Server, Some(&reason), t(minute * MINUTE));
            assert!(transitions.is_empty(), "minute {minute}: {transitions:?}");
        }
    }
}

/// The whole life of one incident, minute by minute; returns the script for the checks.
/// A script in a fresh state directory, with its PagerDuty stand-in; nothing played yet.
async fn fresh_script() -> (PagerDuty, tempfile::TempDir, Script) {
    let pd = PagerDuty::default();
    let base = pd.clone().start().await.trim_end_matches("/v2/enqueue").to_string();
    let dir = tempfile::tempdir().unwrap();
    let script = script(&base, &dir.path().join("state.db"));
    (pd, dir, script)
}

/// [`scripted_incident`] in a fresh state directory, with its PagerDuty stand-in.
async fn scripted() -> (PagerDuty, tempfile::TempDir, Script) {
    let pd = PagerDuty::default();
    let dir = tempfile::tempdir().unwrap();
    let script = scripted_incident(&pd, &dir.path().join("state.db")).await;
    (pd, dir, script)
}

async fn scripted_incident(pd: &PagerDuty, state: &Path) -> Script {
    let base = pd.clone().start().await.trim_end_matches("/v2/enqueue").to_string();
    let mut s = script(&base, state);
    let quota = "Spawn failed: pod jupyter-{user} did not start in 300 seconds";
    for user in ["probe-1", "probe-2", "probe-3"] {
        for capability in [Capability::Login, Capability::Server, Capability::Kernel] {
            s.probe(user, capability, None, t(0));
        }
    }
    s.probe("probe-1", Capability::Server, Some(&quota.replace("{user}", "probe-1")), t(5 * MINUTE));
    let opened = s.probe("probe-2", Capability::Server, Some(&quota.replace("{user}", "probe-2")), t(6 * MINUTE));
    assert!(matches!(opened.as_slice(), [Transition::Opened { .. }]), "{opened:?}");
    let key = s.key();
    // The trigger is held for its diagnostics, which arrive within the wait and go out with it.
    s.notifier.deliver_due(t(6 * MINUTE + 1)).await.unwrap();
    assert!(pd.accepted().is_empty(), "held for its diagnostics");
    s.manager.attach_diagnostics(&key, &diagnostics(t(6 * MINUTE + 3)), t(6 * MINUTE + 3)).unwrap();
    s.notifier.deliver_due(t(6 * MINUTE + 4)).await.unwrap();
    assert_eq!(pd.accepted_actions(), ["trigger"]);

    // A third user fails; a fix is rolled out to the hub.
    keep_failing(&mut s, 10..=20, &["probe-1", "probe-2"]);
    s.probe("probe-3", Capability::Server, Some(&quota.replace("{user}", "probe-3")), t(25 * MINUTE));
    s.notifier.deliver_due(t(25 * MINUTE + 6)).await.unwrap();
    keep_failing(&mut s, 30..=110, &["probe-1", "probe-2", "probe-3"]);
    let change = HubChange {
        hub: "temple".into(),
        namespace: "temple".into(),
        deployment: "hub".into(),
        generation: 8,
        changes: vec![
            "container hub image quay.io/jupyterhub/k8s-hub:4.1.0 -> quay.io/jupyterhub/k8s-hub:4.1.1".into(),
        ],
    };
    s.manager.record_change(&change, t(2 * HOUR)).unwrap();
    s.notifier.deliver_due(t(2 * HOUR + 1)).await.unwrap();
    keep_failing(&mut s, 120..=190, &["probe-1", "probe-2", "probe-3"]);

    // Status notes: none before the interval, one at it, none again until the next interval.
    assert_eq!(s.manager.queue_status_updates(t(HOUR)).unwrap(), 0);
    assert_eq!(s.manager.queue_status_updates(t(3 * HOUR + 6 * MINUTE)).unwrap(), 1);
    s.notifier.deliver_due(t(3 * HOUR + 6 * MINUTE + 1)).await.unwrap();
    assert_eq!(s.manager.queue_status_updates(t(3 * HOUR + 7 * MINUTE)).unwrap(), 0);

    // Service comes back: every user succeeds twice at everything.
    for minute in [3 * 60 + 20, 3 * 60 + 21] {
        for user in ["probe-1", "probe-2", "probe-3"] {
            for capability in [Capability::Login, Capability::Server, Capability::Kernel] {
                s.probe(user, capability, None, t(minute * MINUTE));
            }
        }
    }
    assert!(!s.store.incident(&key).unwrap().unwrap().open, "recovered");
    s.notifier.deliver_due(t(3 * HOUR + 21 * MINUTE + 1)).await.unwrap();
    s.notifier.deliver_due(t(3 * HOUR + 21 * MINUTE + 2)).await.unwrap();
    // After the resolve: no more notes, however long it is.
    assert_eq!(s.manager.queue_status_updates(t(7 * HOUR)).unwrap(), 0);
    s.notifier.deliver_due(t(7 * HOUR + 1)).await.unwrap();
    s
}

#[tokio::test]
async fn a_scripted_incident_records_its_timeline_and_drafts_its_report() {
    let (_pd, _dir, s) = scripted().await;
    let key = s.key();
    let timeline = s.store.timeline(&key).unwrap();
    let kinds: Vec<TimelineKind> = timeline.iter().map(|e| e.kind).collect();
    // Every kind but the ones for decisions stored late (tests/it/faults.rs makes the state database fail), for
    // held pages (tests/it/on_call.rs silences and rolls out) and for responses read back (tests/it/responses.rs).
    let elsewhere = [
        TimelineKind::StateDelayed,
        TimelineKind::Held,
        TimelineKind::Acknowledged,
        TimelineKind::Assigned,
        TimelineKind::ResolvedInPagerDuty,
    ];
    for kind in TimelineKind::ALL.into_iter().filter(|k| !elsewhere.contains(k)) {
        assert!(kinds.contains(&kind), "the timeline has a {kind:?} entry: {kinds:?}");
    }
    let incident = s.store.incident(&key).unwrap().unwrap();
    assert_eq!(incident.impact_start, t(5 * MINUTE), "impact start: the first failure among the affected users");
    assert_eq!(incident.recovered_at, Some(t(3 * HOUR + 21 * MINUTE)), "impact end: the second success of all");
    let text: String = timeline
        .iter()
        .map(|e| format!("{} {:<13} {}\n", humantime::format_rfc3339_seconds(e.at), e.kind.as_str(), e.text))
        .collect();
    assert_golden("timeline-scripted.txt", &text);
    assert_golden("report-scripted.md", &s.report());
}

#[tokio::test]
async fn status_notes_carry_the_right_headers_keep_their_interval_and_stop_after_resolve() {
    let (pd, _dir, _s) = scripted().await;
    let notes = pd.notes();
    assert_eq!(notes.len(), 2, "one at the interval, one at the resolve: {notes:#?}");
    assert!(notes.iter().all(|(id, _, from)| id == "Q000001" && from == FROM_EMAIL), "{notes:?}");
    let (update, resolved) = (&notes[0].1, &notes[1].1);
    assert!(
        update.starts_with("hubwatch status update: ONGOING. temple: 3 users cannot start their servers"),
        "{update}"
    );
    crate::support::golden::assert_contains_all(
        update,
        &[
            "Affected now:",
            "- server probe-3: progress since 2026-11-20T09:18:20Z",
            "What the probes see now:",
            "- server: probe-1 failed at",
            "What changed since the last update:",
            "hub Deployment hub changed (namespace temple, generation 8): container hub image quay.io/jupyterhub/k8s-hub:4.1.0",
            "Timeline and Kubernetes diagnostics: https://hubwatch.example.org/incidents/temple-hub_access-",
        ],
    );
    assert!(resolved.starts_with("hubwatch: RESOLVED. temple: 3 users cannot start their servers"), "{resolved}");
    assert!(resolved.contains("impact 2026-11-20T08:58:20Z to 2026-11-20T12:14:20Z, 3h 16m"), "{resolved}");
    assert!(resolved.contains("- server: probe-1 ok at"), "{resolved}");
    let rest = pd.rest_requests();
    assert!(rest.iter().all(|(_, status)| (200..300).contains(status)), "every REST call was right: {rest:?}");
    assert_eq!(rest.iter().filter(|(r, _)| r == "GET /incidents").count(), 1, "the incident is looked up once");
    for secret in [API_TOKEN, ROUTING_KEY] {
        assert!(!update.contains(secret) && !resolved.contains(secret));
    }
}

#[tokio::test]
async fn notes_wait_for_the_incident_and_a_rest_outage_never_holds_back_the_resolve() {
    let (pd, _dir, mut s) = fresh_script().await;
    let failure = Some("Spawn failed");
    s.probe("probe-1", Capability::Kernel, failure, t(0));
    s.probe("probe-2", Capability::Kernel, failure, t(MINUTE));
    let key = s.key();
    // The diagnostics arrive and release the held trigger.
    s.manager.attach_diagnostics(&key, &diagnostics(t(MINUTE + 1)), t(MINUTE + 1)).unwrap();
    pd.inner.lock().unwrap().lookups_before_found = 2;
    s.manager.queue_status_updates(t(4 * HOUR)).unwrap();
    s.notifier.deliver_due(t(4 * HOUR + 1)).await.unwrap();
    assert_eq!(pd.accepted_actions(), ["trigger"]);
    assert!(pd.notes().is_empty(), "PagerDuty has not made the incident yet");
    s.notifier.deliver_due(t(4 * HOUR + MINUTE)).await.unwrap();
    assert!(pd.notes().is_empty(), "still not");
    s.notifier.deliver_due(t(4 * HOUR + 2 * MINUTE)).await.unwrap();
    assert_eq!(pd.notes().len(), 1, "found on the third lookup, posted once");

    // The REST API goes down; the incident recovers: the resolve goes out, the last note waits.
    pd.inner.lock().unwrap().rest_outage = Some(Fault::Status(503));
    for minute in [5 * 60, 5 * 60 + 1] {
        for user in ["probe-1", "probe-2"] {
            s.probe(user, Capability::Kernel, None, t(minute * MINUTE));
        }
    }
    s.notifier.deliver_due(t(5 * HOUR + 2 * MINUTE)).await.unwrap();
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "the resolve does not wait for notes");
    assert_eq!(pd.notes().len(), 1);
    pd.inner.lock().unwrap().rest_outage = None;
    s.notifier.deliver_due(t(5 * HOUR + 10 * MINUTE)).await.unwrap();
    s.notifier.deliver_due(t(5 * HOUR + 20 * MINUTE)).await.unwrap();
    let notes = pd.notes();
    assert_eq!(notes.len(), 2, "the last note arrives once the API is back, exactly once");
    assert!(notes[1].1.starts_with("hubwatch: RESOLVED."), "{}", notes[1].1);
}

#[tokio::test]
async fn a_wrong_api_token_is_not_retried_and_the_timeline_says_so() {
    let (pd, _dir, mut s) = fresh_script().await;
    if let Some(notes) = s.config.pagerduty.as_mut().and_then(|p| p.status_updates.as_mut()) {
        notes.api_token = hubwatch::domain::Secret::new("not-the-token");
    }
    s.notifier = s.pipeline.notifier(Arc::new(s.config.clone()));
    s.probe("probe-1", Capability::Login, Some("HTTP 502"), t(0));
    s.probe("probe-2", Capability::Login, Some("HTTP 502"), t(10));
    s.manager.queue_status_updates(t(3 * HOUR + 10)).unwrap();
    for minute in 1..5 {
        s.notifier.deliver_due(t(3 * HOUR + minute * MINUTE)).await.unwrap();
    }
    assert_eq!(pd.rest_requests(), [("GET /incidents".to_string(), 401)], "a 401 is final");
    let timeline = s.store.timeline(&s.key()).unwrap();
    let entry = timeline.iter().find(|e| e.kind == TimelineKind::StatusUpdate).expect("a status update entry");
    assert!(entry.text.starts_with("status update not posted: HTTP 401 Authentication required"), "{}", entry.text);
    assert!(!entry.text.contains("not-the-token"));
}
