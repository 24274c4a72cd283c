//! Synthetic probes: what a user does on a hub, one file per capability, and the outcome of each attempt.
//!
//! A probe returns a [`ProbeOutcome`] per capability it attempted: `ok`, `failed {stage, reason}` or
//! `blocked {by}` when an earlier step failed so this one could not be tried. Failures caused by hubwatch's
//! own setup (its token refused, a probe user missing, scopes missing) are [`FailureCause::Monitor`]: they
//! say what to fix and never count as users affected by an outage.

pub mod dask_gateway;
pub mod kernel;
pub mod login;
pub mod round;
pub mod server;
mod sse;

pub use round::HubProber;

use crate::domain::{Stage, StageTiming, StepFailure, round_ms};
use crate::http;
use std::time::Duration;

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

/// Records how long each stage took.
#[derive(Debug, Default)]
pub struct Stages {
    pub list: Vec<StageTiming>,
}

impl Stages {
    pub async fn run<T>(
        &mut self,
        stage: Stage,
        step: impl std::future::Future<Output = Result<T, StepFailure>>,
    ) -> Result<T, StepFailure> {
        let started = tokio::time::Instant::now();
        let result = step.await;
        self.list.push(StageTiming { stage, seconds: round_ms(started.elapsed().as_secs_f64()) });
        result
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

/// One prober per hub of `config`, sharing `http`.
pub fn probers(config: &crate::config::Config, http: &crate::http::HttpClient) -> Vec<std::sync::Arc<HubProber>> {
    config
        .hubs
        .iter()
        .map(|hub| {
            std::sync::Arc::new(HubProber::new(
                std::sync::Arc::new(hub.clone()),
                http.clone(),
                config.scheduler.cleanup_timeout,
            ))
        })
        .collect()
}
