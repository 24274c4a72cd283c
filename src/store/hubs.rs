//! What discovery remembers of the hubs it found — never their tokens — so that a hub that vanishes from the
//! cluster, even across a restart or a failover, stays an outage until it comes back, is decommissioned, or an
//! operator forgets it.

use super::{Store, StoreError, from_millis, millis};
use crate::domain::HubName;
use rusqlite::params;
use std::time::SystemTime;

/// A discovered hub as remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredHub {
    /// The hub's name (its namespace).
    pub name: HubName,
    pub namespace: String,
    pub url: String,
    pub users: Vec<String>,
    pub last_seen: SystemTime,
    /// Since when, and why, it is gone; `None` while it is found.
    pub gone: Option<(SystemTime, String)>,
}

impl Store {
    pub fn discovered_hubs(&self) -> Result<Vec<DiscoveredHub>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT name, namespace, url, users, last_seen, gone_since, gone_why FROM discovered_hubs ORDER BY name",
        )?;
        let rows = statement.query_map([], |row| {
            let users: String = row.get(3)?;
            let gone = match (row.get::<_, Option<i64>>(5)?, row.get::<_, Option<String>>(6)?) {
                (Some(since), why) => Some((from_millis(since), why.unwrap_or_default())),
                _ => None,
            };
            Ok(DiscoveredHub {
                name: row.get(0)?,
                namespace: row.get(1)?,
                url: row.get(2)?,
                users: serde_json::from_str(&users).unwrap_or_default(),
                last_seen: from_millis(row.get(4)?),
                gone,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces what is remembered with `hubs`, in one transaction.
    pub fn remember_discovered_hubs(&self, hubs: &[DiscoveredHub]) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM discovered_hubs", [])?;
            for hub in hubs {
                tx.execute(
                    "INSERT INTO discovered_hubs (name, namespace, url, users, last_seen, gone_since, gone_why)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        hub.name,
                        hub.namespace,
                        hub.url,
                        serde_json::to_string(&hub.users)?,
                        millis(hub.last_seen),
                        hub.gone.as_ref().map(|(since, _)| millis(*since)),
                        hub.gone.as_ref().map(|(_, why)| why.as_str()),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// An operator's "this hub is gone for good": it is no longer probed or paged for. False if unknown.
    pub fn forget_discovered_hub(&self, name: &str) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM discovered_hubs WHERE name = ?1", [name])? > 0))
    }
}
