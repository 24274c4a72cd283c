//! What responders did with an incident in PagerDuty, as read back from its REST API: its status, who
//! acknowledged it, who has it, and who resolved it. hubwatch only writes pages; this is how the timeline
//! learns "when we responded to the incident" and the hand-offs of the Incident Commander.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// A PagerDuty incident's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    Triggered,
    Acknowledged,
    Resolved,
}

/// A person (or a service) and when they acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    pub by: String,
    pub at: SystemTime,
}

/// The PagerDuty incident as last read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub status: ResponseStatus,
    /// The latest acknowledgement (PagerDuty lists them only while acknowledged).
    pub acknowledged: Option<Act>,
    /// Who has it now (empty once resolved).
    pub assignees: Vec<String>,
    /// Who resolved it, and when, once resolved.
    pub resolved: Option<Act>,
}

/// A change between two readings, in the words of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseChange {
    Acknowledged(Act),
    /// Assigned at the first reading, reassigned later: who has it now.
    Assigned {
        to: Vec<String>,
        first: bool,
    },
    /// Back to triggered (an acknowledgement that timed out, or undone).
    Unacknowledged,
    /// Resolved in PagerDuty while hubwatch still sees the outage.
    Resolved(Act),
}

impl Response {
    /// What changed since `previous` (`None`: the first reading).
    pub fn changes_since(&self, previous: Option<&Response>) -> Vec<ResponseChange> {
        let mut changes = Vec::new();
        let before = |f: fn(&Response) -> bool| previous.is_some_and(f);
        if let Some(act) = &self.acknowledged
            && previous.and_then(|p| p.acknowledged.as_ref()) != Some(act)
        {
            changes.push(ResponseChange::Acknowledged(act.clone()));
        }
        if !self.assignees.is_empty() && previous.is_none_or(|p| p.assignees != self.assignees) {
            let first = previous.is_none_or(|p| p.assignees.is_empty());
            changes.push(ResponseChange::Assigned { to: self.assignees.clone(), first });
        }
        if self.status == ResponseStatus::Triggered && before(|p| p.status == ResponseStatus::Acknowledged) {
            changes.push(ResponseChange::Unacknowledged);
        }
        if let Some(act) = self.resolved.as_ref().filter(|_| self.status == ResponseStatus::Resolved)
            && !before(|p| p.status == ResponseStatus::Resolved)
        {
            changes.push(ResponseChange::Resolved(act.clone()));
        }
        changes
    }

    /// "acknowledged by Ana", "assigned to Ana, Ben", "resolved by Ana": who has it, for the status pages.
    pub fn who_has_it(&self) -> String {
        match (&self.status, &self.acknowledged, &self.resolved) {
            (ResponseStatus::Resolved, _, Some(act)) => format!("resolved in PagerDuty by {}", act.by),
            (ResponseStatus::Acknowledged, Some(act), _) => format!("acknowledged by {}", act.by),
            _ if !self.assignees.is_empty() => format!("assigned to {}, not acknowledged", self.assignees.join(", ")),
            _ => "not acknowledged".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn act(by: &str, s: u64) -> Act {
        Act { by: by.into(), at: UNIX_EPOCH + Duration::from_secs(s) }
    }

    fn triggered(assignees: &[&str]) -> Response {
        Response {
            status: ResponseStatus::Triggered,
            acknowledged: None,
            assignees: assignees.iter().map(|a| a.to_string()).collect(),
            resolved: None,
        }
    }

    #[test]
    fn each_reading_says_only_what_changed() {
        let first = triggered(&["Ana"]);
        assert_eq!(first.changes_since(None), [ResponseChange::Assigned { to: vec!["Ana".into()], first: true }]);
        assert_eq!(first.changes_since(Some(&first)), [], "read again: nothing new");
        let acked =
            Response { status: ResponseStatus::Acknowledged, acknowledged: Some(act("Ana", 60)), ..first.clone() };
        assert_eq!(acked.changes_since(Some(&first)), [ResponseChange::Acknowledged(act("Ana", 60))]);
        assert_eq!(acked.who_has_it(), "acknowledged by Ana");
        let handed = Response { assignees: vec!["Ben".into()], ..acked.clone() };
        assert_eq!(
            handed.changes_since(Some(&acked)),
            [ResponseChange::Assigned { to: vec!["Ben".into()], first: false }]
        );
        let expired = triggered(&["Ben"]);
        assert_eq!(expired.changes_since(Some(&handed)), [ResponseChange::Unacknowledged]);
        assert_eq!(expired.who_has_it(), "assigned to Ben, not acknowledged");
        let resolved = Response {
            status: ResponseStatus::Resolved,
            assignees: vec![],
            resolved: Some(act("Ben", 300)),
            ..expired
        };
        assert_eq!(resolved.changes_since(Some(&handed)), [ResponseChange::Resolved(act("Ben", 300))]);
        assert_eq!(resolved.changes_since(Some(&resolved)), []);
        assert_eq!(resolved.who_has_it(), "resolved in PagerDuty by Ben");
    }
}
