//! The webhook sink: one JSON POST per event, with the configured headers; hubwatch's own object, or (format
//! `alertmanager`) the same as a one-alert list for Alertmanager's `POST /api/v2/alerts`. 2xx is accepted; 408,
//! 425 and 5xx (and network errors) are retried with backoff, 429 after its `Retry-After`; any other 4xx is
//! refused for good (retrying an event the receiver finds invalid cannot help).

use super::pagerduty::Answer;
use crate::config::{WebhookConfig, WebhookFormat};
use crate::domain::wording::truncate;
use crate::http::HttpClient;
use reqwest::header::{HeaderName, HeaderValue, USER_AGENT};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

pub async fn post(http: &HttpClient, webhook: &WebhookConfig, body: &Value, agent: &str, budget: Duration) -> Answer {
    let body = match webhook.format {
        WebhookFormat::Json => body.clone(),
        WebhookFormat::Alertmanager => alertmanager(body),
    };
    let mut request = http.reqwest().post(webhook.url.clone()).header(USER_AGENT, agent).json(&body);
    for (name, value) in &webhook.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.expose()))
        else {
            // Never quote the value: it is a secret.
            return Answer::Rejected(format!("webhook.headers.{name} cannot be sent as an HTTP header"));
        };
        request = request.header(name, value);
    }
    match http.send(request, Instant::now() + budget).await {
        Ok(response) => classify(response.status.as_u16(), &response.headers, &response.body),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

/// An opened incident or ticket fires until it closes; since a lost close must not leave it firing forever,
/// it ends by itself after this long unless closed first (Alertmanager alerts end at `endsAt`).
const ALERT_LIFETIME_DAYS: i64 = 7;

/// hubwatch's webhook object as Alertmanager's alert: the same labels on opening and closing (so the close
/// resolves the alert the opening fired), `endsAt` the closing time, or a week away while open.
pub fn alertmanager(body: &Value) -> Value {
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
    let event = text("event");
    let closing = event.ends_with("_resolved") || event.ends_with("_closed");
    let alertname = if event.starts_with("ticket") { "HubwatchSupportTicket" } else { "HubwatchIncident" };
    let ends = if closing {
        text("at")
    } else {
        humantime::parse_rfc3339_weak(&text("at"))
            .map(|at| at + std::time::Duration::from_secs(ALERT_LIFETIME_DAYS as u64 * 86_400))
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default()
    };
    let users: Vec<&str> = body["users"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    json!([{
        "labels": {"alertname": alertname, "hub": text("hub"), "kind": text("kind"), "severity": text("severity"),
                   "hubwatch_id": text("id")},
        "annotations": {"summary": text("summary"), "users": users.join(", "), "url": text("url")},
        "startsAt": text("impact_start"),
        "endsAt": ends,
        "generatorURL": text("url"),
    }])
}

fn classify(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Answer {
    let said = truncate(String::from_utf8_lossy(body).trim(), 200);
    match status {
        200..=299 => Answer::Accepted(format!("HTTP {status}")),
        429 => Answer::RateLimited(super::pagerduty::retry_after(headers)),
        408 | 425 | 500..=599 => Answer::Failed(format!("HTTP {status} {said}").trim().to_string()),
        _ => Answer::Rejected(format!("HTTP {status} {said}").trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opening_fires_for_a_week_and_its_closing_resolves_the_same_alert() {
        let opened = json!({"version": 1, "event": "incident_opened", "id": "temple-hub_access-1", "hub": "temple",
            "kind": "hub_access", "summary": "temple: 2 users cannot start their servers", "severity": "critical",
            "users": ["ana", "bo"], "impact_start": "2026-11-30T10:00:00Z", "at": "2026-11-30T10:03:00Z",
            "url": "https://hubwatch.example.org/incidents/temple-hub_access-1"});
        let fired = alertmanager(&opened);
        assert_eq!(fired[0]["labels"]["alertname"], "HubwatchIncident");
        assert_eq!(fired[0]["startsAt"], "2026-11-30T10:00:00Z");
        assert_eq!(fired[0]["endsAt"], "2026-12-07T10:03:00Z");
        assert_eq!(fired[0]["annotations"]["users"], "ana, bo");
        let mut closed = opened.clone();
        closed["event"] = "incident_resolved".into();
        closed["at"] = "2026-11-30T11:00:00Z".into();
        let resolved = alertmanager(&closed);
        assert_eq!(resolved[0]["labels"], fired[0]["labels"], "the same alert");
        assert_eq!(resolved[0]["endsAt"], "2026-11-30T11:00:00Z");
    }

    #[test]
    fn answers_are_classified_for_retrying() {
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(classify(204, &none, b""), Answer::Accepted("HTTP 204".into()));
        assert!(matches!(classify(503, &none, b"down"), Answer::Failed(r) if r == "HTTP 503 down"));
        assert_eq!(classify(429, &none, b""), Answer::RateLimited(None));
        assert!(matches!(classify(400, &none, b"bad field"), Answer::Rejected(r) if r == "HTTP 400 bad field"));
    }
}
