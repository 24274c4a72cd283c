//! PagerDuty Events API v2: the events hubwatch sends, rendered from an outbox message as it is sent (pure,
//! tested against exact JSON), and how an answer is read. Facts: 202 means accepted; 400 and 422 are an invalid
//! event (never retried), but "Invalid routing key" is the key's fault, not the event's; 401, 403 and 404
//! say the routing key is not (any more) accepted; 429 is rate limiting (back off for minutes, or as long as
//! `Retry-After` says); 5xx and network errors are retried.

use crate::domain::wording::{SUMMARY_LIMIT, truncate};
use crate::domain::{ChangeNotice, Message, Page};
use crate::timefmt::rfc3339;
use serde_json::{Value, json};
use std::time::Duration;

/// PagerDuty refuses events larger than this.
pub const EVENT_LIMIT: usize = 512 * 1024;
/// Last errors listed in an event, newest first.
const ERRORS_LISTED: usize = 20;

/// The Events API body of `message` under the dedup key `key` (a trigger, a resolve, a change event),
/// without the routing key, which [`with_routing_key`] adds as it is sent; `None` for a REST or webhook message.
pub fn event(key: &str, message: &Message) -> Option<Value> {
    match message {
        Message::Trigger(page) => Some(trigger(key, page)),
        Message::Resolve => Some(json!({"event_action": "resolve", "dedup_key": key})),
        Message::Change(notice) => Some(change(notice)),
        // An older version's row on this channel: an event it rendered already.
        Message::Rendered { body } => Some(body.clone()),
        Message::Note { .. } | Message::Priority { .. } | Message::Webhook(_) => None,
    }
}

/// A `trigger` (also a follow-up: same dedup key), within PagerDuty's size limit.
fn trigger(key: &str, page: &Page) -> Value {
    let affected: serde_json::Map<String, Value> = page
        .symptoms
        .affected
        .iter()
        .filter(|(_, users)| !users.is_empty())
        .map(|(capability, users)| (capability.as_str().to_string(), json!(users.keys().collect::<Vec<_>>())))
        .collect();
    let mut errors: Vec<_> = page
        .symptoms
        .affected
        .iter()
        .flat_map(|(capability, users)| {
            users.iter().map(move |(user, f)| {
                (f.last, json!({"capability": capability, "user": user, "stage": f.stage, "reason": f.reason, "since": rfc3339(f.since), "at": rfc3339(f.last)}))
            })
        })
        .collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.0));
    let last_errors: Vec<Value> = errors.into_iter().take(ERRORS_LISTED).map(|(_, e)| e).collect();
    let source = page.hub_url.host_str().unwrap_or(&page.hub).to_string();
    // A cluster incident's first link is hubwatch's grid of every hub; a hub's, the hub.
    let first_link = match page.parts.is_empty() {
        true => format!("{} (the hub)", page.hub),
        false => "hubwatch: every hub's status".to_string(),
    };
    let mut event = json!({
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": page.summary,
            "source": source,
            "severity": page.severity.as_str(),
            "timestamp": rfc3339(page.at),
            "component": "jupyterhub",
            "group": page.hub,
            "class": page.kind.as_str(),
            "custom_details": {
                "hub": page.hub,
                "incident": key,
                "kind": page.kind.as_str(),
                "affected_users": affected,
                "affected_user_count": page.symptoms.users().len(),
                "threshold": page.threshold,
                "window": humantime::format_duration(page.window).to_string(),
                "impact_start": rfc3339(page.impact_start),
                "last_errors": last_errors,
                "diagnostics": page.diagnostics,
            },
        },
        "links": [
            {"href": page.hub_url.as_str(), "text": first_link},
            {"href": page.incident_url.as_str(), "text": "hubwatch: this incident"},
        ],
        "client": "hubwatch",
        "client_url": page.incident_url.as_str(),
    });
    if let Some(routing) = &page.routing {
        event["payload"]["custom_details"]["routing"] = json!({
            "routing_key_rule": routing.routing_key_rule,
            "severity": routing.severity.as_str(),
            "priority": routing.priority,
            "priority_rule": routing.priority_rule.as_deref().unwrap_or("none (no pagerduty.priority applies)"),
        });
    }
    if !page.parts.is_empty() {
        event["payload"]["custom_details"]["hubs"] = json!(page.parts);
    }
    fit(event)
}

/// A Change Event (no notification; shown beside incidents so responders see "the hub was upgraded 4
/// minutes before the outage").
fn change(notice: &ChangeNotice) -> Value {
    let ChangeNotice { hub, hub_url, summary, namespace, deployment, generation, changes, at } = notice;
    json!({
        "payload": {
            "summary": truncate(&format!("{hub}: {summary}"), SUMMARY_LIMIT - 4),
            "source": hub_url.host_str().unwrap_or(hub),
            "timestamp": rfc3339(*at),
            "custom_details": {
                "hub": hub, "namespace": namespace, "deployment": deployment, "generation": generation,
                "changes": changes,
            },
        },
        "links": [{"href": hub_url.as_str(), "text": format!("{hub} (the hub)")}],
    })
}

