//! What goes to the webhook sink (a JSON POST per incident opened or resolved and per support ticket opened
//! or closed), and the support tickets themselves: a problem of fewer users than the threshold is a ticket
//! from its first affected user until nobody is affected or it becomes an incident.

use super::IncidentManager;
use crate::domain::wording::summary;
use crate::domain::{HubName, Message, Notice, NoticeEvent, NoticeKind, Severity, TicketKind};
use crate::store::{IncidentRecord, NewEvent, StoreError, Ticket};
use std::time::{SystemTime, UNIX_EPOCH};
use url::Url;

/// The notice of an incident: what a helpdesk or a chat needs to open (or close) a ticket of its own.
pub fn incident_notice(
    event: NoticeEvent,
    incident: &IncidentRecord,
    url: &Url,
    severity: Severity,
    at: SystemTime,
) -> Notice {
    let users: std::collections::BTreeSet<&String> = incident.affected_ever.values().flatten().collect();
    Notice {
        event,
        id: incident.key.to_string(),
        hub: incident.hub.clone(),
        kind: NoticeKind::Incident(incident.kind),
        summary: summary(&incident.hub, incident.kind, &incident.symptoms),
        severity,
        users: users.into_iter().cloned().collect(),
        impact_start: incident.impact_start,
        resolved_at: incident.recovered_at,
        closed_because: None,
        at,
        url: url.clone(),
    }
}

/// The notice of a support ticket.
pub fn ticket_notice(
    event: NoticeEvent,
    ticket: &Ticket,
    why_closed: Option<&str>,
    url: &Url,
    at: SystemTime,
) -> Notice {
    let count = ticket.users.len();
    let who = if count == 1 { "1 user" } else { &format!("{count} users") };
    let summary = match ticket.kind {
        TicketKind::SlowStarts => {
            format!("{}: servers slow to start for {who} (they started: not an incident)", ticket.hub)
        }
        TicketKind::FirstLogin => format!(
            "{}: a brand-new user cannot get started: {}",
            ticket.hub,
            ticket.reason.as_deref().unwrap_or("the first-login check failed")
        ),
        kind => format!("{}: {who} affected ({}), below the incident threshold", ticket.hub, kind.as_str()),
    };
    Notice {
        event,
        id: ticket.id.clone(),
        hub: ticket.hub.clone(),
        kind: NoticeKind::Ticket(ticket.kind),
        summary,
        severity: Severity::Info,
        users: ticket.users.clone(),
        impact_start: ticket.opened_at,
        resolved_at: None,
        closed_because: why_closed.map(str::to_string),
        at,
        url: url.clone(),
    }
}

/// A change of a support ticket the recorder saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketNews {
    Opened {
        hub: HubName,
        kind: TicketKind,
        users: Vec<String>,
        /// What failed, for a ticket about one check.
        reason: Option<String>,
    },
    /// Nobody is affected (or slow) any more, or it became an incident (`escalated`).
    Closed { hub: HubName, kind: TicketKind, escalated: bool },
}

impl IncidentManager {
    pub(super) fn webhook(&self, notice: Notice) -> Option<NewEvent> {
        self.webhook.then(|| NewEvent::now(Message::Webhook(notice)))
    }

    /// The support ticket open on `hub` for `kind`, if any.
    pub fn open_ticket(&self, hub: &HubName, kind: TicketKind) -> Result<Option<Ticket>, StoreError> {
        Ok(self.store.open_tickets()?.into_iter().find(|t| t.hub == hub && t.kind == kind))
    }

    /// Records a ticket's opening or closing, with its webhook event when a sink is configured.
    pub fn record_ticket(&self, news: &TicketNews, now: SystemTime) -> Result<(), StoreError> {
        let url = self.public_url.clone();
        match news {
            TicketNews::Opened { hub, kind, users, reason } => {
                if self.open_ticket(hub, *kind)?.is_some() {
                    return Ok(());
                }
                let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let ticket = Ticket {
                    id: self.store.unused_key(&format!("ticket-{hub}-{}-{seconds}", kind.as_str()))?,
                    hub: hub.clone(),
                    kind: *kind,
                    opened_at: now,
                    users: users.clone(),
                    reason: reason.clone(),
                };
                let event = self.webhook(ticket_notice(NoticeEvent::TicketOpened, &ticket, None, &url, now));
                self.store.open_ticket(&ticket, event.as_ref())?;
                tracing::info!(id = %ticket.id, ?users, "support ticket opened");
            }
            TicketNews::Closed { hub, kind, escalated } => {
                let Some(ticket) = self.open_ticket(hub, *kind)? else { return Ok(()) };
                let why = match (kind, escalated) {
                    (_, true) => "it became an incident",
                    (TicketKind::SlowStarts, false) => "servers start in time again",
                    (TicketKind::FirstLogin, false) => "a brand-new user got started again",
                    (_, false) => "nobody is affected any more",
                };
                let event = self.webhook(ticket_notice(NoticeEvent::TicketClosed, &ticket, Some(why), &url, now));
                self.store.close_ticket(&ticket.id, now, event.as_ref())?;
                tracing::info!(id = %ticket.id, why, "support ticket closed");
            }
        }
        if self.webhook {
            self.wake.notify_one();
        }
        Ok(())
    }
}
