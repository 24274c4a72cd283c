//! Probe outcomes and incident records for scripted tests.

use hubwatch::domain::{Capability, IncidentKind, ProbeOutcome, ProbeResult, Stage, StepFailure};
use hubwatch::store::IncidentRecord;
use std::time::{Duration, SystemTime};

/// An open incident `key` of `hub`, its impact from `impact_start`, opened at `opened_at`, nobody affected yet.
pub fn open_incident(
    key: &str,
    hub: &str,
    kind: IncidentKind,
    impact_start: SystemTime,
    opened_at: SystemTime,
) -> IncidentRecord {
    IncidentRecord {
        key: key.into(),
        hub: hub.into(),
        kind,
        open: true,
        impact_start,
        opened_at,
        recovered_at: None,
        symptoms: Default::default(),
        affected_ever: Default::default(),
        failures_ever: Default::default(),
        last_trigger_at: None,
        pending_update: false,
        hold: None,
    }
}

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
