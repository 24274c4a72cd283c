//! The state that must survive restarts (also `kill -9`): incidents, their timelines, and the outbox of
//! PagerDuty events, in one SQLite file. Every change that pages is one transaction with its outbox entry,
//! so an incident is never open without its trigger queued, nor recovered without its resolve queued.
//! Event bodies are stored without the routing key (a secret); it is added at send time.

use crate::domain::{AffectedEver, IncidentKind, Symptoms};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds symptoms that cannot be read: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("a state snapshot cannot be restored: {0}")]
    Snapshot(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    pub key: String,
    pub hub: String,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Trigger,
    Resolve,
    /// A Change Event (sent to the change events endpoint; not part of an incident).
    Change,
    /// A status note on the incident's PagerDuty incident (REST API). Notes go out in order among
    /// themselves, independently of the incident's events, so a REST API outage never holds back a resolve.
    Note,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Trigger => "trigger",
            EventAction::Resolve => "resolve",
            EventAction::Change => "change",
            EventAction::Note => "note",
        }
    }

    fn parse(text: &str) -> EventAction {
        match text {
            "resolve" => EventAction::Resolve,
            "change" => EventAction::Change,
            "note" => EventAction::Note,
            _ => EventAction::Trigger,
        }
    }
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
    /// Impact end: every capability worked again.
    Recovered,
    /// The resolve reached PagerDuty.
    ResolveSent,
}

