//! The outbox: messages for PagerDuty and the webhook ([`Message`]) queued in the same transaction as the
//! change they report, and what became of each (sent, rejected, dry run, or still pending with its next
//! attempt). A row holds what is to be said; its sink's wire format is rendered only when it is sent.

use super::incidents::{RoutedTo, TimelineKind, insert_timeline};
use super::words::{among, is};
use super::{Store, StoreError, from_millis, millis};
use crate::domain::{Channel, EventAction, HubName, IncidentKind, Message};
use rusqlite::{Connection, params};
use std::time::SystemTime;

/// Which stored rows `channel` carries, as SQL. The events channel also takes rows whose action no version of
/// hubwatch wrote, so that they are found and marked rejected rather than left pending for ever.
fn rows(channel: Channel) -> String {
    let others: Vec<EventAction> = EventAction::ALL.into_iter().filter(|a| a.channel() != Channel::Events).collect();
    let mine: Vec<EventAction> = EventAction::ALL.into_iter().filter(|a| a.channel() == channel).collect();
    match channel {
        Channel::Events => format!("NOT ({})", among("action", &others)),
        Channel::Rest | Channel::Webhook => among("action", &mine),
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
    /// Not sent, on purpose: a trigger whose incident recovered before it went out (its resolve is queued
    /// behind it). PagerDuty either has it, and the resolve closes it, or never had it, and nobody is woken
    /// for an outage that is over.
    Skipped,
}

impl OutboxState {
    pub const ALL: [OutboxState; 5] =
        [OutboxState::Pending, OutboxState::Sent, OutboxState::Rejected, OutboxState::DryRun, OutboxState::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Rejected => "rejected",
            OutboxState::DryRun => "dry_run",
            OutboxState::Skipped => "skipped",
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
    pub message: Message,
    pub attempts: u32,
    pub created_at: SystemTime,
    pub route: Option<EventRoute>,
}

/// Whose PagerDuty settings an event goes out with: its hub's (and kind's) overrides, else the global ones.
/// Stored with the event; the routing key itself never is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRoute {
    pub hub: HubName,
    pub kind: Option<IncidentKind>,
}

impl EventRoute {
    fn to_text(&self) -> String {
        match self.kind {
            Some(kind) => format!("{} {}", self.hub, kind.as_str()),
            None => self.hub.to_string(),
        }
    }

    fn parse(text: &str) -> EventRoute {
        match text.split_once(' ') {
            Some((hub, kind)) => EventRoute { hub: HubName::new(hub), kind: IncidentKind::parse(kind) },
            None => EventRoute { hub: HubName::new(text), kind: None },
        }
    }
}

/// A new message to queue with the change that makes it.
pub struct NewEvent {
    pub(super) action: EventAction,
    pub message: Message,
    /// Held until then (a trigger waiting briefly for its diagnostics); the incident's later events wait
    /// behind it, so the order holds.
    pub hold_until: Option<SystemTime>,
    pub route: Option<EventRoute>,
}

impl NewEvent {
    /// `message`, due at once. Never an older version's rendered body: only stored rows hold those.
    pub fn now(message: Message) -> Self {
        let action = EventAction::of(&message).expect("new messages are typed");
        NewEvent { action, message, hold_until: None, route: None }
    }

    /// Held until `until` (a trigger waiting for its diagnostics).
    pub fn held(mut self, until: Option<SystemTime>) -> Self {
        self.hold_until = until;
        self
    }

    pub fn action(&self) -> EventAction {
        self.action
    }

    /// Sent with the settings of `hub` (and `kind`).
    pub fn routed(mut self, hub: &HubName, kind: Option<IncidentKind>) -> Self {
        self.route = Some(EventRoute { hub: hub.clone(), kind });
        self
    }
}

/// The oldest pending event of each incident on `channel`: an incident's events go out in order on each
/// channel (never a resolve before its trigger), and one channel's outage never holds back another's.
fn heads(channel: Channel) -> String {
    format!("SELECT MIN(id) FROM outbox WHERE {} AND {} GROUP BY key", is("state", OutboxState::Pending), rows(channel))
}

/// One channel's backlog: how many events wait and when the oldest was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub channel: Channel,
    pub count: u64,
    pub oldest: Option<SystemTime>,
}

