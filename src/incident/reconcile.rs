//! Reconciling with PagerDuty, the on-call process's source of truth, when a replica starts leading (also a
//! single replica at start), where a REST token is configured. Every open PagerDuty incident whose key is one
//! of hubwatch's (a configured hub, a kind, a second) and that this state does not know — a state lost with
//! a volume, a takeover from a copy that missed it — is *adopted*: recorded as open, so it resolves when the
//! hub is healthy instead of staying triggered for ever while the same outage pages again under a new key.
//! One that duplicates an incident this state has open for the same hub and kind is resolved at once; one
//! this state has closed, with no resolve still queued, gets its resolve again.

use super::parse_key;
use crate::clock::Clock;
use crate::config::StatusUpdatesConfig;
use crate::domain::IncidentKind;
use crate::http::HttpClient;
use crate::notify::pagerduty::{self, Answer};
use crate::notify::rest::RestClient;
use crate::store::{EventAction, IncidentRecord, NewEvent, Store, StoreError, TimelineKind};
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
    Adopted { key: String },
    /// A second incident for an outage this state has open under `open`: resolved.
    Duplicate { key: String, open: String },
    /// Closed here, open there: its resolve is queued again.
    Resolved { key: String },
}

pub async fn reconcile(
    store: &Arc<Store>,
    http: &HttpClient,
    settings: &StatusUpdatesConfig,
    hubs: &[String],
    clock: Clock,
) -> Result<Vec<Reconciled>, ReconcileError> {
    let rest = RestClient { http, settings, timeout: LIST_TIMEOUT };
    let open = rest.open_incidents().await.map_err(ReconcileError::Api)?;
    let (store, hubs) = (store.clone(), hubs.to_vec());
    let now = clock.now();
    Ok(off_runtime(move || apply(&store, &hubs, &open, now)).await?)
}

/// Adopts, resolves or leaves each of PagerDuty's open incidents (`(id, incident key)`).
fn apply(
    store: &Store,
    hubs: &[String],
    open: &[(String, String)],
    now: SystemTime,
) -> Result<Vec<Reconciled>, StoreError> {
    let mut done = Vec::new();
    for (id, key) in open {
        let Some((hub, kind, seconds)) = parse_key(key, hubs) else { continue };
        if store.resolve_queued(key)? {
            continue;
        }
        if let Some(known) = store.incident(key)? {
            if !known.open {
                let note = format!(
                    "PagerDuty incident {id} was still open although this incident had recovered: resolved again"
                );
                store.queue_resolve(key, now, resolve(key, hub, kind), Some((key, &note)))?;
                done.push(Reconciled::Resolved { key: key.clone() });
            }
            continue;
        }
        let open_here = store.open_incidents()?.into_iter().find(|i| i.hub == hub && i.kind == kind);
        if let Some(open_here) = open_here {
            let note = format!(
                "PagerDuty incident {id} ({key}) was open for the same outage, unknown to this state: resolved, so \
                 this incident is the only one"
            );
            store.queue_resolve(key, now, resolve(key, hub, kind), Some((&open_here.key, &note)))?;
            done.push(Reconciled::Duplicate { key: key.clone(), open: open_here.key });
            continue;
        }
        let opened = UNIX_EPOCH + Duration::from_secs(seconds);
        let record = adopted(key, hub, kind, opened);
        let entry = format!(
            "adopted from PagerDuty: its incident {id} was open under this key, unknown to this state (a state lost \
             or a takeover from a copy that missed it); it resolves when the hub is healthy, under this key"
        );
        store.open_incident(
            &record,
            "impact start unknown: adopted from PagerDuty",
            &[(TimelineKind::Detected, &entry)],
            &[],
        )?;
        done.push(Reconciled::Adopted { key: key.clone() });
    }
    Ok(done)
}

fn resolve(key: &str, hub: &str, kind: IncidentKind) -> NewEvent {
    NewEvent::now(EventAction::Resolve, pagerduty::resolve(key)).routed(hub, Some(kind))
}

/// An open incident known only by its key: who was affected is unknown, so the detector holds it open
/// until it sees the hub healthy.
fn adopted(key: &str, hub: &str, kind: IncidentKind, opened: SystemTime) -> IncidentRecord {
    IncidentRecord { last_trigger_at: Some(opened), ..IncidentRecord::opened(key, hub, kind, opened, opened) }
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
        let hubs = vec!["temple".to_string(), "chapel".to_string()];
        let chapel = adopted("chapel-hub_access-1800000000", "chapel", IncidentKind::HubAccess, t(0));
        store.open_incident(&chapel, "x", &[], &[]).unwrap();
        let open = [
            ("Q1".to_string(), "temple-hub_access-1800000100".to_string()),
            ("Q2".to_string(), "chapel-hub_access-1800000200-2".to_string()),
            ("Q3".to_string(), "someone-elses-key".to_string()),
            ("Q4".to_string(), "chapel-hub_access-1800000000".to_string()),
        ];
        let done = apply(&store, &hubs, &open, t(300)).unwrap();
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
        let temple = store.incident("temple-hub_access-1800000100").unwrap().unwrap();
        assert!(temple.open && temple.symptoms.is_empty());
        assert!(store.resolve_queued("chapel-hub_access-1800000200-2").unwrap());
        assert_eq!(apply(&store, &hubs, &open, t(301)).unwrap(), [], "a second run changes nothing");
    }
}
