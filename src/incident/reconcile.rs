//! Reconciling with PagerDuty, the on-call process's source of truth, when a replica starts leading (also a
//! single replica at start), where a REST token is configured. Every open PagerDuty incident whose key is one
//! of hubwatch's (a configured hub or `cluster.NAME` of a cluster hubs name, a kind, a second) and that this
//! state does not know — a state lost with a volume, a takeover from a copy that missed it — is *adopted*:
//! recorded as open, so it resolves when the hub is healthy instead of staying triggered for ever while the
//! same outage pages again under a new key. An adopted cluster incident has no parts yet: the hubs of it that
//! still fail join it when their incidents open (a follow-up, not a second page), and it resolves with them,
//! or after `incidents.window` if none does. One that duplicates an incident this state has open for the
//! same hub (or cluster) and kind is resolved at once; one this state has closed, with no resolve still
//! queued, gets its resolve again.

use crate::clock::Clock;
use crate::config::{Config, StatusUpdatesConfig};
use crate::domain::{HubName, IncidentKey, IncidentKind, Message};
use crate::http::HttpClient;
use crate::notify::pagerduty::Answer;
use crate::notify::rest::RestClient;
use crate::store::{IncidentRecord, NewEvent, Store, StoreError, TimelineKind};
use crate::tasks::off_runtime;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long listing PagerDuty's open incidents may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("PagerDuty's REST API: {0:?}")]
    Api(Answer),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What reconciling did to one PagerDuty incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Unknown here: now an open incident of this state.
    Adopted { key: IncidentKey },
    /// A second incident for an outage this state has open under `open`: resolved.
    Duplicate { key: IncidentKey, open: IncidentKey },
    /// Closed here, open there: its resolve is queued again.
    Resolved { key: IncidentKey },
}

/// Whose incident keys reconciling knows: the configured hubs' and their clusters' (`cluster.NAME-…`).
#[derive(Debug, Clone, Default)]
pub struct KeyOwners {
    /// Each key prefix: a hub's name, or `cluster.NAME`.
    prefixes: Vec<String>,
    /// Each prefix → the hub column its incidents are kept under, its cluster (for a cluster incident), and
    /// the hub its events are routed as (a cluster's first configured hub).
    owners: std::collections::BTreeMap<String, (HubName, Option<String>, HubName)>,
}

impl KeyOwners {
    pub fn of(config: &Config) -> Self {
        let mut owners = KeyOwners::default();
        for hub in &config.hubs {
            owners.add(hub.name.to_string(), (hub.name.clone(), None, hub.name.clone()));
            if let Some(cluster) = &hub.cluster {
                let owner = (HubName::cluster(cluster), Some(cluster.clone()), hub.name.clone());
                owners.add(format!("{}{cluster}", IncidentKey::CLUSTER), owner);
            }
        }
        owners
    }

    fn add(&mut self, prefix: String, owner: (HubName, Option<String>, HubName)) {
        if !self.owners.contains_key(&prefix) {
            self.prefixes.push(prefix.clone());
            self.owners.insert(prefix, owner);
        }
    }

    /// `key`'s owner: the hub column it is recorded under, its cluster (for a cluster incident), the hub its
    /// events are routed as, its kind and its second; `None` for a key that is not hubwatch's.
    fn parse<'a>(&'a self, key: &IncidentKey) -> Option<KeyOwner<'a>> {
        let (prefix, kind, seconds) = key.parse(&self.prefixes)?;
        let (label, cluster, route) = self.owners.get(prefix)?;
        Some(KeyOwner { label, cluster: cluster.as_ref(), route, kind, seconds })
    }
}

struct KeyOwner<'a> {
    label: &'a HubName,
    cluster: Option<&'a String>,
    route: &'a HubName,
    kind: IncidentKind,
    seconds: u64,
}

pub async fn reconcile(
    store: &Arc<Store>,
    http: &HttpClient,
    settings: &StatusUpdatesConfig,
    owners: &KeyOwners,
    clock: Clock,
) -> Result<Vec<Reconciled>, ReconcileError> {
    let rest = RestClient { http, settings, timeout: LIST_TIMEOUT };
    let open = rest.open_incidents().await.map_err(ReconcileError::Api)?;
    let (store, owners) = (store.clone(), owners.clone());
    let now = clock.now();
    Ok(off_runtime(move || apply(&store, &owners, &open, now)).await?)
}

