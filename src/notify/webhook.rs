//! The webhook sink: one JSON POST per event, with the configured headers; hubwatch's own object, or (format
//! `alertmanager`) the same as a one-alert list for Alertmanager's `POST /api/v2/alerts`. 2xx is accepted; 408,
//! 425 and 5xx (and network errors) are retried with backoff, 429 after its `Retry-After`; any other 4xx is
//! refused for good (retrying an event the receiver finds invalid cannot help).

use super::pagerduty::Answer;
use crate::config::{WebhookConfig, WebhookFormat};
use crate::domain::Notice;
use crate::domain::wording::truncate;
use crate::http::HttpClient;
use crate::timefmt::rfc3339;
use hyper::header::{HeaderName, HeaderValue, USER_AGENT};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// The webhook body's version: a receiver can tell a future change of shape.
pub const WEBHOOK_VERSION: u32 = 1;

/// Posts `body` (from [`render`], or an older version's stored body) with the configured headers.
pub async fn post(http: &HttpClient, webhook: &WebhookConfig, body: &Value, agent: &str, budget: Duration) -> Answer {
    let mut request = http.post(&webhook.url).header(USER_AGENT, agent).json(body);
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

/// `notice` in the sink's format.
pub fn render(notice: &Notice, format: WebhookFormat) -> Value {
    match format {
        WebhookFormat::Json => hubwatch_object(notice),
        WebhookFormat::Alertmanager => alertmanager(notice),
    }
}

/// hubwatch's own object (docs/paging.md): an incident's says when it resolved, a ticket's why it closed.
fn hubwatch_object(notice: &Notice) -> Value {
    let mut body = json!({
        "version": WEBHOOK_VERSION,
        "event": notice.event.as_str(),
        "id": notice.id,
        "hub": notice.hub,
        "kind": notice.kind.as_str(),
        "summary": notice.summary,
        "severity": notice.severity.as_str(),
        "users": notice.users,
        "impact_start": rfc3339(notice.impact_start),
        "at": rfc3339(notice.at),
        "url": notice.url.as_str(),
    });
    if notice.event.is_ticket() {
        body["closed_because"] = json!(notice.closed_because);
    } else {
        body["resolved_at"] = json!(notice.resolved_at.map(rfc3339));
    }
    body
}

/// An opened incident or ticket fires until it closes; since a lost close must not leave it firing forever,
/// it ends by itself after this long unless closed first (Alertmanager alerts end at `endsAt`).
const ALERT_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// The notice as Alertmanager's alert (a one-alert list for `POST /api/v2/alerts`): the same labels on opening
/// and closing (so the close resolves the alert the opening fired), `endsAt` the closing time, or a week away
/// while open.
fn alertmanager(notice: &Notice) -> Value {
    let alertname = if notice.event.is_ticket() { "HubwatchSupportTicket" } else { "HubwatchIncident" };
    let ends = if notice.event.is_closing() { notice.at } else { notice.at + ALERT_LIFETIME };
    json!([{
        "labels": {"alertname": alertname, "hub": notice.hub, "kind": notice.kind.as_str(),
                   "severity": notice.severity.as_str(), "hubwatch_id": notice.id},
        "annotations": {"summary": notice.summary, "users": notice.users.join(", "), "url": notice.url.as_str()},
        "startsAt": rfc3339(notice.impact_start),
        "endsAt": rfc3339(ends),
        "generatorURL": notice.url.as_str(),
    }])
}

fn classify(status: u16, headers: &hyper::header::HeaderMap, body: &[u8]) -> Answer {
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
    use crate::domain::{IncidentKind, NoticeEvent, NoticeKind, Severity, TicketKind};

    fn notice(event: NoticeEvent, at: &str) -> Notice {
        let time = |text: &str| humantime::parse_rfc3339(text).unwrap();
        Notice {
            event,
            id: "temple-hub_access-1".into(),
            hub: "temple".into(),
            kind: NoticeKind::Incident(IncidentKind::HubAccess),
            summary: "temple: 2 users cannot start their servers".into(),
            severity: Severity::Critical,
            users: vec!["ana".into(), "bo".into()],
            impact_start: time("2026-11-30T10:00:00Z"),
            resolved_at: None,
            closed_because: None,
            at: time(at),
            url: "https://hubwatch.example.org/incidents/temple-hub_access-1".parse().unwrap(),
        }
    }

    #[test]
    fn an_opening_fires_for_a_week_and_its_closing_resolves_the_same_alert() {
        let opened = notice(NoticeEvent::IncidentOpened, "2026-11-30T10:03:00Z");
        let fired = render(&opened, WebhookFormat::Alertmanager);
        assert_eq!(fired[0]["labels"]["alertname"], "HubwatchIncident");
        assert_eq!(fired[0]["startsAt"], "2026-11-30T10:00:00Z");
        assert_eq!(fired[0]["endsAt"], "2026-12-07T10:03:00Z");
        assert_eq!(fired[0]["annotations"]["users"], "ana, bo");
        let resolved =
            render(&notice(NoticeEvent::IncidentResolved, "2026-11-30T11:00:00Z"), WebhookFormat::Alertmanager);
        assert_eq!(resolved[0]["labels"], fired[0]["labels"], "the same alert");
        assert_eq!(resolved[0]["endsAt"], "2026-11-30T11:00:00Z");
    }

    #[test]
    fn hubwatch_object_is_exactly_this() {
        let ticket = Notice {
            kind: NoticeKind::Ticket(TicketKind::SlowStarts),
            closed_because: Some("nobody is slow any more".into()),
            ..notice(NoticeEvent::TicketClosed, "2026-11-30T11:00:00Z")
        };
        assert_eq!(
            render(&ticket, WebhookFormat::Json),
            json!({"version": 1, "event": "ticket_closed", "id": "temple-hub_access-1", "hub": "temple",
                "kind": "slow_starts", "summary": "temple: 2 users cannot start their servers", "severity": "critical",
                "users": ["ana", "bo"], "impact_start": "2026-11-30T10:00:00Z", "closed_because": "nobody is slow any more",
                "at": "2026-11-30T11:00:00Z", "url": "https://hubwatch.example.org/incidents/temple-hub_access-1"})
        );
        let opened = render(&notice(NoticeEvent::IncidentOpened, "2026-11-30T10:03:00Z"), WebhookFormat::Json);
        assert_eq!(opened["resolved_at"], Value::Null);
        assert!(opened.get("closed_because").is_none());
    }

    #[test]
    fn answers_are_classified_for_retrying() {
        let none = hyper::header::HeaderMap::new();
        assert_eq!(classify(204, &none, b""), Answer::Accepted("HTTP 204".into()));
        assert!(matches!(classify(503, &none, b"down"), Answer::Failed(r) if r == "HTTP 503 down"));
        assert_eq!(classify(429, &none, b""), Answer::RateLimited(None));
        assert!(matches!(classify(400, &none, b"bad field"), Answer::Rejected(r) if r == "HTTP 400 bad field"));
    }
}
