//! Delivery of the outbox: every queued PagerDuty event is sent until PagerDuty accepts it (202) or rejects
//! it as invalid (400). An event counts as sent only after the 202. 429 backs off for minutes; 5xx and
//! network errors back off exponentially with jitter (backon). Without a `pagerduty` section it is a dry
//! run: events are logged and marked `dry_run`, nothing is sent.

pub mod pagerduty;
pub mod rest;

use crate::config::PagerDutyConfig;
use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::store::{EventAction, OutboxEvent, Store, StoreError, TimelineKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use pagerduty::Answer;
use std::sync::Arc;
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

pub struct Notifier {
    store: Arc<Store>,
    http: HttpClient,
    pagerduty: Option<PagerDutyConfig>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    send_timeout: Duration,
}

impl Notifier {
    pub fn new(
        store: Arc<Store>,
        http: HttpClient,
        pagerduty: Option<PagerDutyConfig>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Notifier { store, http, pagerduty, metrics, wake, send_timeout: SEND_TIMEOUT }
    }

    /// How long one delivery may take (default 30 s).
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Delivers until `shutdown`; then makes one last pass (what is still unsent stays queued for the next start).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.deliver_due(SystemTime::now()).await {
                tracing::error!(error = %e, "cannot read the outbox; retrying");
            }
            let sleep = match self.store.next_due_at() {
                Ok(Some(at)) => at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO).min(IDLE_POLL),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.deliver_due(SystemTime::now())).await;
    }

    /// Sends every event that is due at `now` (the oldest unsent one of each incident), recording `now` as
    /// the time of each answer (tests pass a scripted clock).
    pub async fn deliver_due(&self, now: SystemTime) -> Result<(), StoreError> {
        loop {
            let due = self.store.due_events(now, 64)?;
            if due.is_empty() {
                break;
            }
            let mut progressed = false;
            for event in due {
                progressed |= self.deliver(&event, now).await?;
            }
            if !progressed {
                break;
            }
        }
        self.refresh_gauges();
        Ok(())
    }

    fn refresh_gauges(&self) {
        if let Ok((count, oldest)) = self.store.unsent() {
            self.metrics.pagerduty_unsent.set(count as i64);
            let age = oldest.and_then(|o| SystemTime::now().duration_since(o).ok()).unwrap_or_default();
            self.metrics.pagerduty_oldest_unsent_seconds.set(age.as_secs_f64());
        }
    }

    /// One attempt at one event; true when the event is done with (sent, rejected or dry run).
    async fn deliver(&self, event: &OutboxEvent, now: SystemTime) -> Result<bool, StoreError> {
        let action = event.action.as_str();
        let Some(pagerduty) = &self.pagerduty else {
            let summary = event.body["payload"]["summary"].as_str().unwrap_or("");
            tracing::warn!(key = %event.key, action, summary, "dry run (no pagerduty section): not sent");
            self.store.finish_event(event.id, "dry_run", now, None)?;
            self.metrics.count_pagerduty_event(action, "dry_run");
            return Ok(true);
        };
        let (answer, pagerduty_incident) = match event.action {
            EventAction::Note => self.post_note(event, pagerduty).await?,
            EventAction::Trigger | EventAction::Resolve | EventAction::Change => {
                (self.send_event(event, pagerduty).await, None)
            }
        };
        match answer {
            Answer::Accepted(message) => {
                tracing::info!(key = %event.key, action, attempts = event.attempts + 1, "PagerDuty accepted the event");
                self.store.finish_event(event.id, "sent", now, None)?;
                let entry = match event.action {
                    EventAction::Trigger => {
                        Some(format!("PagerDuty trigger sent (dedup key {}): {message}", event.key))
                    }
                    EventAction::Resolve => {
                        Some(format!("PagerDuty resolve sent (dedup key {}): {message}", event.key))
                    }
                    EventAction::Note => Some(format!(
                        "status update posted as a note on PagerDuty incident {}: {}",
                        pagerduty_incident.as_deref().unwrap_or("?"),
                        event.body["note"]["content"].as_str().unwrap_or("").lines().next().unwrap_or("")
                    )),
                    EventAction::Change => None,
                };
                self.timeline(event, now, entry)?;
                self.metrics.count_pagerduty_event(action, "sent");
                Ok(true)
            }
            Answer::Rejected(reason) => {
                tracing::error!(key = %event.key, action, %reason, "PagerDuty rejected the event as invalid; it is not retried");
                self.store.finish_event(event.id, "rejected", now, Some(&reason))?;
                let entry = match event.action {
                    EventAction::Note => Some(format!("status update not posted: {reason}")),
                    EventAction::Change => None,
                    _ => Some(format!("PagerDuty rejected the {action}: {reason}")),
                };
                self.timeline(event, now, entry)?;
                self.metrics.count_pagerduty_event(action, "rejected");
                Ok(true)
            }
            Answer::RateLimited => {
                let delay = backoff(pagerduty.rate_limit_delay, Duration::from_secs(600), event.attempts);
                tracing::warn!(key = %event.key, action, retry_in = %humantime::format_duration(round(delay)), "PagerDuty is rate limiting");
                self.store.retry_event(event.id, now + delay, "HTTP 429 (rate limited)")?;
                self.metrics.count_pagerduty_event(action, "rate_limited");
                Ok(false)
            }
            Answer::Failed(reason) => {
                let delay = backoff(pagerduty.retry_delay, Duration::from_secs(300), event.attempts);
                tracing::warn!(key = %event.key, action, %reason, retry_in = %humantime::format_duration(round(delay)), "PagerDuty delivery failed; will retry");
                self.store.retry_event(event.id, now + delay, &reason)?;
                self.metrics.count_pagerduty_event(action, "failed");
                Ok(false)
            }
        }
    }

    /// The timeline entry of an answered event (change events belong to no incident).
    fn timeline(&self, event: &OutboxEvent, now: SystemTime, entry: Option<String>) -> Result<(), StoreError> {
        let kind = match event.action {
            EventAction::Trigger => TimelineKind::PageSent,
            EventAction::Resolve => TimelineKind::ResolveSent,
            EventAction::Note => TimelineKind::StatusUpdate,
            EventAction::Change => return Ok(()),
        };
        match entry {
            Some(entry) => self.store.add_timeline(&event.key, now, kind, &entry),
            None => Ok(()),
        }
    }

    /// An Events API v2 event (the routing key is added here, never stored).
    async fn send_event(&self, event: &OutboxEvent, pagerduty: &PagerDutyConfig) -> Answer {
        let body = pagerduty::with_routing_key(&event.body, pagerduty.routing_key.expose());
        let url = match event.action {
            EventAction::Change => &pagerduty.change_events_url,
            _ => &pagerduty.events_url,
        };
        let request = self.http.reqwest().post(url.clone()).json(&body);
        let deadline = tokio::time::Instant::now() + self.send_timeout;
        match self.http.send(request, deadline).await {
            Ok(response) => pagerduty::classify(response.status.as_u16(), &response.body),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    /// A status note: finds the PagerDuty incident of the dedup key (once; kept), then posts the note.
    async fn post_note(
        &self,
        event: &OutboxEvent,
        pagerduty: &PagerDutyConfig,
    ) -> Result<(Answer, Option<String>), StoreError> {
        let Some(settings) = &pagerduty.status_updates else {
            return Ok((Answer::Rejected("status notes are off (no pagerduty.api_token)".into()), None));
        };
        let rest = rest::RestClient { http: &self.http, settings, timeout: self.send_timeout };
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
        let answer = rest.post_note(&id, &event.body).await;
        Ok((answer, Some(id)))
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
