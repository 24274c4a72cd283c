//! Incidents and their timelines: the rows, and the changes that page (each one transaction with its outbox
//! entries).

use super::outbox::{NewEvent, OutboxState, insert_event};
use super::{Store, StoreError, from_millis, millis};
use crate::domain::{AffectedEver, EventAction, HubName, IncidentKey, IncidentKind, Message, Response, Symptoms};
use rusqlite::{Connection, OptionalExtension, params};
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    pub key: IncidentKey,
    pub hub: HubName,
    pub kind: IncidentKind,
    pub open: bool,
    pub impact_start: SystemTime,
    pub opened_at: SystemTime,
    pub recovered_at: Option<SystemTime>,
    /// The symptoms now (or at recovery).
    pub symptoms: Symptoms,
    /// Everyone affected during the incident, per capability.
    pub affected_ever: AffectedEver,
    /// How each of them failed (first start, last failure), for the report.
    pub failures_ever: Symptoms,
    pub last_trigger_at: Option<SystemTime>,
    /// A material change is waiting for the update interval before it is sent.
    pub pending_update: bool,
    /// Its page is held back (a silence, a rollout, a possible fold): nothing has gone to PagerDuty for it yet.
    pub hold: Option<HeldPage>,
    /// A cluster incident's cluster (its `hub` is then `cluster NAME`): it pages for the hub incidents folded
    /// into it.
    pub cluster: Option<String>,
    /// The cluster incident this hub incident is folded into: paged there, never on its own.
    pub part_of: Option<IncidentKey>,
    /// What responders did with its PagerDuty incident, as last read back (REST token only).
    pub response: Option<Response>,
}

impl IncidentRecord {
    /// An open incident `key` of `kind` on `hub`, its impact from `impact_start`, opened at `opened_at`: no
    /// symptoms, nobody affected and nothing sent yet (the caller adds what it knows).
    pub fn opened(
        key: &IncidentKey,
        hub: &HubName,
        kind: IncidentKind,
        impact_start: SystemTime,
        opened_at: SystemTime,
    ) -> Self {
        IncidentRecord {
            key: key.clone(),
            hub: hub.clone(),
            kind,
            open: true,
            impact_start,
            opened_at,
            recovered_at: None,
            symptoms: Symptoms::default(),
            affected_ever: AffectedEver::default(),
            failures_ever: Symptoms::default(),
            last_trigger_at: None,
            pending_update: false,
            hold: None,
            cluster: None,
            part_of: None,
            response: None,
        }
    }
}

/// Why an incident's page is held back, as recorded when it was decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldPage {
    /// What holds it (`silence ID (REASON, by WHO)`, or the rollout).
    pub why: String,
    /// The silence's id, when a silence holds it.
    pub silence: Option<String>,
    /// When the hold ends if nothing changes (milliseconds since the epoch).
    pub until_ms: i64,
    /// The cluster whose other hubs it waits for (`incidents.fold`), when that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<String>,
    /// Its PagerDuty incident was resolved there while the outage went on: nothing is sent for it again (a
    /// trigger would open a new PagerDuty incident); it ends with the incident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolved_in_pagerduty: bool,
}

impl HeldPage {
    pub fn until(&self) -> SystemTime {
        from_millis(self.until_ms)
    }
}

/// Where an incident's first accepted trigger went: the config key that chose the routing key, and a
/// fingerprint of the key itself (never the key). Its later events (follow-ups, the resolve) go to the same
/// key, whatever the configuration says by then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoutedTo {
    pub rule: String,
    pub fingerprint: String,
}

/// What a timeline entry records (the report and the pages pick entries by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimelineKind {
    /// The earliest failure among the affected users (moves earlier if an earlier one is learnt).
    ImpactStart,
    /// The threshold was crossed.
    Detected,
    /// The affected users or their symptoms changed.
    Changed,
    /// Kubernetes diagnostics were collected (which commands).
    Diagnostics,
    /// A trigger reached PagerDuty (or was rejected).
    PageSent,
    /// The hub's Deployment changed while the incident was open.
    HubChanged,
    /// A status note was posted (or could not be).
    StatusUpdate,
    /// hubwatch could not write its state when it decided a change of this incident: stored late.
    StateDelayed,
    /// Impact end: every capability worked again.
    Recovered,
    /// The resolve reached PagerDuty.
    ResolveSent,
    /// A silence or a rollout began or ended holding back its page; the held page went out.
    Held,
    /// A responder acknowledged its PagerDuty incident (read back).
    Acknowledged,
    /// Its PagerDuty incident was assigned or reassigned (read back): who has it.
    Assigned,
    /// Its PagerDuty incident was resolved there while the outage went on (read back).
    ResolvedInPagerDuty,
}

