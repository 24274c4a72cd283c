//! High availability: with several replicas, exactly one — the holder of a Kubernetes Lease ([`lease`]) —
//! probes and pages. A standby waits, keeping a copy of the state the leader mirrors ([`mirror`]) so its
//! pages are current; the replica that takes over keeps the newer of its own state and the mirror before
//! anything can page, so open incidents resume without a second page and their resolves still go out.
//!
//! Nothing a leader does outlives its lease: every PagerDuty send and every mirror write asks the
//! [`Fence`] first, which holds only until the renew deadline after the last renewal. The keeper stops
//! leading (and the daemon stops everything it does) as soon as that deadline passes without a renewal —
//! before any standby may take over — and a late mirror write from a deposed leader is refused by the
//! term in the Secret.

mod fence;
pub mod lease;
pub mod mirror;

pub use fence::Fence;

use crate::config::HaConfig;
use crate::metrics::Metrics;
use crate::store::{Store, Version};
use crate::tasks::off_runtime;
use lease::{Attempt, Elector};
use mirror::{Mirror, Saved};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the leader mirrors its state (when it changed).
const MIRROR_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("Kubernetes API ({what}): {source}")]
    Api { what: &'static str, source: kube::Error },
    #[error("Kubernetes API ({what}): no answer within the call timeout")]
    Timeout { what: &'static str },
    #[error("the mirrored state in {name} cannot be read: {reason}")]
    State { name: String, reason: String },
}

/// One replica of several: stands by, leads, keeps its lease and mirrors its state.
#[derive(Clone)]
pub struct Candidate {
    client: kube::Client,
    config: HaConfig,
}

impl Candidate {
    pub fn new(client: kube::Client, config: HaConfig) -> Self {
        Candidate { client, config }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn elector(&self) -> Elector {
        let api = kube::Api::namespaced(self.client.clone(), &self.config.namespace);
        Elector::new(
            api,
            &self.config.lease,
            &self.config.identity,
            self.config.lease_duration,
            self.config.call_timeout,
        )
    }

    fn mirror(&self) -> Mirror {
        let c = &self.config;
        Mirror::new(
            self.client.clone(),
            &c.namespace,
            &c.state_secret,
            &c.legacy_state_configmap,
            &c.identity,
            c.call_timeout,
        )
    }

    /// Waits until this replica leads, keeping `store` a copy of the leader's mirrored state meanwhile; then
    /// extends `fence` from the winning attempt and returns the term. `None` when `shutdown` came first.
    pub async fn stand_by(
        &self,
        store: &Arc<Store>,
        fence: &Fence,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Option<i64> {
        tracing::info!(identity = self.identity(), "standing by for the leader lease");
        let (mut elector, mirror) = (self.elector(), self.mirror());
        loop {
            let started = Instant::now();
            match elector.try_acquire_or_renew(self.config.renew_deadline).await {
                Ok(Attempt::Leading { term }) => {
                    fence.extend_to(started + self.config.renew_deadline);
                    tracing::warn!(identity = self.identity(), term, "this replica leads now");
                    return Some(term);
                }
                Ok(Attempt::Held { .. }) => copy_if_newer(&mirror, store, metrics, "copied the leader's state").await,
                Err(e) => tracing::warn!(error = %e, "cannot read or take the leader lease; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Before the new leader acts: the mirror replaces its own state if the mirror is newer, and what it
    /// writes from now on carries its term.
    pub async fn take_over(&self, store: &Arc<Store>, metrics: &Metrics, term: i64) {
        copy_if_newer(&self.mirror(), store, metrics, "restored the state the previous leader mirrored").await;
        let writer = store.clone();
        let (version, written) =
            off_runtime(move || (writer.version().unwrap_or_default(), writer.set_term(term))).await;
        tracing::info!(
            term,
            from_term = version.term,
            sequence = version.sequence,
            "taking over with the state the previous leader mirrored"
        );
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record the leader term in the state database");
        }
    }

    /// Renews the lease every retry period until `stop` (then gives it up). When no renewal succeeded
    /// within the renew deadline, or another replica holds the lease, the fence is revoked at once and
    /// `lost` cancelled. Restartable: it picks up from the fence.
    pub async fn keep(&self, term: i64, fence: Fence, lost: CancellationToken, stop: CancellationToken) {
        let mut elector = self.elector();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    fence.revoke();
                    match elector.release().await {
                        Ok(()) => tracing::info!("gave the leader lease up"),
                        Err(e) => tracing::warn!(error = %e, "cannot give the leader lease up; it expires by itself"),
                    }
                    return;
                }
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
            let Some(left) = fence.remaining() else { break };
            let started = Instant::now();
            match elector.try_acquire_or_renew(left).await {
                Ok(Attempt::Leading { term: now }) if now == term => {
                    fence.extend_to(started + self.config.renew_deadline)
                }
                Ok(Attempt::Leading { .. }) | Ok(Attempt::Held { .. }) => break,
                Err(e) => tracing::warn!(error = %e, left = ?fence.remaining(), "cannot renew the leader lease"),
            }
            if !fence.holds() {
                break;
            }
        }
        fence.revoke();
        tracing::error!("lost the leader lease (not renewed within the renew deadline): stopping at once");
        lost.cancel();
    }

    /// Mirrors `store` whenever its version changed, until `stop`, and once more then (what the notifier
    /// did last). A newer state in the Secret means another replica leads: `lost` is cancelled.
    pub async fn mirror_state(
        &self,
        store: Arc<Store>,
        fence: Fence,
        metrics: Arc<Metrics>,
        lost: CancellationToken,
        stop: CancellationToken,
    ) {
        let mirror = self.mirror();
        let mut written: Option<Version> = None;
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(MIRROR_EVERY) => false,
            };
            match mirror_once(&mirror, &store, &fence, &metrics, written).await {
                Ok(Some(version)) => written = Some(version),
                Ok(None) => {}
                Err(Deposed(newer)) => {
                    tracing::error!(
                        term = newer.term,
                        "the mirrored state is a newer leader's: this replica is deposed"
                    );
                    fence.revoke();
                    lost.cancel();
                    return;
                }
            }
            if stopping {
                return;
            }
        }
    }
}

struct Deposed(Version);

/// One mirror write if the state changed since `written`; the version written, if any.
async fn mirror_once(
    mirror: &Mirror,
    store: &Arc<Store>,
    fence: &Fence,
    metrics: &Metrics,
    written: Option<Version>,
) -> Result<Option<Version>, Deposed> {
    // Every store call off the runtime: a locked or slow database must not hold up the lease keeper.
    let reader = store.clone();
    let version = match off_runtime(move || reader.version()).await {
        Ok(v) if Some(v) != written => v,
        Ok(_) => return Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the state to mirror it");
            return Ok(None);
        }
    };
    // Reading every row and compressing them is CPU work: off the runtime, so the lease keeper never waits.
    let reader = store.clone();
    let packed = off_runtime(move || reader.snapshot().map(|s| mirror::pack(s, mirror::STATE_LIMIT))).await;
    let packed = match packed {
        Ok(packed) => packed,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the state to mirror it");
            return Ok(None);
        }
    };
    metrics.set_mirror(packed.bytes.len(), packed.complete);
    if !packed.dropped.is_empty() {
        tracing::warn!(dropped = ?packed.dropped, complete = packed.complete, "the state is too large for the mirror");
    }
    match mirror.save(&packed, fence).await {
        Ok(Saved::Written) => Ok(Some(version)),
        Ok(Saved::Superseded(newer)) => Err(Deposed(newer)),
        Ok(Saved::NotLeading | Saved::Conflict) => Ok(None),
        Err(e) => {
            metrics.count_mirror_failure();
            tracing::warn!(error = %e, "cannot mirror the state; retrying");
            Ok(None)
        }
    }
}

/// Replaces `store` with the mirrored state when that is newer (or `store` has never been written), and
/// reports rows the restore refused.
async fn copy_if_newer(mirror: &Mirror, store: &Arc<Store>, metrics: &Metrics, done: &str) {
    let snapshot = match mirror.load().await {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the mirrored state");
            return;
        }
    };
    let mirrored = Version::of(&snapshot);
    let writer = store.clone();
    let restored = off_runtime(move || {
        let local = writer.version().unwrap_or_default();
        (mirrored > local || local == Version::default()).then(|| writer.restore(&snapshot))
    })
    .await;
    let Some(restored) = restored else { return };
    match restored {
        Ok(report) => {
            metrics.count_restore_rejected(report.rejected.len());
            if !report.rejected.is_empty() {
                tracing::error!(rejected = ?report.rejected, "the mirrored state holds rows this version cannot take: left out");
            }
            tracing::info!(rows = report.rows, term = mirrored.term, sequence = mirrored.sequence, "{done}");
        }
        Err(e) => tracing::error!(error = %e, "cannot restore the mirrored state; keeping this replica's own"),
    }
}