/// The event with its routing key (added as it is sent, never stored).
pub fn with_routing_key(mut event: Value, routing_key: &str) -> Value {
    event["routing_key"] = json!(routing_key);
    event
}

/// The event within PagerDuty's size limit: diagnostics and error reasons are cut first; the event itself is
/// never dropped.
fn fit(mut event: Value) -> Value {
    // Room for the routing key and slack for serialisation differences.
    let limit = EVENT_LIMIT - 256;
    let size = |e: &Value| e.to_string().len();
    if size(&event) <= limit {
        return event;
    }
    let diagnostics = event["payload"]["custom_details"]["diagnostics"].as_str().map(str::to_string);
    if let Some(diagnostics) = diagnostics {
        let over = size(&event).saturating_sub(limit);
        let keep = diagnostics.len().saturating_sub(over + 64);
        let cut = format!(
            "{}\n[diagnostics truncated to fit PagerDuty's 512 KB limit; see hubwatch's page]",
            truncate(&diagnostics, keep)
        );
        event["payload"]["custom_details"]["diagnostics"] = json!(cut);
    }
    if size(&event) > limit
        && let Some(errors) = event["payload"]["custom_details"]["last_errors"].as_array_mut()
    {
        for error in errors.iter_mut() {
            if let Some(reason) = error["reason"].as_str() {
                error["reason"] = json!(truncate(reason, 200));
            }
        }
    }
    if size(&event) > limit {
        event["payload"]["custom_details"]["affected_users"] = json!("too many to list; see hubwatch's page");
    }
    event
}

/// How a sink's answer is to be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// With what the sink said ("202 Event processed").
    Accepted(String),
    /// The event is invalid (400, 422): retrying cannot help.
    Rejected(String),
    /// 429: back off, for as long as the sink said when it did (`Retry-After`, `ratelimit-reset`).
    RateLimited(Option<Duration>),
    /// The routing key is refused (401, 403, 404, or "Invalid routing key"): nothing with it can get through
    /// until an operator fixes it; retried slowly, never dropped.
    KeyRefused(String),
    /// 5xx or a network error: retry with backoff.
    Failed(String),
}

/// How long a 429 asks to wait: `Retry-After` in seconds (an HTTP date is not worth parsing here), else the
/// REST API's `ratelimit-reset`; at most an hour, whatever the header says.
pub fn retry_after(headers: &hyper::header::HeaderMap) -> Option<Duration> {
    ["retry-after", "ratelimit-reset"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok()?.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.min(3600)))
}

