//! The recorder: the one owner of the detector. Every probe outcome goes to the metrics, the status board,
//! the log and the detector; so does every change of the real users affected. The detector's transitions,
//! the hub changes and the diagnostics that arrive are *decisions* the incident manager stores (and queues
//! for PagerDuty); a decision the store cannot take waits in the [`Backlog`] and is retried until it is
//! stored, behind which later decisions queue. Restartable: a new recorder resumes from the store and the
//! backlog (both outlive it), so a panic loses nothing.

use super::backlog::{Backlog, Decision};
use super::sinks::TicketNews;
use super::{DiagnosticsWanted, IncidentManager};
use crate::clock::Clock;
use crate::detector::{Detector, DetectorSettings};
use crate::diagnostics::Diagnostics;
use crate::diagnostics::collect::Collector;
use crate::domain::lookup::NameMap;
use crate::domain::{
    HubName, HubNews, IncidentKey, IncidentKind, ProbeOutcome, ProbeResult, RealUsers, Symptoms, TicketKind, Transition,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use crate::sync::lock;
use crate::tasks::Tasks;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often failures are aged out of the window and held-back updates and status notes are sent.
const TICK: Duration = Duration::from_secs(5);
/// How long the recorder lets outcomes gather after taking what had queued up. It runs on a thread of its
/// own, and waking that thread costs more than recording an outcome: at thousands of hubs, outcomes arrive
/// by the thousand a second, and taking them one wake-up each cost a tenth of hubwatch's CPU
/// (docs/benchmarks.md). Decisions wait at most this long, which no page or test notices.
const GATHER: Duration = Duration::from_millis(50);

/// What the recorder hears.
pub struct Inputs {
    pub outcomes: mpsc::Receiver<ProbeOutcome>,
    pub real_users: mpsc::Receiver<RealUsers>,
    pub changes: mpsc::Receiver<HubNews>,
}

/// What a recorder is made of that outlives it (shared with the rest of the daemon).
#[derive(Clone)]
pub struct Context {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub board: Arc<StatusBoard>,
    pub health: Arc<Health>,
    pub backlog: Arc<Mutex<Backlog>>,
    pub tasks: Tasks,
    pub collector: Option<Arc<Collector>>,
    pub settings: DetectorSettings,
    /// How long a problem must stay below the threshold before its support ticket opens
    /// (`incidents.ticket_after`): a helpdesk should not get a ticket that becomes an incident at once.
    pub ticket_after: Duration,
    /// Every decision's time (see [`Clock`]).
    pub clock: Clock,
}

pub struct Recorder {
    detector: Detector,
    manager: IncidentManager,
    context: Context,
    observers: Observers,
    /// Each hub with the incident kinds it can have.
    hubs: Vec<(HubName, Vec<IncidentKind>)>,
    /// Diagnostics collected in the background come back here, with their incident's key.
    collected: mpsc::Sender<(IncidentKey, Diagnostics)>,
    arrivals: mpsc::Receiver<(IncidentKey, Diagnostics)>,
    /// Problems below the threshold not yet a support ticket, and since when (see [`Context::ticket_after`]).
    settling: NameMap<(HubName, IncidentKind), SystemTime>,
}

impl Recorder {
    /// A recorder for `hubs`, its detector resumed from the incidents open in the store once the waiting
    /// decisions are stored (so none is opened, i.e. paged, again, and each still recovers). Waits while the
    /// store cannot be read: starting blind would page open incidents a second time.
    pub async fn start(
        manager: IncidentManager,
        hubs: Vec<(HubName, Vec<IncidentKind>)>,
        context: Context,
    ) -> Recorder {
        let mut detector = Detector::new(context.settings);
        let now = context.clock.now();
        let open = loop {
            match context.store.open_incidents() {
                Ok(open) => break open,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the open incidents; retrying before recording anything");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        // A cluster incident is the manager's: the detector knows only its hubs' own.
        let stored: Vec<(HubName, IncidentKind, Symptoms)> =
            open.into_iter().filter(|i| i.cluster.is_none()).map(|i| (i.hub, i.kind, i.symptoms)).collect();
        let resumed = lock(&context.backlog).open_after(stored, Symptoms::clone);
        for (hub, kind, symptoms) in &resumed {
            detector.resume(hub, *kind, symptoms.clone(), now);
            tracing::info!(%hub, kind = kind.as_str(), "resumed an open incident");
        }
        let observers =
            Observers { metrics: context.metrics.clone(), board: context.board.clone(), last: NameMap::default() };
        let (collected, arrivals) = mpsc::channel(16);
        Recorder { detector, manager, context, observers, hubs, collected, arrivals, settling: NameMap::default() }
    }

    /// Records until the outcomes channel closes (the scheduler is gone).
    pub async fn run(mut self, inputs: &mut Inputs) {
        let mut tick = tokio::time::interval(TICK);
        // Everything written once at start (nothing is shown yet, so nothing is skipped): the gauges, and
        // the board, which outlives a recorder restarted after a panic.
        let now = self.context.clock.now();
        for (hub, kinds) in self.hubs.clone() {
            for kind in kinds {
                self.observers.refresh(&self.detector, &hub, kind, now);
            }
        }
        loop {
            let retry_at = lock(&self.context.backlog).retry_at();
            tokio::select! {
                outcome = inputs.outcomes.recv() => match outcome {
                    Some(outcome) => {
                        self.on_outcome(outcome);
                        while let Ok(queued) = inputs.outcomes.try_recv() {
                            self.on_outcome(queued);
                        }
                        // Not listening meanwhile, so the probes' sends wake nothing.
                        tokio::time::sleep(GATHER).await;
                    }
                    None => break,
                },
                Some(users) = inputs.real_users.recv() => self.on_real_users(users),
                Some(news) = inputs.changes.recv() => {
                    let decision = match news {
                        HubNews::Changed(change) => Decision::HubChanged(change),
                        HubNews::Deployment(state) => Decision::Deployment(state),
                    };
                    self.decide(decision, self.context.clock.now());
                }
                Some((key, diagnostics)) = self.arrivals.recv() => {
                    self.decide(Decision::Diagnostics { key, diagnostics }, self.context.clock.now());
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.retry_backlog();
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn on_outcome(&mut self, outcome: ProbeOutcome) {
        self.observers.metrics.observe(&outcome);
        self.observers.board.record(&outcome);
        log_outcome(&outcome);
        let now = self.context.clock.now();
        let transitions = self.detector.observe(&outcome, now);
        self.decide_all(transitions, now);
        // Only this hub and kind can have changed.
        self.observers.refresh(&self.detector, &outcome.hub, IncidentKind::of(outcome.capability), now);
    }

    fn on_real_users(&mut self, update: RealUsers) {
        let now = self.context.clock.now();
        if !update.users.is_empty() {
            let users: Vec<&String> = update.users.keys().collect();
            tracing::info!(hub = %update.hub, capability = update.capability.as_str(), source = update.source.as_str(), ?users, "real users affected");
        }
        let kind = IncidentKind::of(update.capability);
        let transitions = self.detector.signals(&update.hub, update.source, update.capability, update.users, now);
        self.decide_all(transitions, now);
        self.observers.refresh(&self.detector, &update.hub, kind, now);
    }

    fn on_tick(&mut self) {
        let now = self.context.clock.now();
        self.context.metrics.set_clock_offset(self.context.clock.wall_offset());
        self.retry_backlog();
        match self.manager.flush_pending_updates(now) {
            Ok(wanted) => wanted.into_iter().for_each(|w| self.collect(w)),
            Err(e) => tracing::error!(error = %e, "cannot send held-back incident updates; retrying"),
        }
        if let Err(e) = self.manager.queue_status_updates(now) {
            tracing::error!(error = %e, "cannot queue status notes; retrying");
        }
        match self.manager.review_holds(now) {
            Ok(wanted) => wanted.into_iter().for_each(|w| self.collect(w)),
            Err(e) => tracing::error!(error = %e, "cannot review held pages; retrying"),
        }
        let transitions = self.detector.tick(now);
        self.decide_all(transitions, now);
        // Failures age out of the window with time alone: every hub and kind is looked at.
        let tickets = match self.context.store.open_tickets() {
            Ok(open) if lock(&self.context.backlog).is_empty() => {
                Some(open.into_iter().map(|t| (t.hub, t.kind)).collect::<HashSet<_>>())
            }
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the support tickets; retrying");
                None
            }
        };
        for (hub, kinds) in self.hubs.clone() {
            for kind in kinds {
                self.observers.refresh(&self.detector, &hub, kind, now);
                if let Some(tickets) = &tickets {
                    let open = tickets.contains(&(hub.clone(), TicketKind::of(kind)));
                    self.review_ticket(&hub, kind, open, now);
                }
            }
            if let Some(tickets) = &tickets {
                self.review_slow_ticket(&hub, tickets.contains(&(hub.clone(), TicketKind::SlowStarts)), now);
                self.review_first_login_ticket(&hub, tickets.contains(&(hub.clone(), TicketKind::FirstLogin)), now);
            }
        }
    }

    /// Opens or closes the support ticket of `hub` and `kind` (`open`: one is) when what the detector sees
    /// says so (looked at every tick, off the hot path): it opens once the problem has stayed below the
    /// threshold for [`Context::ticket_after`], and closes at once. Tickets wait while decisions wait (the store
    /// would not show the ticket a waiting one opens).
    fn review_ticket(&mut self, hub: &HubName, kind: IncidentKind, open: bool, now: SystemTime) {
        let symptoms = self.detector.symptoms(hub, kind, now);
        let incident = self.detector.is_open(hub, kind);
        let below = !incident && !symptoms.users().is_empty();
        let slot = (hub.clone(), kind);
        let since = if below {
            *self.settling.entry(slot).or_insert(now)
        } else {
            self.settling.remove(&slot);
            now
        };
        let wanted = below && now.duration_since(since).is_ok_and(|d| d >= self.context.ticket_after);
        if wanted == open || (below && open) {
            return;
        }
        let users: Vec<String> = symptoms.users().into_iter().map(String::from).collect();
        let (hub, kind) = (hub.clone(), TicketKind::of(kind));
        let news = match (wanted, open) {
            (true, false) => TicketNews::Opened { hub, kind, users, reason: None },
            (false, true) => TicketNews::Closed { hub, kind, escalated: incident },
            _ => return,
        };
        self.decide(Decision::Ticket(news), now);
    }

    /// Opens the slow-starts ticket of `hub` when enough probe users' starts are slow, and closes it when
    /// they are not. Slowness is already a run of minutes: no settling.
    fn review_slow_ticket(&mut self, hub: &HubName, open: bool, now: SystemTime) {
        let users = self.detector.slow_starts(hub, now);
        let (hub, kind) = (hub.clone(), TicketKind::SlowStarts);
        let news = match (!users.is_empty(), open) {
            (true, false) => TicketNews::Opened { hub, kind, users, reason: None },
            (false, true) => TicketNews::Closed { hub, kind, escalated: false },
            _ => return,
        };
        self.decide(Decision::Ticket(news), now);
    }

    /// Opens the first-login ticket of `hub` when its latest first-login check failed (with the stage and
    /// the words), and closes it when one succeeds.
    fn review_first_login_ticket(&mut self, hub: &HubName, open: bool, now: SystemTime) {
        let failed = self.detector.first_login_failure(hub).map(|f| format!("{}: {}", f.stage.as_str(), f.reason));
        let (hub, kind) = (hub.clone(), TicketKind::FirstLogin);
        let news = match (failed, open) {
            (Some(reason), false) => TicketNews::Opened { hub, kind, users: Vec::new(), reason: Some(reason) },
            (None, true) => TicketNews::Closed { hub, kind, escalated: false },
            _ => return,
        };
        self.decide(Decision::Ticket(news), now);
    }

    fn decide_all(&mut self, transitions: Vec<Transition>, now: SystemTime) {
        for transition in transitions {
            self.decide(Decision::Transition(transition), now);
        }
    }

    /// Stores `decision` now, or, when the store fails or earlier decisions still wait, keeps it waiting.
    fn decide(&mut self, decision: Decision, now: SystemTime) {
        let backlog = self.context.backlog.clone();
        let mut backlog = lock(&backlog);
        if backlog.is_empty() {
            match self.store(&decision, now) {
                Ok(_) => return,
                Err(e) if e.is_permanent() => self.drop_decision(&decision, &e),
                Err(e) => {
                    tracing::error!(error = %e, decision = %decision.describe(), "cannot store an incident decision: it waits and is retried");
                    backlog.push(decision, now);
                    backlog.failed(e.to_string(), Instant::now());
                }
            }
        } else {
            backlog.push(decision, now);
        }
        self.context.health.set_unstored(backlog.len());
    }

    /// Stores waiting decisions, oldest first, while the store takes them.
    fn retry_backlog(&mut self) {
        let backlog = self.context.backlog.clone();
        let mut backlog = lock(&backlog);
        while backlog.due(Instant::now()) {
            let Some(waiting) = backlog.front().cloned() else { break };
            let now = self.context.clock.now();
            match self.store(&waiting.decision, now) {
                Ok(key) => {
                    let error = backlog.first_error().unwrap_or("unknown").to_string();
                    backlog.stored();
                    tracing::warn!(left = backlog.len(), %error, "stored an incident decision that had waited");
                    if let Some(key) = key
                        && let Err(e) = self.manager.note_late(&key, waiting.decided_at, now, &error)
                    {
                        tracing::warn!(error = %e, %key, "cannot note the late decision in the timeline");
                    }
                }
                Err(e) if e.is_permanent() => {
                    self.drop_decision(&waiting.decision, &e);
                    backlog.stored();
                }
                Err(e) => {
                    backlog.failed(e.to_string(), Instant::now());
                    tracing::error!(error = %e, waiting = backlog.len(), "the state database still cannot be written");
                }
            }
        }
        self.context.health.set_unstored(backlog.len());
    }

    /// A decision the store refuses for good: reported and counted, never retried ahead of every later one.
    fn drop_decision(&self, decision: &Decision, error: &StoreError) {
        self.context.metrics.count_decision_dropped();
        tracing::error!(%error, decision = %decision.describe(),
            "the state database refuses this incident decision for good: skipped, so later ones are not held behind it");
    }

    /// One decision into the store; the incident it concerned (for a transition).
    fn store(&mut self, decision: &Decision, now: SystemTime) -> Result<Option<IncidentKey>, StoreError> {
        match decision {
            Decision::Transition(transition) => {
                let handled = self.manager.handle(transition)?;
                if let Some(wanted) = handled.wanted {
                    self.collect(wanted);
                }
                Ok(handled.key)
            }
            Decision::HubChanged(change) => self.manager.record_change(change, now).map(|()| None),
            Decision::Diagnostics { key, diagnostics } => {
                self.manager.attach_diagnostics(key, diagnostics, now).map(|()| None)
            }
            Decision::Deployment(state) => self.manager.on_deployment(state, now).map(|()| None),
            Decision::Ticket(news) => self.manager.record_ticket(news, now).map(|()| None),
        }
    }

    /// Collects in the background: the trigger goes out when they arrive or when its wait is over,
    /// whichever comes first; diagnostics that come later follow in an update.
    fn collect(&self, wanted: DiagnosticsWanted) {
        let Some(collector) = self.context.collector.clone() else { return };
        let back = self.collected.clone();
        self.context.tasks.spawn_once("diagnostics", async move {
            let diagnostics = collector.collect(&wanted.hub, wanted.kind, wanted.users).await;
            let _ = back.send((wanted.key, diagnostics)).await;
        });
    }
}

/// What observes outcomes and never decides: the metrics (the affected-users gauges written only when what
/// they show changes, as the hot path sees thousands of outcomes a second), the status board, and a log line
/// when a support ticket (1..N-1 users) changes.
struct Observers {
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    /// Per hub and kind: affected users and whether an incident is open, as last written.
    last: NameMap<(HubName, IncidentKind), (usize, bool)>,
}

impl Observers {
    fn set(&mut self, detector: &Detector, hub: &HubName, kind: IncidentKind, users: usize) -> Option<(usize, bool)> {
        let now = (users, detector.is_open(hub, kind));
        let previous = self.last.insert((hub.clone(), kind), now);
        if previous != Some(now) {
            self.metrics.set_affected(hub, kind, now.0, now.1);
        }
        previous
    }

    fn refresh(&mut self, detector: &Detector, hub: &HubName, kind: IncidentKind, now: SystemTime) {
        // Shown as nobody affected and still quiet: nothing to write (most outcomes, at thousands a second).
        if self.last.get(&(hub.clone(), kind)) == Some(&(0, false)) && detector.is_quiet(hub, kind) {
            return;
        }
        let symptoms = detector.symptoms(hub, kind, now);
        let users = symptoms.users();
        let previous = self.set(detector, hub, kind, users.len()).map_or(0, |p| p.0);
        let open = detector.is_open(hub, kind);
        self.board.set_affected(hub, kind.capabilities(), &symptoms, open);
        if !open && !users.is_empty() && users.len() != previous {
            let users: Vec<&str> = users.into_iter().collect();
            tracing::info!(
                %hub,
                kind = kind.as_str(),
                ?users,
                "support ticket: users affected, below the incident threshold"
            );
        }
    }
}

fn log_outcome(outcome: &ProbeOutcome) {
    let (hub, user, capability, seconds) =
        (&outcome.hub, &outcome.user, outcome.capability.as_str(), outcome.duration.as_secs_f64());
    match &outcome.result {
        ProbeResult::Ok => tracing::debug!(%hub, user, capability, seconds, "probe ok"),
        slow @ ProbeResult::Slow(_) => {
            tracing::info!(%hub, user, capability, seconds, reason = slow.slowness().unwrap_or_default(), "probe slow")
        }
        ProbeResult::Blocked { by } => {
            tracing::info!(%hub, user, capability, blocked_by = by.as_str(), "probe blocked")
        }
        ProbeResult::Failed(f) => tracing::warn!(
            %hub, user, capability, seconds, stage = f.stage.as_str(), cause = ?f.cause, reason = %f.reason,
            detail = f.detail.as_deref().unwrap_or(""), "probe failed"
        ),
    }
}
