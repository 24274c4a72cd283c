//! The outbox: PagerDuty events queued in the same transaction as the change they report, and what became
//! of each (sent, rejected, dry run, or still pending with its next attempt).

use super::incidents::{TimelineKind, insert_timeline};
use super::{Store, StoreError, from_millis, millis};
use crate::domain::IncidentKind;
use rusqlite::{Connection, params};
use std::time::SystemTime;

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

    /// None for a word no version of hubwatch wrote (it is never guessed to be a trigger).
    pub fn parse(text: &str) -> Option<EventAction> {
        EventAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Where an outbox event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Not yet accepted: it is sent (again) when due.
    Pending,
    /// PagerDuty accepted it.
    Sent,
    /// PagerDuty refused it as invalid (never retried), or it could not be read.
    Rejected,
    /// No `pagerduty` section: logged, never sent.
    DryRun,
}

impl OutboxState {
    pub const ALL: [OutboxState; 4] =
        [OutboxState::Pending, OutboxState::Sent, OutboxState::Rejected, OutboxState::DryRun];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Rejected => "rejected",
            OutboxState::DryRun => "dry_run",
        }
    }

    pub fn parse(text: &str) -> Option<OutboxState> {
        OutboxState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub key: String,
    pub action: EventAction,
    pub body: serde_json::Value,
    pub attempts: u32,
    pub created_at: SystemTime,
    pub route: Option<EventRoute>,
}

/// Whose PagerDuty settings an event goes out with: its hub's (and kind's) overrides, else the global ones.
/// Stored with the event; the routing key itself never is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRoute {
    pub hub: String,
    pub kind: Option<IncidentKind>,
}

impl EventRoute {
    fn to_text(&self) -> String {
        match self.kind {
            Some(kind) => format!("{} {}", self.hub, kind.as_str()),
            None => self.hub.clone(),
        }
    }

    fn parse(text: &str) -> EventRoute {
        match text.split_once(' ') {
            Some((hub, kind)) => EventRoute { hub: hub.to_string(), kind: IncidentKind::parse(kind) },
            None => EventRoute { hub: text.to_string(), kind: None },
        }
    }
}

/// A new PagerDuty event to queue with a change.
pub struct NewEvent {
    pub action: EventAction,
    pub body: serde_json::Value,
    /// Held until then (a trigger waiting briefly for its diagnostics); the incident's later events wait
    /// behind it, so the order holds.
    pub hold_until: Option<SystemTime>,
    pub route: Option<EventRoute>,
}

impl NewEvent {
    pub fn now(action: EventAction, body: serde_json::Value) -> Self {
        NewEvent { action, body, hold_until: None, route: None }
    }

    /// Sent with the settings of `hub` (and `kind`).
    pub fn routed(mut self, hub: &str, kind: Option<IncidentKind>) -> Self {
        self.route = Some(EventRoute { hub: hub.to_string(), kind });
        self
    }
}

/// The oldest pending event of each incident on each of its three channels: events (trigger, resolve,
/// change), the REST API (notes, priority), and the webhook sink; one channel's outage never holds back
/// another's.
const HEADS: &str = "SELECT MIN(id) FROM outbox WHERE state = 'pending'
    GROUP BY key, CASE action WHEN 'note' THEN 1 WHEN 'priority' THEN 1 WHEN 'webhook' THEN 2 ELSE 0 END";

impl Store {
    /// Queues a Change Event under its own key (`change-…`), once: the same key queued again is ignored, so
    /// a watch that sees the same change twice (a restart, a re-list) does not send it twice.
    pub fn queue_change(&self, key: &str, at: SystemTime, change: NewEvent) -> Result<bool, StoreError> {
        self.write(|tx| {
            let known = tx.prepare("SELECT 1 FROM outbox WHERE key = ?1")?.exists([key])?;
            if !known {
                insert_event(tx, key, at, &change)?;
            }
            Ok(!known)
        })
    }

