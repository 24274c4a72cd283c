//! Supervision: every long-running task (each probe lane, the recorder, the notifier, the mirror, the lease
//! keeper, discovery, watches) is started here and tracked, so shutdown joins them all and none is spawned
//! and forgotten. A task that panics is restarted (after a short pause that grows with its recent panics),
//! counted in `hubwatch_task_restarts_total{task}` and logged; one that panics more than
//! [`MAX_RESTARTS`] times within [`RESTART_WINDOW`] is given up, which fails `/healthz` so the kubelet
//! restarts the pod.

use crate::health::Health;
use crate::metrics::Metrics;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);
const RESTART_PAUSE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// What a panic said, for the log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Tasks {
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>) -> Self {
        Tasks { tracker: TaskTracker::new(), metrics, health }
    }

    /// Runs `start()` until it returns, starting it again whenever it panics (see the module docs). The
    /// handle ends when the task has ended for good.
    pub fn supervise<F, Fut>(&self, name: &'static str, mut start: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (metrics, health) = (self.metrics.clone(), self.health.clone());
        self.tracker.spawn(async move {
            let mut panics: VecDeque<Instant> = VecDeque::new();
            while let Err(panic) = AssertUnwindSafe(start()).catch_unwind().await {
                let now = Instant::now();
                panics.push_back(now);
                while panics.front().is_some_and(|at| now.duration_since(*at) > RESTART_WINDOW) {
                    panics.pop_front();
                }
                let message = panic_message(panic.as_ref());
                if panics.len() > MAX_RESTARTS {
                    tracing::error!(task = name, panic = %message, restarts = MAX_RESTARTS,
                        "a task keeps panicking: given up; /healthz fails so that the pod is restarted");
                    health.task_failed(name);
                    metrics.set_tasks_failed(health.failed_tasks().len());
                    return;
                }
                metrics.count_task_restart(name);
                tracing::error!(task = name, panic = %message, "a task panicked: restarting it");
                tokio::time::sleep(RESTART_PAUSE * panics.len() as u32).await;
            }
        })
    }

    /// Runs `task` once, tracked (shutdown waits for it); a panic is logged and counted, not restarted.
    pub fn spawn_once<Fut>(&self, name: &'static str, task: Fut) -> tokio::task::JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                metrics.count_task_restart(name);
                tracing::error!(task = name, panic = %panic_message(panic.as_ref()), "a one-off task panicked");
            }
        })
    }

    /// Waits until every task has ended (callers cancel them first), at most `grace`; true when all ended.
    pub async fn join(&self, grace: Duration) -> bool {
        self.tracker.close();
        let joined = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        if !joined {
            tracing::warn!(left = self.tracker.len(), "tasks still running after the grace period are abandoned");
        }
        joined
    }

    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

/// Runs blocking or CPU-heavy `work` (SQLite, rendering, compression, redaction) on the blocking pool, so
/// the one runtime thread keeps renewing the lease, probing and paging meanwhile. A panic in `work` panics
/// here (a supervised task is restarted as for any panic).
pub async fn off_runtime<T, W>(work: W) -> T
where
    W: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking work was cancelled (the runtime is shutting down): {e}"),
    }
}

/// Runs `task` on a thread of its own, its timers and sockets still served by the runtime: for a task whose
/// every step mixes waiting with blocking work (the recorder and the notifier write SQLite on every
/// decision and delivery), so a slow disk or a long transaction never holds up the runtime's thread.
pub async fn on_own_thread<F>(task: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    off_runtime(move || runtime.block_on(task)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tasks() -> (Tasks, Arc<Metrics>, Arc<Health>) {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(Duration::from_secs(600)));
        (Tasks::new(metrics.clone(), health.clone()), metrics, health)
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_restarted_and_counted() {
        let (tasks, metrics, health) = tasks();
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = starts.clone();
        tasks.supervise("recorder", move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("injected");
                }
            }
        });
        assert!(tasks.join(Duration::from_secs(60)).await);
        assert_eq!(starts.load(Ordering::SeqCst), 3, "two panics, then it ran to its end");
        assert!(metrics.render().contains(r#"hubwatch_task_restarts_total{task="recorder"} 2"#));
        assert!(health.liveness(std::time::SystemTime::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_keeps_panicking_is_given_up_and_fails_liveness() {
        let (tasks, metrics, health) = tasks();
        tasks.supervise("notifier", || async { panic!("always") });
        assert!(tasks.join(Duration::from_secs(600)).await);
        let why = health.liveness(std::time::SystemTime::now()).unwrap_err();
        assert!(why.contains("notifier"), "{why}");
        assert!(metrics.render().contains("hubwatch_tasks_failed 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn join_waits_for_every_task_and_gives_up_after_the_grace() {
        let (tasks, _, _) = tasks();
        tasks.spawn_once("diagnostics", async { tokio::time::sleep(Duration::from_secs(5)).await });
        tasks.spawn_once("stuck", std::future::pending());
        assert!(!tasks.join(Duration::from_secs(10)).await, "the stuck one is abandoned");
        assert_eq!(tasks.running(), 1, "the other one ended");
    }
}
