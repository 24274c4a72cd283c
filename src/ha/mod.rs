//! High availability: with several replicas, exactly one — the holder of a Kubernetes Lease ([`lease`]) —
//! probes and pages. A standby waits, keeping a copy of the state the leader mirrors ([`mirror`]) so its
//! pages are current; the replica that takes over reads the mirror (a takeover that cannot read it gives the
//! lease up rather than lead from an empty state), keeps the newer of its own state and the mirror, renews at
//! once in a term above the mirror's, and claims the Secret over exactly what it read — before anything can
//! page — so open incidents resume without a second page and their resolves still go out.
//!
//! Nothing a leader sends is unknown to its successor: every event is in the mirror, written in the
//! leader's term, before it leaves ([`Handover`]). Nothing a leader does outlives its lease: every send and
//! every mirror write asks the [`Fence`] first, which holds only until the renew deadline after the last
//! renewal. The keeper stops leading (and the daemon stops everything it does) as soon as that deadline
//! passes without a renewal — before any standby may take over — and a late mirror write from a deposed
//! leader is refused by the term in the Secret.

mod fence;
pub mod handover;
pub mod lease;
pub mod mirror;

pub use fence::Fence;
pub use handover::Handover;

use crate::config::HaConfig;
use crate::metrics::Metrics;
use crate::store::{Store, Version};
use crate::tasks::off_runtime;
use lease::{Attempt, Elector};
use mirror::{Loaded, Mirror, Saved};
use serde_json::Value;
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

/// Why a replica that won the lease did not lead after all.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error(
        "cannot read the mirrored state within the renew deadline ({0}): giving the lease up rather than lead without it"
    )]
    MirrorUnreadable(HaError),
    #[error("the lease could not be renewed right after taking over ({0})")]
    NotRenewed(String),
    #[error("the renew deadline passed while taking over")]
    OutOfTime,
}

