//! Support tickets: a problem of fewer users than the incident threshold, open from the first affected user
//! until nobody is affected (or it becomes an incident). Kept so that its closing is sent once even across a
//! restart.

use super::outbox::{NewEvent, insert_event};
use super::{Store, StoreError, from_millis, millis};
use crate::domain::{HubName, TicketKind};
use rusqlite::params;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: String,
    pub hub: HubName,
    pub kind: TicketKind,
    pub opened_at: SystemTime,
    pub users: Vec<String>,
    /// What failed, when the ticket is about one check rather than users (the first login's stage and words).
    pub reason: Option<String>,
}

impl Store {
    /// Opens `ticket` with its webhook event (if any), atomically.
    pub fn open_ticket(&self, ticket: &Ticket, event: Option<&NewEvent>) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tickets (id, hub, kind, opened_at, users, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    ticket.id,
                    ticket.hub,
                    ticket.kind,
                    millis(ticket.opened_at),
                    serde_json::to_string(&ticket.users)?,
                    ticket.reason,
                ],
            )?;
            event.into_iter().try_for_each(|e| insert_event(tx, &ticket.id, ticket.opened_at, e))
        })
    }

    /// Closes the ticket `id` at `at` with its webhook event (if any), atomically.
    pub fn close_ticket(&self, id: &str, at: SystemTime, event: Option<&NewEvent>) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("UPDATE tickets SET closed_at = ?2 WHERE id = ?1", params![id, millis(at)])?;
            event.into_iter().try_for_each(|e| insert_event(tx, id, at, e))
        })
    }

    pub fn open_tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        Ok(self.tickets("WHERE closed_at IS NULL ORDER BY id", [])?.into_iter().map(|(ticket, _)| ticket).collect())
    }

    /// The tickets open at some time since `since`, each with when it closed (`None`: still open).
    pub fn tickets_since(&self, since: SystemTime) -> Result<Vec<(Ticket, Option<SystemTime>)>, StoreError> {
        self.tickets("WHERE closed_at IS NULL OR closed_at > ?1 ORDER BY opened_at", [millis(since)])
    }

    /// The tickets `clause` (WHERE, ORDER BY) selects, with their closing.
    fn tickets<P: rusqlite::Params>(
        &self,
        clause: &str,
        parameters: P,
    ) -> Result<Vec<(Ticket, Option<SystemTime>)>, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare(&format!("SELECT id, hub, kind, opened_at, users, reason, closed_at FROM tickets {clause}"))?;
        let mut rows = statement.query(parameters)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let kind = match row.get(2) {
                Ok(kind) => kind,
                Err(e) => {
                    self.unreadable.report("tickets", &row.get::<_, String>(0)?, &e);
                    continue;
                }
            };
            let users: String = row.get(4)?;
            let ticket = Ticket {
                id: row.get(0)?,
                hub: row.get(1)?,
                kind,
                opened_at: from_millis(row.get(3)?),
                users: serde_json::from_str(&users)?,
                reason: row.get(5)?,
            };
            out.push((ticket, row.get::<_, Option<i64>>(6)?.map(from_millis)));
        }
        Ok(out)
    }
}
