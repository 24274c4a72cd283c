//! What hubwatch asks a sink to say, as facts: queued in the outbox with the decision that makes it, and
//! rendered into the sink's own wire format only when it is sent (`notify::pagerduty`, `notify::webhook`), so
//! a decision never builds PagerDuty's JSON and a stored row never depends on a wire format.

use super::incident::{IncidentKind, Symptoms, TicketKind};
use super::{HubName, IncidentKey};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};
use url::Url;

/// One message in the outbox. Its key (the PagerDuty dedup key, a ticket's or a change's id) is the row's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum Message {
    /// Pages for an incident (a follow-up is the same under the same key).
    Trigger(Box<Page>),
    /// Resolves the PagerDuty incident of the key.
    Resolve,
    /// A Change Event: the hub's Deployment changed.
    Change(ChangeNotice),
    /// A status note on the key's PagerDuty incident.
    Note { content: String },
    /// The priority to set on the key's PagerDuty incident, and the config key that chose it.
    Priority { name: String, rule: String },
    /// The webhook sink's notice of an incident or a support ticket.
    Webhook(Notice),
    /// Stored by an older hubwatch already in its sink's wire format (a PagerDuty event, a note's or a
    /// priority's request, a webhook body), found in a state or a standby's mirror it left: sent as it is,
    /// so that an upgrade never drops what was waiting to go out.
    Rendered { body: serde_json::Value },
}

/// What an outbox row does (its `action` column): one per kind of [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Trigger,
    Resolve,
    /// A Change Event (sent to the change events endpoint; not part of an incident).
    Change,
    /// A status note on the incident's PagerDuty incident (REST API). Notes go out in order among
    /// themselves, independently of the incident's events, so a REST API outage never holds back a resolve.
    Note,
    /// The priority of the incident's PagerDuty incident (REST API), in order with its notes.
    Priority,
    /// A JSON POST to the webhook sink (incidents and support tickets), in order among themselves.
    Webhook,
}

impl EventAction {
    pub const ALL: [EventAction; 6] = [
        EventAction::Trigger,
        EventAction::Resolve,
        EventAction::Change,
        EventAction::Note,
        EventAction::Priority,
        EventAction::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Trigger => "trigger",
            EventAction::Resolve => "resolve",
            EventAction::Change => "change",
            EventAction::Note => "note",
            EventAction::Priority => "priority",
            EventAction::Webhook => "webhook",
        }
    }

    /// The action that sends `message`; `None` for an older version's rendered body (its row says).
    pub fn of(message: &Message) -> Option<EventAction> {
        match message {
            Message::Trigger(_) => Some(EventAction::Trigger),
            Message::Resolve => Some(EventAction::Resolve),
            Message::Change(_) => Some(EventAction::Change),
            Message::Note { .. } => Some(EventAction::Note),
            Message::Priority { .. } => Some(EventAction::Priority),
            Message::Webhook(_) => Some(EventAction::Webhook),
            Message::Rendered { .. } => None,
        }
    }

    /// None for a word no version of hubwatch wrote (it is never guessed to be a trigger).
    pub fn parse(text: &str) -> Option<EventAction> {
        EventAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Where an event goes: each channel is delivered on its own, so a sink that hangs delays only itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// PagerDuty's Events API: triggers, resolves, change events.
    Events,
    /// PagerDuty's REST API: status notes and priorities.
    Rest,
    /// The webhook sink.
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Events, Channel::Rest, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Events => "events",
            Channel::Rest => "rest",
            Channel::Webhook => "webhook",
        }
    }
}

impl EventAction {
    pub fn channel(self) -> Channel {
        match self {
            EventAction::Trigger | EventAction::Resolve | EventAction::Change => Channel::Events,
            EventAction::Note | EventAction::Priority => Channel::Rest,
            EventAction::Webhook => Channel::Webhook,
        }
    }
}