/// Adopts, resolves or leaves each of PagerDuty's open incidents (`(id, incident key)`).
fn apply(
    store: &Store,
    owners: &KeyOwners,
    open: &[(String, String)],
    now: SystemTime,
) -> Result<Vec<Reconciled>, StoreError> {
    let mut done = Vec::new();
    for (id, key) in open {
        let key = &IncidentKey::from(key.as_str());
        let Some(owner) = owners.parse(key) else { continue };
        if store.resolve_queued(key)? {
            continue;
        }
        if let Some(known) = store.incident(key)? {
            if !known.open {
                let note = format!(
                    "PagerDuty incident {id} was still open although this incident had recovered: resolved again"
                );
                store.queue_resolve(key, now, owner.resolve(), Some((key, &note)))?;
                done.push(Reconciled::Resolved { key: key.clone() });
            }
            continue;
        }
        let open_here = store.open_incidents()?.into_iter().find(|i| i.hub == *owner.label && i.kind == owner.kind);
        if let Some(open_here) = open_here {
            let note = format!(
                "PagerDuty incident {id} ({key}) was open for the same outage, unknown to this state: resolved, so \
                 this incident is the only one"
            );
            store.queue_resolve(key, now, owner.resolve(), Some((&open_here.key, &note)))?;
            done.push(Reconciled::Duplicate { key: key.clone(), open: open_here.key });
            continue;
        }
        let entry = format!(
            "adopted from PagerDuty: its incident {id} was open under this key, unknown to this state (a state lost \
             or a takeover from a copy that missed it); it resolves when {} healthy, under this key",
            match owner.cluster {
                Some(_) => "the hubs of it that still fail are",
                None => "the hub is",
            }
        );
        store.open_incident(
            &owner.adopted(key, now),
            "impact start unknown: adopted from PagerDuty",
            &[(TimelineKind::Detected, &entry)],
            &[],
        )?;
        done.push(Reconciled::Adopted { key: key.clone() });
    }
    Ok(done)
}

impl KeyOwner<'_> {
    fn resolve(&self) -> NewEvent {
        NewEvent::now(Message::Resolve).routed(self.route, Some(self.kind))
    }

    /// An open incident known only by its key: who was affected is unknown, so the detector holds a hub's
    /// open until it sees the hub healthy. A cluster incident's adoption (`now`) counts as its last trigger:
    /// its hubs that still fail have `incidents.window` from then to join it.
    fn adopted(&self, key: &IncidentKey, now: SystemTime) -> IncidentRecord {
        let opened = UNIX_EPOCH + Duration::from_secs(self.seconds);
        let record = IncidentRecord::opened(key, self.label, self.kind, opened, opened);
        match self.cluster {
            Some(cluster) => IncidentRecord { last_trigger_at: Some(now), cluster: Some(cluster.clone()), ..record },
            None => IncidentRecord { last_trigger_at: Some(opened), ..record },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn unknown_incidents_are_adopted_duplicates_resolved_and_foreign_keys_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let mut owners = KeyOwners::default();
        for hub in ["temple", "chapel"] {
            owners.add(hub.into(), (hub.into(), None, hub.into()));
        }
        let chapel_key = IncidentKey::from("chapel-hub_access-1800000000");
        let chapel = owners.parse(&chapel_key).unwrap().adopted(&chapel_key, t(0));
        store.open_incident(&chapel, "x", &[], &[]).unwrap();
        let open = [
            ("Q1".to_string(), "temple-hub_access-1800000100".to_string()),
            ("Q2".to_string(), "chapel-hub_access-1800000200-2".to_string()),
            ("Q3".to_string(), "someone-elses-key".to_string()),
            ("Q4".to_string(), "chapel-hub_access-1800000000".to_string()),
        ];
        let done = apply(&store, &owners, &open, t(300)).unwrap();
        assert_eq!(
            done,
            [
                Reconciled::Adopted { key: "temple-hub_access-1800000100".into() },
                Reconciled::Duplicate {
                    key: "chapel-hub_access-1800000200-2".into(),
                    open: "chapel-hub_access-1800000000".into()
                },
            ]
        );
        let temple = store.incident(&"temple-hub_access-1800000100".into()).unwrap().unwrap();
        assert!(temple.open && temple.symptoms.is_empty());
        assert!(store.resolve_queued("chapel-hub_access-1800000200-2").unwrap());
        assert_eq!(apply(&store, &owners, &open, t(301)).unwrap(), [], "a second run changes nothing");
    }
}
