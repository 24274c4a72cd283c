//! Synthetic probes: what a user does on a hub, one file per capability, and the outcome of each attempt.
//!
//! A probe returns a [`crate::domain::ProbeOutcome`] per capability it attempted: `ok`, `failed {stage,
//! reason}` or `blocked {by}` when an earlier step failed so this one could not be tried. Failures caused by
//! hubwatch's own setup (its token refused, a probe user missing, scopes missing) are
//! [`crate::domain::FailureCause::Monitor`]: they say what to fix and never count as users affected by an
//! outage. Every round follows one contract ([`round`]): steps under the probe's deadline, blocked steps,
//! clean-up whatever happened.

mod answers;
pub mod binder;
pub mod dask_gateway;
pub mod first_login;
pub mod home;
pub mod kernel;
pub mod lane;
pub mod login;
mod oauth;
pub mod on_demand;
pub mod round;
mod sentinel;
pub mod server;
mod sse;

pub use lane::{Lane, lanes};
pub use round::HubProber;

use crate::config::Config;
use crate::domain::{Stage, StageTiming, StepFailure, round_ms};
use crate::http;
use crate::redact::Redactor;
use crate::sync::lock;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a server round does on the server it starts, each when due: the kernel probe, the home probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnServer {
    pub kernel: bool,
    pub home: bool,
    /// Dask Gateway from inside the server (when the hub asks for it: `dask_gateway.from_server`).
    pub dask: bool,
}

impl OnServer {
    /// Everything (`hubwatch check`, a corroborating round).
    pub const ALL: OnServer = OnServer { kernel: true, home: true, dask: true };
}

/// When a probe must be done by, and the budget it was given (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: tokio::time::Instant,
    pub budget: Duration,
}

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Deadline { at: tokio::time::Instant::now() + budget, budget }
    }

    pub fn timed_out(&self, stage: Stage) -> StepFailure {
        StepFailure::hub(stage, format!("no answer within the {} timeout", humantime::format_duration(self.budget)))
    }

    /// A failed request as a step failure: the hub did not answer, or answered unusably.
    pub fn request_failure(&self, stage: Stage, error: http::RequestError) -> StepFailure {
        match error {
            http::RequestError::Timeout => self.timed_out(stage),
            other => StepFailure::hub(stage, other.to_string()),
        }
    }
}

/// Records how long each stage took, and which one is running (a backstop timeout is charged to it).
/// Shared by reference between a round and its steps, hence the interior mutability.
#[derive(Debug, Default)]
pub struct Stages {
    list: Mutex<Vec<StageTiming>>,
    running: Mutex<Option<Stage>>,
}

impl Stages {
    /// `step`, recorded as `stage`: entered when it is first polled, left when it ends.
    pub fn run<F: Future>(&self, stage: Stage, step: F) -> Timed<'_, F> {
        Timed { stages: self, stage, started: None, step }
    }

    /// Marks `stage` as running, for a step whose stages are the phases of one stream ([`Stages::leave`]
    /// records it).
    pub fn enter(&self, stage: Stage) {
        *lock(&self.running) = Some(stage);
    }

    /// Records `stage`, entered at `since`, as ended now.
    pub fn leave(&self, stage: Stage, since: tokio::time::Instant) {
        *lock(&self.running) = None;
        lock(&self.list).push(StageTiming { stage, seconds: round_ms(since.elapsed().as_secs_f64()) });
    }

    /// The stage that started and has not ended (when the round was cut off in it).
    pub fn running(&self) -> Option<Stage> {
        *lock(&self.running)
    }

    pub fn into_list(self) -> Vec<StageTiming> {
        crate::sync::into_inner(self.list)
    }
}

pin_project_lite::pin_project! {
    /// A step recorded as its stage ([`Stages::run`]). A combinator rather than an `async fn`: that would hold
    /// the step twice (as its argument and as what it awaits), and a round's futures are copied whole when
    /// they are made: a login round's was 9.4 KB, now 2.7 KB (docs/benchmarks.md).
    pub struct Timed<'s, F> {
        stages: &'s Stages,
        stage: Stage,
        started: Option<tokio::time::Instant>,
        #[pin]
        step: F,
    }
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let (stages, stage) = (*this.stages, *this.stage);
        let started = *this.started.get_or_insert_with(|| {
            stages.enter(stage);
            tokio::time::Instant::now()
        });
        let output = std::task::ready!(this.step.poll(cx));
        stages.leave(stage, started);
        std::task::Poll::Ready(output)
    }
}

/// What one look at something a probe waits for found.
pub enum Look<T> {
    Done(T),
    /// Not yet; what it saw (quoted if the wait times out).
    NotYet(String),
}

/// Looks with `look` every `every` until it is done or fails, or until the deadline leaves no room for
/// another look: then `timed_out` words the failure from what the last look saw.
pub async fn poll_until<T, F>(
    deadline: Deadline,
    every: Duration,
    mut look: impl FnMut() -> F,
    timed_out: impl FnOnce(String) -> StepFailure,
) -> Result<T, StepFailure>
where
    F: std::future::Future<Output = Result<Look<T>, StepFailure>>,
{
    loop {
        let saw = match look().await? {
            Look::Done(value) => return Ok(value),
            Look::NotYet(saw) => saw,
        };
        if tokio::time::Instant::now() + every >= deadline.at {
            return Err(timed_out(saw));
        }
        tokio::time::sleep(every).await;
    }
}

/// A user name as one URL path segment (names may hold `@`, `.` or spaces).
pub fn user_path(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for byte in user.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One prober per hub of `config`, sharing `http` and `redactor`.
pub fn probers(config: &Config, http: &http::HttpClient, redactor: &Arc<Redactor>) -> Vec<Arc<HubProber>> {
    let cleanup = config.scheduler.cleanup_timeout;
    config
        .hubs
        .iter()
        .map(|hub| Arc::new(HubProber::new(hub.clone(), http.clone(), cleanup, redactor.clone())))
        .collect()
}