/// What became of an incident's events so far (for its page): per action, the latest state and error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub action: EventAction,
    pub state: OutboxState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<SystemTime>,
}

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

    /// Events of `channel` due now, at most one per incident: the oldest unsent one, so an incident's events
    /// go out in order. A row whose action no version of hubwatch wrote is marked rejected, not guessed at.
    pub fn due_events(&self, now: SystemTime, channel: Channel, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        {
            let conn = self.conn();
            let mut statement = conn.prepare(&format!(
                "SELECT id, key, action, body, attempts, created_at, route FROM outbox
                 WHERE id IN ({}) AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
                heads(channel)
            ))?;
            let mut rows = statement.query(params![millis(now), limit as i64])?;
            while let Some(row) = rows.next()? {
                let (id, action, body): (i64, String, String) = (row.get(0)?, row.get(2)?, row.get(3)?);
                match (EventAction::parse(&action), Message::read(&body)) {
                    (Some(action), Ok(message)) => out.push(OutboxEvent {
                        id,
                        key: row.get(1)?,
                        action,
                        message,
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
                    "UPDATE outbox SET state = ?4, last_error = ?2, done_at = ?3 WHERE id = ?1",
                    params![id, reason, millis(now), OutboxState::Rejected],
                )?;
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// When the next pending event of `channel` is due (its worker sleeps until then).
    pub fn next_due_at(&self, channel: Channel) -> Result<Option<SystemTime>, StoreError> {
        let at: Option<i64> = self.conn().query_row(
            &format!("SELECT MIN(next_attempt_at) FROM outbox WHERE id IN ({})", heads(channel)),
            [],
            |row| row.get(0),
        )?;
        Ok(at.map(from_millis))
    }

    /// Records PagerDuty's final answer to `event` (sent, rejected or dry run), its timeline entry, and
    /// where an accepted trigger went (`routed`), in one transaction.
    pub fn finish_event(
        &self,
        event: &OutboxEvent,
        state: OutboxState,
        at: SystemTime,
        error: Option<&str>,
        entry: Option<(TimelineKind, &str)>,
        routed: Option<&RoutedTo>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE outbox SET state = ?2, done_at = ?3, last_error = ?4, attempts = attempts + 1 WHERE id = ?1",
                params![event.id, state, millis(at), error],
            )?;
            // The first accepted trigger fixes where the incident's later events go.
            if let Some(routed) = routed {
                tx.execute(
                    "UPDATE incidents SET routing = COALESCE(routing, ?2) WHERE key = ?1",
                    params![event.key, serde_json::to_string(routed)?],
                )?;
            }
            if let Some((kind, text)) = entry {
                note_on_incident(tx, &event.key, at, kind, text)?;
            }
            Ok(())
        })
    }

    /// Records a failed attempt at `event`, the next one at `next_attempt_at`, and the timeline entry it
    /// makes (if any), in one transaction.
    pub fn retry_event(
        &self,
        event: &OutboxEvent,
        next_attempt_at: SystemTime,
        error: &str,
        entry: Option<(SystemTime, TimelineKind, &str)>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![event.id, millis(next_attempt_at), error],
            )?;
            if let Some((at, kind, text)) = entry {
                note_on_incident(tx, &event.key, at, kind, text)?;
            }
            Ok(())
        })
    }

    /// How many events (pages; not status notes, priorities or webhooks) are unsent, and when the oldest was queued.
    pub fn unsent(&self) -> Result<(u64, Option<SystemTime>), StoreError> {
        let backlog = self.backlog(Channel::Events)?;
        Ok((backlog.count, backlog.oldest))
    }

    /// The unsent events of `channel`.
    pub fn backlog(&self, channel: Channel) -> Result<Backlog, StoreError> {
        let (count, oldest): (i64, Option<i64>) = self.conn().query_row(
            &format!(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE {} AND {}",
                is("state", OutboxState::Pending),
                rows(channel)
            ),
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(Backlog { channel, count: count as u64, oldest: oldest.map(from_millis) })
    }

    /// Marks as [`OutboxState::Skipped`] every pending trigger whose incident has a resolve queued behind it
    /// (a trigger held for its diagnostics, or one a crash or a takeover left unrecorded); returns the keys.
    /// Sending it would open a fresh PagerDuty incident for an outage that is over.
    pub fn skip_triggers_behind_resolves(&self, at: SystemTime) -> Result<Vec<String>, StoreError> {
        self.write(|tx| {
            let keys: Vec<String> = tx
                .prepare(
                    "SELECT DISTINCT t.key FROM outbox t JOIN outbox r ON r.key = t.key AND r.id > t.id
                     WHERE t.state = ?1 AND t.action = ?2 AND r.state = ?1 AND r.action = ?3",
                )?
                .query_map(params![OutboxState::Pending, EventAction::Trigger, EventAction::Resolve], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for key in &keys {
                tx.execute(
                    "UPDATE outbox SET state = ?3, done_at = ?2,
                     last_error = 'not sent: the incident recovered before it went out (its resolve follows)'
                     WHERE key = ?1 AND state = ?4 AND action = ?5
                     AND id < (SELECT MAX(id) FROM outbox WHERE key = ?1 AND state = ?4 AND action = ?6)",
                    params![
                        key,
                        millis(at),
                        OutboxState::Skipped,
                        OutboxState::Pending,
                        EventAction::Trigger,
                        EventAction::Resolve
                    ],
                )?;
                insert_timeline(
                    tx,
                    key,
                    at,
                    TimelineKind::PageSent,
                    "trigger not (re)sent: the incident recovered before PagerDuty accepted it; the resolve follows, so \
                     PagerDuty keeps no open incident for it",
                )?;
            }
            Ok(keys)
        })
    }

    /// Whether a resolve for `key` waits to be sent.
    pub fn resolve_queued(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare("SELECT 1 FROM outbox WHERE key = ?1 AND action = ?2 AND state = ?3")?
            .exists(params![key, EventAction::Resolve, OutboxState::Pending])?)
    }

    /// Queues `resolve` for `key` (an incident PagerDuty has open that must not stay so), with `note` (an
    /// incident's key and the entry) on the timeline of the incident it concerns.
    pub fn queue_resolve(
        &self,
        key: &str,
        at: SystemTime,
        resolve: NewEvent,
        note: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            insert_event(tx, key, at, &resolve)?;
            if let Some((incident, text)) = note {
                insert_timeline(tx, incident, at, TimelineKind::ResolveSent, text)?;
            }
            Ok(())
        })
    }

    /// Per action, what became of the incident `key`'s latest event of that action.
    pub fn deliveries(&self, key: &str) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT action, state, attempts, last_error, next_attempt_at FROM outbox
             WHERE id IN (SELECT MAX(id) FROM outbox WHERE key = ?1 GROUP BY action) ORDER BY id",
        )?;
        let mut rows = statement.query([key])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let (action, state) = match (row.get(0), row.get(1)) {
                (Ok(action), Ok(state)) => (action, state),
                (Err(e), _) | (_, Err(e)) => {
                    self.unreadable.report("outbox", key, &e);
                    continue;
                }
            };
            let (attempts, last_error, next): (u32, Option<String>, i64) = (row.get(2)?, row.get(3)?, row.get(4)?);
            let next_attempt_at = (state == OutboxState::Pending && next > 0).then(|| from_millis(next));
            out.push(Delivery { action, state, attempts, last_error, next_attempt_at });
        }
        Ok(out)
    }

    /// Brings retries scheduled further than `limit` after `now` forward to `now` (a wall clock that stepped
    /// back between two runs must not hold a page for the length of the step); returns how many.
    pub fn clamp_retries(&self, now: SystemTime, limit: std::time::Duration) -> Result<usize, StoreError> {
        let latest = millis(now + limit);
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE outbox SET next_attempt_at = ?1 WHERE state = ?3 AND next_attempt_at > ?2",
                params![millis(now), latest, OutboxState::Pending],
            )?)
        })
    }
}

/// A timeline entry for the incident `key`, if it is one (a resolve reconciling sends for a PagerDuty
/// incident this state never had, a support ticket's or a change's event, belong to none).
fn note_on_incident(
    tx: &Connection,
    key: &str,
    at: SystemTime,
    kind: TimelineKind,
    text: &str,
) -> Result<(), StoreError> {
    if tx.prepare("SELECT 1 FROM incidents WHERE key = ?1")?.exists([key])? {
        insert_timeline(tx, key, at, kind, text)?;
    }
    Ok(())
}

pub(super) fn insert_event(conn: &Connection, key: &str, at: SystemTime, event: &NewEvent) -> Result<(), StoreError> {
    conn.execute(
        // Due at once (next_attempt_at 0) unless held; only a failed attempt schedules a later one.
        "INSERT INTO outbox (key, action, body, created_at, next_attempt_at, route) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key,
            event.action,
            serde_json::to_string(&event.message)?,
            millis(at),
            event.hold_until.map_or(0, millis),
            event.route.as_ref().map(EventRoute::to_text)
        ],
    )?;
    Ok(())
}