impl TimelineKind {
    pub const ALL: [TimelineKind; 14] = [
        TimelineKind::ImpactStart,
        TimelineKind::Detected,
        TimelineKind::Changed,
        TimelineKind::Diagnostics,
        TimelineKind::PageSent,
        TimelineKind::HubChanged,
        TimelineKind::StatusUpdate,
        TimelineKind::StateDelayed,
        TimelineKind::Recovered,
        TimelineKind::ResolveSent,
        TimelineKind::Held,
        TimelineKind::Acknowledged,
        TimelineKind::Assigned,
        TimelineKind::ResolvedInPagerDuty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::ImpactStart => "impact_start",
            TimelineKind::Detected => "detected",
            TimelineKind::Changed => "changed",
            TimelineKind::Diagnostics => "diagnostics",
            TimelineKind::PageSent => "page_sent",
            TimelineKind::HubChanged => "hub_changed",
            TimelineKind::StatusUpdate => "status_update",
            TimelineKind::StateDelayed => "state_delayed",
            TimelineKind::Recovered => "recovered",
            TimelineKind::ResolveSent => "resolve_sent",
            TimelineKind::Held => "held",
            TimelineKind::Acknowledged => "acknowledged",
            TimelineKind::Assigned => "assigned",
            TimelineKind::ResolvedInPagerDuty => "resolved_in_pagerduty",
        }
    }

    pub fn parse(text: &str) -> Option<TimelineKind> {
        TimelineKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: SystemTime,
    pub kind: TimelineKind,
    pub text: String,
}

/// What became of diagnostics that arrived for an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagnosticsAttached {
    /// Put into the trigger still waiting for them, which is released at once.
    IntoWaitingTrigger,
    /// The trigger had gone out without them: a follow-up trigger carries them.
    AsFollowUp,
    /// Kept for hubwatch's page only (the incident has recovered, or never paged).
    Stored,
}

