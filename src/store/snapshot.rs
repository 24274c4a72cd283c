//! The whole state as one JSON value, for a standby replica to take over from, and its restore. A snapshot
//! carries the [`Version`] of the state it copies (the leader's term and its write sequence), so a replica
//! keeps the newer of its own state and a mirrored one. A restore takes only the tables and columns this
//! version knows and rows it can read; what it refuses is reported, never guessed at.

use super::incidents::TimelineKind;
use super::outbox::OutboxState;
use super::{SCHEMA_VERSION, Store, StoreError};
use crate::domain::EventAction;
use crate::domain::{AffectedEver, IncidentKind, Symptoms, TicketKind};
use rusqlite::Connection;
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Which state is newer: the later leader term, then the later write within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Version {
    pub term: i64,
    pub sequence: i64,
}

impl Version {
    pub fn of(snapshot: &Value) -> Version {
        Version { term: snapshot["term"].as_i64().unwrap_or(0), sequence: snapshot["sequence"].as_i64().unwrap_or(0) }
    }
}

/// What a restore kept and what it refused (each refused row or table with why).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub rows: usize,
    pub rejected: Vec<String>,
}

/// The tables a snapshot carries, in an order that keeps references valid.
pub const SNAPSHOT_TABLES: [&str; 6] = ["incidents", "timeline", "outbox", "discovered_hubs", "silences", "tickets"];

impl Store {
    /// Every row of every table, with the schema version and the state's [`Version`].
    pub fn snapshot(&self) -> Result<Value, StoreError> {
        let conn = self.conn();
        let mut tables = Map::new();
        for table in SNAPSHOT_TABLES {
            let mut statement = conn.prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))?;
            let columns: Vec<String> = statement.column_names().iter().map(|c| c.to_string()).collect();
            let rows = statement.query_map([], |row| {
                let mut object = Map::new();
                for (i, column) in columns.iter().enumerate() {
                    object.insert(column.clone(), to_json(row.get_ref(i)?));
                }
                Ok(Value::Object(object))
            })?;
            let rows: Vec<Value> = rows.collect::<Result<_, _>>()?;
            tables.insert(table.to_string(), rows.into());
        }
        let (term, sequence): (i64, i64) =
            conn.query_row("SELECT term, sequence FROM meta WHERE id = 1", [], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(serde_json::json!({"schema_version": SCHEMA_VERSION, "term": term, "sequence": sequence, "tables": tables}))
    }

    /// Replaces the whole state with `snapshot` (from [`Store::snapshot`]) in one transaction, and takes its
    /// version. An older leader's snapshot (a rolling upgrade) restores as it is, since every version only
    /// added columns with defaults; a newer one is refused whole.
    pub fn restore(&self, snapshot: &Value) -> Result<RestoreReport, StoreError> {
        let version = snapshot["schema_version"].as_i64().unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(StoreError::Snapshot(format!(
                "schema version {version}, newer than the {SCHEMA_VERSION} this hubwatch writes"
            )));
        }
        let Some(tables) = snapshot["tables"].as_object() else {
            return Err(StoreError::Snapshot("no tables".into()));
        };
        let Version { term, sequence } = Version::of(snapshot);
        self.transact(false, |tx| {
            let mut report = RestoreReport::default();
            for name in tables.keys().filter(|t| !SNAPSHOT_TABLES.contains(&t.as_str())) {
                report.rejected.push(format!("unknown table {name:?}"));
            }
            // Referencing tables are emptied first and filled last (the timeline references incidents).
            for table in SNAPSHOT_TABLES.iter().rev() {
                tx.execute(&format!("DELETE FROM {table}"), [])?;
            }
            let mut keys = BTreeSet::new();
            for table in SNAPSHOT_TABLES {
                let known = columns(tx, table)?;
                for (i, row) in tables.get(table).and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let checked = check_row(table, row, &known, &keys).and_then(|object| insert(tx, table, object));
                    match checked {
                        Ok(()) => {
                            report.rows += 1;
                            if table == "incidents" {
                                keys.insert(row["key"].as_str().unwrap_or_default().to_string());
                            }
                        }
                        Err(why) => report.rejected.push(format!("{table} row {i}: {why}")),
                    }
                }
            }
            tx.execute("UPDATE meta SET term = ?1, sequence = ?2 WHERE id = 1", [term, sequence])?;
            Ok(report)
        })
    }
}

