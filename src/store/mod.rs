//! The state that must survive restarts (also `kill -9`): incidents, their timelines, and the outbox of
//! PagerDuty events, in one SQLite file. Every change that pages is one transaction with its outbox entry,
//! so an incident is never open without its trigger queued, nor recovered without its resolve queued.
//! Event bodies are stored without the routing key (a secret); it is added at send time.
//!
//! Every write goes through [`Store::write`], which keeps [`WriteHealth`] (failures, since when writes fail)
//! and bumps the write sequence that, with the leader's term, orders this state against a mirrored copy.
//! Opening refuses a database from a newer hubwatch and moves a corrupt one aside (kept for the operator).

mod hubs;
mod incidents;
mod outbox;
mod retention;
mod silences;
mod snapshot;
mod tickets;
mod words;

pub use hubs::DiscoveredHub;
pub use incidents::{DiagnosticsAttached, FoldWrite, HeldPage, IncidentRecord, RoutedTo, TimelineEntry, TimelineKind};
pub use outbox::{Backlog, Delivery, EventRoute, NewEvent, OutboxEvent, OutboxState};
pub use snapshot::{RestoreReport, Version};
pub use tickets::Ticket;

use crate::sync::lock;
use rusqlite::{Connection, ErrorCode, Transaction};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error(
        "state database {path} was written by a newer hubwatch (schema version {found}; this one knows up to {known}): \
         run that version, or move the file away to start from an empty state"
    )]
    NewerSchema { path: String, found: i64, known: i64 },
    #[error(
        "state database {path} was written by an older hubwatch (schema version {found}): `hubwatch run` of this \
         version migrates it; reading it is refused until then"
    )]
    OlderSchema { path: String, found: i64 },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds symptoms that cannot be read: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("a state snapshot cannot be restored: {0}")]
    Snapshot(String),
}

impl StoreError {
    /// The disk (or the database's size limit) is full: SQLITE_FULL.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::DiskFull)
    }

    /// Retrying cannot help: the database refused the change itself (a constraint), or holds a row that
    /// cannot be read. Unlike a full disk or a lock, waiting does not fix it.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)) => e.code == ErrorCode::ConstraintViolation,
            StoreError::Corrupt(_) | StoreError::Snapshot(_) => true,
            _ => false,
        }
    }
}

/// Whether writes reach the database: how many failed in all, and since when they fail (none since the last
/// success: `None`).
#[derive(Debug, Default)]
pub struct WriteHealth {
    failures: AtomicU64,
    failing: Mutex<Option<(SystemTime, String)>>,
}

impl WriteHealth {
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Since when writes fail, and the latest error; `None` while they succeed.
    pub fn failing(&self) -> Option<(SystemTime, String)> {
        lock(&self.failing).clone()
    }

    fn record<T>(&self, result: &Result<T, StoreError>) {
        let mut failing = lock(&self.failing);
        match result {
            Ok(_) => *failing = None,
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let since = failing.as_ref().map_or_else(SystemTime::now, |(since, _)| *since);
                *failing = Some((since, e.to_string()));
            }
        }
    }
}

pub struct Store {
    // SQLite calls take microseconds to a few milliseconds (an fsync per commit); incidents are rare and the
    // outbox is polled, so they are made inline under a mutex rather than on a blocking pool.
    conn: Mutex<Connection>,
    path: PathBuf,
    health: WriteHealth,
    unreadable: words::Unreadable,
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
    failures_ever TEXT NOT NULL DEFAULT '{\"affected\":{}}',
    hold TEXT,
    routing TEXT,
    cluster TEXT,
    part_of TEXT,
    response TEXT
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
    done_at INTEGER,
    route TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, key, id);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    term INTEGER NOT NULL DEFAULT 0,
    sequence INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (id) VALUES (1);
CREATE TABLE IF NOT EXISTS discovered_hubs (
    name TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    url TEXT NOT NULL,
    users TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    gone_since INTEGER,
    gone_why TEXT
);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    hub TEXT NOT NULL,
    kind TEXT,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    end_noted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    hub TEXT NOT NULL,
    kind TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    closed_at INTEGER,
    users TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_ticket ON tickets(hub, kind) WHERE closed_at IS NULL;
";

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 10;