impl Store {
    /// Records a new open incident with its first timeline entries (impact start, detection, and why its
    /// page is held when it is) and its events (trigger, priority, webhook; none when held), atomically.
    pub fn open_incident(
        &self,
        record: &IncidentRecord,
        impact_entry: &str,
        entries: &[(TimelineKind, &str)],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            insert_incident(tx, record, impact_entry)?;
            for (kind, entry) in entries {
                insert_timeline(tx, &record.key, record.opened_at, *kind, entry)?;
            }
            events.iter().try_for_each(|event| insert_event(tx, &record.key, record.opened_at, event))
        })
    }

    /// Folds hub incidents into a cluster incident, opening it first when it is new: each part's hold ends
    /// and it records the incident that pages for it, with its entry; the cluster incident takes the parts'
    /// symptoms, its entries and its events (its trigger, or a follow-up). One transaction.
    pub fn fold(&self, fold: &FoldWrite<'_>) -> Result<(), StoreError> {
        let (cluster, at) = (fold.cluster, fold.at);
        self.write(|tx| {
            match fold.new {
                Some(impact_entry) => insert_incident(tx, cluster, impact_entry)?,
                None => merge_symptoms(tx, &cluster.key, &cluster.symptoms)?,
            }
            for (part, entry) in fold.parts {
                tx.execute(
                    "UPDATE incidents SET part_of = ?2, hold = NULL WHERE key = ?1",
                    params![part, cluster.key],
                )?;
                insert_timeline(tx, part, at, TimelineKind::Held, entry)?;
            }
            for (kind, entry) in fold.entries {
                insert_timeline(tx, &cluster.key, at, *kind, entry)?;
            }
            if fold.events.iter().any(|e| e.action == EventAction::Trigger) {
                tx.execute(
                    "UPDATE incidents SET last_trigger_at = ?2, pending_update = 0 WHERE key = ?1",
                    params![cluster.key, millis(at)],
                )?;
            }
            fold.events.iter().try_for_each(|event| insert_event(tx, &cluster.key, at, event))
        })
    }

    /// What responders did with the incident's PagerDuty incident, as read now, with its timeline entries
    /// (each at when it happened) and, once resolved there, the hold that keeps anything more from being sent.
    pub fn set_response(
        &self,
        key: &IncidentKey,
        response: &Response,
        entries: &[(SystemTime, TimelineKind, String)],
        hold: Option<&HeldPage>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE incidents SET response = ?2 WHERE key = ?1",
                params![key, serde_json::to_string(response)?],
            )?;
            if let Some(hold) = hold {
                tx.execute(
                    "UPDATE incidents SET hold = ?2 WHERE key = ?1",
                    params![key, serde_json::to_string(hold)?],
                )?;
            }
            entries.iter().try_for_each(|(at, kind, entry)| insert_timeline(tx, key, *at, *kind, entry))
        })
    }

    /// The hub incidents folded into the cluster incident `key`, first folded first.
    pub fn parts(&self, key: &IncidentKey) -> Result<Vec<IncidentRecord>, StoreError> {
        self.incidents("WHERE part_of = ?1 ORDER BY opened_at, key", [key])
    }

    /// The hold on an open incident's page ended: its events (the trigger) are queued now, with the entry
    /// that says so; or the hold changed (`events` empty, `hold` the new one).
    pub fn set_hold(
        &self,
        key: &IncidentKey,
        at: SystemTime,
        hold: Option<&HeldPage>,
        entry: &str,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let hold = hold.map(serde_json::to_string).transpose()?;
            tx.execute("UPDATE incidents SET hold = ?2 WHERE key = ?1", params![key, hold])?;
            if !events.is_empty() {
                tx.execute(
                    "UPDATE incidents SET last_trigger_at = ?2, pending_update = 0 WHERE key = ?1",
                    params![key, millis(at)],
                )?;
            }
            insert_timeline(tx, key, at, TimelineKind::Held, entry)?;
            events.iter().try_for_each(|event| insert_event(tx, key, at, event))
        })
    }

    /// Records new symptoms; queues `trigger` (a follow-up) if given, else marks the update pending when
    /// `pending` (a material change held back by the update interval). `impact` is an earlier impact start
    /// learnt now, with its entry (it replaces the earlier impact start entry).
    #[allow(clippy::too_many_arguments)]
    pub fn update_incident(
        &self,
        key: &IncidentKey,
        symptoms: &Symptoms,
        at: SystemTime,
        entry: &str,
        impact: Option<(SystemTime, &str)>,
        trigger: Option<NewEvent>,
        pending: bool,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            if let Some((impact_start, impact_entry)) = impact {
                tx.execute(
                    "UPDATE timeline SET at = ?2, entry = ?3 WHERE key = ?1 AND kind = ?4",
                    params![key, millis(impact_start), impact_entry, TimelineKind::ImpactStart],
                )?;
            }
            merge_symptoms(tx, key, symptoms)?;
            insert_timeline(tx, key, at, TimelineKind::Changed, entry)?;
            match trigger {
                Some(event) => {
                    insert_event(tx, key, at, &event)?;
                    tx.execute(
                        "UPDATE incidents SET last_trigger_at = ?2, pending_update = 0 WHERE key = ?1",
                        params![key, millis(at)],
                    )?;
                }
                None if pending => {
                    tx.execute("UPDATE incidents SET pending_update = 1 WHERE key = ?1", params![key])?;
                }
                None => {}
            }
            Ok(())
        })
    }

    /// Queues a held-back follow-up trigger.
    pub fn send_pending_update(&self, key: &IncidentKey, at: SystemTime, trigger: NewEvent) -> Result<(), StoreError> {
        self.write(|tx| {
            insert_event(tx, key, at, &trigger)?;
            tx.execute(
                "UPDATE incidents SET last_trigger_at = ?2, pending_update = 0 WHERE key = ?1",
                params![key, millis(at)],
            )?;
            Ok(())
        })
    }

    /// Marks the incident recovered and queues its events (the resolve, the last status note, the webhook;
    /// none for an incident whose page was held all along), atomically.
    pub fn recover_incident(
        &self,
        key: &IncidentKey,
        at: SystemTime,
        entry: &str,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE incidents SET open = 0, recovered_at = ?2, pending_update = 0 WHERE key = ?1",
                params![key, millis(at)],
            )?;
            insert_timeline(tx, key, at, TimelineKind::Recovered, entry)?;
            events.iter().try_for_each(|event| insert_event(tx, key, at, event))
        })
    }

    /// Keeps `text` as the incident's diagnostics and gets them to PagerDuty: into the trigger still held for
    /// them (released now), or, if it went out without them and the incident is open, into a follow-up of
    /// the last trigger. One transaction.
    pub fn attach_diagnostics(
        &self,
        key: &IncidentKey,
        text: &str,
        at: SystemTime,
        entry: &str,
    ) -> Result<DiagnosticsAttached, StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE incidents SET diagnostics = ?2, diagnostics_at = ?3 WHERE key = ?1",
                params![key, text, millis(at)],
            )?;
            insert_timeline(tx, key, at, TimelineKind::Diagnostics, entry)?;
            let waiting: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, body FROM outbox WHERE key = ?1 AND action = ?2 AND state = ?3 AND attempts = 0
                     ORDER BY id DESC LIMIT 1",
                    params![key, EventAction::Trigger, OutboxState::Pending],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some((id, body)) = waiting {
                // An older version's rendered trigger is released as it is: the diagnostics wait on hubwatch's page.
                let body = match Message::read(&body)?.with_diagnostics(text) {
                    Some(message) => serde_json::to_string(&message)?,
                    None => body,
                };
                tx.execute(
                    "UPDATE outbox SET body = ?2, next_attempt_at = MIN(next_attempt_at, ?3) WHERE id = ?1",
                    params![id, body, millis(at)],
                )?;
                return Ok(DiagnosticsAttached::IntoWaitingTrigger);
            }
            // A held page is not sent by its diagnostics either: they wait on hubwatch's page until it goes out.
            let open: bool =
                tx.query_row("SELECT open AND hold IS NULL FROM incidents WHERE key = ?1", [key], |row| row.get(0))?;
            let last: Option<String> = tx
                .query_row(
                    "SELECT body FROM outbox WHERE key = ?1 AND action = ?2 ORDER BY id DESC LIMIT 1",
                    params![key, EventAction::Trigger],
                    |row| row.get(0),
                )
                .optional()?;
            let follow_up = match (open, last) {
                (true, Some(body)) => Message::read(&body)?.with_diagnostics(text),
                _ => None,
            };
            match follow_up {
                Some(message) => {
                    insert_event(tx, key, at, &NewEvent::now(message))?;
                    Ok(DiagnosticsAttached::AsFollowUp)
                }
                None => Ok(DiagnosticsAttached::Stored),
            }
        })
    }

    /// The incident's latest diagnostics and when they were collected.
    pub fn diagnostics(&self, key: &IncidentKey) -> Result<Option<(SystemTime, String)>, StoreError> {
        let row: Option<(Option<i64>, Option<String>)> = self
            .conn()
            .query_row("SELECT diagnostics_at, diagnostics FROM incidents WHERE key = ?1", [key], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        Ok(match row {
            Some((Some(at), Some(text))) => Some((from_millis(at), text)),
            _ => None,
        })
    }

    pub fn add_timeline(
        &self,
        key: &IncidentKey,
        at: SystemTime,
        kind: TimelineKind,
        entry: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| insert_timeline(tx, key, at, kind, entry))
    }

    /// Queues a status note for an open incident and notes when, so the next one waits its interval.
    pub fn queue_status_note(&self, key: &IncidentKey, at: SystemTime, note: NewEvent) -> Result<(), StoreError> {
        self.write(|tx| {
            insert_event(tx, key, at, &note)?;
            tx.execute("UPDATE incidents SET last_status_update_at = ?2 WHERE key = ?1", params![key, millis(at)])?;
            Ok(())
        })
    }

    /// When the incident's last status note was queued.
    pub fn last_status_update(&self, key: &IncidentKey) -> Result<Option<SystemTime>, StoreError> {
        let at: Option<Option<i64>> = self
            .conn()
            .query_row("SELECT last_status_update_at FROM incidents WHERE key = ?1", [key], |row| row.get(0))
            .optional()?;
        Ok(at.flatten().map(from_millis))
    }

    /// Where the incident's first accepted trigger went, once one was accepted.
    pub fn routed_to(&self, key: &IncidentKey) -> Result<Option<RoutedTo>, StoreError> {
        let routing: Option<Option<String>> = self
            .conn()
            .query_row("SELECT routing FROM incidents WHERE key = ?1", [key], |row| row.get(0))
            .optional()?;
        Ok(routing.flatten().map(|r| serde_json::from_str(&r)).transpose()?)
    }

    /// `wanted`, or, if an incident or a support ticket already has that key (two in one second, or a wall
    /// clock that stepped back between two runs), `wanted-2`, `wanted-3`, …: a key is never reused.
    pub fn unused_key(&self, wanted: &str) -> Result<String, StoreError> {
        let conn = self.conn();
        let mut taken =
            conn.prepare("SELECT 1 FROM incidents WHERE key = ?1 UNION ALL SELECT 1 FROM tickets WHERE id = ?1")?;
        let mut key = wanted.to_string();
        let mut n = 1;
        while taken.exists([&key])? {
            n += 1;
            key = format!("{wanted}-{n}");
        }
        Ok(key)
    }

    /// The PagerDuty incident id found for the incident's dedup key, once known.
    pub fn pagerduty_incident(&self, key: &IncidentKey) -> Result<Option<String>, StoreError> {
        let id: Option<Option<String>> = self
            .conn()
            .query_row("SELECT pagerduty_incident FROM incidents WHERE key = ?1", [key], |row| row.get(0))
            .optional()?;
        Ok(id.flatten())
    }

    pub fn set_pagerduty_incident(&self, key: &IncidentKey, id: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("UPDATE incidents SET pagerduty_incident = ?2 WHERE key = ?1", params![key, id])?;
            Ok(())
        })
    }

    pub fn open_incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        self.incidents("WHERE open = 1 ORDER BY opened_at", [])
    }

    /// The incidents open at some time since `since`.
    pub fn incidents_since(&self, since: SystemTime) -> Result<Vec<IncidentRecord>, StoreError> {
        self.incidents("WHERE recovered_at IS NULL OR recovered_at > ?1 ORDER BY opened_at", [millis(since)])
    }

    pub fn all_incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        self.incidents("ORDER BY opened_at", [])
    }

    /// When each incident's first trigger was accepted by PagerDuty (of those still on record).
    pub fn first_pages(&self) -> Result<std::collections::HashMap<String, SystemTime>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT key, MIN(done_at) FROM outbox WHERE action = ?1 AND state = ?2 AND done_at IS NOT NULL
             GROUP BY key",
        )?;
        let rows = statement.query_map(params![EventAction::Trigger, OutboxState::Sent], |row| {
            Ok((row.get::<_, String>(0)?, from_millis(row.get(1)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Newest first, `limit` of them from `offset`; and how many there are in all.
    pub fn incidents_page(&self, offset: usize, limit: usize) -> Result<(Vec<IncidentRecord>, usize), StoreError> {
        let count: i64 = self.conn().query_row("SELECT COUNT(*) FROM incidents", [], |row| row.get(0))?;
        let (limit, offset) = (limit as i64, offset as i64);
        let page = self.incidents("ORDER BY opened_at DESC, key DESC LIMIT ?1 OFFSET ?2", [limit, offset])?;
        Ok((page, count as usize))
    }

    pub fn incident(&self, key: &IncidentKey) -> Result<Option<IncidentRecord>, StoreError> {
        Ok(self.incidents("WHERE key = ?1", [key])?.into_iter().next())
    }

    /// The incidents `clause` (WHERE, ORDER BY, LIMIT) selects.
    fn incidents<P: rusqlite::Params>(&self, clause: &str, parameters: P) -> Result<Vec<IncidentRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT key, hub, kind, open, impact_start, opened_at, recovered_at, symptoms, last_trigger_at, pending_update,
             affected_ever, failures_ever, hold, cluster, part_of, response FROM incidents {clause}"
        ))?;
        let mut rows = statement.query(parameters)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let kind = match row.get(2) {
                Ok(kind) => kind,
                Err(e) => {
                    self.unreadable.report("incidents", &row.get::<_, String>(0)?, &e);
                    continue;
                }
            };
            let json = |i: usize| -> Result<String, rusqlite::Error> { row.get(i) };
            out.push(IncidentRecord {
                key: row.get(0)?,
                hub: row.get(1)?,
                kind,
                open: row.get(3)?,
                impact_start: from_millis(row.get(4)?),
                opened_at: from_millis(row.get(5)?),
                recovered_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
                symptoms: serde_json::from_str(&json(7)?)?,
                last_trigger_at: row.get::<_, Option<i64>>(8)?.map(from_millis),
                pending_update: row.get(9)?,
                affected_ever: serde_json::from_str(&json(10)?)?,
                failures_ever: serde_json::from_str(&json(11)?)?,
                hold: row.get::<_, Option<String>>(12)?.map(|h| serde_json::from_str(&h)).transpose()?,
                cluster: row.get(13)?,
                part_of: row.get(14)?,
                response: row.get::<_, Option<String>>(15)?.map(|r| serde_json::from_str(&r)).transpose()?,
            });
        }
        Ok(out)
    }

    pub fn timeline(&self, key: &IncidentKey) -> Result<Vec<TimelineEntry>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT at, kind, entry FROM timeline WHERE key = ?1 ORDER BY at, id")?;
        let mut rows = statement.query([key])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            match row.get(1) {
                Ok(kind) => out.push(TimelineEntry { at: from_millis(row.get(0)?), kind, text: row.get(2)? }),
                Err(e) => self.unreadable.report("timeline", key, &e),
            }
        }
        Ok(out)
    }
}

