//! Silences: state like incidents (they survive restarts and failover, and are mirrored with the rest).

use super::{Store, StoreError, from_millis, millis};
use crate::domain::Silence;
use rusqlite::{OptionalExtension, Row, params};
use std::time::SystemTime;

const COLUMNS: &str = "id, hub, kind, starts_at, ends_at, reason, created_by, source, every_ms";
/// Silences that ended by `?1` and whose end the timelines were not told of (a recurring one never ends).
const ENDED_UNTOLD: &str = "end_noted = 0 AND ends_at <= ?1 AND every_ms IS NULL";

fn silence(row: &Row) -> Result<Silence, rusqlite::Error> {
    Ok(Silence {
        id: row.get(0)?,
        hub: row.get(1)?,
        kind: row.get(2)?,
        starts_at: from_millis(row.get(3)?),
        ends_at: from_millis(row.get(4)?),
        reason: row.get(5)?,
        created_by: row.get(6)?,
        source: row.get(7)?,
        every: row.get::<_, Option<i64>>(8)?.map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
    })
}

impl Store {
    /// Adds `silence`, or replaces the one with its id (an annotation's silence changes in place).
    pub fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO silences ({COLUMNS}, end_noted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)"
                ),
                params![
                    silence.id,
                    silence.hub,
                    silence.kind,
                    millis(silence.starts_at),
                    millis(silence.ends_at),
                    silence.reason,
                    silence.created_by,
                    silence.source,
                    silence.every.map(|every| every.as_millis() as i64),
                ],
            )?;
            Ok(())
        })
    }

    /// The silences that end after `since` (active and planned ones, those that ended since then, and every
    /// recurring one), newest first.
    pub fn silences(&self, since: SystemTime) -> Result<Vec<Silence>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM silences WHERE ends_at > ?1 OR every_ms IS NOT NULL ORDER BY starts_at DESC, id"
        ))?;
        let rows = statement.query_map([millis(since)], silence)?;
        Ok(self.unreadable.keep("silences", rows)?)
    }

    pub fn silence(&self, id: &str) -> Result<Option<Silence>, StoreError> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM silences WHERE id = ?1"), [id], silence).optional()?)
    }

    /// Ends the silence `id` at `now` (if it ends later); the silence as it is now, `None` if unknown.
    pub fn expire_silence(&self, id: &str, now: SystemTime) -> Result<Option<Silence>, StoreError> {
        self.write(|tx| {
            // A recurring silence recurs no more.
            tx.execute(
                "UPDATE silences SET ends_at = MIN(ends_at, ?2), every_ms = NULL WHERE id = ?1",
                params![id, millis(now)],
            )?;
            Ok(tx.query_row(&format!("SELECT {COLUMNS} FROM silences WHERE id = ?1"), [id], silence).optional()?)
        })
    }

    /// Silences that have ended by `now` and whose end the timelines have not been told of yet; marked told.
    /// Looked at every few seconds: it writes (and so advances the state's sequence, which a mirror follows)
    /// only when there is one.
    pub fn take_ended_silences(&self, now: SystemTime) -> Result<Vec<Silence>, StoreError> {
        let any =
            self.conn().prepare(&format!("SELECT 1 FROM silences WHERE {ENDED_UNTOLD}"))?.exists([millis(now)])?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut ended = tx.prepare(&format!("SELECT {COLUMNS} FROM silences WHERE {ENDED_UNTOLD}"))?;
            let ended = self.unreadable.keep("silences", ended.query_map([millis(now)], silence)?)?;
            tx.execute(&format!("UPDATE silences SET end_noted = 1 WHERE {ENDED_UNTOLD}"), [millis(now)])?;
            Ok(ended)
        })
    }
}
