//! High availability: with several replicas, exactly one — the holder of a Kubernetes Lease — probes and
//! pages. The leader mirrors its state (incidents, timelines, the PagerDuty outbox) into a ConfigMap every
//! couple of seconds; a replica that takes over restores it first, so open incidents resume without a second
//! page and their resolves still go out. A leader that cannot renew its lease before it would expire stops
//! probing at once (another replica may already lead) and exits.
//!
//! The lease follows client-go's leader election: `holderIdentity`, `renewTime`, `leaseDurationSeconds`;
//! every write carries the `resourceVersion` it read, so two replicas can never both win (409 Conflict).

use crate::config::HaConfig;
use crate::store::Store;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// A ConfigMap holds at most 1 MiB; the snapshot leaves room for metadata.
const STATE_LIMIT: usize = 900 * 1024;
const STATE_KEY: &str = "state.json";
/// How often the leader mirrors its state (when it changed).
const MIRROR_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("Kubernetes API ({what}): {source}")]
    Api { what: &'static str, source: kube::Error },
    #[error("the mirrored state in ConfigMap {name} cannot be read: {reason}")]
    State { name: String, reason: String },
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::try_from(SystemTime::now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

pub struct Leadership {
    leases: Api<Lease>,
    config_maps: Api<ConfigMap>,
    config: HaConfig,
}

impl Leadership {
    pub fn new(client: kube::Client, config: HaConfig) -> Self {
        Leadership {
            leases: Api::namespaced(client.clone(), &config.namespace),
            config_maps: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// One attempt to take or keep the lease; true when this replica holds it afterwards.
    pub async fn try_lead(&self) -> Result<bool, HaError> {
        let me = self.config.identity.clone();
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let api = |source| HaError::Api { what: "lease", source };
        let Some(mut lease) = self.leases.get_opt(&self.config.lease).await.map_err(api)? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.config.lease.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(micro_now()),
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(source) => Err(api(source)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let expired = spec.renew_time.as_ref().is_none_or(|MicroTime(renewed)| {
            let held_for = Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
            let renewed = SystemTime::from(*renewed);
            SystemTime::now().duration_since(renewed).is_ok_and(|age| age > held_for)
        });
        let mine = holder.as_deref() == Some(me.as_str());
        if !mine && holder.is_some() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration),
            acquire_time: if mine { spec.acquire_time } else { Some(micro_now()) },
            renew_time: Some(micro_now()),
            lease_transitions: Some(transitions),
            ..spec
        });
        // `lease` still carries the resourceVersion read above: a concurrent writer makes this a 409.
        match self.leases.replace(&self.config.lease, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(api(source)),
        }
    }

    /// Waits until this replica leads; false if `shutdown` came first. Meanwhile it keeps `store` a copy of
    /// the leader's mirrored state, so its own incident pages (behind the same Service) are current too.
    pub async fn acquire(&self, store: &Store, shutdown: &CancellationToken) -> bool {
        let retry = self.config.lease_duration / 3;
        loop {
            match self.try_lead().await {
                Ok(true) => return true,
                Ok(false) => {
                    if let Ok(Some(snapshot)) = self.load_state().await
                        && let Err(e) = store.restore(&snapshot)
                    {
                        tracing::warn!(error = %e, "cannot copy the leader's state");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read or take the leader lease; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Renews every third of the lease duration until `stop`; returns false when the lease was lost (not
    /// renewed for two thirds of its duration, so that this replica stops before another may take over).
    pub async fn hold(&self, stop: &CancellationToken) -> bool {
        let every = self.config.lease_duration / 3;
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return true,
                _ = tokio::time::sleep(every) => {}
            }
            match self.try_lead().await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => return false,
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease"),
            }
            if renewed.elapsed() >= every * 2 {
                return false;
            }
        }
    }

    /// Gives the lease up (on a graceful stop), so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.leases.get_opt(&self.config.lease).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.config.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = self.leases.replace(&self.config.lease, &PostParams::default(), &lease).await;
        }
    }

    /// The state the previous leader mirrored, if any.
    pub async fn load_state(&self) -> Result<Option<serde_json::Value>, HaError> {
        let name = &self.config.state_configmap;
        let config_map =
            self.config_maps.get_opt(name).await.map_err(|source| HaError::Api { what: "state ConfigMap", source })?;
        let Some(text) = config_map.and_then(|c| c.data).and_then(|d| d.get(STATE_KEY).cloned()) else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| HaError::State { name: name.clone(), reason: e.to_string() })
    }

    async fn save_state(&self, text: String) -> Result<(), HaError> {
        let api = |source| HaError::Api { what: "state ConfigMap", source };
        let name = &self.config.state_configmap;
        let data = BTreeMap::from([(STATE_KEY.to_string(), text)]);
        match self.config_maps.get_opt(name).await.map_err(api)? {
            Some(mut existing) => {
                existing.data = Some(data);
                self.config_maps.replace(name, &PostParams::default(), &existing).await.map_err(api)?;
            }
            None => {
                let config_map = ConfigMap {
                    metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                self.config_maps.create(&PostParams::default(), &config_map).await.map_err(api)?;
            }
        }
        Ok(())
    }

    /// Mirrors `store` into the ConfigMap whenever it changed, until `stop`, and once more at the end.
    pub async fn mirror(&self, store: Arc<Store>, stop: CancellationToken) {
        let mut last = String::new();
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(MIRROR_EVERY) => false,
            };
            match store.snapshot() {
                Ok(snapshot) => {
                    let text = fit(snapshot, STATE_LIMIT).to_string();
                    if text != last {
                        match self.save_state(text.clone()).await {
                            Ok(()) => last = text,
                            Err(e) => tracing::warn!(error = %e, "cannot mirror the state; retrying"),
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the state to mirror it"),
            }
            if stopping {
                return;
            }
        }
    }
}

/// A replica that leads: its lease is renewed and its state mirrored until it steps down.
pub struct Leading {
    leadership: Arc<Leadership>,
    lost: Arc<AtomicBool>,
    stop_mirror: CancellationToken,
    mirror: tokio::task::JoinHandle<()>,
}

/// Stands by until this replica leads (false `ready` meanwhile would stall rollouts, so a standby is
/// ready), then restores the state the previous leader mirrored before anything can page, and starts
/// renewing and mirroring. A lost lease cancels `shutdown`. `None` when `shutdown` came first.
pub async fn lead(
    leadership: Arc<Leadership>,
    store: Arc<Store>,
    ready: &AtomicBool,
    shutdown: &CancellationToken,
) -> Option<Leading> {
    ready.store(true, Ordering::Release);
    tracing::info!(identity = leadership.identity(), "standing by for the leader lease");
    if !leadership.acquire(&store, shutdown).await {
        return None;
    }
    tracing::warn!(identity = leadership.identity(), "this replica leads now");
    ready.store(false, Ordering::Release);
    let restored = match leadership.load_state().await {
        Ok(Some(snapshot)) => store.restore(&snapshot).map(|()| true).map_err(|e| e.to_string()),
        Ok(None) => Ok(false),
        Err(e) => Err(e.to_string()),
    };
    match restored {
        Ok(true) => tracing::info!("restored the state the previous leader mirrored"),
        Ok(false) => tracing::info!("no mirrored state yet: starting from this replica's own"),
        Err(error) => tracing::error!(%error, "cannot restore the mirrored state: starting from this replica's own"),
    }
    let lost = Arc::new(AtomicBool::new(false));
    let (hold, flag, on_loss) = (leadership.clone(), lost.clone(), shutdown.clone());
    tokio::spawn(async move {
        if !hold.hold(&on_loss).await {
            tracing::error!("lost the leader lease: stopping at once (another replica may lead now)");
            flag.store(true, Ordering::Release);
            on_loss.cancel();
        }
    });
    let stop_mirror = CancellationToken::new();
    let mirror = tokio::spawn({
        let (leadership, stop) = (leadership.clone(), stop_mirror.clone());
        async move { leadership.mirror(store, stop).await }
    });
    Some(Leading { leadership, lost, stop_mirror, mirror })
}

impl Leading {
    /// After the probing and the notifier stopped: a last mirror (what the notifier did last), then the lease
    /// is released so a standby takes over at once. True when the lease had been lost.
    pub async fn step_down(self) -> bool {
        self.stop_mirror.cancel();
        let _ = self.mirror.await;
        let lost = self.lost.load(Ordering::Acquire);
        if !lost {
            self.leadership.release().await;
        }
        lost
    }
}

/// Keeps a snapshot within `limit` bytes: first delivered outbox events go, then the oldest recovered
/// incidents with their timelines. Open incidents and unsent events always stay.
pub fn fit(mut snapshot: serde_json::Value, limit: usize) -> serde_json::Value {
    let size = |s: &serde_json::Value| s.to_string().len();
    if size(&snapshot) <= limit {
        return snapshot;
    }
    if let Some(outbox) = snapshot["tables"]["outbox"].as_array_mut() {
        outbox.retain(|row| row["state"] == "pending");
    }
    while size(&snapshot) > limit {
        let oldest_closed = snapshot["tables"]["incidents"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["open"] == 0).map(|row| row["key"].clone()));
        let Some(key) = oldest_closed else { break };
        for table in ["incidents", "timeline"] {
            if let Some(rows) = snapshot["tables"][table].as_array_mut() {
                rows.retain(|row| row["key"] != key);
            }
        }
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_large_snapshot_drops_history_never_open_incidents_or_unsent_events() {
        let long = "x".repeat(400);
        let snapshot = json!({"schema_version": 2, "tables": {
            "incidents": [{"key": "old", "open": 0}, {"key": "now", "open": 1}],
            "timeline": [{"key": "old", "entry": long}, {"key": "now", "entry": "detected"}],
            "outbox": [{"key": "old", "state": "sent", "body": long}, {"key": "now", "state": "pending", "body": "{}"}],
        }});
        let fitted = fit(snapshot.clone(), 400);
        assert_eq!(fitted["tables"]["incidents"], json!([{"key": "now", "open": 1}]));
        assert_eq!(fitted["tables"]["timeline"], json!([{"key": "now", "entry": "detected"}]));
        assert_eq!(fitted["tables"]["outbox"], json!([{"key": "now", "state": "pending", "body": "{}"}]));
        assert_eq!(fit(snapshot.clone(), 1 << 20), snapshot, "small enough: untouched");
    }
}
