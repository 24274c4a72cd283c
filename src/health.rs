//! What `/readyz` and `/healthz` say, from what hubwatch knows of itself: whether it has started probing
//! (or stands by), whether its state database takes writes and nothing waits to be stored, and whether a
//! task was given up. Readiness drops while state cannot be written (the pages it serves are stale and
//! nothing it decides reaches PagerDuty); liveness fails when that lasts longer than `state.unhealthy_after`
//! or a task was given up, so that the kubelet restarts the pod.

use crate::store::WriteHealth;
use crate::sync::lock;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

#[derive(Debug)]
pub struct Health {
    started: AtomicBool,
    standing_by: AtomicBool,
    failed: Mutex<BTreeSet<&'static str>>,
    /// Decisions waiting to be stored (the recorder's backlog).
    unstored: AtomicUsize,
    /// From the store: since when writes fail (unix ms, 0 when they succeed). Never why: these answers are
    /// served on the open metrics port, and the log has the database's error.
    failing_since: AtomicU64,
    unhealthy_after: Duration,
}

impl Health {
    pub fn new(unhealthy_after: Duration) -> Self {
        Health {
            started: AtomicBool::new(false),
            standing_by: AtomicBool::new(false),
            failed: Mutex::new(BTreeSet::new()),
            unstored: AtomicUsize::new(0),
            failing_since: AtomicU64::new(0),
            unhealthy_after,
        }
    }

    /// Probing has begun, or this replica stands by (a standby is ready: it serves the pages).
    pub fn set_started(&self, started: bool) {
        self.started.store(started, Ordering::Release);
    }

    /// This replica stands by: its state is a copy of the leader's, replaced at every mirror, so it takes
    /// no operator's change (a silence made here would be lost).
    pub fn set_standing_by(&self, standing_by: bool) {
        self.standing_by.store(standing_by, Ordering::Release);
    }

    pub fn is_standing_by(&self) -> bool {
        self.standing_by.load(Ordering::Acquire)
    }

    pub fn task_failed(&self, task: &'static str) {
        lock(&self.failed).insert(task);
    }

    pub fn failed_tasks(&self) -> BTreeSet<&'static str> {
        lock(&self.failed).clone()
    }

    pub fn set_unstored(&self, decisions: usize) {
        self.unstored.store(decisions, Ordering::Release);
    }

    pub fn unstored(&self) -> usize {
        self.unstored.load(Ordering::Acquire)
    }

    /// Takes in what the store says of its writes (called before every answer that depends on it).
    pub fn observe_writes(&self, writes: &WriteHealth) {
        self.set_state_writes(writes.failing().map(|(since, _)| since));
    }

    /// `None` while writes succeed, else since when they fail.
    fn set_state_writes(&self, failing_since: Option<SystemTime>) {
        let since = failing_since.map_or(0, |since| crate_millis(since).max(1));
        self.failing_since.store(since, Ordering::Release);
    }

    /// Since when the state database takes no write.
    fn state_problem(&self) -> Option<SystemTime> {
        let since = self.failing_since.load(Ordering::Acquire);
        (since != 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(since))
    }

    /// `Ok(what)` when ready, `Err(why not)` otherwise.
    pub fn readiness(&self) -> Result<&'static str, String> {
        if !self.started.load(Ordering::Acquire) {
            return Err("starting: cleaning up what an earlier run left behind".into());
        }
        if self.state_problem().is_some() {
            return Err("state database unwritable: decisions wait, nothing is paged for them".into());
        }
        match self.unstored() {
            0 => Ok("ready"),
            n => Err(format!("{n} incident decisions wait to be stored")),
        }
    }

    /// `Ok` while alive; `Err(why)` when the kubelet should restart the pod.
    pub fn liveness(&self, now: SystemTime) -> Result<(), String> {
        let failed = self.failed_tasks();
        if !failed.is_empty() {
            let names: Vec<&str> = failed.into_iter().collect();
            return Err(format!("tasks given up after repeated panics: {}", names.join(", ")));
        }
        // The database's own error stays in the log: this answer is served on the open metrics port.
        if let Some(since) = self.state_problem()
            && now.duration_since(since).is_ok_and(|d| d > self.unhealthy_after)
        {
            let minutes = now.duration_since(since).unwrap_or_default().as_secs() / 60;
            return Err(format!("state database unwritable: no write for {minutes} minutes (the log says why)"));
        }
        Ok(())
    }
}

fn crate_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_state_drops_readiness_at_once_and_liveness_after_the_grace() {
        let health = Health::new(Duration::from_secs(600));
        assert!(health.readiness().is_err(), "not before probing starts");
        health.set_started(true);
        assert_eq!(health.readiness(), Ok("ready"));
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        health.set_state_writes(Some(since));
        health.set_unstored(1);
        assert!(health.readiness().unwrap_err().contains("state database unwritable"));
        assert!(health.liveness(since + Duration::from_secs(599)).is_ok());
        let dead = health.liveness(since + Duration::from_secs(601)).unwrap_err();
        assert!(dead.contains("state database unwritable") && dead.contains("10 minutes"), "{dead}");
        health.set_state_writes(None);
        assert!(health.readiness().unwrap_err().contains("1 incident decisions wait"));
        health.set_unstored(0);
        assert_eq!(health.readiness(), Ok("ready"));
        assert!(health.liveness(since + Duration::from_secs(9999)).is_ok());
    }
}
