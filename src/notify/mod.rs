//! Delivery of the outbox, on three channels that never wait for each other: PagerDuty's Events API
//! (triggers, resolves, change events), its REST API (status notes, priorities) and the webhook sink. Each
//! channel has its own worker, delivers up to [`CHANNEL_CONCURRENCY`] incidents at once (each incident's
//! events in order), and its own deadlines, so a sink that hangs delays only itself.
//!
//! An event counts as sent only after the sink accepted it. 429 waits as long as the sink said
//! (`Retry-After`), else backs off for minutes; 5xx and network errors back off exponentially with jitter
//! (backon), counted from when the attempt ended; an invalid event (400) is never retried; a refused
//! routing key (401/403/404) marks the key broken and is retried slowly, never hot and never dropped.
//! With high availability, nothing leaves before the cluster copy of the state holds it ([`Handover`]).
//! Without a `pagerduty` section it is a dry run: events are logged and marked `dry_run`, nothing is sent.

mod deliver;
mod entries;
pub mod heartbeat;
pub mod pagerduty;
pub mod rest;
pub mod webhook;

use crate::clock::Clock;
use crate::config::{Config, PagerDutyConfig, WebhookConfig};
use crate::domain::Channel;
use crate::ha::{Fence, Handover};
use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::store::{OutboxEvent, OutboxState, RoutedTo, Store, StoreError, TimelineKind};
use crate::sync::lock;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long one delivery may take before it counts as a network failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Each worker looks at its channel at least this often, even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// The longest wait between passes while the outbox cannot be read or written.
const STORE_RETRY_MAX: Duration = Duration::from_secs(60);
/// How many incidents' events one channel delivers at once.
const CHANNEL_CONCURRENCY: usize = 4;
/// How long a pass waits after the hand-over to the cluster copy failed (the mirror says why).
const HANDOVER_RETRY: Duration = Duration::from_secs(1);
/// How soon a worker with deliveries in flight looks again for other due events.
const BUSY_POLL: Duration = Duration::from_secs(1);
/// How long the last pass at a stop may take.
const LAST_PASS: Duration = Duration::from_secs(10);
/// A retry scheduled further out than this (a wall clock that stepped back between two runs) is due now.
const LONGEST_RETRY: Duration = Duration::from_secs(3600);

pub struct Notifier {
    store: Arc<Store>,
    http: HttpClient,
    pagerduty: Option<PagerDutyConfig>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    send_timeout: Duration,
    fence: Fence,
    /// With high availability: what writes the state to the cluster copy before anything is sent.
    handover: Option<Arc<Handover>>,
    /// Sent as the User-Agent of every delivery (which replica sent it).
    identity: String,
    /// Per-hub routing keys (`Config::page_route`); without it every event uses `pagerduty.routing_key`.
    routes: Option<Arc<Config>>,
    webhook: Option<WebhookConfig>,
    clock: Clock,
    /// Answers a sink gave that the store could not record yet (a full disk): recorded before anything
    /// else is sent, and never sent again meanwhile.
    unrecorded: Mutex<Vec<(OutboxEvent, Verdict)>>,
}

/// An attempt in flight, and what it came to.
type AttemptDone = (OutboxEvent, Result<Option<Verdict>, StoreError>);
type Attempt<'a> = std::pin::Pin<Box<dyn Future<Output = AttemptDone> + Send + 'a>>;

/// What to record of one attempt.
#[derive(Debug, Clone)]
enum Verdict {
    /// Done with at `at`: sent, rejected, or a dry run; with the timeline entry it makes, and where an
    /// accepted trigger went.
    Finish {
        state: OutboxState,
        at: SystemTime,
        error: Option<String>,
        entry: Option<(TimelineKind, String)>,
        routed: Option<RoutedTo>,
    },
    /// Try again at `at`; with a timeline entry (and when it happened) when the failure is news for the
    /// incident.
    Retry { at: SystemTime, error: String, entry: Option<(SystemTime, TimelineKind, String)> },
}