fn to_json(value: ValueRef) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => n.into(),
        ValueRef::Real(x) => x.into(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned().into(),
    }
}

fn columns(conn: &Connection, table: &str) -> Result<BTreeSet<String>, rusqlite::Error> {
    let mut statement = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let names = statement.query_map([], |row| row.get(0))?;
    names.collect()
}

/// The row as columns and values, if every column is known and every value means something to this version.
fn check_row<'a>(
    table: &str,
    row: &'a Value,
    known: &BTreeSet<String>,
    incidents: &BTreeSet<String>,
) -> Result<&'a Map<String, Value>, String> {
    let object = row.as_object().ok_or("not an object")?;
    if let Some(unknown) = object.keys().find(|c| !known.contains(*c)) {
        return Err(format!("unknown column {unknown:?}"));
    }
    let text = |column: &str| object.get(column).and_then(Value::as_str).ok_or(format!("no text in {column:?}"));
    let json = |column: &str, parse: fn(&str) -> bool| match object.get(column) {
        None => Ok(()),
        Some(v) => v.as_str().filter(|t| parse(t)).map(|_| ()).ok_or(format!("unreadable {column:?}")),
    };
    match table {
        "incidents" => {
            text("key").and_then(|key| if key.is_empty() { Err("empty key".into()) } else { Ok(()) })?;
            IncidentKind::parse(text("kind")?).ok_or(format!("unknown incident kind {}", object["kind"]))?;
            json("symptoms", |t| serde_json::from_str::<Symptoms>(t).is_ok())?;
            json("failures_ever", |t| serde_json::from_str::<Symptoms>(t).is_ok())?;
            json("affected_ever", |t| serde_json::from_str::<AffectedEver>(t).is_ok())?;
        }
        "timeline" => {
            let key = text("key")?;
            if !incidents.contains(key) {
                return Err(format!("entry of an incident not in the snapshot ({key:?})"));
            }
            if let Some(kind) = object.get("kind") {
                TimelineKind::parse(kind.as_str().unwrap_or_default())
                    .ok_or(format!("unknown timeline kind {kind}"))?;
            }
        }
        "outbox" => {
            text("key")?;
            EventAction::parse(text("action")?).ok_or(format!("unknown event action {}", object["action"]))?;
            if let Some(state) = object.get("state") {
                OutboxState::parse(state.as_str().unwrap_or_default()).ok_or(format!("unknown state {state}"))?;
            }
            json("body", |t| crate::domain::Message::read(t).is_ok())?;
        }
        "discovered_hubs" => {
            text("name").and_then(|name| if name.is_empty() { Err("empty name".into()) } else { Ok(()) })?;
            json("users", |t| serde_json::from_str::<Vec<String>>(t).is_ok())?;
        }
        "silences" => {
            text("id").and_then(|id| if id.is_empty() { Err("empty id".into()) } else { Ok(()) })?;
            if let Some(kind) = object.get("kind").and_then(Value::as_str) {
                IncidentKind::parse(kind).ok_or(format!("unknown incident kind {kind:?}"))?;
            }
        }
        "tickets" => {
            TicketKind::parse(text("kind")?).ok_or(format!("unknown ticket kind {}", object["kind"]))?;
            json("users", |t| serde_json::from_str::<Vec<String>>(t).is_ok())?;
        }
        _ => return Err("unknown table".into()),
    }
    Ok(object)
}

/// Inserts one checked row in a savepoint, so a row SQLite refuses (a constraint) is reported, not fatal.
fn insert(tx: &Connection, table: &str, object: &Map<String, Value>) -> Result<(), String> {
    let columns: Vec<&String> = object.keys().collect();
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "),
        placeholders.join(", ")
    );
    let values: Vec<SqlValue> = object.values().map(to_sql).collect();
    let attempt = || -> Result<(), rusqlite::Error> {
        tx.execute_batch("SAVEPOINT row")?;
        match tx.execute(&sql, rusqlite::params_from_iter(values)) {
            Ok(_) => tx.execute_batch("RELEASE row"),
            Err(e) => {
                tx.execute_batch("ROLLBACK TO row; RELEASE row")?;
                Err(e)
            }
        }
    };
    attempt().map_err(|e| e.to_string())
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => n.as_i64().map_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(0.0)), SqlValue::Integer),
        Value::String(t) => SqlValue::Text(t.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}
