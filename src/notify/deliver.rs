//! One attempt at one event, on its channel, and what to record of the answer.

use super::entries;
use super::pagerduty::{self, Answer};
use super::{Notifier, Verdict, backoff, rest, round, webhook};
use crate::config::{PagerDutyConfig, fingerprint};
use crate::domain::{Channel, EventAction, IncidentKey, Message, NoticeEvent};
use crate::metrics::Delivered;
use crate::store::{OutboxEvent, OutboxState, RoutedTo, StoreError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How often a status note looks for its PagerDuty incident before it is given up (PagerDuty makes the
/// incident from the trigger asynchronously; a trigger that was rejected never makes one). With the retry
/// backoff this is about a quarter of an hour.
const NOTE_LOOKUPS: u32 = 8;
/// A refused routing key is tried again after this long at first, then up to [`KEY_RETRY_MAX`]: slowly,
/// since only an operator can fix it, but never given up.
const KEY_RETRY_MIN: Duration = Duration::from_secs(300);
const KEY_RETRY_MAX: Duration = Duration::from_secs(1800);

/// The routing key an event goes with, and where it came from.
struct Route<'a> {
    key: &'a str,
    routed: RoutedTo,
}

/// Why an event has no routing key to go with: the config key its incident's trigger went with, and why.
struct NoRoute {
    rule: String,
    why: String,
}

impl Notifier {
    /// One attempt at one event: what to record of it (at `now` plus the time since `started`, when the
    /// attempt ended), or `None` when this replica may not send now (the fence does not hold).
    pub(super) async fn deliver(
        &self,
        event: &OutboxEvent,
        now: SystemTime,
        started: Instant,
    ) -> Result<Option<Verdict>, StoreError> {
        let ended = || now + started.elapsed();
        if event.action == EventAction::Webhook {
            return Ok(self.deliver_webhook(event, now, started).await);
        }
        let action = event.action.as_str();
        let Some(pagerduty) = &self.pagerduty else {
            let summary = entries::summary(&event.message);
            tracing::warn!(key = %event.key, action, summary, "dry run (no pagerduty section): not sent");
            self.metrics.count_pagerduty_event(event.action, Delivered::DryRun);
            return Ok(Some(Verdict::finish(OutboxState::DryRun, now, None, None)));
        };
        // Checked right before the send, and the send may not outlast it.
        let Some(budget) = self.fence.budget(self.send_timeout) else {
            tracing::warn!(key = %event.key, action, "not leading (the lease's renew deadline passed): not sending");
            return Ok(None);
        };
        if event.action.channel() == Channel::Rest {
            let (answer, incident) = self.rest_call(event, pagerduty, budget).await?;
            return Ok(Some(self.verdict(event, answer, incident.as_deref(), None, pagerduty, ended())));
        }
        let route = match self.route(event, pagerduty)? {
            Ok(route) => route,
            Err(NoRoute { rule, why }) => {
                let routed = RoutedTo { rule, fingerprint: String::new() };
                return Ok(Some(self.verdict(event, Answer::KeyRefused(why), None, Some(routed), pagerduty, ended())));
            }
        };
        let answer = self.send_event(event, pagerduty, route.key, budget).await;
        Ok(Some(self.verdict(event, answer, None, Some(route.routed), pagerduty, ended())))
    }

    /// Where an event goes: an incident's later events go where its first accepted trigger went, whatever the
    /// configuration says now; else the hub's (and kind's) route, or the global one. `Err` (inside) when the
    /// key the trigger went with is no longer configured.
    fn route<'a>(
        &'a self,
        event: &OutboxEvent,
        pagerduty: &'a PagerDutyConfig,
    ) -> Result<Result<Route<'a>, NoRoute>, StoreError> {
        if let Some(routed) = self.store.routed_to(&IncidentKey::from(event.key.as_str()))? {
            let key = match &self.routes {
                Some(config) => config.routing_key_with(&routed.fingerprint),
                None => Some(&pagerduty.routing_key).filter(|k| fingerprint(k) == routed.fingerprint),
            };
            return Ok(match key {
                Some(key) => Ok(Route { key: key.expose(), routed }),
                None => Err(NoRoute {
                    why: format!(
                        "the routing key this incident's trigger went with ({}) is no longer in the configuration, so \
                         its {} cannot reach that PagerDuty service: name the key again (any hub or kind may), or \
                         resolve the incident in PagerDuty by hand",
                        routed.rule,
                        event.action.as_str()
                    ),
                    rule: routed.rule,
                }),
            });
        }
        let configured = match (&self.routes, &event.route) {
            (Some(config), Some(route)) => {
                config.page_route(&route.hub, route.kind).map(|r| (r.routing_key, r.routing_key_rule))
            }
            _ => None,
        };
        let (key, rule) = configured.unwrap_or((&pagerduty.routing_key, "pagerduty.routing_key".into()));
        Ok(Ok(Route { key: key.expose(), routed: RoutedTo { rule, fingerprint: fingerprint(key) } }))
    }

    fn verdict(
        &self,
        event: &OutboxEvent,
        answer: Answer,
        pagerduty_incident: Option<&str>,
        routed: Option<RoutedTo>,
        pagerduty: &PagerDutyConfig,
        at: SystemTime,
    ) -> Verdict {
        let action = event.action.as_str();
        let rule = routed.as_ref().map(|r| r.rule.clone());
        match answer {
            Answer::Accepted(message) => {
                tracing::info!(key = %event.key, action, attempts = event.attempts + 1, "PagerDuty accepted the event");
                self.metrics.count_pagerduty_event(event.action, Delivered::Sent);
                if let Some(rule) = &rule {
                    self.metrics.set_routing_key_refused(rule, false);
                }
                let entry = entries::accepted(event, &message, pagerduty_incident);
                let routed = routed.filter(|_| event.action == EventAction::Trigger);
                Verdict::Finish { state: OutboxState::Sent, at, error: None, entry, routed }
            }
            Answer::Rejected(reason) => {
                tracing::error!(key = %event.key, action, %reason, "PagerDuty rejected the event as invalid; it is not retried");
                self.metrics.count_pagerduty_event(event.action, Delivered::Rejected);
                let entry = entries::rejected(event, &reason);
                Verdict::finish(OutboxState::Rejected, at, Some(reason), entry)
            }
            Answer::KeyRefused(reason) => {
                let delay = backoff(KEY_RETRY_MIN, KEY_RETRY_MAX, event.attempts);
                tracing::error!(key = %event.key, action, rule = rule.as_deref().unwrap_or("?"), %reason,
                    retry_in = %humantime::format_duration(round(delay)), "PagerDuty refused the routing key");
                self.metrics.count_pagerduty_event(event.action, Delivered::KeyRefused);
                self.metrics.set_routing_key_refused(rule.as_deref().unwrap_or("unknown"), true);
                let entry = entries::key_refused(event, &reason).map(|(kind, text)| (at, kind, text));
                Verdict::Retry { at: at + delay, error: reason, entry }
            }
            Answer::RateLimited(asked) => {
                let delay = asked
                    .unwrap_or_else(|| backoff(pagerduty.rate_limit_delay, Duration::from_secs(600), event.attempts));
                tracing::warn!(key = %event.key, action, retry_in = %humantime::format_duration(round(delay)), "PagerDuty is rate limiting");
                self.metrics.count_pagerduty_event(event.action, Delivered::RateLimited);
                Verdict::Retry { at: at + delay, error: "HTTP 429 (rate limited)".into(), entry: None }
            }
            Answer::Failed(reason) => {
                let delay = backoff(pagerduty.retry_delay, Duration::from_secs(300), event.attempts);
                tracing::warn!(key = %event.key, action, %reason, retry_in = %humantime::format_duration(round(delay)), "PagerDuty delivery failed; will retry");
                self.metrics.count_pagerduty_event(event.action, Delivered::Failed);
                Verdict::Retry { at: at + delay, error: reason, entry: None }
            }
        }
    }

    /// The webhook sink's event: sent when a sink is configured (a dry run when it was removed since).
    async fn deliver_webhook(&self, event: &OutboxEvent, now: SystemTime, started: Instant) -> Option<Verdict> {
        let notice_event = match &event.message {
            Message::Webhook(notice) => Some(notice.event),
            Message::Rendered { body } => serde_json::from_value::<NoticeEvent>(body["event"].clone()).ok(),
            _ => None,
        };
        let kind = notice_event.map_or("unknown", NoticeEvent::as_str);
        let Some(webhook) = &self.webhook else {
            tracing::warn!(key = %event.key, event = %kind, "no webhook section any more: not sent");
            self.metrics.count_webhook_delivery(notice_event, Delivered::DryRun);
            return Some(Verdict::finish(OutboxState::DryRun, now, None, None));
        };
        let Some(budget) = self.fence.budget(webhook.timeout) else {
            tracing::warn!(key = %event.key, "not leading (the lease's renew deadline passed): not sending");
            return None;
        };
        let body = match &event.message {
            Message::Webhook(notice) => webhook::render(notice, webhook.format),
            // An older version's body, sent as it was written.
            Message::Rendered { body } => body.clone(),
            _ => {
                let reason = "not a webhook notice".to_string();
                return Some(Verdict::finish(OutboxState::Rejected, now, Some(reason), None));
            }
        };
        let answer = webhook::post(&self.http, webhook, &body, &self.user_agent(), budget).await;
        let at = now + started.elapsed();
        Some(match answer {
            Answer::Accepted(message) => {
                tracing::info!(key = %event.key, event = %kind, attempts = event.attempts + 1, "the webhook accepted the event");
                self.metrics.count_webhook_delivery(notice_event, Delivered::Sent);
                let entry = entries::for_incident(event, format!("webhook {kind} delivered: {message}"));
                Verdict::finish(OutboxState::Sent, at, None, entry)
            }
            Answer::Rejected(reason) | Answer::KeyRefused(reason) => {
                tracing::error!(key = %event.key, event = %kind, %reason, "the webhook refused the event; it is not retried");
                self.metrics.count_webhook_delivery(notice_event, Delivered::Rejected);
                let entry = entries::for_incident(event, format!("webhook {kind} refused: {reason}"));
                Verdict::finish(OutboxState::Rejected, at, Some(reason), entry)
            }
            Answer::RateLimited(asked) => {
                let delay =
                    asked.unwrap_or_else(|| backoff(webhook.retry_delay, Duration::from_secs(300), event.attempts));
                tracing::warn!(key = %event.key, event = %kind, retry_in = %humantime::format_duration(round(delay)), "the webhook is rate limiting");
                self.metrics.count_webhook_delivery(notice_event, Delivered::Failed);
                Verdict::Retry { at: at + delay, error: "HTTP 429 (rate limited)".into(), entry: None }
            }
            Answer::Failed(reason) => {
                let delay = backoff(webhook.retry_delay, Duration::from_secs(300), event.attempts);
                tracing::warn!(key = %event.key, event = %kind, %reason, retry_in = %humantime::format_duration(round(delay)), "webhook delivery failed; will retry");
                self.metrics.count_webhook_delivery(notice_event, Delivered::Failed);
                Verdict::Retry { at: at + delay, error: reason, entry: None }
            }
        })
    }

    /// An Events API v2 event with `routing_key` (added here, never stored).
    async fn send_event(
        &self,
        event: &OutboxEvent,
        pagerduty: &PagerDutyConfig,
        routing_key: &str,
        budget: Duration,
    ) -> Answer {
        let Some(body) = pagerduty::event(&event.key, &event.message) else {
            return Answer::Rejected(format!("a {} is not an Events API event", event.action.as_str()));
        };
        let body = pagerduty::with_routing_key(body, routing_key);
        let url = match event.action {
            EventAction::Change => pagerduty.change_events_url(),
            _ => pagerduty.events_url.clone(),
        };
        let request = self.http.post(url).header(hyper::header::USER_AGENT, self.user_agent()).json(&body);
        match self.http.send(request, Instant::now() + budget).await {
            Ok(response) => pagerduty::classify(response.status.as_u16(), &response.headers, &response.body),
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
        let incident = IncidentKey::from(event.key.as_str());
        let id = match self.store.pagerduty_incident(&incident)? {
            Some(id) => id,
            None => match rest.find_incident(&event.key).await {
                rest::Lookup::Found(id) => {
                    self.store.set_pagerduty_incident(&incident, &id)?;
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
            EventAction::Priority => match rest.priority_id(entries::priority(&event.message).0).await {
                Ok(priority) => rest.set_priority(&id, &priority).await,
                Err(answer) => answer,
            },
            _ => rest.post_note(&id, entries::note_content(&event.message)).await,
        };
        Ok((answer, Some(id)))
    }
}