impl Verdict {
    fn finish(
        state: OutboxState,
        at: SystemTime,
        error: Option<String>,
        entry: Option<(TimelineKind, String)>,
    ) -> Self {
        Verdict::Finish { state, at, error, entry, routed: None }
    }
}

/// How one pass over a channel ended.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Everything due was tried.
    Done,
    /// Nothing may be sent now: the fence does not hold, or the state could not be handed over.
    Blocked,
}

impl Notifier {
    pub fn new(
        store: Arc<Store>,
        http: HttpClient,
        pagerduty: Option<PagerDutyConfig>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Notifier {
            store,
            http,
            pagerduty,
            metrics,
            wake,
            send_timeout: SEND_TIMEOUT,
            fence: Fence::always(),
            handover: None,
            identity: String::new(),
            routes: None,
            webhook: None,
            clock: Clock::start(),
            unrecorded: Mutex::new(Vec::new()),
        }
    }

    /// Routes events by their hub's settings and delivers the webhook sink's events, as `config` says.
    pub fn configured(mut self, config: Arc<Config>) -> Self {
        self.webhook = config.webhook.clone();
        self.routes = Some(config);
        self
    }

    /// How long one delivery may take (default 30 s).
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// hubwatch's clock (the daemon's one; tests pass one they move).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sends only while `fence` holds, each delivery within what it still allows, and (with `handover`) only
    /// what the cluster copy of the state already holds; `identity` names this replica in the User-Agent.
    pub fn fenced(mut self, fence: Fence, handover: Option<Arc<Handover>>, identity: &str) -> Self {
        self.fence = fence;
        self.handover = handover;
        self.identity = identity.to_string();
        self
    }