impl Candidate {
    pub fn new(client: kube::Client, config: HaConfig) -> Self {
        Candidate { client, config }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// An elector for this replica's Lease that writes no term below `floor`.
    pub fn elector(&self, floor: i64) -> Elector {
        let api = kube::Api::namespaced(self.client.clone(), &self.config.namespace);
        let mut elector = Elector::new(
            api,
            &self.config.lease,
            &self.config.identity,
            self.config.lease_duration,
            self.config.call_timeout,
        );
        elector.raise_floor(floor);
        elector
    }

    fn mirror(&self) -> Mirror {
        let c = &self.config;
        Mirror::new(self.client.clone(), &c.namespace, &c.state_secret, &c.state_secret, &c.identity, c.call_timeout)
    }

    /// What writes this leader's state to the Secret: before every send and every [`MIRROR_EVERY`].
    pub fn handover(
        &self,
        store: Arc<Store>,
        fence: Fence,
        metrics: Arc<Metrics>,
        lost: CancellationToken,
    ) -> Handover {
        Handover::new(self.mirror(), store, fence, metrics, lost)
    }

    /// Waits until this replica wins the lease, keeping `store` a copy of the leader's mirrored state
    /// meanwhile; then extends `fence` from the winning attempt and returns the elector and the term. The term
    /// is above any this replica knows of (a re-created Lease continues from the mirror's term). `None` when
    /// `shutdown` came first.
    pub async fn stand_by(
        &self,
        store: &Arc<Store>,
        fence: &Fence,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Option<(Elector, i64)> {
        tracing::info!(identity = self.identity(), "standing by for the leader lease");
        let (mut elector, mirror) = (self.elector(0), self.mirror());
        loop {
            elector.raise_floor(local_version(store).await.term + 1);
            let started = Instant::now();
            match elector.try_acquire_or_renew(self.config.renew_deadline).await {
                Ok(Attempt::Leading { term }) => {
                    fence.extend_to(started + self.config.renew_deadline);
                    tracing::warn!(identity = self.identity(), term, "this replica won the leader lease");
                    return Some((elector, term));
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

    /// Before the new leader acts: reads the mirrored state (retrying within the fence), keeps the newer of
    /// it and its own, renews the lease at once in a term above the mirror's, and claims the Secret for that
    /// term — over exactly what it read, so a deposed leader's last write is never lost between the read and
    /// the claim. Returns the term it leads in. On an error the lease is given up (said why): a replica never
    /// leads from an empty state while a copy exists that it could not read.
    pub async fn take_over(
        &self,
        elector: &mut Elector,
        store: &Arc<Store>,
        fence: &Fence,
        metrics: &Metrics,
    ) -> Result<i64, TakeoverError> {
        let mirror = self.mirror();
        // This replica's own state, as it was before this takeover marked it with the new term: what a
        // mirrored state must be newer than to replace it (also when the claim below has to read again).
        let mut own = local_version(store).await;
        let outcome = loop {
            let loaded = match self.read_mirror(&mirror, fence).await {
                Ok(loaded) => loaded,
                Err(e) => break Err(e),
            };
            let mirrored = restore_newer(store, metrics, &loaded, own).await;
            own = own.max(mirrored);
            let term = match self.renew_above(elector, fence, own.term).await {
                Ok(term) => term,
                Err(e) => break Err(e),
            };
            let writer = store.clone();
            let packed = off_runtime(move || {
                writer.set_term(term)?;
                writer.snapshot().map(|s| mirror::pack(s, mirror::STATE_LIMIT))
            })
            .await;
            let packed = match packed {
                Ok(packed) => packed,
                Err(e) => break Err(TakeoverError::NotRenewed(format!("the state database: {e}"))),
            };
            match mirror.claim(&packed, fence, loaded).await {
                Ok(Saved::Written) => {
                    metrics.set_mirror(packed.bytes.len(), packed.complete);
                    tracing::info!(
                        term,
                        from_term = mirrored.term,
                        sequence = mirrored.sequence,
                        "taking over with the state the previous leader mirrored"
                    );
                    break Ok(term);
                }
                Ok(Saved::Conflict | Saved::Superseded(_)) => {
                    tracing::warn!("the mirrored state changed while taking over; reading it again");
                }
                Ok(Saved::NotLeading) => break Err(TakeoverError::OutOfTime),
                Err(e) if fence.holds() => tracing::warn!(error = %e, "cannot claim the mirrored state; retrying"),
                Err(e) => break Err(TakeoverError::NotRenewed(e.to_string())),
            }
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "not leading after all");
            fence.revoke();
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "cannot give the leader lease up; it expires by itself");
            }
        }
        outcome
    }

    /// The mirrored state, read again until it answers or the fence runs out.
    async fn read_mirror(&self, mirror: &Mirror, fence: &Fence) -> Result<Loaded, TakeoverError> {
        loop {
            match mirror.read().await {
                Ok(loaded) => return Ok(loaded),
                Err(e) => match fence.remaining() {
                    Some(left) if left > self.config.retry_period => {
                        tracing::warn!(error = %e, "cannot read the mirrored state; retrying within the renew deadline");
                        tokio::time::sleep(self.config.retry_period).await;
                    }
                    _ => return Err(TakeoverError::MirrorUnreadable(e)),
                },
            }
        }
    }

    /// Renews the lease now, in a term above `known` (the highest term the state shows); the term it leads in.
    async fn renew_above(&self, elector: &mut Elector, fence: &Fence, known: i64) -> Result<i64, TakeoverError> {
        elector.raise_floor(known + 1);
        let left = fence.remaining().ok_or(TakeoverError::OutOfTime)?;
        let started = Instant::now();
        match elector.try_acquire_or_renew(left).await {
            Ok(Attempt::Leading { term }) => {
                fence.extend_to(started + self.config.renew_deadline);
                Ok(term)
            }
            Ok(Attempt::Held { holder }) => Err(TakeoverError::NotRenewed(format!("{holder} holds it"))),
            Err(e) => Err(TakeoverError::NotRenewed(e.to_string())),
        }
    }

    /// Renews the lease every retry period until `stop` (then gives it up), with the takeover's `elector`
    /// (which renews with one call) or, restarted, a new one. When no renewal succeeded within the renew
    /// deadline, or another replica holds the lease, the fence is revoked at once and `lost` cancelled.
    /// Restartable: it picks up from the fence.
    pub async fn keep(
        &self,
        term: i64,
        elector: Option<Elector>,
        fence: Fence,
        lost: CancellationToken,
        stop: CancellationToken,
    ) {
        let mut elector = elector.unwrap_or_else(|| self.elector(term));
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

    /// Mirrors the state whenever it changed, until `stop`, and once more then (what the notifier did last).
    pub async fn mirror_state(handover: Arc<Handover>, lost: CancellationToken, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = lost.cancelled() => return,
                _ = tokio::time::sleep(MIRROR_EVERY) => false,
            };
            handover.mirror_changes().await;
            if stopping {
                return;
            }
        }
    }
}

async fn local_version(store: &Arc<Store>) -> Version {
    let reader = store.clone();
    off_runtime(move || reader.version()).await.unwrap_or_default()
}

/// Replaces `store` with the mirrored state when that is newer (or `store` has never been written), and
/// reports rows the restore refused.
async fn copy_if_newer(mirror: &Mirror, store: &Arc<Store>, metrics: &Metrics, done: &str) {
    match mirror.load().await {
        Ok(Some(snapshot)) => {
            let own = local_version(store).await;
            restore(store, metrics, snapshot, own, done).await;
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot read the mirrored state"),
    }
}

/// A takeover's restore: the loaded state when it is newer than the local one; the mirrored version (zero
/// when there is none, or it cannot be read: then this replica's own state is all there is, said loudly).
async fn restore_newer(store: &Arc<Store>, metrics: &Metrics, loaded: &Loaded, own: Version) -> Version {
    if let Some(reason) = &loaded.unreadable {
        tracing::error!(%reason, "the mirrored state is not a state hubwatch can read: leading with this replica's \
            own, and writing over it");
    }
    match &loaded.snapshot {
        Some(snapshot) => {
            let done = "restored the state the previous leader mirrored";
            restore(store, metrics, snapshot.clone(), own, done).await
        }
        None => Version::default(),
    }
}

/// Restores `snapshot` into `store` if it is newer than `own` (or the store was never written); its version.
async fn restore(store: &Arc<Store>, metrics: &Metrics, snapshot: Value, own: Version, done: &str) -> Version {
    let mirrored = Version::of(&snapshot);
    let writer = store.clone();
    let newer = mirrored > own || own == Version::default();
    let restored = off_runtime(move || newer.then(|| writer.restore(&snapshot))).await;
    match restored {
        None => {}
        Some(Ok(report)) => {
            metrics.count_restore_rejected(report.rejected.len());
            if !report.rejected.is_empty() {
                tracing::error!(rejected = ?report.rejected, "the mirrored state holds rows this version cannot take: left out");
            }
            tracing::info!(rows = report.rows, term = mirrored.term, sequence = mirrored.sequence, "{done}");
        }
        Some(Err(e)) => tracing::error!(error = %e, "cannot restore the mirrored state; keeping this replica's own"),
    }
    mirrored
}
