//! The timeline entries a delivery leaves on its incident (change events and support tickets belong to none).

use crate::domain::{EventAction, Message};
use crate::store::{OutboxEvent, TimelineKind};

pub type Entry = Option<(TimelineKind, String)>;

/// The entry of an accepted event.
pub fn accepted(event: &OutboxEvent, message: &str, pagerduty_incident: Option<&str>) -> Entry {
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
                note_content(&event.message).lines().next().unwrap_or("")
            ),
        )),
        EventAction::Priority => {
            let (name, rule) = priority(&event.message);
            let incident = pagerduty_incident.unwrap_or("?");
            Some((
                TimelineKind::PageSent,
                format!("priority {name} set on PagerDuty incident {incident} (rule {rule})"),
            ))
        }
        EventAction::Change | EventAction::Webhook => None,
    }
}

/// The entry of a rejected event.
pub fn rejected(event: &OutboxEvent, reason: &str) -> Entry {
    match event.action {
        EventAction::Trigger => Some((TimelineKind::PageSent, format!("PagerDuty rejected the trigger: {reason}"))),
        EventAction::Resolve => Some((TimelineKind::ResolveSent, format!("PagerDuty rejected the resolve: {reason}"))),
        EventAction::Note => Some((TimelineKind::StatusUpdate, format!("status update not posted: {reason}"))),
        EventAction::Priority => Some((TimelineKind::PageSent, format!("priority not set: {reason}"))),
        EventAction::Change | EventAction::Webhook => None,
    }
}

/// The entry of a trigger or resolve whose routing key PagerDuty refused (said once, at the first refusal).
pub fn key_refused(event: &OutboxEvent, reason: &str) -> Entry {
    let kind = match event.action {
        EventAction::Trigger => TimelineKind::PageSent,
        EventAction::Resolve => TimelineKind::ResolveSent,
        _ => return None,
    };
    (event.attempts == 0).then(|| {
        let text = format!(
            "PagerDuty refused the routing key of this {} ({reason}); retried every few minutes until the key is \
             fixed",
            event.action.as_str()
        );
        (kind, text)
    })
}

/// An entry for the incident the event belongs to (a ticket's or a change's key is none).
pub fn for_incident(event: &OutboxEvent, text: String) -> Entry {
    event.route.as_ref().filter(|r| r.kind.is_some()).map(|_| (TimelineKind::PageSent, text))
}

/// A status note's content (an older version's rendered note read for it).
pub fn note_content(message: &Message) -> &str {
    match message {
        Message::Note { content } => content,
        Message::Rendered { body } => body["note"]["content"].as_str().unwrap_or(""),
        _ => "",
    }
}

/// A priority's name and the config key that chose it (an older version's rendered priority read for them).
pub fn priority(message: &Message) -> (&str, &str) {
    match message {
        Message::Priority { name, rule } => (name, rule),
        Message::Rendered { body } => (body["priority"].as_str().unwrap_or("?"), body["rule"].as_str().unwrap_or("?")),
        _ => ("?", "?"),
    }
}

/// A page's or a change event's one line (an older version's rendered event read for it); empty for others.
pub fn summary(message: &Message) -> &str {
    match message {
        Message::Trigger(page) => &page.summary,
        Message::Change(notice) => &notice.summary,
        Message::Rendered { body } => body["payload"]["summary"].as_str().unwrap_or(""),
        _ => "",
    }
}
