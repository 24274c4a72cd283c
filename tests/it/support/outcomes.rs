//! Probe outcomes for scripted tests.

use hubwatch::domain::{Capability, ProbeOutcome, ProbeResult, Stage, StepFailure};
use std::time::{Duration, SystemTime};

/// A 4-second attempt of `user` at `capability` on `hub` that finished at `at`: ok, or failed by the hub at
/// the progress stage with `failure` as the reason.
pub fn finished(hub: &str, user: &str, capability: Capability, failure: Option<&str>, at: SystemTime) -> ProbeOutcome {
    ProbeOutcome {
        hub: hub.into(),
        user: user.into(),
        capability,
        started_at: at - Duration::from_secs(4),
        duration: Duration::from_secs(4),
        result: match failure {
            None => ProbeResult::Ok,
            Some(reason) => ProbeResult::Failed(StepFailure::hub(Stage::Progress, reason)),
        },
        stages: vec![],
    }
}
