//! Retention: incidents closed longer ago than `state.retention`, with their timelines and events, and
//! ended silences, closed support tickets, and delivered events of nothing open (change events, tickets),
//! are deleted in small batches, so the database stays bounded and no single transaction holds the write
//! lock for long. Nothing with an unsent event goes: an expired incident whose resolve is still pending
//! stays until PagerDuty has it.

use super::outbox::OutboxState;
use super::{Store, StoreError, millis};
use rusqlite::params;
use std::time::SystemTime;

impl Store {
    /// Deletes up to `batch` incidents recovered before `before` (with their timelines and events) and up to
    /// `batch` finished events older than it that belong to no incident; returns how many rows went. Call
    /// until it returns 0.
    pub fn prune(&self, before: SystemTime, batch: usize) -> Result<usize, StoreError> {
        let (before, batch) = (millis(before), batch as i64);
        self.write(|tx| {
            let expired: Vec<String> = tx
                .prepare(
                    "SELECT key FROM incidents WHERE open = 0 AND recovered_at < ?1
                     AND key NOT IN (SELECT key FROM outbox WHERE state = ?3) ORDER BY recovered_at LIMIT ?2",
                )?
                .query_map(params![before, batch, OutboxState::Pending], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut deleted = 0;
            for key in &expired {
                deleted += tx.execute("DELETE FROM timeline WHERE key = ?1", [key])?;
                deleted += tx.execute("DELETE FROM outbox WHERE key = ?1", [key])?;
                deleted += tx.execute("DELETE FROM incidents WHERE key = ?1", [key])?;
            }
            deleted += tx.execute(
                "DELETE FROM silences WHERE id IN (SELECT id FROM silences WHERE ends_at < ?1 LIMIT ?2)",
                params![before, batch],
            )?;
            deleted += tx.execute(
                "DELETE FROM tickets WHERE id IN (SELECT id FROM tickets WHERE closed_at < ?1 LIMIT ?2)",
                params![before, batch],
            )?;
            deleted += tx.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state != ?3 AND done_at < ?1
                 AND key NOT IN (SELECT key FROM incidents) LIMIT ?2)",
                params![before, batch, OutboxState::Pending],
            )?;
            Ok(deleted)
        })
    }
}
