//! Checks on demand: "is it fixed?" answered now, not at the next round. `POST /api/v1/hubs/{hub}/check`
//! runs every capability of the hub for every probe user (as `hubwatch check` does), hands the outcomes to the
//! recorder like any round's (they count in detection), and, with PagerDuty's REST API, posts the result as a
//! note on the hub's open incidents. One check per hub at a time, at most one a minute; only while this
//! replica probes.

use super::HubProber;
use crate::domain::{HubName, Message, ProbeOutcome, ProbeResult};
use crate::store::{NewEvent, Store, StoreError};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// At most one check of a hub in this long.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Where the notes of a check go: the outbox, and the notifier woken for them.
#[derive(Clone)]
pub struct Notes {
    pub store: Arc<Store>,
    pub wake: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckRefused {
    #[error("hubwatch watches no hub {0:?}")]
    UnknownHub(String),
    #[error("a check of {0} is running: its answer comes when it ends")]
    Running(HubName),
    #[error("{hub} was checked less than a minute ago: one check a minute")]
    TooSoon { hub: HubName, retry_after: Duration },
    #[error("hubwatch is not probing yet (starting, or standing by)")]
    NotProbing,
    #[error("the check ran but its note could not be queued: {0}")]
    Note(#[from] StoreError),
}

/// What the current generation of probing lends to checks on demand.
struct Probing {
    probers: Vec<Arc<HubProber>>,
    outcomes: mpsc::Sender<ProbeOutcome>,
    stop: CancellationToken,
}

#[derive(Default)]
pub struct OnDemand {
    probing: Mutex<Option<Probing>>,
    /// Per hub: when its last check started, and whether it still runs.
    checks: Mutex<HashMap<HubName, (Instant, bool)>>,
    notes: Option<Notes>,
}

impl OnDemand {
    /// Checks whose results are noted on open incidents through `notes` (with PagerDuty's REST API).
    pub fn new(notes: Option<Notes>) -> Self {
        OnDemand { notes, ..OnDemand::default() }
    }

    /// A generation of probing begins: its probers, the recorder's outcomes, its end.
    pub fn probing(&self, probers: Vec<Arc<HubProber>>, outcomes: mpsc::Sender<ProbeOutcome>, stop: CancellationToken) {
        *lock(&self.probing) = Some(Probing { probers, outcomes, stop });
    }

    /// The generation ended: its outcomes channel is let go (the recorder ends when every sender has).
    pub fn stopped(&self) {
        *lock(&self.probing) = None;
    }

    /// Runs every capability of `hub` for every probe user now; the outcomes, in the probe users' order.
    pub async fn check(&self, hub: &str) -> Result<Vec<ProbeOutcome>, CheckRefused> {
        let (prober, outcomes, stop) = {
            let probing = lock(&self.probing);
            let probing = probing.as_ref().ok_or(CheckRefused::NotProbing)?;
            let prober = probing.probers.iter().find(|p| p.hub.name == hub).cloned();
            let prober = prober.ok_or_else(|| CheckRefused::UnknownHub(hub.to_string()))?;
            (prober, probing.outcomes.clone(), probing.stop.clone())
        };
        let hub = &prober.hub.name;
        let running = self.start(hub)?;
        let users: Vec<String> = prober.hub.probe_users().map(String::from).collect();
        let rounds = users.iter().map(|user| prober.check_user(user, true, &stop));
        let results: Vec<ProbeOutcome> = futures_util::future::join_all(rounds).await.into_iter().flatten().collect();
        drop(running);
        for outcome in &results {
            // Counted like any round; a recorder gone (shutting down) is no reason to lose the answer.
            let _ = outcomes.send(outcome.clone()).await;
        }
        if let Some(notes) = self.notes.clone() {
            // The store's writes wait on the disk: never on the runtime.
            let (hub, text) = (hub.clone(), summary(&results));
            crate::tasks::off_runtime(move || notes.note(&hub, &text)).await?;
        }
        Ok(results)
    }

    /// Marks `hub`'s check as running until the guard is dropped (also when the request is abandoned), unless
    /// one runs or ran within [`CHECK_EVERY`].
    fn start<'a>(&'a self, hub: &'a HubName) -> Result<Running<'a>, CheckRefused> {
        let mut checks = lock(&self.checks);
        if let Some((started, running)) = checks.get(hub) {
            if *running {
                return Err(CheckRefused::Running(hub.clone()));
            }
            let since = started.elapsed();
            if since < CHECK_EVERY {
                return Err(CheckRefused::TooSoon { hub: hub.clone(), retry_after: CHECK_EVERY - since });
            }
        }
        checks.insert(hub.clone(), (Instant::now(), true));
        Ok(Running { checks: &self.checks, hub })
    }
}

impl Notes {
    /// `text` as a note on each of the hub's open incidents that PagerDuty has (not held): for one folded
    /// into a cluster incident, on that one, naming the hub.
    fn note(&self, hub: &HubName, text: &str) -> Result<(), CheckRefused> {
        let open = self.store.open_incidents()?;
        let open: Vec<_> = open.iter().filter(|i| i.hub == hub && i.hold.is_none()).collect();
        if open.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now();
        for incident in open {
            let (key, text) = match &incident.part_of {
                Some(cluster_key) => (cluster_key, format!("hub {hub}: {text}")),
                None => (&incident.key, text.to_string()),
            };
            let note = NewEvent::now(Message::Note { content: text });
            self.store.queue_status_note(key, now, note.routed(&incident.hub, Some(incident.kind)))?;
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// A check that runs; ended when dropped.
struct Running<'a> {
    checks: &'a Mutex<HashMap<HubName, (Instant, bool)>>,
    hub: &'a HubName,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some((_, running)) = lock(self.checks).get_mut(self.hub) {
            *running = false;
        }
    }
}

/// "checked on demand: 8/8 ok", or what failed: "checked on demand: 6/8 ok; failed: probe-1 server
/// (progress: Spawn failed: …), …".
pub fn summary(results: &[ProbeOutcome]) -> String {
    let tried: Vec<&ProbeOutcome> =
        results.iter().filter(|o| !matches!(o.result, ProbeResult::Blocked { .. })).collect();
    let ok = tried.iter().filter(|o| o.result.is_success()).count();
    let failed: Vec<String> = tried
        .iter()
        .filter_map(|o| match &o.result {
            ProbeResult::Failed(f) => Some(format!("{} {} ({}: {})", o.user, o.capability, f.stage, f.reason)),
            _ => None,
        })
        .collect();
    let head = format!("checked on demand: {ok}/{} ok", tried.len());
    let text = if failed.is_empty() { head } else { format!("{head}; failed: {}", failed.join(", ")) };
    crate::domain::wording::truncate(&text, 2000)
}
