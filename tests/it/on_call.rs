//! On-call ergonomics without a hub: outcomes → detector → incident manager → SQLite outbox → notifier → the
//! PagerDuty stand-in (Events API and REST API, schema-checked, two services) and a webhook receiver that is
//! down at first. Silences and rollouts hold pages and release them once; pages route by hub with their
//! priority; the webhook sink receives every incident and support ticket once. At the seams: a webhook and a
//! REST API that hang delay only themselves; a resolve goes where its trigger went whatever the configuration
//! says later; a refused routing key waits without hammering; `Retry-After` is honoured; PagerDuty's open
//! incidents are adopted or resolved at start; a support ticket waits `incidents.ticket_after` (the recorder in
//! paused time).

use crate::support::daemon::{metric, wait_for};
use crate::support::pagerduty::{API_TOKEN, FROM_EMAIL, Fault, PagerDuty, ROUTING_KEY, TEMPLE_ROUTING_KEY};
use crate::support::webhook::{AUTHORIZATION, Receiver};
use hubwatch::app::pipeline::Pipeline;
use hubwatch::clock::Clock;
use hubwatch::config::Config;
use hubwatch::detector::Detector;
use hubwatch::domain::{
    Capability, DeploymentState, EventAction, HubChange, IncidentKey, SilenceSource, TicketKind, Transition,
};
use hubwatch::http::HttpClient;
use hubwatch::incident::IncidentManager;
use hubwatch::incident::holds::{self, SilenceRequest};
use hubwatch::incident::reconcile::{self, Reconciled};
use hubwatch::incident::sinks::TicketNews;
use hubwatch::notify::Notifier;
use hubwatch::store::{OutboxState, Store, TimelineKind};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The daemon's decision and delivery side ([`Pipeline`], as `hubwatch run` wires it) with a detector fed by
/// the test, every time an argument.
struct OnCall {
    pipeline: Pipeline,
    store: Arc<Store>,
    detector: Detector,
    manager: IncidentManager,
    notifier: Notifier,
}

/// Which routing keys the configuration names: the global one's variable, and temple's and lab's overrides.
struct Keys {
    global: &'static str,
    temple: &'static str,
    lab: &'static str,
}

const USUAL_KEYS: Keys = Keys {
    global: "ROUTING_KEY",
    temple: "    pagerduty: {routing_key: {env: TEMPLE_KEY}, severity: error, kinds: {hub_access: {priority: P1}}}\n",
    lab: "",
};

fn config(pd_events: &str, webhook: Option<&str>, state: &Path) -> Config {
    config_with(pd_events, webhook, state, &USUAL_KEYS)
}