impl Store {
    /// Opens (or creates) the state database at `path`. A file that is not a database, or fails SQLite's
    /// integrity check, is renamed to `PATH.corrupt-UNIXTIME` (with its WAL) and a new one is started: a
    /// restart loop on a broken file would stop all paging, and the old file stays for the operator.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let opened = match open_checked(path) {
            Err(OpenFailure::Corrupt(reason)) => {
                let aside = move_aside(path).map_err(|source| StoreError::Open {
                    path: path.display().to_string(),
                    source: rusqlite::Error::InvalidPath(PathBuf::from(format!("{reason}; {source}"))),
                })?;
                tracing::error!(path = %path.display(), moved_to = %aside.display(), %reason,
                    "the state database is corrupt: moved aside, starting from an empty state");
                open_checked(path)
            }
            other => other,
        };
        let conn = opened.map_err(|failure| failure.into_error(path))?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            health: WriteHealth::default(),
            unreadable: Default::default(),
        })
    }

    /// Opens the state database at `path` to read it only (the CLI's `incidents`, `report`, `availability`,
    /// beside a running daemon): no migration, nothing moved aside, no write; a database another version must
    /// migrate first is refused with what to do.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let failed = |source| StoreError::Open { path: path.display().to_string(), source };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(failed)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.display().to_string(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::OlderSchema { path: path.display().to_string(), found: version });
        }
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            health: WriteHealth::default(),
            unreadable: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn health(&self) -> &WriteHealth {
        &self.health
    }

    /// Bytes on disk: the database and its write-ahead log.
    pub fn size_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", self.path.display())).ok())
            .map(|m| m.len())
            .sum()
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// Runs `change` in one transaction that also advances the write sequence; every write goes through
    /// here, so [`WriteHealth`] sees every failure (a full disk: SQLITE_FULL) and every recovery.
    fn write<T>(&self, change: impl FnOnce(&Transaction) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.transact(true, change)
    }

    /// One transaction (IMMEDIATE: it takes the write lock at once), counted in [`WriteHealth`]; `advance`
    /// moves the write sequence on (a restore sets it instead).
    fn transact<T>(
        &self,
        advance: bool,
        change: impl FnOnce(&Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = (|| {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let value = change(&tx)?;
            if advance {
                tx.execute("UPDATE meta SET sequence = sequence + 1 WHERE id = 1", [])?;
            }
            tx.commit()?;
            Ok(value)
        })();
        self.health.record(&result);
        result
    }

    /// Caps the database at `pages` pages (SQLite's `max_page_count`): writes beyond it fail with SQLITE_FULL
    /// exactly as on a full disk. For tests of that fault where no small filesystem can be mounted.
    pub fn limit_pages(&self, pages: i64) -> Result<i64, StoreError> {
        Ok(self.conn().pragma_update_and_check(None, "max_page_count", pages, |row| row.get(0))?)
    }

    /// The leader term and write sequence of this state.
    pub fn version(&self) -> Result<Version, StoreError> {
        Ok(self.conn().query_row("SELECT term, sequence FROM meta WHERE id = 1", [], |row| {
            Ok(Version { term: row.get(0)?, sequence: row.get(1)? })
        })?)
    }

    /// Marks the state as written by the leader of `term` from now on.
    pub fn set_term(&self, term: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("UPDATE meta SET term = ?1 WHERE id = 1", [term])?;
            Ok(())
        })
    }
}

/// Why a database could not be opened: its content is broken (moved aside), or something else (reported).
enum OpenFailure {
    Corrupt(String),
    Newer(i64),
    Other(rusqlite::Error),
}

impl OpenFailure {
    fn into_error(self, path: &Path) -> StoreError {
        let path = path.display().to_string();
        match self {
            OpenFailure::Newer(found) => StoreError::NewerSchema { path, found, known: SCHEMA_VERSION },
            OpenFailure::Other(source) => StoreError::Open { path, source },
            OpenFailure::Corrupt(reason) => StoreError::Open {
                path,
                source: rusqlite::Error::InvalidPath(PathBuf::from(format!(
                    "still corrupt after moving aside: {reason}"
                ))),
            },
        }
    }
}

impl From<rusqlite::Error> for OpenFailure {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => OpenFailure::Corrupt(e.to_string()),
            _ => OpenFailure::Other(e),
        }
    }
}

fn open_checked(path: &Path) -> Result<Connection, OpenFailure> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Every commit reaches the disk before it returns: a page queued is a page kept.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(OpenFailure::Corrupt(format!("integrity check: {check}")));
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(OpenFailure::Newer(version));
    }
    migrate(conn, version)
}

/// Brings a database written by an earlier version up to [`SCHEMA_VERSION`], in one transaction: a crash or
/// a full disk half-way leaves the old version intact.
fn migrate(mut conn: Connection, version: i64) -> Result<Connection, OpenFailure> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    let add = |table: &str, column: &str, definition: &str| -> Result<(), rusqlite::Error> {
        let exists =
            tx.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])?;
        if !exists {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
        }
        Ok(())
    };
    // Version 1 keeps the union of affected users (version 0: development builds); 2 the latest diagnostics;
    // 3 timeline kinds and the state of status notes; 4 the meta row; 5 the discovered hubs (both created by
    // SCHEMA above); 6 silences and support tickets (tables), held pages and routed events (columns); 7 where an
    // incident's trigger went (its later events follow it); 8 what a ticket about one check says failed, and
    // how often a silence recurs; 9 cluster incidents and the hub incidents folded into them, and what
    // responders did in PagerDuty; 10 outbox rows as hubwatch's own messages, rendered when sent (rows an older
    // version rendered are sent as they are; an older version refuses this one's snapshot whole).
    add("incidents", "affected_ever", "TEXT NOT NULL DEFAULT '{}'")?;
    add("incidents", "diagnostics", "TEXT")?;
    add("incidents", "diagnostics_at", "INTEGER")?;
    add("timeline", "kind", "TEXT NOT NULL DEFAULT 'changed'")?;
    add("incidents", "last_status_update_at", "INTEGER")?;
    add("incidents", "pagerduty_incident", "TEXT")?;
    add("incidents", "failures_ever", "TEXT NOT NULL DEFAULT '{\"affected\":{}}'")?;
    add("incidents", "hold", "TEXT")?;
    add("outbox", "route", "TEXT")?;
    add("incidents", "routing", "TEXT")?;
    add("tickets", "reason", "TEXT")?;
    add("silences", "every_ms", "INTEGER")?;
    add("incidents", "cluster", "TEXT")?;
    add("incidents", "part_of", "TEXT")?;
    add("incidents", "response", "TEXT")?;
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(conn)
}

/// Renames the database and its WAL and shared-memory files to `PATH.corrupt-UNIXTIME…`; returns the new path.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    for suffix in ["-wal", "-shm", ""] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests;
