//! Delivery of the outbox: every queued PagerDuty event is sent until PagerDuty accepts it (202) or rejects
//! it as invalid (400). An event counts as sent only after the 202. 429 backs off for minutes; 5xx and
//! network errors back off exponentially with jitter (backon). Without a `pagerduty` section it is a dry
//! run: events are logged and marked `dry_run`, nothing is sent.

pub mod pagerduty;
pub mod rest;
pub mod webhook;

use crate::config::{Config, PagerDutyConfig, WebhookConfig};
use crate::ha::Fence;
use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::store::{EventAction, OutboxEvent, OutboxState, Store, StoreError, TimelineKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use pagerduty::Answer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long one delivery may take before it counts as a network failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The worker looks at the outbox at least this often, even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// How often a status note looks for its PagerDuty incident before it is given up (PagerDuty makes the
/// incident from the trigger asynchronously; a trigger that was rejected never makes one). With the retry
/// backoff this is about a quarter of an hour.
const NOTE_LOOKUPS: u32 = 8;
/// The longest wait between passes while the outbox cannot be read or written.
const STORE_RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Notifier {
    store: Arc<Store>,
    http: HttpClient,
    pagerduty: Option<PagerDutyConfig>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    send_timeout: Duration,
    fence: Fence,
    /// Sent as the User-Agent of every delivery (which replica sent it).
    identity: String,
    /// Per-hub routing keys (`Config::page_route`); without it every event uses `pagerduty.routing_key`.
    routes: Option<Arc<Config>>,
    webhook: Option<WebhookConfig>,
    /// Answers PagerDuty gave that the store could not record yet (a full disk): recorded before anything
    /// else is sent, and never sent again meanwhile.
    unrecorded: Mutex<Vec<(OutboxEvent, Verdict)>>,
}

/// What to record of one attempt.
#[derive(Debug, Clone)]
enum Verdict {
    /// Done with at `at`: sent, rejected, or a dry run; with the timeline entry it makes.
    Finish { state: OutboxState, at: SystemTime, error: Option<String>, entry: Option<(TimelineKind, String)> },
    /// Try again at `at`.
    Retry { at: SystemTime, error: String },
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
            identity: String::new(),
            routes: None,
            webhook: None,
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

    /// Sends only while `fence` holds, each delivery within what it still allows; `identity` names this
    /// replica in the User-Agent.
    pub fn fenced(mut self, fence: Fence, identity: &str) -> Self {
        self.fence = fence;
        self.identity = identity.to_string();
        self
    }

    /// Delivers until `shutdown`; then makes one last pass (what is still unsent stays queued for the next
    /// start). When the store cannot be read or written it waits longer between passes (a full disk must
    /// not become a busy loop against PagerDuty).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0;
        loop {
            let pause = match self.deliver_due(SystemTime::now()).await {
                Ok(()) => {
                    failures = 0;
                    self.until_next_due()
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, "the outbox cannot be read or written; retrying");
                    backoff(Duration::from_secs(1), STORE_RETRY_MAX, failures - 1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.deliver_due(SystemTime::now())).await;
    }

    fn until_next_due(&self) -> Duration {
        match self.store.next_due_at() {
            Ok(Some(at)) => at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO).min(IDLE_POLL),
            _ => IDLE_POLL,
        }
    }

    /// Sends every event that is due at `now` (the oldest unsent one of each incident), recording `now` as
    /// the time of each answer (tests pass a scripted clock). Answers not yet recorded are recorded first.
    pub async fn deliver_due(&self, now: SystemTime) -> Result<(), StoreError> {
        self.record_unrecorded()?;
        loop {
            let due = self.store.due_events(now, 64)?;
            if due.is_empty() {
                break;
            }
            let mut progressed = false;
            for event in due {
                let Some(verdict) = self.deliver(&event, now).await? else { return Ok(()) };
                progressed |= matches!(verdict, Verdict::Finish { .. });
                if let Err(e) = self.record(&event, &verdict) {
                    self.lock_unrecorded().push((event, verdict));
                    return Err(e);
                }
            }
            if !progressed {
                break;
            }
        }
        self.refresh_gauges();
        Ok(())
    }

    fn lock_unrecorded(&self) -> std::sync::MutexGuard<'_, Vec<(OutboxEvent, Verdict)>> {
        self.unrecorded.lock().unwrap_or_else(|p| p.into_inner())
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
            Verdict::Finish { state, at, error, entry } => {
                let entry = entry.as_ref().map(|(kind, text)| (*kind, text.as_str()));
                self.store.finish_event(event, *state, *at, error.as_deref(), entry)
            }
            Verdict::Retry { at, error } => self.store.retry_event(event.id, *at, error),
        }
    }

    fn refresh_gauges(&self) {
        if let Ok((count, oldest)) = self.store.unsent() {
            self.metrics.pagerduty_unsent.set(count as i64);
            let age = oldest.and_then(|o| SystemTime::now().duration_since(o).ok()).unwrap_or_default();
            self.metrics.pagerduty_oldest_unsent_seconds.set(age.as_secs_f64());
        }
    }

    /// One attempt at one event: what to record of it, or `None` when this replica may not send now (the
    /// fence does not hold: another replica may lead).
    async fn deliver(&self, event: &OutboxEvent, now: SystemTime) -> Result<Option<Verdict>, StoreError> {
        let action = event.action.as_str();
        if event.action == EventAction::Webhook {
            return Ok(self.deliver_webhook(event, now).await);
        }
        let Some(pagerduty) = &self.pagerduty else {
            let summary = event.body["payload"]["summary"].as_str().unwrap_or("");
            tracing::warn!(key = %event.key, action, summary, "dry run (no pagerduty section): not sent");
            self.metrics.count_pagerduty_event(action, "dry_run");
            return Ok(Some(Verdict::Finish { state: OutboxState::DryRun, at: now, error: None, entry: None }));
        };
        // Checked right before the send, and the send may not outlast it.
        let Some(budget) = self.fence.budget(self.send_timeout) else {
            tracing::warn!(key = %event.key, action, "not leading (the lease's renew deadline passed): not sending");
            return Ok(None);
        };
        let (answer, pagerduty_incident) = match event.action {
            EventAction::Note | EventAction::Priority => self.rest_call(event, pagerduty, budget).await?,
            EventAction::Trigger | EventAction::Resolve | EventAction::Change => {
                (self.send_event(event, pagerduty, budget).await, None)
            }
            EventAction::Webhook => unreachable!("delivered above"),
        };
        Ok(Some(self.verdict(event, answer, pagerduty_incident.as_deref(), pagerduty, now)))
    }

    fn verdict(
        &self,
        event: &OutboxEvent,
        answer: Answer,
        pagerduty_incident: Option<&str>,
        pagerduty: &PagerDutyConfig,
        now: SystemTime,
    ) -> Verdict {
        let action = event.action.as_str();
        match answer {
            Answer::Accepted(message) => {
                tracing::info!(key = %event.key, action, attempts = event.attempts + 1, "PagerDuty accepted the event");
                self.metrics.count_pagerduty_event(action, "sent");
                let entry = accepted_entry(event, &message, pagerduty_incident);
                Verdict::Finish { state: OutboxState::Sent, at: now, error: None, entry }
            }
            Answer::Rejected(reason) => {
                tracing::error!(key = %event.key, action, %reason, "PagerDuty rejected the event as invalid; it is not retried");
                self.metrics.count_pagerduty_event(action, "rejected");
                let entry = rejected_entry(event, &reason);
                Verdict::Finish { state: OutboxState::Rejected, at: now, error: Some(reason), entry }
            }
            Answer::RateLimited => {
                let delay = backoff(pagerduty.rate_limit_delay, Duration::from_secs(600), event.attempts);
                tracing::warn!(key = %event.key, action, retry_in = %humantime::format_duration(round(delay)), "PagerDuty is rate limiting");
                self.metrics.count_pagerduty_event(action, "rate_limited");
                Verdict::Retry { at: now + delay, error: "HTTP 429 (rate limited)".into() }
            }
            Answer::Failed(reason) => {
                let delay = backoff(pagerduty.retry_delay, Duration::from_secs(300), event.attempts);
                tracing::warn!(key = %event.key, action, %reason, retry_in = %humantime::format_duration(round(delay)), "PagerDuty delivery failed; will retry");
                self.metrics.count_pagerduty_event(action, "failed");
                Verdict::Retry { at: now + delay, error: reason }
            }
        }
    }

    fn user_agent(&self) -> String {
        format!("hubwatch/{} {}", env!("CARGO_PKG_VERSION"), self.identity).trim_end().to_string()
    }

    /// The webhook sink's event: sent when a sink is configured (a dry run when it was removed since).
    async fn deliver_webhook(&self, event: &OutboxEvent, now: SystemTime) -> Option<Verdict> {
        let kind = event.body["event"].as_str().unwrap_or("unknown").to_string();
        let Some(webhook) = &self.webhook else {
            tracing::warn!(key = %event.key, event = %kind, "no webhook section any more: not sent");
            self.metrics.count_webhook_delivery(&kind, "dry_run");
            return Some(Verdict::Finish { state: OutboxState::DryRun, at: now, error: None, entry: None });
        };
        let Some(budget) = self.fence.budget(webhook.timeout) else {
            tracing::warn!(key = %event.key, "not leading (the lease's renew deadline passed): not sending");
            return None;
        };
        let answer = webhook::post(&self.http, webhook, &event.body, &self.user_agent(), budget).await;
        Some(match answer {
            Answer::Accepted(message) => {
                tracing::info!(key = %event.key, event = %kind, attempts = event.attempts + 1, "the webhook accepted the event");
                self.metrics.count_webhook_delivery(&kind, "sent");
                let entry = incident_entry(event, format!("webhook {kind} delivered: {message}"));
                Verdict::Finish { state: OutboxState::Sent, at: now, error: None, entry }
            }
            Answer::Rejected(reason) => {
                tracing::error!(key = %event.key, event = %kind, %reason, "the webhook refused the event; it is not retried");
                self.metrics.count_webhook_delivery(&kind, "rejected");
                let entry = incident_entry(event, format!("webhook {kind} refused: {reason}"));
                Verdict::Finish { state: OutboxState::Rejected, at: now, error: Some(reason), entry }
            }
            Answer::RateLimited | Answer::Failed(_) => {
                let reason = match answer {
                    Answer::Failed(reason) => reason,
                    _ => "HTTP 429 (rate limited)".into(),
                };
                let delay = backoff(webhook.retry_delay, Duration::from_secs(300), event.attempts);
                tracing::warn!(key = %event.key, event = %kind, %reason, retry_in = %humantime::format_duration(round(delay)), "webhook delivery failed; will retry");
                self.metrics.count_webhook_delivery(&kind, "failed");
                Verdict::Retry { at: now + delay, error: reason }
            }
        })
    }

    /// The routing key of `event`: its hub's (and kind's) when one is configured, else the global one.
    fn routing_key<'a>(&'a self, event: &OutboxEvent, pagerduty: &'a PagerDutyConfig) -> &'a str {
        let route = match (&self.routes, &event.route) {
            (Some(config), Some(route)) => config.page_route(&route.hub, route.kind),
            _ => None,
        };
        route.map_or(pagerduty.routing_key.expose(), |r| r.routing_key.expose())
    }

    /// An Events API v2 event (the routing key is added here, never stored).
    async fn send_event(&self, event: &OutboxEvent, pagerduty: &PagerDutyConfig, budget: Duration) -> Answer {
        let body = pagerduty::with_routing_key(&event.body, self.routing_key(event, pagerduty));
        let url = match event.action {
            EventAction::Change => &pagerduty.change_events_url,
            _ => &pagerduty.events_url,
        };
        let request =
            self.http.reqwest().post(url.clone()).header(reqwest::header::USER_AGENT, self.user_agent()).json(&body);
        match self.http.send(request, tokio::time::Instant::now() + budget).await {
            Ok(response) => pagerduty::classify(response.status.as_u16(), &response.body),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    /// A status note or a priority: finds the PagerDuty incident of the dedup key (once; kept), then posts
    /// the note or sets the priority.
    async fn rest_call(
        &self,
        event: &OutboxEvent,
        pagerduty: &PagerDutyConfig,
        budget: Duration,
    ) -> Result<(Answer, Option<String>), StoreError> {
        let Some(settings) = &pagerduty.status_updates else {
            let off = "the REST API is off (no pagerduty.api_token): no status notes or priorities";
            return Ok((Answer::Rejected(off.into()), None));
        };
        let rest = rest::RestClient { http: &self.http, settings, timeout: budget };
        let id = match self.store.pagerduty_incident(&event.key)? {
            Some(id) => id,
            None => match rest.find_incident(&event.key).await {
                rest::Lookup::Found(id) => {
                    self.store.set_pagerduty_incident(&event.key, &id)?;
                    id
                }
                rest::Lookup::NotFound if event.attempts + 1 >= NOTE_LOOKUPS => {
                    let reason = format!("PagerDuty has no incident with dedup key {}", event.key);
                    return Ok((Answer::Rejected(reason), None));
                }
                rest::Lookup::NotFound => {
                    let reason = format!("PagerDuty has no incident with dedup key {} yet", event.key);
                    return Ok((Answer::Failed(reason), None));
                }
                rest::Lookup::Failed(answer) => return Ok((answer, None)),
            },
        };
        // The lookup took part of the budget: the note gets what the fence still allows.
        let Some(budget) = self.fence.budget(budget) else {
            return Ok((Answer::Failed("not leading any more".into()), Some(id)));
        };
        let rest = rest::RestClient { timeout: budget, ..rest };
        let answer = match event.action {
            EventAction::Priority => {
                let name = event.body["priority"].as_str().unwrap_or_default();
                match rest.priority_id(name).await {
                    Ok(priority) => rest.set_priority(&id, &priority).await,
                    Err(answer) => answer,
                }
            }
            _ => rest.post_note(&id, &event.body).await,
        };
        Ok((answer, Some(id)))
    }
}

/// The timeline entry of an accepted event (change events belong to no incident).
fn accepted_entry(
    event: &OutboxEvent,
    message: &str,
    pagerduty_incident: Option<&str>,
) -> Option<(TimelineKind, String)> {
    match event.action {
        EventAction::Trigger => {
            Some((TimelineKind::PageSent, format!("PagerDuty trigger sent (dedup key {}): {message}", event.key)))
        }
        EventAction::Resolve => {
            Some((TimelineKind::ResolveSent, format!("PagerDuty resolve sent (dedup key {}): {message}", event.key)))
        }
        EventAction::Note => Some((
            TimelineKind::StatusUpdate,
            format!(
                "status update posted as a note on PagerDuty incident {}: {}",
                pagerduty_incident.unwrap_or("?"),
                event.body["note"]["content"].as_str().unwrap_or("").lines().next().unwrap_or("")
            ),
        )),
        EventAction::Priority => Some((
            TimelineKind::PageSent,
            format!(
                "priority {} set on PagerDuty incident {} (rule {})",
                event.body["priority"].as_str().unwrap_or("?"),
                pagerduty_incident.unwrap_or("?"),
                event.body["rule"].as_str().unwrap_or("?")
            ),
        )),
        EventAction::Change | EventAction::Webhook => None,
    }
}

/// A timeline entry for the incident an event belongs to (a ticket's or a change's key is none).
fn incident_entry(event: &OutboxEvent, text: String) -> Option<(TimelineKind, String)> {
    event.route.as_ref().filter(|r| r.kind.is_some()).map(|_| (TimelineKind::PageSent, text))
}

/// The timeline entry of a rejected event.
fn rejected_entry(event: &OutboxEvent, reason: &str) -> Option<(TimelineKind, String)> {
    match event.action {
        EventAction::Trigger => Some((TimelineKind::PageSent, format!("PagerDuty rejected the trigger: {reason}"))),
        EventAction::Resolve => Some((TimelineKind::ResolveSent, format!("PagerDuty rejected the resolve: {reason}"))),
        EventAction::Note => Some((TimelineKind::StatusUpdate, format!("status update not posted: {reason}"))),
        EventAction::Priority => Some((TimelineKind::PageSent, format!("priority not set: {reason}"))),
        EventAction::Change | EventAction::Webhook => None,
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