/// Inserts a new open incident with its impact start entry.
fn insert_incident(tx: &Connection, record: &IncidentRecord, impact_entry: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO incidents (key, hub, kind, open, impact_start, opened_at, symptoms, affected_ever, last_trigger_at, failures_ever, hold, cluster, part_of)
         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            record.key,
            record.hub,
            record.kind,
            millis(record.impact_start),
            millis(record.opened_at),
            serde_json::to_string(&record.symptoms)?,
            serde_json::to_string(&record.affected_ever)?,
            record.last_trigger_at.map(millis),
            serde_json::to_string(&record.failures_ever)?,
            record.hold.as_ref().map(serde_json::to_string).transpose()?,
            record.cluster,
            record.part_of,
        ],
    )?;
    insert_timeline(tx, &record.key, record.impact_start, TimelineKind::ImpactStart, impact_entry)
}

/// A fold as [`Store::fold`] writes it.
pub struct FoldWrite<'a> {
    /// The cluster incident, with its symptoms now.
    pub cluster: &'a IncidentRecord,
    /// A new cluster incident: its impact start entry.
    pub new: Option<&'a str>,
    pub entries: &'a [(TimelineKind, String)],
    /// The hub incidents folded now, each with its entry.
    pub parts: &'a [(IncidentKey, String)],
    pub events: &'a [NewEvent],
    pub at: SystemTime,
}