fn config_with(pd_events: &str, webhook: Option<&str>, state: &Path, keys: &Keys) -> Config {
    let api = pd_events.trim_end_matches("/v2/enqueue");
    let webhook = webhook
        .map(|url| {
            format!("webhook: {{url: \"{url}\", headers: {{Authorization: {{env: HOOK_AUTH}}}}, retry_delay: 1s}}\n")
        })
        .unwrap_or_default();
    let yaml = format!(
        r#"state_path: {state}
public_url: https://hubwatch.example.org
incidents: {{update_interval: 10m, rollout_grace: 5m, keep_open_for: 0s}}
pagerduty: {{routing_key: {{env: {global}}}, events_url: "{pd_events}", api_url: "{api}", api_token: {{env: PD_API_TOKEN}},
  from_email: {FROM_EMAIL}, priority: P2, retry_delay: 1s}}
{webhook}hubs:
  - name: temple
    url: https://temple.example.org
    token: {{env: T}}
    users: [probe-1, probe-2, probe-3]
{temple}  - name: lab
    url: https://lab.example.org
    token: {{env: T}}
    users: [probe-1, probe-2]
{lab}"#,
        state = state.display(),
        global = keys.global,
        temple = keys.temple,
        lab = keys.lab,
    );
    let mut config = Config::parse(&yaml, Path::new("on-call.yaml"), &|name| match name {
        "ROUTING_KEY" => Some(ROUTING_KEY.into()),
        "TEMPLE_KEY" => Some(TEMPLE_ROUTING_KEY.into()),
        "PD_API_TOKEN" => Some(API_TOKEN.into()),
        "HOOK_AUTH" => Some(AUTHORIZATION.into()),
        _ => Some("token".into()),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let pd = config.pagerduty.as_mut().unwrap();
    // Short delays so that retries happen within the test.
    pd.retry_delay = Duration::from_millis(50);
    pd.rate_limit_delay = Duration::from_millis(200);
    if let Some(webhook) = config.webhook.as_mut() {
        webhook.retry_delay = Duration::from_millis(50);
    }
    config
}

fn start(config: &Config) -> OnCall {
    hubwatch::http::install_crypto_provider();
    let store = Arc::new(Store::open(&config.state_path).unwrap());
    let pipeline = Pipeline::new(config, store.clone(), HttpClient::new().unwrap(), Clock::start());
    let mut detector = Detector::new(config.incidents.detector());
    for incident in store.open_incidents().unwrap() {
        detector.resume(&incident.hub, incident.kind, incident.symptoms, SystemTime::now());
    }
    let manager = pipeline.manager(&Arc::new(config.clone()), None);
    let notifier = pipeline.notifier(Arc::new(config.clone())).with_send_timeout(Duration::from_secs(2));
    OnCall { pipeline, store, detector, manager, notifier }
}

/// The kind of hub change a rollout rolls out: temple upgraded (generation 9).
fn temple_upgrade() -> HubChange {
    HubChange {
        hub: "temple".into(),
        namespace: "temple".into(),
        deployment: "hub".into(),
        generation: 9,
        changes: vec!["image of container hub: k8s-hub:4.1.0 -> k8s-hub:4.2.0".into()],
    }
}

impl OnCall {
    fn feed(&mut self, hub: &str, users: &[&str], ok: bool, at: SystemTime) -> Vec<Transition> {
        let mut all = Vec::new();
        for user in users {
            let failure = (!ok).then_some("Spawn failed: the hub is being upgraded");
            let outcome = crate::support::outcomes::finished(hub, user, Capability::Server, failure, at);
            let transitions = self.detector.observe(&outcome, at);
            for t in &transitions {
                self.manager.handle(t).unwrap();
            }
            all.extend(transitions);
        }
        all
    }

    /// Both users failing: the incident opens; its key.
    fn outage(&mut self, hub: &str, at: SystemTime) -> IncidentKey {
        let opened = self.feed(hub, &["probe-1", "probe-2"], false, at);
        assert!(matches!(opened.as_slice(), [Transition::Opened { .. }]), "{opened:?}");
        self.store.open_incidents().unwrap().into_iter().find(|i| i.hub == hub).unwrap().key
    }

    fn heal(&mut self, hub: &str, at: SystemTime) {
        for second in [1, 2] {
            self.feed(hub, &["probe-1", "probe-2"], true, at + Duration::from_secs(second));
        }
        assert!(self.store.open_incidents().unwrap().iter().all(|i| i.hub != hub), "{hub} recovered");
    }

    /// Delivers for a while (every channel: events, the REST API, the webhook); stops early when `done`.
    async fn deliver_until(&self, limit: Duration, done: impl Fn() -> bool) {
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until && !done() {
            self.notifier.deliver_due(SystemTime::now()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn timeline(&self, key: &IncidentKey) -> Vec<(TimelineKind, String)> {
        self.store.timeline(key).unwrap().into_iter().map(|e| (e.kind, e.text)).collect()
    }

    fn silence(&self, hub: &str, minutes: u64, reason: &str) -> String {
        self.silence_of(hub, None, minutes, reason)
    }

    /// As [`OnCall::silence`], of one incident kind when `kind` names it.
    fn silence_of(&self, hub: &str, kind: Option<&str>, minutes: u64, reason: &str) -> String {
        let request = SilenceRequest {
            hub: Some(hub.into()),
            kind: kind.map(String::from),
            duration: Some(format!("{minutes}m")),
            reason: Some(reason.into()),
            created_by: Some("yuvi".into()),
            ..SilenceRequest::default()
        };
        let hubs = ["temple".into(), "lab".into()];
        let now = SystemTime::now();
        let silence = holds::validate(&request, &hubs, holds::new_silence_id(), SilenceSource::Api, now).unwrap();
        holds::start_silence(&self.store, &silence, now).unwrap();
        silence.id
    }
}

fn triggers(pd: &PagerDuty, key: &str) -> Vec<Value> {
    pd.accepted().into_iter().filter(|e| e["event_action"] == "trigger" && e["dedup_key"] == key).collect()
}

/// The PagerDuty stand-in, a state directory and the usual config (no webhook).
async fn usual() -> (PagerDuty, tempfile::TempDir, Config) {
    let (pd, events) = PagerDuty::running().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&events, None, &state_path(&dir));
    (pd, dir, config)
}

/// As [`usual`], the parts started.
async fn usual_started() -> (PagerDuty, tempfile::TempDir, OnCall) {
    let (pd, dir, config) = usual().await;
    (pd, dir, start(&config))
}

fn state_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("on-call.db")
}

/// A silence of one kind holds that kind's pages only: the hub's other outages page as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_of_one_kind_holds_only_that_kind() {
    let (pd, _dir, mut s) = usual_started().await;
    s.silence_of("lab", Some("dask_gateway"), 60, "gateway upgrade");
    let key = s.outage("lab", SystemTime::now());
    s.deliver_until(Duration::from_secs(5), || !triggers(&pd, &key).is_empty()).await;
    assert_eq!(triggers(&pd, &key).len(), 1, "users who cannot start servers page through a gateway silence");
    assert!(s.store.incident(&key).unwrap().unwrap().hold.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_outage_pages_once_when_the_silence_ends_and_never_if_it_recovers_first() {
    let (pd, _dir, config) = usual().await;
    let mut s = start(&config);

    let silence = s.silence("lab", 60, "upgrading to z2jh 4");
    // After the silence began (it starts when it is made): an outage decided a moment before it would page.
    let key = s.outage("lab", SystemTime::now());
    s.deliver_until(Duration::from_millis(500), || false).await;
    assert!(pd.accepted().is_empty(), "a silenced outage sends nothing: {:?}", pd.accepted());
    let incident = s.store.incident(&key).unwrap().unwrap();
    let held = incident.hold.expect("the incident is recorded as held");
    assert_eq!(held.silence.as_deref(), Some(silence.as_str()));
    assert!(held.why.contains("upgrading to z2jh 4, by yuvi"), "{held:?}");
    let timeline = s.timeline(&key);
    assert!(
        timeline.iter().any(|(k, t)| *k == TimelineKind::Held && t.starts_with("not paged: held by silence")),
        "{timeline:?}"
    );

    eprintln!("phase: hubwatch restarts; the silence and the held incident are still there");
    drop(s);
    let mut s = start(&config);
    assert_eq!(s.store.silences(SystemTime::now()).unwrap().len(), 1, "the silence survived the restart");
    assert!(s.store.incident(&key).unwrap().unwrap().hold.is_some());
    s.manager.review_holds(SystemTime::now()).unwrap();
    s.deliver_until(Duration::from_millis(300), || false).await;
    assert!(pd.accepted().is_empty(), "still silenced after the restart");

    eprintln!("phase: the silence is expired with the outage still on: exactly one trigger");
    s.store.expire_silence(&silence, SystemTime::now()).unwrap();
    for _ in 0..3 {
        s.manager.review_holds(SystemTime::now()).unwrap();
    }
    s.deliver_until(Duration::from_secs(10), || !pd.priorities_set().is_empty()).await;
    assert_eq!(triggers(&pd, &key).len(), 1, "paged once when the silence ended");
    let trigger = &triggers(&pd, &key)[0];
    assert_eq!(trigger["routing_key"], ROUTING_KEY, "lab has no routing key of its own");
    assert_eq!(trigger["payload"]["custom_details"]["routing"]["priority_rule"], "pagerduty.priority");
    let incident_id = pd.incident_of(&key).unwrap();
    assert_eq!(pd.priorities_set(), [(incident_id, "P2".to_string())]);
    let timeline = s.timeline(&key);
    assert!(
        timeline.iter().any(|(_, t)| t.contains("ended at"))
            || timeline.iter().any(|(_, t)| t.contains("is over with the incident still open: paged now")),
        "{timeline:?}"
    );
    assert!(timeline.iter().any(|(_, t)| t.starts_with("priority P2 set on PagerDuty incident")), "{timeline:?}");
    s.heal("lab", SystemTime::now());
    s.deliver_until(Duration::from_secs(5), || pd.accepted().len() >= 2).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"]);

    eprintln!("phase: a second outage recovers while silenced: nothing at all");
    s.silence("lab", 30, "moving the cluster");
    let second = s.outage("lab", SystemTime::now() + Duration::from_secs(10));
    s.heal("lab", SystemTime::now() + Duration::from_secs(20));
    s.manager.review_holds(SystemTime::now() + Duration::from_secs(30)).unwrap();
    s.deliver_until(Duration::from_millis(500), || false).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "nothing for the incident that recovered while held");
    let timeline = s.timeline(&second);
    assert!(timeline.iter().any(|(_, t)| t.contains("recovered while held by silence")), "{timeline:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_go_to_their_hubs_service_with_its_priority_and_the_webhook_gets_everything_once() {
    let (pd, events) = PagerDuty::running().await;
    pd.inner.lock().unwrap().rest_outage = Some(Fault::Status(500));
    let receiver = Receiver::default();
    let hook = receiver.clone().start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&events, Some(&hook), &state_path(&dir));
    let mut s = start(&config);
    let t0 = SystemTime::now();

    let temple = s.outage("temple", t0);
    let lab = s.outage("lab", t0);
    s.manager.record_change(&temple_upgrade(), t0).unwrap();
    s.manager
        .record_ticket(
            &TicketNews::Opened {
                hub: "temple".into(),
                kind: TicketKind::DaskGateway,
                users: vec!["probe-3".into()],
                reason: None,
            },
            t0,
        )
        .unwrap();
    s.manager
        .record_ticket(
            &TicketNews::Closed { hub: "temple".into(), kind: TicketKind::DaskGateway, escalated: false },
            t0 + Duration::from_secs(60),
        )
        .unwrap();
    s.deliver_until(Duration::from_secs(2), || false).await;
    assert!(pd.priorities_set().is_empty(), "the REST API is down: no priority yet");
    pd.inner.lock().unwrap().rest_outage = None;
    s.deliver_until(Duration::from_secs(15), || pd.priorities_set().len() == 2 && receiver.accepted().len() >= 4).await;

    let temple_trigger = &triggers(&pd, &temple)[0];
    assert_eq!(temple_trigger["routing_key"], TEMPLE_ROUTING_KEY, "temple's own service");
    assert_eq!(temple_trigger["payload"]["severity"], "error", "temple's own severity");
    let routing = &temple_trigger["payload"]["custom_details"]["routing"];
    assert_eq!(routing["priority"], "P1");
    assert_eq!(routing["priority_rule"], "hubs[temple].pagerduty.kinds.hub_access.priority");
    assert_eq!(routing["routing_key_rule"], "hubs[temple].pagerduty.routing_key");
    assert!(!temple_trigger["payload"].to_string().contains(TEMPLE_ROUTING_KEY), "the key is only where it belongs");
    let lab_trigger = &triggers(&pd, &lab)[0];
    assert_eq!(
        (lab_trigger["routing_key"].as_str(), lab_trigger["payload"]["severity"].as_str()),
        (Some(ROUTING_KEY), Some("critical"))
    );
    assert_eq!(pd.changes()[0]["routing_key"], TEMPLE_ROUTING_KEY, "temple's change goes to temple's service");
    let mut priorities = pd.priorities_set();
    priorities.sort();
    let mut expected =
        vec![(pd.incident_of(&temple).unwrap(), "P1".to_string()), (pd.incident_of(&lab).unwrap(), "P2".to_string())];
    expected.sort();
    assert_eq!(priorities, expected, "each priority set once, after the REST API came back");
    let failed_puts =
        pd.rest_requests().iter().filter(|(r, status)| r.starts_with("GET /incidents") && *status == 500).count();
    assert!(failed_puts >= 1, "the REST API's outage was met and retried");

    s.heal("temple", SystemTime::now());
    s.heal("lab", SystemTime::now());
    s.deliver_until(Duration::from_secs(10), || receiver.accepted().len() >= 6).await;
    assert_eq!(pd.accepted_actions().iter().filter(|a| *a == "resolve").count(), 2);
    let mut events = receiver.events();
    let delivered = events.len();
    events.sort();
    events.dedup();
    assert_eq!(events.len(), delivered, "every webhook event delivered once: {:?}", receiver.events());
    let kinds: Vec<String> = receiver.events().into_iter().map(|(event, _)| event).collect();
    for (event, count) in [("incident_opened", 2), ("incident_resolved", 2), ("ticket_opened", 1), ("ticket_closed", 1)]
    {
        assert_eq!(kinds.iter().filter(|k| **k == event).count(), count, "{event}: {kinds:?}");
    }
    assert!(receiver.attempts() >= 9, "three refused while the receiver was down, then six");
    let ticket = receiver.accepted().into_iter().find(|b| b["event"] == "ticket_closed").unwrap();
    assert_eq!(ticket["closed_because"], "nobody is affected any more");
    assert_eq!(ticket["users"], serde_json::json!(["probe-3"]));
    let opened =
        receiver.accepted().into_iter().find(|b| b["event"] == "incident_opened" && b["hub"] == "temple").unwrap();
    assert_eq!(opened["url"], format!("https://hubwatch.example.org/incidents/{temple}"));
    assert_eq!(opened["severity"], "error");
}

fn deployment(
    hub: &str,
    generation: i64,
    rolling_out: bool,
    silence: Option<(String, Option<&str>)>,
) -> DeploymentState {
    DeploymentState {
        hub: hub.into(),
        namespace: hub.into(),
        deployment: "hub".into(),
        generation,
        rolling_out,
        silence_until: silence.as_ref().map(|(until, _)| until.clone()),
        silence_reason: silence.and_then(|(_, reason)| reason.map(String::from)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_holds_pages_for_its_grace_and_an_annotation_silences_until_it_is_removed() {
    let (pd, _dir, mut s) = usual_started().await;
    let t0 = SystemTime::now();

    eprintln!("phase: temple's hub is upgraded and its new pod is not yet available");
    s.manager.record_change(&temple_upgrade(), t0).unwrap();
    s.manager.on_deployment(&deployment("temple", 9, true, None), t0).unwrap();
    assert_eq!(s.pipeline.rollouts.all().len(), 1);
    let key = s.outage("temple", t0 + Duration::from_secs(30));
    s.manager.review_holds(t0 + Duration::from_secs(240)).unwrap();
    s.deliver_until(Duration::from_millis(500), || false).await;
    assert!(triggers(&pd, &key).is_empty(), "held within the grace");
    let timeline = s.timeline(&key);
    assert!(
        timeline
            .iter()
            .any(|(k, t)| *k == TimelineKind::Held && t.contains("the rollout of hub Deployment hub (generation 9)")),
        "{timeline:?}"
    );
    assert!(
        timeline.iter().any(|(k, t)| *k == TimelineKind::HubChanged && t.contains("k8s-hub:4.2.0")),
        "the change is in the timeline: {timeline:?}"
    );
    eprintln!("phase: the rollout stays broken past the grace: it pages as usual");
    s.manager.review_holds(t0 + Duration::from_secs(301)).unwrap();
    s.manager.review_holds(t0 + Duration::from_secs(302)).unwrap();
    s.deliver_until(Duration::from_secs(5), || !triggers(&pd, &key).is_empty()).await;
    assert_eq!(triggers(&pd, &key).len(), 1);

    eprintln!("phase: lab's Deployment carries a silence annotation");
    let until = hubwatch::timefmt::rfc3339(SystemTime::now() + Duration::from_secs(3600));
    s.manager
        .on_deployment(
            &deployment("lab", 3, false, Some((until.clone(), Some("moving to a new cluster")))),
            SystemTime::now(),
        )
        .unwrap();
    let silence = s.store.silence("annotation-lab").unwrap().expect("the annotation made a silence");
    assert_eq!(silence.source, SilenceSource::Annotation);
    assert_eq!(silence.created_by, "annotation on Deployment lab/hub");
    let lab = s.outage("lab", SystemTime::now());
    s.deliver_until(Duration::from_millis(500), || false).await;
    assert!(triggers(&pd, &lab).is_empty(), "silenced by the annotation");
    eprintln!("phase: the annotation loses its reason: refused, the silence ends, the page goes out");
    s.manager.on_deployment(&deployment("lab", 3, false, Some((until, None))), SystemTime::now()).unwrap();
    assert!(!s.store.silence("annotation-lab").unwrap().unwrap().is_active(SystemTime::now()));
    s.manager.review_holds(SystemTime::now()).unwrap();
    s.deliver_until(Duration::from_secs(5), || !triggers(&pd, &lab).is_empty()).await;
    assert_eq!(triggers(&pd, &lab).len(), 1);
    eprintln!("phase: temple heals; a second rollout completes within its grace and the hub comes back: no page");
    s.heal("temple", SystemTime::now());
    let t1 = SystemTime::now() + Duration::from_secs(10);
    s.manager.on_deployment(&deployment("temple", 10, true, None), t1).unwrap();
    let quiet = s.outage("temple", t1 + Duration::from_secs(5));
    s.manager.on_deployment(&deployment("temple", 10, false, None), t1 + Duration::from_secs(30)).unwrap();
    s.manager.review_holds(t1 + Duration::from_secs(60)).unwrap();
    s.heal("temple", t1 + Duration::from_secs(90));
    s.manager.review_holds(t1 + Duration::from_secs(400)).unwrap();
    s.deliver_until(Duration::from_secs(2), || false).await;
    assert!(triggers(&pd, &quiet).is_empty(), "the hub came back within the grace: nothing sent");
    let timeline = s.timeline(&quiet);
    assert!(timeline.iter().any(|(_, t)| t.contains("recovered while held by the rollout")), "{timeline:?}");

    eprintln!("phase: an annotation whose end is past silences nothing");
    let past = hubwatch::timefmt::rfc3339(SystemTime::now() - Duration::from_secs(60));
    s.manager.on_deployment(&deployment("lab", 4, false, Some((past, Some("done")))), SystemTime::now()).unwrap();
    assert!(s.store.silences(SystemTime::now()).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_and_rest_api_delay_only_themselves() {
    const WELL_INSIDE: Duration = Duration::from_secs(10);
    let (pd, events) = PagerDuty::running().await;
    let receiver = Receiver::default();
    let hook = receiver.clone().start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&events, Some(&hook), &state_path(&dir));
    let mut s = start(&config);
    // The notifier as the daemon runs it (its own loop per channel), with the sinks' usual 30 s timeouts.
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(s.pipeline.notifier(Arc::new(config.clone())).run(stop.clone()));

    eprintln!("phase: the helpdesk and PagerDuty's REST API accept connections and never answer");
    receiver.set_hang(true);
    pd.inner.lock().unwrap().rest_outage = Some(Fault::Hang);
    for user in ["probe-1", "probe-2"] {
        let news = TicketNews::Opened {
            hub: "temple".into(),
            kind: TicketKind::DaskGateway,
            users: vec![user.into()],
            reason: None,
        };
        s.manager.record_ticket(&news, SystemTime::now()).unwrap();
        let closed = TicketNews::Closed { hub: "temple".into(), kind: TicketKind::DaskGateway, escalated: false };
        s.manager.record_ticket(&closed, SystemTime::now()).unwrap();
    }
    let first = s.outage("temple", SystemTime::now());
    s.pipeline.wake.notify_one();
    // Every wait here is well inside the hanging sinks' 30 s: a page that waited on one of them would miss it,
    // and a busy machine (the lab tests run beside this one) still makes it.
    wait_for("the first trigger", WELL_INSIDE, async || triggers(&pd, &first).len() == 1).await;
    wait_for("webhook deliveries held", WELL_INSIDE, async || receiver.attempts() >= 2).await;

    eprintln!("phase: a second hub fails while the webhook and the REST API hang: paged at once all the same");
    let second = s.outage("lab", SystemTime::now());
    s.pipeline.wake.notify_one();
    let took = wait_for("the second trigger", WELL_INSIDE, async || triggers(&pd, &second).len() == 1).await;
    eprintln!("    paged {took:?} after the decision, with webhook and REST deliveries hanging");
    assert!(receiver.accepted().is_empty() && pd.priorities_set().is_empty(), "both sinks still hang");
    s.heal("lab", SystemTime::now());
    s.pipeline.wake.notify_one();
    wait_for("the resolve", WELL_INSIDE, async || pd.accepted_actions().contains(&"resolve".into())).await;
    // PagerDuty has the resolve; the notifier records it and counts its backlog right after.
    let unsent = |channel: &str| {
        metric(&s.pipeline.metrics.render(), "hubwatch_outbox_unsent_events", &[&format!("channel=\"{channel}\"")])
    };
    wait_for("the events channel's backlog at 0", WELL_INSIDE, async || unsent("events") == 0.0).await;
    assert!(unsent("webhook") >= 4.0 && unsent("rest") >= 1.0, "{}", s.pipeline.metrics.render());
    stop.cancel();
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_goes_where_its_trigger_went_whatever_the_configuration_says_later() {
    let (pd, events) = PagerDuty::running().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(&config(&events, None, &state_path(&dir)));
    let key = s.outage("lab", SystemTime::now());
    s.deliver_until(Duration::from_secs(5), || !triggers(&pd, &key).is_empty()).await;
    assert_eq!(triggers(&pd, &key)[0]["routing_key"], ROUTING_KEY, "lab pages the global service");

    eprintln!("phase: restarted with lab routed to its own service while its incident is open");
    drop(s);
    let lab_own = "    pagerduty: {routing_key: {env: TEMPLE_KEY}}\n";
    let moved = config_with(&events, None, &state_path(&dir), &Keys { lab: lab_own, ..USUAL_KEYS });
    let mut s = start(&moved);
    s.heal("lab", SystemTime::now());
    s.deliver_until(Duration::from_secs(5), || pd.accepted_actions().contains(&"resolve".into())).await;
    let resolve = pd.accepted().into_iter().find(|e| e["event_action"] == "resolve").unwrap();
    assert_eq!(resolve["routing_key"], ROUTING_KEY, "the resolve went where the trigger went");
    assert!(pd.open_alerts(ROUTING_KEY).is_empty(), "nothing left triggered: {:?}", pd.open_alerts(ROUTING_KEY));
    let next = s.outage("lab", SystemTime::now() + Duration::from_secs(5));
    s.deliver_until(Duration::from_secs(5), || !triggers(&pd, &next).is_empty()).await;
    assert_eq!(triggers(&pd, &next)[0]["routing_key"], TEMPLE_ROUTING_KEY, "a new incident takes the new route");

    eprintln!("phase: restarted with that key named nowhere: the resolve waits, said loudly, and is never dropped");
    drop(s);
    let gone = config_with(&events, None, &state_path(&dir), &Keys { temple: "", lab: "", ..USUAL_KEYS });
    let mut s = start(&gone);
    s.heal("lab", SystemTime::now() + Duration::from_secs(10));
    s.notifier.deliver_due(SystemTime::now()).await.unwrap();
    assert_eq!(pd.open_alerts(TEMPLE_ROUTING_KEY), [next.to_string()], "not resolved on the wrong service");
    let metrics = s.pipeline.metrics.render();
    let rule = "rule=\"hubs[lab].pagerduty.routing_key\"";
    assert_eq!(metric(&metrics, "hubwatch_pagerduty_routing_key_refused", &[rule]), 1.0, "{metrics}");
    let resolve = s.store.deliveries(&next).unwrap().into_iter().find(|d| d.action == EventAction::Resolve).unwrap();
    assert_eq!(resolve.state, OutboxState::Pending);
    assert!(resolve.last_error.unwrap().contains("is no longer in the configuration"));
    drop(s);
    eprintln!("phase: the key named again (by any hub): the resolve goes out");
    let mut s = start(&config(&events, None, &state_path(&dir)));
    s.notifier.deliver_due(SystemTime::now() + Duration::from_secs(3600)).await.unwrap();
    assert!(pd.open_alerts(TEMPLE_ROUTING_KEY).is_empty());
    assert_eq!(metric(&s.pipeline.metrics.render(), "hubwatch_pagerduty_routing_key_refused", &[rule]), 0.0);
    s.detector.tick(SystemTime::now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_routing_key_waits_without_hammering_and_retry_after_is_honoured() {
    let (pd, _dir, mut s) = usual_started().await;
    let t0 = SystemTime::now();

    eprintln!("phase: the integration was deleted (404): one attempt, then a slow retry, never a dropped page");
    pd.set_outage(Some(Fault::Status(404)));
    let key = s.outage("lab", t0);
    s.notifier.deliver_due(t0).await.unwrap();
    s.notifier.deliver_due(t0 + Duration::from_millis(100)).await.unwrap();
    assert_eq!(pd.requests(), 1, "not retried at once");
    let trigger = s.store.deliveries(&key).unwrap().remove(0);
    assert!(trigger.last_error.as_deref().is_some_and(|e| e.starts_with("HTTP 404")), "{trigger:?}");
    let next = trigger.next_attempt_at.unwrap();
    assert!(next >= t0 + Duration::from_millis(150), "a slow retry: {:?}", next.duration_since(t0));
    let rule = "rule=\"pagerduty.routing_key\"";
    assert_eq!(metric(&s.pipeline.metrics.render(), "hubwatch_pagerduty_routing_key_refused", &[rule]), 1.0);
    let timeline = s.timeline(&key);
    assert!(
        timeline.iter().any(|(_, t)| t.starts_with("PagerDuty refused the routing key of this trigger")),
        "{timeline:?}"
    );
    pd.set_outage(None);
    s.notifier.deliver_due(next + Duration::from_millis(1)).await.unwrap();
    assert_eq!(triggers(&pd, &key).len(), 1);
    assert_eq!(metric(&s.pipeline.metrics.render(), "hubwatch_pagerduty_routing_key_refused", &[rule]), 0.0);

    eprintln!("phase: a 429 asks for two minutes: nothing before, the resolve after");
    pd.inner.lock().unwrap().retry_after = Some(120);
    pd.queue_faults([Fault::Status(429)]);
    s.heal("lab", t0 + Duration::from_secs(10));
    // The notifier's clock, which Retry-After is counted on (the wall clock differs by microseconds).
    let t1 = s.pipeline.clock.now();
    s.notifier.deliver_due(t1).await.unwrap();
    let resolve = s.store.deliveries(&key).unwrap().into_iter().find(|d| d.action == EventAction::Resolve).unwrap();
    // The store keeps whole milliseconds: the retry may read up to 1 ms early of the exact instant.
    let wait = resolve.next_attempt_at.unwrap().duration_since(t1).unwrap() + Duration::from_millis(1);
    assert!(wait >= Duration::from_secs(120) && wait < Duration::from_secs(125), "{wait:?}");
    let asked = pd.requests();
    s.notifier.deliver_due(t1 + Duration::from_secs(60)).await.unwrap();
    assert_eq!(pd.requests(), asked, "nothing sent before Retry-After");
    s.notifier.deliver_due(t1 + Duration::from_secs(125)).await.unwrap();
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerdutys_open_incidents_are_adopted_or_resolved_at_start() {
    let (pd, _dir, config) = usual().await;
    // What an earlier leader left in PagerDuty: an incident of lab this state never heard of (a lost volume),
    // one of temple while this state has temple's outage open under another key, and someone else's.
    let orphan = "lab-hub_access-1790000000";
    let duplicate = "temple-hub_access-1790000100";
    pd.open_alert(ROUTING_KEY, orphan);
    pd.open_alert(TEMPLE_ROUTING_KEY, duplicate);
    pd.open_alert(ROUTING_KEY, "someone-elses-alert");
    let mut s = start(&config);
    let temple = s.outage("temple", SystemTime::now());
    let settings = config.pagerduty.as_ref().unwrap().status_updates.clone().unwrap();
    let owners = reconcile::KeyOwners::of(&config);
    let clock = hubwatch::clock::Clock::start();
    let http = HttpClient::new().unwrap();
    let done = reconcile::reconcile(&s.store, &http, &settings, &owners, clock).await.unwrap();
    assert_eq!(
        done,
        [
            Reconciled::Adopted { key: orphan.into() },
            Reconciled::Duplicate { key: duplicate.into(), open: temple.clone() },
        ]
    );
    s.deliver_until(Duration::from_secs(5), || pd.open_alerts(TEMPLE_ROUTING_KEY) == [temple.to_string()]).await;
    assert_eq!(pd.open_alerts(TEMPLE_ROUTING_KEY), [temple.to_string()], "the duplicate resolved at once");

    eprintln!("phase: restarted (the detector resumes the adopted incident), lab healthy: resolved under its key");
    drop(s);
    let mut s = start(&config);
    s.heal("lab", SystemTime::now());
    s.deliver_until(Duration::from_secs(5), || !pd.open_alerts(ROUTING_KEY).contains(&orphan.to_string())).await;
    assert_eq!(pd.open_alerts(ROUTING_KEY), ["someone-elses-alert"], "someone else's alert is left alone");
    assert!(triggers(&pd, orphan).is_empty(), "adopted, never paged again");
    let timeline = s.timeline(&orphan.into());
    assert!(timeline.iter().any(|(_, t)| t.starts_with("adopted from PagerDuty")), "{timeline:?}");
    let again = reconcile::reconcile(&s.store, &http, &settings, &owners, clock).await.unwrap();
    assert!(again.is_empty(), "nothing left to reconcile: {again:?}");
}

/// A dead-man's switch (healthchecks.io and the like): counts the pings that carry its key header.
async fn dead_mans_switch() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::HeaderMap;
    let pings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = pings.clone();
    let app = axum::Router::new().route(
        "/ping/{key}",
        axum::routing::get(move |headers: HeaderMap| async move {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("GenieKey switch-secret") {
                return axum::http::StatusCode::UNAUTHORIZED;
            }
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            axum::http::StatusCode::OK
        }),
    );
    let addr = crate::support::serve::on_loopback(app).await;
    (format!("http://{addr}/ping/5f1a9c2e-check-key"), pings)
}

#[tokio::test]
async fn a_heartbeat_pings_while_healthy_and_falls_silent_when_not() {
    use hubwatch::config::{HeartbeatConfig, HeartbeatMethod, SecretRef};
    use hubwatch::domain::Secret;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let s = start(&config("http://127.0.0.1:9/v2/enqueue", None, &dir.path().join("state.db")));
    let (url, pings) = dead_mans_switch().await;
    let headers = [("Authorization".to_string(), SecretRef::holding(Secret::new("GenieKey switch-secret")))].into();
    let config = HeartbeatConfig {
        url: url.parse().unwrap(),
        every: Duration::from_millis(100),
        method: HeartbeatMethod::Get,
        headers,
    };
    let heartbeat = hubwatch::notify::heartbeat::Heartbeat {
        config,
        http: s.pipeline.http.clone(),
        health: s.pipeline.health.clone(),
        store: s.store.clone(),
        metrics: s.pipeline.metrics.clone(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let beating = tokio::spawn(heartbeat.run(stop.clone()));
    let pinged_as = |outcome: &str| {
        let labels = format!("outcome=\"{outcome}\"");
        crate::support::daemon::sample(&s.pipeline.metrics.render(), "hubwatch_heartbeat_pings_total", &[&labels])
            .unwrap_or(0.0)
    };
    let withheld = || pinged_as("withheld");
    wait_for("a ping withheld while starting", Duration::from_secs(10), async || withheld() >= 1.0).await;
    assert_eq!(pings.load(Ordering::SeqCst), 0, "not ready yet: no ping");
    s.pipeline.health.set_started(true);
    wait_for("pings while healthy", Duration::from_secs(10), async || pings.load(Ordering::SeqCst) >= 3).await;
    s.pipeline.health.task_failed("recorder");
    let before = withheld();
    wait_for("pings withheld while unhealthy", Duration::from_secs(10), async || withheld() >= before + 3.0).await;
    let pinged = pings.load(Ordering::SeqCst);
    let more = withheld() + 2.0;
    wait_for("more rounds withheld", Duration::from_secs(10), async || withheld() >= more).await;
    assert_eq!(pings.load(Ordering::SeqCst), pinged, "silent while unhealthy: the switch pages");
    assert_eq!(pinged_as("failed"), 0.0, "every ping carried its key");
    stop.cancel();
    beating.await.unwrap();
}

/// The recorder as `hubwatch run` wires it, on hubs temple and lake (probe users 1 to 3), in paused time: a
/// problem below the threshold is a support ticket once it has lasted `incidents.ticket_after`, not before;
/// an outage whose second user fails within it is an incident and never a ticket.
#[tokio::test(start_paused = true)]
async fn a_support_ticket_opens_after_ticket_after_and_never_for_an_outage_corroborated_within_it() {
    use hubwatch::domain::{IncidentKind, ProbeOutcome};
    use hubwatch::incident::recorder::{Inputs, Recorder};
    let dir = tempfile::tempdir().unwrap();
    let hub = |name: &str| {
        format!(
            "  - {{name: {name}, url: https://{name}.example.org, token: {{env: T}}, users: [probe-1, probe-2, probe-3]}}\n"
        )
    };
    let yaml = format!(
        "state_path: {}\nincidents: {{ticket_after: 20s}}\nhubs:\n{}{}",
        state_path(&dir).display(),
        hub("temple"),
        hub("lake")
    );
    let config = Config::parse(&yaml, Path::new("tickets.yaml"), &|_| Some("token".into())).unwrap();
    let store = Arc::new(Store::open(&config.state_path).unwrap());
    let pipeline = Pipeline::new(&config, store.clone(), HttpClient::new().unwrap(), Clock::start());
    let (manager, context) = (pipeline.manager(&Arc::new(config.clone()), None), pipeline.context(&config, None));
    let kinds = vec![("temple".into(), vec![IncidentKind::HubAccess]), ("lake".into(), vec![IncidentKind::HubAccess])];
    let recorder = Recorder::start(manager, kinds, context).await;
    let (outcomes_tx, outcomes) = tokio::sync::mpsc::channel(16);
    let (_real_users_tx, real_users) = tokio::sync::mpsc::channel(1);
    let (_changes_tx, changes) = tokio::sync::mpsc::channel(1);
    let recording = tokio::spawn(async move { recorder.run(&mut Inputs { outcomes, real_users, changes }).await });
    let fail = |hub: &str, user: &str| -> ProbeOutcome {
        crate::support::outcomes::finished(hub, user, Capability::Server, Some("Spawn failed"), SystemTime::now())
    };
    let tickets = || store.open_tickets().unwrap().into_iter().map(|t| t.hub.to_string()).collect::<Vec<_>>();

    outcomes_tx.send(fail("temple", "probe-1")).await.unwrap();
    outcomes_tx.send(fail("lake", "probe-1")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    outcomes_tx.send(fail("lake", "probe-2")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(tickets().is_empty(), "not before ticket_after: {:?}", tickets());
    assert_eq!(store.open_incidents().unwrap().len(), 1, "lake's two users are an incident");
    // The recorder looks at tickets every 5 s: the next look past ticket_after opens temple's.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(tickets(), ["temple"], "one user for 20 s is a ticket; lake's outage is none");
    drop(outcomes_tx);
    recording.await.unwrap();
}