impl TimelineKind {
    pub const ALL: [TimelineKind; 9] = [
        TimelineKind::ImpactStart,
        TimelineKind::Detected,
        TimelineKind::Changed,
        TimelineKind::Diagnostics,
        TimelineKind::PageSent,
        TimelineKind::HubChanged,
        TimelineKind::StatusUpdate,
        TimelineKind::Recovered,
        TimelineKind::ResolveSent,
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
            TimelineKind::Recovered => "recovered",
            TimelineKind::ResolveSent => "resolve_sent",
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

#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub key: String,
    pub action: EventAction,
    pub body: serde_json::Value,
    pub attempts: u32,
    pub created_at: SystemTime,
}

/// A new PagerDuty event to queue with a change.
pub struct NewEvent {
    pub action: EventAction,
    pub body: serde_json::Value,
    /// Held until then (a trigger waiting briefly for its diagnostics); the incident's later events wait
    /// behind it, so the order holds.
    pub hold_until: Option<SystemTime>,
}

impl NewEvent {
    pub fn now(action: EventAction, body: serde_json::Value) -> Self {
        NewEvent { action, body, hold_until: None }
    }
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

pub struct Store {
    // SQLite calls take microseconds to a few milliseconds (an fsync per commit); incidents are rare and the
    // outbox is polled, so they are made inline under a mutex rather than on a blocking pool.
    conn: Mutex<Connection>,
}

pub fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS incidents (
    key TEXT PRIMARY KEY,
    hub TEXT NOT NULL,
    kind TEXT NOT NULL,
    open INTEGER NOT NULL,
    impact_start INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    recovered_at INTEGER,
    symptoms TEXT NOT NULL,
    affected_ever TEXT NOT NULL DEFAULT '{}',
    last_trigger_at INTEGER,
    pending_update INTEGER NOT NULL DEFAULT 0,
    diagnostics TEXT,
    diagnostics_at INTEGER,
    last_status_update_at INTEGER,
    pagerduty_incident TEXT,
    failures_ever TEXT NOT NULL DEFAULT '{\"affected\":{}}'
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_incident ON incidents(hub, kind) WHERE open = 1;
CREATE TABLE IF NOT EXISTS timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL REFERENCES incidents(key),
    at INTEGER NOT NULL,
    entry TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'changed'
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    done_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, key, id);
";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // Every commit reaches the disk before it returns: a page queued is a page kept.
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            migrate(&conn)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a new open incident with its first timeline entries (impact start, detection) and its
    /// trigger, atomically.
    pub fn open_incident(
        &self,
        record: &IncidentRecord,
        impact_entry: &str,
        entry: &str,
        trigger: NewEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO incidents (key, hub, kind, open, impact_start, opened_at, symptoms, affected_ever, last_trigger_at, failures_ever)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?5, ?8)",
            params![
                record.key,
                record.hub,
                record.kind.as_str(),
                millis(record.impact_start),
                millis(record.opened_at),
                serde_json::to_string(&record.symptoms)?,
                serde_json::to_string(&record.affected_ever)?,
                serde_json::to_string(&record.failures_ever)?
            ],
        )?;
        insert_timeline(&tx, &record.key, record.impact_start, TimelineKind::ImpactStart, impact_entry)?;
        insert_timeline(&tx, &record.key, record.opened_at, TimelineKind::Detected, entry)?;
        insert_event(&tx, &record.key, record.opened_at, &trigger)?;
        tx.commit()?;
        Ok(())
    }

    /// Records new symptoms; queues `trigger` (a follow-up) if given, else marks the update pending when
    /// `pending` (a material change held back by the update interval). `impact` is an earlier impact start
    /// learnt now, with its entry (it replaces the earlier impact start entry).
    #[allow(clippy::too_many_arguments)]
    pub fn update_incident(
        &self,
        key: &str,
        symptoms: &Symptoms,
        at: SystemTime,
        entry: &str,
        impact: Option<(SystemTime, &str)>,
        trigger: Option<NewEvent>,
        pending: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some((impact_start, impact_entry)) = impact {
            tx.execute(
                "UPDATE timeline SET at = ?2, entry = ?3 WHERE key = ?1 AND kind = 'impact_start'",
                params![key, millis(impact_start), impact_entry],
            )?;
        }
        let impact_start = symptoms.impact_start().map(millis);
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
                impact_start,
                serde_json::to_string(&ever)?,
                serde_json::to_string(&failures)?
            ],
        )?;
        insert_timeline(&tx, key, at, TimelineKind::Changed, entry)?;
        match trigger {
            Some(event) => {
                insert_event(&tx, key, at, &event)?;
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
        tx.commit()?;
        Ok(())
    }

    /// Queues a held-back follow-up trigger.
    pub fn send_pending_update(&self, key: &str, at: SystemTime, trigger: NewEvent) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_event(&tx, key, at, &trigger)?;
        tx.execute(
            "UPDATE incidents SET last_trigger_at = ?2, pending_update = 0 WHERE key = ?1",
            params![key, millis(at)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks the incident recovered and queues its resolve (and its last status note), atomically.
    pub fn recover_incident(
        &self,
        key: &str,
        at: SystemTime,
        entry: &str,
        resolve: NewEvent,
        note: Option<NewEvent>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE incidents SET open = 0, recovered_at = ?2, pending_update = 0 WHERE key = ?1",
            params![key, millis(at)],
        )?;
        insert_timeline(&tx, key, at, TimelineKind::Recovered, entry)?;
        insert_event(&tx, key, at, &resolve)?;
        if let Some(note) = note {
            insert_event(&tx, key, at, &note)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps `text` as the incident's diagnostics and gets them to PagerDuty: into the trigger still held for
    /// them (released now), or, if it went out without them and the incident is open, into a follow-up
    /// trigger built by `follow_up` from the last trigger's body. One transaction.
    pub fn attach_diagnostics(
        &self,
        key: &str,
        text: &str,
        at: SystemTime,
        entry: &str,
        follow_up: impl Fn(&serde_json::Value) -> serde_json::Value,
    ) -> Result<DiagnosticsAttached, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE incidents SET diagnostics = ?2, diagnostics_at = ?3 WHERE key = ?1",
            params![key, text, millis(at)],
        )?;
        insert_timeline(&tx, key, at, TimelineKind::Diagnostics, entry)?;
        let waiting: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, body FROM outbox WHERE key = ?1 AND action = 'trigger' AND state = 'pending' AND attempts = 0
                 ORDER BY id DESC LIMIT 1",
                [key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let outcome = if let Some((id, body)) = waiting {
            let body = follow_up(&serde_json::from_str(&body)?);
            tx.execute(
                "UPDATE outbox SET body = ?2, next_attempt_at = MIN(next_attempt_at, ?3) WHERE id = ?1",
                params![id, body.to_string(), millis(at)],
            )?;
            DiagnosticsAttached::IntoWaitingTrigger
        } else {
            let open: bool = tx.query_row("SELECT open FROM incidents WHERE key = ?1", [key], |row| row.get(0))?;
            let last: Option<String> = tx
                .query_row(
                    "SELECT body FROM outbox WHERE key = ?1 AND action = 'trigger' ORDER BY id DESC LIMIT 1",
                    [key],
                    |row| row.get(0),
                )
                .optional()?;
            match (open, last) {
                (true, Some(body)) => {
                    let body = follow_up(&serde_json::from_str(&body)?);
                    insert_event(&tx, key, at, &NewEvent::now(EventAction::Trigger, body))?;
                    DiagnosticsAttached::AsFollowUp
                }
                _ => DiagnosticsAttached::Stored,
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// The incident's latest diagnostics and when they were collected.
    pub fn diagnostics(&self, key: &str) -> Result<Option<(SystemTime, String)>, StoreError> {
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

    /// Queues a Change Event under its own key (`change-…`), once: the same key queued again is ignored, so
    /// a watch that sees the same change twice (a restart, a re-list) does not send it twice.
    pub fn queue_change(&self, key: &str, at: SystemTime, body: serde_json::Value) -> Result<bool, StoreError> {
        let conn = self.conn();
        let known = conn.prepare("SELECT 1 FROM outbox WHERE key = ?1")?.exists([key])?;
        if !known {
            insert_event(&conn, key, at, &NewEvent::now(EventAction::Change, body))?;
        }
        Ok(!known)
    }

    /// The whole state as JSON (every row of every table), for a standby replica to take over from.
    pub fn snapshot(&self) -> Result<serde_json::Value, StoreError> {
        let conn = self.conn();
        let mut tables = serde_json::Map::new();
        for table in SNAPSHOT_TABLES {
            let mut statement = conn.prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))?;
            let columns: Vec<String> = statement.column_names().iter().map(|c| c.to_string()).collect();
            let rows = statement.query_map([], |row| {
                let mut object = serde_json::Map::new();
                for (i, column) in columns.iter().enumerate() {
                    let value = match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                        rusqlite::types::ValueRef::Integer(n) => n.into(),
                        rusqlite::types::ValueRef::Real(x) => x.into(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                        rusqlite::types::ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned().into(),
                    };
                    object.insert(column.clone(), value);
                }
                Ok(serde_json::Value::Object(object))
            })?;
            let rows: Vec<serde_json::Value> = rows.collect::<Result<_, _>>()?;
            tables.insert(table.to_string(), rows.into());
        }
        Ok(serde_json::json!({"schema_version": SCHEMA_VERSION, "tables": tables}))
    }

    /// Replaces the whole state with `snapshot` (from [`Store::snapshot`]), in one transaction.
    pub fn restore(&self, snapshot: &serde_json::Value) -> Result<(), StoreError> {
        // Every version only added columns (with defaults), so an older leader's snapshot (a rolling upgrade)
        // restores as it is; a newer one may hold what this version cannot keep.
        let version = snapshot["schema_version"].as_i64().unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(StoreError::Snapshot(format!(
                "schema version {version}, newer than the {SCHEMA_VERSION} this hubwatch writes"
            )));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // Referencing tables are emptied first and filled last (the timeline references incidents).
        for table in SNAPSHOT_TABLES.iter().rev() {
            tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
        for table in SNAPSHOT_TABLES {
            for row in snapshot["tables"][table].as_array().into_iter().flatten() {
                let Some(object) = row.as_object() else { continue };
                let columns: Vec<&String> = object.keys().collect();
                let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "),
                    placeholders.join(", ")
                );
                let values: Vec<rusqlite::types::Value> = object
                    .values()
                    .map(|v| match v {
                        serde_json::Value::Null => rusqlite::types::Value::Null,
                        serde_json::Value::Number(n) if n.is_i64() => {
                            rusqlite::types::Value::Integer(n.as_i64().unwrap_or(0))
                        }
                        serde_json::Value::Number(n) => rusqlite::types::Value::Real(n.as_f64().unwrap_or(0.0)),
                        serde_json::Value::String(t) => rusqlite::types::Value::Text(t.clone()),
                        other => rusqlite::types::Value::Text(other.to_string()),
                    })
                    .collect();
                tx.execute(&sql, rusqlite::params_from_iter(values))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn add_timeline(&self, key: &str, at: SystemTime, kind: TimelineKind, entry: &str) -> Result<(), StoreError> {
        insert_timeline(&self.conn(), key, at, kind, entry)
    }

    /// Queues a status note for an open incident and notes when, so the next one waits its interval.
    pub fn queue_status_note(&self, key: &str, at: SystemTime, note: NewEvent) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_event(&tx, key, at, &note)?;
        tx.execute("UPDATE incidents SET last_status_update_at = ?2 WHERE key = ?1", params![key, millis(at)])?;
        tx.commit()?;
        Ok(())
    }

    /// When the incident's last status note was queued.
    pub fn last_status_update(&self, key: &str) -> Result<Option<SystemTime>, StoreError> {
        let at: Option<Option<i64>> = self
            .conn()
            .query_row("SELECT last_status_update_at FROM incidents WHERE key = ?1", [key], |row| row.get(0))
            .optional()?;
        Ok(at.flatten().map(from_millis))
    }

    /// The PagerDuty incident id found for the incident's dedup key, once known.
    pub fn pagerduty_incident(&self, key: &str) -> Result<Option<String>, StoreError> {
        let id: Option<Option<String>> = self
            .conn()
            .query_row("SELECT pagerduty_incident FROM incidents WHERE key = ?1", [key], |row| row.get(0))
            .optional()?;
        Ok(id.flatten())
    }

    pub fn set_pagerduty_incident(&self, key: &str, id: &str) -> Result<(), StoreError> {
        self.conn().execute("UPDATE incidents SET pagerduty_incident = ?2 WHERE key = ?1", params![key, id])?;
        Ok(())
    }

    pub fn open_incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        self.incidents("WHERE open = 1", [])
    }

    pub fn all_incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        self.incidents("", [])
    }

    pub fn incident(&self, key: &str) -> Result<Option<IncidentRecord>, StoreError> {
        Ok(self.incidents("WHERE key = ?1", [key])?.into_iter().next())
    }

    fn incidents<P: rusqlite::Params>(&self, filter: &str, parameters: P) -> Result<Vec<IncidentRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT key, hub, kind, open, impact_start, opened_at, recovered_at, symptoms, last_trigger_at, pending_update, affected_ever,
             failures_ever FROM incidents {filter} ORDER BY opened_at"
        ))?;
        let rows = statement.query_map(parameters, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, Option<i64>>(6)?,
                row.get::<_, String>(7)?,
                row.get::<_, Option<i64>>(8)?,
                row.get::<_, bool>(9)?,
                row.get::<_, String>(10)?,
                row.get::<_, String>(11)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                key,
                hub,
                kind,
                open,
                impact_start,
                opened_at,
                recovered_at,
                symptoms,
                last_trigger_at,
                pending,
                ever,
                failures,
            ) = row?;
            let Some(kind) = IncidentKind::parse(&kind) else { continue };
            out.push(IncidentRecord {
                key,
                hub,
                kind,
                open,
                impact_start: from_millis(impact_start),
                opened_at: from_millis(opened_at),
                recovered_at: recovered_at.map(from_millis),
                symptoms: serde_json::from_str(&symptoms)?,
                affected_ever: serde_json::from_str(&ever)?,
                failures_ever: serde_json::from_str(&failures)?,
                last_trigger_at: last_trigger_at.map(from_millis),
                pending_update: pending,
            });
        }
        Ok(out)
    }

    pub fn timeline(&self, key: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT at, kind, entry FROM timeline WHERE key = ?1 ORDER BY at, id")?;
        let rows = statement.query_map([key], |row| {
            let kind: String = row.get(1)?;
            Ok(TimelineEntry {
                at: from_millis(row.get(0)?),
                kind: TimelineKind::parse(&kind).unwrap_or(TimelineKind::Changed),
                text: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events due now, at most one per incident (and one status note): the oldest unsent one, so an
    /// incident's events go out in order (never a resolve before its trigger).
    pub fn due_events(&self, now: SystemTime, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT id, key, action, body, attempts, created_at FROM outbox
             WHERE id IN (SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY key, action = 'note') AND next_attempt_at <= ?1
             ORDER BY id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![millis(now), limit as i64], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, u32>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, key, action, body, attempts, created_at) = row?;
            let action = EventAction::parse(&action);
            out.push(OutboxEvent {
                id,
                key,
                action,
                body: serde_json::from_str(&body)?,
                attempts,
                created_at: from_millis(created_at),
            });
        }
        Ok(out)
    }

    /// When the next pending event is due (the worker sleeps until then).
    pub fn next_due_at(&self) -> Result<Option<SystemTime>, StoreError> {
        let conn = self.conn();
        let at: Option<i64> = conn
            .query_row(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY key, action = 'note')",
                [],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        Ok(at.map(from_millis))
    }

    /// `state`: `sent`, `rejected` (a 400: never retried) or `dry_run`.
    pub fn finish_event(&self, id: i64, state: &str, at: SystemTime, error: Option<&str>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE outbox SET state = ?2, done_at = ?3, last_error = ?4, attempts = attempts + 1 WHERE id = ?1",
            params![id, state, millis(at), error],
        )?;
        Ok(())
    }

    pub fn retry_event(&self, id: i64, next_attempt_at: SystemTime, error: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
            params![id, millis(next_attempt_at), error],
        )?;
        Ok(())
    }

    /// How many events (pages; not status notes) are unsent, and when the oldest was queued.
    pub fn unsent(&self) -> Result<(u64, Option<SystemTime>), StoreError> {
        let conn = self.conn();
        let (count, oldest): (i64, Option<i64>) = conn.query_row(
            "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending' AND action != 'note'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((count as u64, oldest.map(from_millis)))
    }
}

/// The tables a snapshot carries, in an order that keeps references valid.
const SNAPSHOT_TABLES: [&str; 3] = ["incidents", "timeline", "outbox"];

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

/// Brings a database written by an earlier version up to [`SCHEMA_VERSION`].
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version < 1 {
        // Version 0 (development builds) had no union of affected users.
        let has_column =
            conn.prepare("SELECT 1 FROM pragma_table_info('incidents') WHERE name = 'affected_ever'")?.exists([])?;
        if !has_column {
            conn.execute_batch("ALTER TABLE incidents ADD COLUMN affected_ever TEXT NOT NULL DEFAULT '{}'")?;
        }
    }
    if version < 2 {
        // Version 2 keeps the latest Kubernetes diagnostics with the incident.
        let has_column =
            conn.prepare("SELECT 1 FROM pragma_table_info('incidents') WHERE name = 'diagnostics'")?.exists([])?;
        if !has_column {
            conn.execute_batch(
                "ALTER TABLE incidents ADD COLUMN diagnostics TEXT; ALTER TABLE incidents ADD COLUMN diagnostics_at INTEGER;",
            )?;
        }
    }
    if version < 3 {
        // Version 3 gives timeline entries a kind and keeps the state of status notes.
        let has_column = conn.prepare("SELECT 1 FROM pragma_table_info('timeline') WHERE name = 'kind'")?.exists([])?;
        if !has_column {
            conn.execute_batch(
                "ALTER TABLE timeline ADD COLUMN kind TEXT NOT NULL DEFAULT 'changed';
                 ALTER TABLE incidents ADD COLUMN last_status_update_at INTEGER;
                 ALTER TABLE incidents ADD COLUMN pagerduty_incident TEXT;
                 ALTER TABLE incidents ADD COLUMN failures_ever TEXT NOT NULL DEFAULT '{\"affected\":{}}';",
            )?;
        }
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
}

fn insert_timeline(
    conn: &Connection,
    key: &str,
    at: SystemTime,
    kind: TimelineKind,
    entry: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO timeline (key, at, entry, kind) VALUES (?1, ?2, ?3, ?4)",
        params![key, millis(at), entry, kind.as_str()],
    )?;
    Ok(())
}

fn insert_event(conn: &Connection, key: &str, at: SystemTime, event: &NewEvent) -> Result<(), StoreError> {
    conn.execute(
        // Due at once (next_attempt_at 0) unless held; only a failed attempt schedules a later one.
        "INSERT INTO outbox (key, action, body, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key, event.action.as_str(), event.body.to_string(), millis(at), event.hold_until.map_or(0, millis)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables as schema version 2 wrote them (before timeline kinds and status notes).
    const SCHEMA_V2: &str = "
    CREATE TABLE incidents (key TEXT PRIMARY KEY, hub TEXT NOT NULL, kind TEXT NOT NULL, open INTEGER NOT NULL,
        impact_start INTEGER NOT NULL, opened_at INTEGER NOT NULL, recovered_at INTEGER, symptoms TEXT NOT NULL,
        affected_ever TEXT NOT NULL DEFAULT '{}', last_trigger_at INTEGER, pending_update INTEGER NOT NULL DEFAULT 0,
        diagnostics TEXT, diagnostics_at INTEGER);
    CREATE TABLE timeline (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL REFERENCES incidents(key),
        at INTEGER NOT NULL, entry TEXT NOT NULL);
    INSERT INTO incidents (key, hub, kind, open, impact_start, opened_at, symptoms, last_trigger_at)
        VALUES ('temple-hub_access-1', 'temple', 'hub_access', 1, 1000, 2000, '{\"affected\":{}}', 2000);
    INSERT INTO timeline (key, at, entry) VALUES ('temple-hub_access-1', 2000, 'detected: temple: 2 users');
    PRAGMA user_version = 2;";

    #[test]
    fn a_version_2_database_is_migrated_in_place_and_keeps_its_incident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Connection::open(&path).unwrap().execute_batch(SCHEMA_V2).unwrap();
        let store = Store::open(&path).unwrap();
        let incident = store.incident("temple-hub_access-1").unwrap().expect("kept");
        assert!(incident.open && incident.failures_ever.affected.is_empty());
        let timeline = store.timeline("temple-hub_access-1").unwrap();
        assert_eq!((timeline[0].kind, timeline[0].text.as_str()), (TimelineKind::Changed, "detected: temple: 2 users"));
        store
            .queue_status_note("temple-hub_access-1", from_millis(3000), NewEvent::now(EventAction::Note, "{}".into()))
            .unwrap();
        assert_eq!(store.last_status_update("temple-hub_access-1").unwrap(), Some(from_millis(3000)));
        let version: i64 = store.conn().pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_snapshot_from_an_older_leader_restores_and_one_from_a_newer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        Connection::open(&old).unwrap().execute_batch(SCHEMA_V2).unwrap();
        let mut snapshot = Store::open(&old).unwrap().snapshot().unwrap();
        // As a version 2 leader mirrored it: without the columns version 3 added.
        snapshot["schema_version"] = 2.into();
        for row in snapshot["tables"]["incidents"].as_array_mut().unwrap() {
            let row = row.as_object_mut().unwrap();
            for column in ["last_status_update_at", "pagerduty_incident", "failures_ever"] {
                row.remove(column);
            }
        }
        for row in snapshot["tables"]["timeline"].as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("kind");
        }
        let store = Store::open(&dir.path().join("new.db")).unwrap();
        store.restore(&snapshot).unwrap();
        assert!(store.incident("temple-hub_access-1").unwrap().is_some_and(|i| i.open));
        assert_eq!(store.timeline("temple-hub_access-1").unwrap()[0].kind, TimelineKind::Changed);
        snapshot["schema_version"] = (SCHEMA_VERSION + 1).into();
        assert!(matches!(store.restore(&snapshot), Err(StoreError::Snapshot(_))));
    }
}
