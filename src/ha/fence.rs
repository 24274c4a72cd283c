//! Fencing: leadership as the side effects see it. A leader may act (page, mirror its state) only until
//! its renew deadline, counted from the last renewal it made; every side effect asks the fence right before
//! it acts and takes no longer than the fence still allows, so a deposed leader sends nothing once another
//! replica may lead. Without high availability the fence always holds.

use crate::sync::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Fence {
    /// `None`: no election, always holds. Else until when this replica may act (`None` inside: not leading).
    lease: Option<Arc<Mutex<Option<Instant>>>>,
}

impl Fence {
    /// A single replica: it always leads.
    pub fn always() -> Fence {
        Fence { lease: None }
    }

    /// Held through a lease: not leading until [`Fence::extend_to`].
    pub fn lease() -> Fence {
        Fence { lease: Some(Arc::new(Mutex::new(None))) }
    }

    fn slot(&self) -> Option<std::sync::MutexGuard<'_, Option<Instant>>> {
        self.lease.as_ref().map(|l| lock(l))
    }

    /// This replica may act until `until` (a renewal succeeded).
    pub fn extend_to(&self, until: Instant) {
        if let Some(mut slot) = self.slot() {
            *slot = Some(slot.map_or(until, |current| current.max(until)));
        }
    }

    /// This replica may act no more (the lease is lost or given up).
    pub fn revoke(&self) {
        if let Some(mut slot) = self.slot() {
            *slot = None;
        }
    }

    /// How long a side effect starting now may take; `None` when it must not start.
    pub fn remaining(&self) -> Option<Duration> {
        match self.slot() {
            None => Some(Duration::MAX),
            Some(slot) => slot.and_then(|until| until.checked_duration_since(Instant::now())).filter(|d| !d.is_zero()),
        }
    }

    pub fn holds(&self) -> bool {
        self.remaining().is_some()
    }

    /// `limit`, cut to what the fence still allows; `None` when nothing may start.
    pub fn budget(&self, limit: Duration) -> Option<Duration> {
        self.remaining().map(|left| left.min(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_fence_holds_until_its_deadline_and_not_after_a_revoke() {
        let fence = Fence::lease();
        assert!(!fence.holds(), "not leading before the first renewal");
        fence.extend_to(Instant::now() + Duration::from_secs(10));
        assert_eq!(fence.budget(Duration::from_secs(30)), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(fence.budget(Duration::from_secs(30)), Some(Duration::from_secs(6)));
        fence.extend_to(Instant::now() + Duration::from_secs(1));
        assert_eq!(fence.remaining(), Some(Duration::from_secs(6)), "an older renewal never shortens it");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!fence.holds(), "past the renew deadline");
        fence.extend_to(Instant::now() + Duration::from_secs(10));
        fence.revoke();
        assert!(!fence.holds());
        assert_eq!(Fence::always().budget(Duration::from_secs(30)), Some(Duration::from_secs(30)));
    }
}