    /// Delivers every channel until `stop`; then makes one last pass of each (what is still unsent stays
    /// queued for the next start). First, triggers whose incident recovered before they went out are
    /// skipped, and retries a wall-clock step pushed far out are brought forward.
    pub async fn run(self, stop: CancellationToken) {
        self.prepare();
        let wakes = Channel::ALL.map(|_| Notify::new());
        // One wake-up for the outbox wakes every channel (a permit is kept for a worker mid-pass).
        let fan_out = async {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => wakes.iter().for_each(Notify::notify_one),
                }
            }
        };
        let workers = Channel::ALL.iter().zip(&wakes).map(|(channel, wake)| self.work(*channel, wake, &stop));
        tokio::join!(fan_out, futures_util::future::join_all(workers));
        let last = Channel::ALL.map(|channel| self.deliver_channel(channel, self.clock.now()));
        let _ = tokio::time::timeout(LAST_PASS, futures_util::future::join_all(last)).await;
        self.refresh_gauges();
    }

    fn prepare(&self) {
        let now = self.clock.now();
        match self.store.skip_triggers_behind_resolves(now) {
            Ok(keys) if !keys.is_empty() => {
                tracing::warn!(
                    ?keys,
                    "triggers of incidents that recovered before they went out: not sent, their resolves follow"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot look for triggers behind resolves"),
        }
        if let Err(e) = self.store.clamp_retries(now, LONGEST_RETRY) {
            tracing::error!(error = %e, "cannot bring far-off retries forward");
        }
    }

    /// One channel's worker, until `stop`: keeps up to [`CHANNEL_CONCURRENCY`] incidents' deliveries in
    /// flight and starts the next as soon as one is due and a slot is free, so an attempt that hangs holds
    /// only its own incident (for its timeout), never the channel's other ones. When the store cannot be read
    /// or written it waits longer between passes (a full disk must not become a busy loop against PagerDuty).
    async fn work(&self, channel: Channel, wake: &Notify, stop: &CancellationToken) {
        let mut running = futures_util::stream::FuturesUnordered::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut failures = 0;
        loop {
            let pause = match self.start_due(channel, &mut running, &mut busy).await {
                Ok(Pass::Done) if busy.is_empty() => self.until_next_due(channel),
                // A due head may be one in flight: look again soon, not at once.
                Ok(Pass::Done) => self.until_next_due(channel).max(BUSY_POLL),
                Ok(Pass::Blocked) => HANDOVER_RETRY,
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, channel = channel.as_str(), "the outbox cannot be read or written; retrying");
                    backoff(Duration::from_secs(1), STORE_RETRY_MAX, failures - 1)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                Some((event, verdict)) = running.next(), if !running.is_empty() => {
                    busy.remove(&event.key);
                    match self.settle(event, verdict) {
                        Ok(_) => failures = 0,
                        Err(e) => tracing::error!(error = %e, channel = channel.as_str(), "cannot record a delivery; retrying"),
                    }
                    self.refresh_gauges();
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Attempts in flight end (and are recorded) before the last pass: one dropped after its 202 would be
        // sent again.
        let finishing = async {
            while let Some((event, verdict)) = running.next().await {
                if let Err(e) = self.settle(event, verdict) {
                    tracing::error!(error = %e, channel = channel.as_str(), "cannot record a delivery at the stop");
                }
            }
        };
        let _ = tokio::time::timeout(LAST_PASS, finishing).await;
    }

    /// Starts the due events of `channel` whose incident has nothing in flight, as far as there are free slots.
    async fn start_due<'a>(
        &'a self,
        channel: Channel,
        running: &mut futures_util::stream::FuturesUnordered<Attempt<'a>>,
        busy: &mut HashSet<String>,
    ) -> Result<Pass, StoreError> {
        self.record_unrecorded()?;
        let room = CHANNEL_CONCURRENCY.saturating_sub(running.len());
        if room == 0 {
            return Ok(Pass::Done);
        }
        let now = self.clock.now();
        let due: Vec<OutboxEvent> = self
            .store
            .due_events(now, channel, 64)?
            .into_iter()
            .filter(|e| !busy.contains(&e.key))
            .take(room)
            .collect();
        if due.is_empty() {
            return Ok(Pass::Done);
        }
        if !self.handed_over().await? {
            return Ok(Pass::Blocked);
        }
        for event in due {
            busy.insert(event.key.clone());
            running.push(Box::pin(self.attempt(event, now)));
        }
        Ok(Pass::Done)
    }

    /// One attempt at `event`, started at `now`.
    async fn attempt(&self, event: OutboxEvent, now: SystemTime) -> AttemptDone {
        let started = tokio::time::Instant::now();
        let verdict = self.deliver(&event, now, started).await;
        (event, verdict)
    }

    /// Records what an attempt came to: `Ok(None)` when it could not be made (the fence did not hold), else
    /// whether it finished the event. An answer the store cannot take yet is kept and recorded first later.
    fn settle(
        &self,
        event: OutboxEvent,
        verdict: Result<Option<Verdict>, StoreError>,
    ) -> Result<Option<bool>, StoreError> {
        let Some(verdict) = verdict? else { return Ok(None) };
        let finished = matches!(verdict, Verdict::Finish { .. });
        if let Err(e) = self.record(&event, &verdict) {
            self.lock_unrecorded().push((event, verdict));
            return Err(e);
        }
        Ok(Some(finished))
    }

    fn until_next_due(&self, channel: Channel) -> Duration {
        match self.store.next_due_at(channel) {
            Ok(Some(at)) => at.duration_since(self.clock.now()).unwrap_or(Duration::ZERO).min(IDLE_POLL),
            _ => IDLE_POLL,
        }
    }

    /// Sends every event of every channel that is due at `now` (tests pass a scripted clock).
    pub async fn deliver_due(&self, now: SystemTime) -> Result<(), StoreError> {
        for result in futures_util::future::join_all(Channel::ALL.map(|c| self.deliver_channel(c, now))).await {
            result?;
        }
        Ok(())
    }

    /// Sends every event of `channel` that is due at `now` (the oldest unsent one of each incident), the
    /// answers recorded at `now` plus the time the attempt took, until none is left (the last pass at a
    /// stop; tests). Answers not yet recorded are recorded first.
    async fn deliver_channel(&self, channel: Channel, now: SystemTime) -> Result<Pass, StoreError> {
        self.record_unrecorded()?;
        loop {
            let due = self.store.due_events(now, channel, 64)?;
            if due.is_empty() {
                break;
            }
            if !self.handed_over().await? {
                return Ok(Pass::Blocked);
            }
            let mut attempts = futures_util::stream::iter(due)
                .map(|event| self.attempt(event, now))
                .buffer_unordered(CHANNEL_CONCURRENCY);
            let (mut progressed, mut blocked) = (false, false);
            while let Some((event, verdict)) = attempts.next().await {
                match self.settle(event, verdict)? {
                    None => blocked = true,
                    Some(finished) => progressed |= finished,
                }
            }
            if blocked {
                return Ok(Pass::Blocked);
            }
            if !progressed {
                break;
            }
        }
        self.refresh_gauges();
        Ok(Pass::Done)
    }

    /// Whether what is about to be sent may leave: with high availability, once the cluster copy holds the
    /// state as it is now (every event read so far was written before this version).
    async fn handed_over(&self) -> Result<bool, StoreError> {
        let Some(handover) = &self.handover else { return Ok(true) };
        let version = self.store.version()?;
        Ok(handover.hold(version).await)
    }

    fn lock_unrecorded(&self) -> std::sync::MutexGuard<'_, Vec<(OutboxEvent, Verdict)>> {
        lock(&self.unrecorded)
    }

    fn record_unrecorded(&self) -> Result<(), StoreError> {
        let mut unrecorded = self.lock_unrecorded();
        while let Some((event, verdict)) = unrecorded.first() {
            self.record(event, verdict)?;
            unrecorded.remove(0);
        }
        Ok(())
    }

    fn record(&self, event: &OutboxEvent, verdict: &Verdict) -> Result<(), StoreError> {
        match verdict {
            Verdict::Finish { state, at, error, entry, routed } => {
                let entry = entry.as_ref().map(|(kind, text)| (*kind, text.as_str()));
                self.store.finish_event(event, *state, *at, error.as_deref(), entry, routed.as_ref())
            }
            Verdict::Retry { at, error, entry } => {
                let entry = entry.as_ref().map(|(at, kind, text)| (*at, *kind, text.as_str()));
                self.store.retry_event(event, *at, error, entry)
            }
        }
    }

    /// The backlog of every channel (pages alone also in the older, unlabelled gauges).
    fn refresh_gauges(&self) {
        let now = self.clock.now();
        for channel in Channel::ALL {
            let Ok(backlog) = self.store.backlog(channel) else { continue };
            let age = backlog.oldest.and_then(|o| now.duration_since(o).ok()).unwrap_or_default();
            self.metrics.set_unsent(channel, backlog.count, age);
            if channel == Channel::Events {
                self.metrics.pagerduty_unsent.set(backlog.count as i64);
                self.metrics.pagerduty_oldest_unsent_seconds.set(age.as_secs_f64());
            }
        }
    }

    fn user_agent(&self) -> String {
        format!("hubwatch/{} {}", env!("CARGO_PKG_VERSION"), self.identity).trim_end().to_string()
    }
}

/// The delay before attempt `attempts + 1`: exponential from `min` to `max`, with jitter.
fn backoff(min: Duration, max: Duration, attempts: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts as usize)
        .unwrap_or(max)
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff(Duration::from_secs(2), Duration::from_secs(300), 0);
        assert!(first >= Duration::from_secs(2) && first <= Duration::from_secs(4), "{first:?}");
        let later = backoff(Duration::from_secs(2), Duration::from_secs(300), 20);
        assert!(later >= Duration::from_secs(300) && later <= Duration::from_secs(600), "{later:?}");
    }
}