/// Adds `symptoms` to the incident: its current symptoms, everyone affected, how each failed, and an
/// earlier impact start if they show one.
fn merge_symptoms(tx: &Connection, key: &str, symptoms: &Symptoms) -> Result<(), StoreError> {
    let (ever, failures): (String, String) =
        tx.query_row("SELECT affected_ever, failures_ever FROM incidents WHERE key = ?1", [key], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let mut ever: AffectedEver = serde_json::from_str(&ever)?;
    symptoms.merge_into(&mut ever);
    let mut failures: Symptoms = serde_json::from_str(&failures)?;
    symptoms.merge_failures_into(&mut failures);
    tx.execute(
        "UPDATE incidents SET symptoms = ?2, affected_ever = ?4, failures_ever = ?5,
         impact_start = MIN(impact_start, COALESCE(?3, impact_start)) WHERE key = ?1",
        params![
            key,
            serde_json::to_string(symptoms)?,
            symptoms.impact_start().map(millis),
            serde_json::to_string(&ever)?,
            serde_json::to_string(&failures)?
        ],
    )?;
    Ok(())
}

pub(super) fn insert_timeline(
    conn: &Connection,
    key: &str,
    at: SystemTime,
    kind: TimelineKind,
    entry: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO timeline (key, at, entry, kind) VALUES (?1, ?2, ?3, ?4)",
        params![key, millis(at), entry, kind],
    )?;
    Ok(())
}