pub fn classify(status: u16, headers: &hyper::header::HeaderMap, body: &[u8]) -> Answer {
    let message = || {
        serde_json::from_slice::<Value>(body)
            .ok()
            .map(|v| {
                let message = v["message"].as_str().unwrap_or("").to_string();
                let errors =
                    v["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
                match errors {
                    Some(errors) if !errors.is_empty() => format!("{message}: {errors}"),
                    _ => message,
                }
            })
            .unwrap_or_default()
    };
    let said = |status: u16| truncate(format!("HTTP {status} {}", message()).trim(), 500);
    match status {
        202 => Answer::Accepted(truncate(format!("202 {}", message()).trim(), 200)),
        400 if message().to_lowercase().contains("routing key") => Answer::KeyRefused(said(400)),
        400 | 422 => Answer::Rejected(said(status)),
        401 | 403 | 404 => Answer::KeyRefused(said(status)),
        429 => Answer::RateLimited(retry_after(headers)),
        s => Answer::Failed(truncate(&said(s), 300)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::wording::summary;
    use crate::domain::{Capability, IncidentKind, Severity, Stage, Symptoms, UserFailure};
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + seconds)
    }

    fn symptoms() -> Symptoms {
        let failure = |reason: &str, s| UserFailure {
            stage: Stage::Progress,
            reason: reason.into(),
            since: at(s),
            last: at(s + 60),
        };
        let mut affected = BTreeMap::new();
        affected.insert(
            Capability::Server,
            BTreeMap::from([
                ("probe-1".to_string(), failure("Spawn failed: quota", 0)),
                ("probe-2".to_string(), failure("Spawn failed: quota", 5)),
            ]),
        );
        affected.insert(Capability::Kernel, BTreeMap::from([("ana".to_string(), failure("the kernel died", 10))]));
        Symptoms { affected }
    }

    fn page(symptoms: Symptoms, diagnostics: &str) -> Page {
        Page {
            hub: "temple".into(),
            hub_url: "https://temple.example.org/".parse().unwrap(),
            kind: IncidentKind::HubAccess,
            summary: summary("temple", IncidentKind::HubAccess, &symptoms),
            severity: Severity::Critical,
            symptoms,
            impact_start: at(0),
            threshold: 2,
            window: Duration::from_secs(900),
            incident_url: "https://hubwatch.example.org/incidents/temple-hub_access-1795000000".parse().unwrap(),
            diagnostics: diagnostics.into(),
            routing: None,
            parts: Vec::new(),
            at: at(120),
        }
    }

    const KEY: &str = "temple-hub_access-1795000000";

    #[test]
    fn summaries_say_who_and_what() {
        let s = symptoms();
        assert_eq!(
            summary("temple", IncidentKind::HubAccess, &s),
            "temple: 3 users cannot start their servers or execute code"
        );
        assert_eq!(
            summary("temple", IncidentKind::DaskGateway, &s),
            "temple: 3 users cannot create or use Dask Gateway clusters"
        );
    }

    #[test]
    fn the_trigger_is_exactly_this() {
        let page = page(symptoms(), "not collected: Kubernetes awareness is off (kubernetes.enabled)");
        let event = super::event(KEY, &Message::Trigger(Box::new(page))).unwrap();
        let expected = json!({
            "event_action": "trigger",
            "dedup_key": "temple-hub_access-1795000000",
            "payload": {
                "summary": "temple: 3 users cannot start their servers or execute code",
                "source": "temple.example.org",
                "severity": "critical",
                "timestamp": "2026-11-18T11:08:40Z",
                "component": "jupyterhub",
                "group": "temple",
                "class": "hub_access",
                "custom_details": {
                    "hub": "temple",
                    "incident": "temple-hub_access-1795000000",
                    "kind": "hub_access",
                    "affected_users": {"server": ["probe-1", "probe-2"], "kernel": ["ana"]},
                    "affected_user_count": 3,
                    "threshold": 2,
                    "window": "15m",
                    "impact_start": "2026-11-18T11:06:40Z",
                    "last_errors": [
                        {"capability": "kernel", "user": "ana", "stage": "progress", "reason": "the kernel died", "since": "2026-11-18T11:06:50Z", "at": "2026-11-18T11:07:50Z"},
                        {"capability": "server", "user": "probe-2", "stage": "progress", "reason": "Spawn failed: quota", "since": "2026-11-18T11:06:45Z", "at": "2026-11-18T11:07:45Z"},
                        {"capability": "server", "user": "probe-1", "stage": "progress", "reason": "Spawn failed: quota", "since": "2026-11-18T11:06:40Z", "at": "2026-11-18T11:07:40Z"},
                    ],
                    "diagnostics": "not collected: Kubernetes awareness is off (kubernetes.enabled)",
                },
            },
            "links": [
                {"href": "https://temple.example.org/", "text": "temple (the hub)"},
                {"href": "https://hubwatch.example.org/incidents/temple-hub_access-1795000000", "text": "hubwatch: this incident"},
            ],
            "client": "hubwatch",
            "client_url": "https://hubwatch.example.org/incidents/temple-hub_access-1795000000",
        });
        assert_eq!(event, expected);
        assert_eq!(super::event("k", &Message::Resolve), Some(json!({"event_action": "resolve", "dedup_key": "k"})));
        let sent = with_routing_key(event, "0123456789abcdef0123456789abcdef");
        assert_eq!(sent["routing_key"], "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn huge_diagnostics_are_truncated_never_the_event() {
        let page = page(symptoms(), &"kubectl get events\n".repeat(60_000));
        let event = with_routing_key(trigger(KEY, &page), "0123456789abcdef0123456789abcdef");
        let size = event.to_string().len();
        assert!(size <= EVENT_LIMIT, "{size}");
        let kept = event["payload"]["custom_details"]["diagnostics"].as_str().unwrap();
        assert!(kept.ends_with("see hubwatch's page]") && kept.len() > 400_000, "{}", kept.len());
        assert_eq!(event["payload"]["summary"], "temple: 3 users cannot start their servers or execute code");
    }

    #[test]
    fn answers_are_classified() {
        let none = hyper::header::HeaderMap::new();
        assert_eq!(classify(202, &none, b"{}"), Answer::Accepted("202".into()));
        assert_eq!(
            classify(202, &none, br#"{"status":"success","message":"Event processed","dedup_key":"k"}"#),
            Answer::Accepted("202 Event processed".into())
        );
        assert_eq!(classify(400, &none, br#"{"status":"invalid event","message":"Event object is invalid","errors":["'payload.summary' is missing"]}"#), Answer::Rejected("HTTP 400 Event object is invalid: 'payload.summary' is missing".into()));
        assert!(matches!(
            classify(
                400,
                &none,
                br#"{"status":"invalid event","message":"Event object is invalid","errors":["Invalid routing key"]}"#
            ),
            Answer::KeyRefused(_)
        ));
        assert!(matches!(classify(422, &none, b"{}"), Answer::Rejected(_)));
        for status in [401, 403, 404] {
            assert!(matches!(classify(status, &none, b"{}"), Answer::KeyRefused(_)), "{status}");
        }
        assert_eq!(classify(429, &none, b""), Answer::RateLimited(None));
        let mut later = hyper::header::HeaderMap::new();
        later.insert("retry-after", "120".parse().unwrap());
        assert_eq!(classify(429, &later, b""), Answer::RateLimited(Some(Duration::from_secs(120))));
        later.insert("retry-after", "999999".parse().unwrap());
        assert_eq!(classify(429, &later, b""), Answer::RateLimited(Some(Duration::from_secs(3600))), "capped");
        assert_eq!(classify(503, &none, b""), Answer::Failed("HTTP 503".into()));
    }
}