/// How urgent a page is (PagerDuty's severities; also the webhook's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Everything a page says about one incident (a hub's, or a cluster's with its `parts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The hub, or for a cluster incident the hub its record is kept under.
    pub hub: HubName,
    /// The hub's URL; for a cluster incident hubwatch's own (its grid of every hub).
    pub hub_url: Url,
    pub kind: IncidentKind,
    /// The page's one line ("temple: 3 users cannot start their servers").
    pub summary: String,
    pub severity: Severity,
    pub symptoms: Symptoms,
    pub impact_start: SystemTime,
    /// N, and the window users stay counted in.
    pub threshold: usize,
    pub window: Duration,
    /// hubwatch's page of the incident.
    pub incident_url: Url,
    /// The Kubernetes evidence, or why there is none (yet).
    pub diagnostics: String,
    /// Which settings routed it; none without a pagerduty section.
    pub routing: Option<RouteNotice>,
    /// A cluster incident's hubs; empty for a hub's own incident.
    pub parts: Vec<PartNotice>,
    /// When it was decided.
    pub at: SystemTime,
}

/// Where a page's settings came from (no secret: only the config keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteNotice {
    pub routing_key_rule: String,
    pub severity: Severity,
    pub priority: Option<String>,
    pub priority_rule: Option<String>,
}

/// One hub's incident inside a cluster incident's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartNotice {
    pub hub: HubName,
    pub incident: IncidentKey,
    pub url: Url,
    pub summary: String,
    /// Who fails at what ("server: ana, bo").
    pub affected: String,
}

/// A hub Deployment's new pod template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    pub hub: HubName,
    pub hub_url: Url,
    pub summary: String,
    pub namespace: String,
    pub deployment: String,
    pub generation: i64,
    pub changes: Vec<String>,
    pub at: SystemTime,
}

/// What the webhook says of an incident or a support ticket opening or closing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub event: NoticeEvent,
    /// The incident's key or the ticket's id.
    pub id: String,
    pub hub: HubName,
    pub kind: NoticeKind,
    pub summary: String,
    pub severity: Severity,
    pub users: Vec<String>,
    pub impact_start: SystemTime,
    /// An incident's recovery.
    pub resolved_at: Option<SystemTime>,
    /// Why a ticket closed.
    pub closed_because: Option<String>,
    pub at: SystemTime,
    pub url: Url,
}

/// What the notice is about: an incident's kind or a ticket's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Incident(IncidentKind),
    Ticket(TicketKind),
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Incident(kind) => kind.as_str(),
            NoticeKind::Ticket(kind) => kind.as_str(),
        }
    }
}

/// What happened, as the webhook's `event` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    IncidentOpened,
    IncidentResolved,
    TicketOpened,
    TicketClosed,
}

impl NoticeEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::IncidentOpened => "incident_opened",
            NoticeEvent::IncidentResolved => "incident_resolved",
            NoticeEvent::TicketOpened => "ticket_opened",
            NoticeEvent::TicketClosed => "ticket_closed",
        }
    }

    pub fn is_ticket(self) -> bool {
        matches!(self, NoticeEvent::TicketOpened | NoticeEvent::TicketClosed)
    }

    pub fn is_closing(self) -> bool {
        matches!(self, NoticeEvent::IncidentResolved | NoticeEvent::TicketClosed)
    }
}

impl Message {
    /// A stored row's message: as this version writes it (tagged `message`), else an older version's wire body.
    pub fn read(text: &str) -> Result<Message, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        match value.get("message") {
            Some(_) => serde_json::from_value(value),
            None => Ok(Message::Rendered { body: value }),
        }
    }

    /// The same page with fresh diagnostics (a trigger held for them, or its follow-up); other messages have none.
    pub fn with_diagnostics(self, diagnostics: &str) -> Option<Message> {
        match self {
            Message::Trigger(mut page) => {
                page.diagnostics = diagnostics.to_string();
                Some(Message::Trigger(page))
            }
            _ => None,
        }
    }
}