    /// Events due now, at most one per incident (and one status note): the oldest unsent one, so an
    /// incident's events go out in order (never a resolve before its trigger). A row whose action no
    /// version of hubwatch wrote is marked rejected, not guessed at.
    pub fn due_events(&self, now: SystemTime, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        {
            let conn = self.conn();
            let mut statement = conn.prepare(&format!(
                "SELECT id, key, action, body, attempts, created_at, route FROM outbox
                 WHERE id IN ({HEADS}) AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2"
            ))?;
            let mut rows = statement.query(params![millis(now), limit as i64])?;
            while let Some(row) = rows.next()? {
                let (id, action, body): (i64, String, String) = (row.get(0)?, row.get(2)?, row.get(3)?);
                match (EventAction::parse(&action), serde_json::from_str(&body)) {
                    (Some(action), Ok(body)) => out.push(OutboxEvent {
                        id,
                        key: row.get(1)?,
                        action,
                        body,
                        attempts: row.get(4)?,
                        created_at: from_millis(row.get(5)?),
                        route: row.get::<_, Option<String>>(6)?.map(|r| EventRoute::parse(&r)),
                    }),
                    (None, _) => unreadable.push((id, format!("unknown event action {action:?}"))),
                    (_, Err(e)) => unreadable.push((id, format!("unreadable event body: {e}"))),
                }
            }
        }
        for (id, reason) in unreadable {
            tracing::error!(id, %reason, "an outbox row cannot be sent: marked rejected");
            self.write(|tx| {
                tx.execute(
                    "UPDATE outbox SET state = 'rejected', last_error = ?2, done_at = ?3 WHERE id = ?1",
                    params![id, reason, millis(now)],
                )?;
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// When the next pending event is due (the worker sleeps until then).
    pub fn next_due_at(&self) -> Result<Option<SystemTime>, StoreError> {
        let at: Option<i64> = self.conn().query_row(
            &format!("SELECT MIN(next_attempt_at) FROM outbox WHERE id IN ({HEADS})"),
            [],
            |row| row.get(0),
        )?;
        Ok(at.map(from_millis))
    }

    /// Records PagerDuty's final answer to `event` (sent, rejected or dry run), and its timeline entry with
    /// it, in one transaction.
    pub fn finish_event(
        &self,
        event: &OutboxEvent,
        state: OutboxState,
        at: SystemTime,
        error: Option<&str>,
        entry: Option<(TimelineKind, &str)>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE outbox SET state = ?2, done_at = ?3, last_error = ?4, attempts = attempts + 1 WHERE id = ?1",
                params![event.id, state.as_str(), millis(at), error],
            )?;
            if let Some((kind, text)) = entry {
                insert_timeline(tx, &event.key, at, kind, text)?;
            }
            Ok(())
        })
    }

    pub fn retry_event(&self, id: i64, next_attempt_at: SystemTime, error: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, millis(next_attempt_at), error],
            )?;
            Ok(())
        })
    }

    /// How many events (pages; not status notes, priorities or webhooks) are unsent, and when the oldest was queued.
    pub fn unsent(&self) -> Result<(u64, Option<SystemTime>), StoreError> {
        let (count, oldest): (i64, Option<i64>) = self.conn().query_row(
            "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending' AND action IN ('trigger', 'resolve', 'change')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((count as u64, oldest.map(from_millis)))
    }
}

pub(super) fn insert_event(conn: &Connection, key: &str, at: SystemTime, event: &NewEvent) -> Result<(), StoreError> {
    conn.execute(
        // Due at once (next_attempt_at 0) unless held; only a failed attempt schedules a later one.
        "INSERT INTO outbox (key, action, body, created_at, next_attempt_at, route) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key,
            event.action.as_str(),
            event.body.to_string(),
            millis(at),
            event.hold_until.map_or(0, millis),
            event.route.as_ref().map(EventRoute::to_text)
        ],
    )?;
    Ok(())
}
