//! The hand-over of what a leader is about to send: no event leaves the leader before the cluster copy of
//! the state (the mirror Secret) holds it as pending, written in the leader's current term and fenced. A
//! replica that takes over therefore knows every event that may have been sent, and sends it again under
//! the same dedup key (PagerDuty deduplicates; the webhook's receivers see the same `id`) instead of
//! detecting the outage afresh under a new key. Pages are rare, so one Secret write per page is cheap.
//!
//! The periodic mirror and the hand-over write through the same [`Handover`], one write at a time, so the
//! version written only grows.

use super::Fence;
use super::mirror::{self, Mirror, Saved};
use crate::metrics::Metrics;
use crate::store::{Store, Version};
use crate::tasks::off_runtime;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub struct Handover {
    mirror: Mirror,
    store: Arc<Store>,
    fence: Fence,
    metrics: Arc<Metrics>,
    /// Cancelled when a newer leader's state is found in the Secret.
    lost: CancellationToken,
    /// The version the Secret holds from this replica's last write.
    written: Mutex<Option<Version>>,
}

impl Handover {
    pub fn new(
        mirror: Mirror,
        store: Arc<Store>,
        fence: Fence,
        metrics: Arc<Metrics>,
        lost: CancellationToken,
    ) -> Self {
        Handover { mirror, store, fence, metrics, lost, written: Mutex::new(None) }
    }

    /// Writes the state to the Secret if it changed since the last write.
    pub async fn mirror_changes(&self) {
        let mut written = self.written.lock().await;
        if let Some(version) = self.write(*written).await {
            *written = Some(version);
        }
    }

    /// Whether the Secret holds the state at `version` or newer, writing it now if it does not. `false`: it
    /// could not be written (not leading, the API server refused or did not answer); nothing may be sent.
    pub async fn hold(&self, version: Version) -> bool {
        let mut written = self.written.lock().await;
        if written.is_some_and(|w| w >= version) {
            return true;
        }
        match self.write(*written).await {
            Some(now) => {
                *written = Some(now);
                now >= version
            }
            None => false,
        }
    }

    /// One write if the state changed since `written`; the version written.
    async fn write(&self, written: Option<Version>) -> Option<Version> {
        // Every store call off the runtime: a locked or slow database must not hold up the lease keeper.
        let reader = self.store.clone();
        let version = match off_runtime(move || reader.version()).await {
            Ok(v) if Some(v) != written => v,
            Ok(_) => return written,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state to mirror it");
                return None;
            }
        };
        // Reading every row and compressing them is CPU work: off the runtime, so the lease keeper never waits.
        let reader = self.store.clone();
        let packed = off_runtime(move || reader.snapshot().map(|s| mirror::pack(s, mirror::STATE_LIMIT))).await;
        let packed = match packed {
            Ok(packed) => packed,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state to mirror it");
                return None;
            }
        };
        self.metrics.set_mirror(packed.bytes.len(), packed.complete);
        if !packed.dropped.is_empty() {
            tracing::warn!(dropped = ?packed.dropped, complete = packed.complete, "the state is too large for the mirror");
        }
        match self.mirror.save(&packed, &self.fence).await {
            Ok(Saved::Written) => Some(version),
            Ok(Saved::Superseded(newer)) => {
                tracing::error!(term = newer.term, "the mirrored state is a newer leader's: this replica is deposed");
                self.fence.revoke();
                self.lost.cancel();
                None
            }
            Ok(Saved::NotLeading | Saved::Conflict) => None,
            Err(e) => {
                self.metrics.count_mirror_failure();
                tracing::warn!(error = %e, "cannot mirror the state; retrying");
                None
            }
        }
    }
}
