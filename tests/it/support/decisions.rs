//! The decision and delivery side as `hubwatch run` wires it ([`Pipeline`]), fed the detector's decisions
//! directly with their time an argument (no waiting), delivering to the PagerDuty stand-in: hubs a, b, c and
//! d on cluster east, e on cluster west, each with probe users p1 and p2.

use super::pagerduty::{API_TOKEN, FROM_EMAIL, PagerDuty, ROUTING_KEY};
use hubwatch::app::pipeline::Pipeline;
use hubwatch::clock::Clock;
use hubwatch::config::Config;
use hubwatch::domain::{Capability, IncidentKey, IncidentKind, Stage, Symptoms, Transition, UserFailure};
use hubwatch::http::HttpClient;
use hubwatch::incident::IncidentManager;
use hubwatch::notify::Notifier;
use hubwatch::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Decisions {
    pub config: Config,
    pub store: Arc<Store>,
    pub manager: IncidentManager,
    pub notifier: Notifier,
    pub pd: PagerDuty,
    pd_url: String,
    fold: String,
    /// An hour ago: every decision is in the past, so its events are due at once.
    pub t0: SystemTime,
    _dir: tempfile::TempDir,
}

/// The hubs, with `fold` as `incidents.fold`, and PagerDuty's REST API too when `rest`.
pub async fn setup(fold: &str, rest: bool) -> Decisions {
    hubwatch::http::install_crypto_provider();
    let pd = PagerDuty::default();
    let url = pd.clone().start().await;
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    on_state(fold, rest, pd, url, t0)
}

/// A fresh state on `pd` (at `url`), its time from `t0`.
fn on_state(fold: &str, rest: bool, pd: PagerDuty, url: String, t0: SystemTime) -> Decisions {
    let dir = tempfile::tempdir().unwrap();
    let hubs: String = [("a", "east"), ("b", "east"), ("c", "east"), ("d", "east"), ("e", "west")]
        .iter()
        .map(|(hub, cluster)| {
            format!(
                "  - {{name: {hub}, cluster: {cluster}, url: https://{hub}.example.org, token: {{env: T}}, users: [p1, p2]}}\n"
            )
        })
        .collect();
    let rest = match rest {
        true => format!(
            ", api_url: {}, api_token: {{env: PD_API_TOKEN}}, from_email: {FROM_EMAIL}, read_back_every: 1m",
            url.trim_end_matches("/v2/enqueue")
        ),
        false => String::new(),
    };
    let yaml = format!(
        "state_path: {}\npublic_url: https://hubwatch.example.org\nincidents: {{keep_open_for: 0s, fold: {fold}}}\n\
         pagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: {url}{rest}}}\nhubs:\n{hubs}",
        dir.path().join("state.db").display()
    );
    let config = Config::parse(&yaml, Path::new("fold.yaml"), &|name| match name {
        "ROUTING_KEY" => Some(ROUTING_KEY.into()),
        "PD_API_TOKEN" => Some(API_TOKEN.into()),
        _ => Some("token".into()),
    })
    .unwrap();
    let store = Arc::new(Store::open(&config.state_path).unwrap());
    let pipeline = Pipeline::new(&config, store.clone(), HttpClient::new().unwrap(), Clock::start());
    let manager = pipeline.manager(&Arc::new(config.clone()), None);
    let notifier = pipeline.notifier(Arc::new(config.clone())).with_send_timeout(Duration::from_millis(500));
    Decisions { config, store, manager, notifier, pd, pd_url: url, fold: fold.into(), t0, _dir: dir }
}

fn failing(at: SystemTime) -> Symptoms {
    let failure =
        UserFailure { stage: Stage::Progress, reason: "Spawn failed: node pool full".into(), since: at, last: at };
    let users = [("p1".to_string(), failure.clone()), ("p2".to_string(), failure)].into();
    Symptoms { affected: [(Capability::Server, users)].into() }
}

impl Decisions {
    pub fn at(&self, seconds: u64) -> SystemTime {
        self.t0 + Duration::from_secs(seconds)
    }

    /// `hub`'s two probe users fail at `seconds` (the detector's decision).
    pub fn fails(&self, hub: &str, seconds: u64) {
        let at = self.at(seconds);
        let opened = Transition::Opened { hub: hub.into(), kind: IncidentKind::HubAccess, symptoms: failing(at), at };
        self.manager.handle(&opened).unwrap();
    }

    pub fn recovers(&self, hub: &str, seconds: u64) {
        let recovered = Transition::Recovered { hub: hub.into(), kind: IncidentKind::HubAccess, at: self.at(seconds) };
        self.manager.handle(&recovered).unwrap();
    }

    /// The recorder's tick at `seconds`: waits that ended page as before.
    pub fn tick(&self, seconds: u64) {
        self.manager.review_holds(self.at(seconds)).unwrap();
    }

    /// Delivers until the outbox is empty (a deadline for a busy machine); then what PagerDuty accepted, as
    /// (action, dedup key).
    pub async fn delivered(&self) -> Vec<(String, String)> {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.store.unsent().unwrap().0 > 0 && tokio::time::Instant::now() < until {
            self.notifier.deliver_due(SystemTime::now()).await.unwrap();
        }
        assert_eq!(self.store.unsent().unwrap().0, 0, "everything queued was delivered");
        let accepted = self.pd.accepted();
        accepted
            .iter()
            .map(|e| (e["event_action"].as_str().unwrap().into(), e["dedup_key"].as_str().unwrap().into()))
            .collect()
    }

    /// The same hubs and PagerDuty on a fresh state (a volume lost, a takeover from a copy that missed it).
    pub fn state_lost(&self) -> Decisions {
        let rest = self.config.pagerduty.as_ref().is_some_and(|p| p.status_updates.is_some());
        on_state(&self.fold, rest, self.pd.clone(), self.pd_url.clone(), self.t0)
    }

    /// What a replica starting to lead at `seconds` does first: reconciles with PagerDuty's open incidents.
    pub async fn reconcile(&self, seconds: u64) -> Vec<hubwatch::incident::reconcile::Reconciled> {
        use hubwatch::incident::reconcile::{KeyOwners, reconcile};
        let settings = self.config.pagerduty.as_ref().unwrap().status_updates.clone().unwrap();
        let clock = Clock::starting_at(self.at(seconds));
        let http = HttpClient::new().unwrap();
        reconcile(&self.store, &http, &settings, &KeyOwners::of(&self.config), clock).await.unwrap()
    }

    pub fn key_of(&self, hub: &str) -> IncidentKey {
        let all = self.store.all_incidents().unwrap();
        all.into_iter().rev().find(|i| i.hub == hub).map(|i| i.key).unwrap()
    }
}
