//! Decisions that could not be stored yet (a full disk, an I/O error): kept in order and retried with
//! backoff until the store takes them, so the detector's view and the store never disagree for long and no
//! page is lost to a failed write. Later decisions wait behind earlier ones (a recovery is never stored
//! before its opening); consecutive changes of one incident are merged, so a long outage of the disk holds
//! a few decisions per hub and kind, not one per probe.

use super::sinks::TicketNews;
use crate::diagnostics::Diagnostics;
use crate::domain::{DeploymentState, HubChange, HubName, IncidentKey, IncidentKind, Transition};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The first retry waits this long; each failure doubles it, up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What the recorder decided and must store.
#[derive(Debug, Clone)]
pub enum Decision {
    Transition(Transition),
    HubChanged(HubChange),
    Diagnostics {
        key: IncidentKey,
        diagnostics: Diagnostics,
    },
    /// A hub Deployment's rollout and silence annotations.
    Deployment(DeploymentState),
    Ticket(TicketNews),
}

impl Decision {
    /// A few words for the log (never the diagnostics' text).
    pub fn describe(&self) -> String {
        match self {
            Decision::Transition(Transition::Opened { hub, kind, .. }) => format!("open {hub} {}", kind.as_str()),
            Decision::Transition(Transition::Updated { hub, kind, .. }) => format!("update {hub} {}", kind.as_str()),
            Decision::Transition(Transition::Recovered { hub, kind, .. }) => format!("recover {hub} {}", kind.as_str()),
            Decision::HubChanged(change) => format!("hub change {} {}", change.hub, change.deployment),
            Decision::Diagnostics { key, .. } => format!("diagnostics of {key}"),
            Decision::Deployment(state) => format!("hub Deployment {} {}", state.hub, state.deployment),
            Decision::Ticket(TicketNews::Opened { hub, kind, .. }) => format!("ticket opened {hub} {}", kind.as_str()),
            Decision::Ticket(TicketNews::Closed { hub, kind, .. }) => format!("ticket closed {hub} {}", kind.as_str()),
        }
    }

    /// The incident (hub and kind) a transition is about.
    fn incident(&self) -> Option<(&str, IncidentKind)> {
        match self {
            Decision::Transition(
                Transition::Opened { hub, kind, .. }
                | Transition::Updated { hub, kind, .. }
                | Transition::Recovered { hub, kind, .. },
            ) => Some((hub, *kind)),
            _ => None,
        }
    }
}

/// A decision waiting, and when it was decided.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub decision: Decision,
    pub decided_at: SystemTime,
}

#[derive(Debug, Default)]
pub struct Backlog {
    waiting: VecDeque<Waiting>,
    failures: u32,
    retry_at: Option<Instant>,
    /// The error that first held the oldest waiting decision back.
    first_error: Option<String>,
}

impl Backlog {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Keeps `decision` behind the ones already waiting, merged into the last change of the same incident
    /// when both are changes (or the change follows its still-unstored opening).
    pub fn push(&mut self, decision: Decision, decided_at: SystemTime) {
        if let Decision::Transition(Transition::Updated { symptoms, material, at, .. }) = &decision
            && let Some(incident) = decision.incident()
            && let Some(last) = self.waiting.iter_mut().rev().find(|w| w.decision.incident() == Some(incident))
        {
            match &mut last.decision {
                Decision::Transition(Transition::Updated { symptoms: s, material: m, at: a, .. }) => {
                    (*s, *m, *a) = (symptoms.clone(), *m || *material, *at);
                    return;
                }
                // The opening is stored with what is known by then (its key keeps the opening time).
                Decision::Transition(Transition::Opened { symptoms: s, .. }) => {
                    *s = symptoms.clone();
                    return;
                }
                _ => {}
            }
        }
        self.waiting.push_back(Waiting { decision, decided_at });
    }

    /// When the next retry is due; `None` when nothing waits.
    pub fn retry_at(&self) -> Option<Instant> {
        if self.waiting.is_empty() { None } else { Some(self.retry_at.unwrap_or_else(Instant::now)) }
    }

    /// Whether a retry is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        !self.waiting.is_empty() && self.retry_at.is_none_or(|at| at <= now)
    }

    pub fn front(&self) -> Option<&Waiting> {
        self.waiting.front()
    }

    /// The front decision was stored.
    pub fn stored(&mut self) -> Option<Waiting> {
        let done = self.waiting.pop_front();
        if self.waiting.is_empty() {
            (self.failures, self.retry_at, self.first_error) = (0, None, None);
        }
        done
    }

    /// Storing failed at `now` with `error`: the next retry waits longer.
    pub fn failed(&mut self, error: String, now: Instant) {
        let delay = RETRY_MIN.saturating_mul(1 << self.failures.min(5)).min(RETRY_MAX);
        self.failures += 1;
        self.retry_at = Some(now + delay);
        self.first_error.get_or_insert(error);
    }

    /// The open incidents once every waiting decision is stored, from those open in the store: for a
    /// restarted recorder, so that its detector neither opens one again nor forgets a recovery.
    pub fn open_after<S: Clone>(
        &self,
        mut open: Vec<(HubName, IncidentKind, S)>,
        symptoms_of: impl Fn(&crate::domain::Symptoms) -> S,
    ) -> Vec<(HubName, IncidentKind, S)> {
        for waiting in &self.waiting {
            match &waiting.decision {
                Decision::Transition(Transition::Opened { hub, kind, symptoms, .. })
                | Decision::Transition(Transition::Updated { hub, kind, symptoms, .. }) => {
                    open.retain(|(h, k, _)| !(h == hub && k == kind));
                    open.push((hub.clone(), *kind, symptoms_of(symptoms)));
                }
                Decision::Transition(Transition::Recovered { hub, kind, .. }) => {
                    open.retain(|(h, k, _)| !(h == hub && k == kind));
                }
                _ => {}
            }
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Capability, Stage, Symptoms, UserFailure};

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn symptoms(users: &[&str]) -> Symptoms {
        let mut s = Symptoms::default();
        for user in users {
            let failure = UserFailure { stage: Stage::Progress, reason: "x".into(), since: t(0), last: t(0) };
            s.affected.entry(Capability::Server).or_default().insert(user.to_string(), failure);
        }
        s
    }

    fn transition(kind: &str, users: &[&str], at: u64, material: bool) -> Decision {
        let (hub, k, symptoms, at) = (HubName::new("temple"), IncidentKind::HubAccess, symptoms(users), t(at));
        Decision::Transition(match kind {
            "opened" => Transition::Opened { hub, kind: k, symptoms, at },
            "updated" => Transition::Updated { hub, kind: k, symptoms, material, relapse: None, at },
            _ => Transition::Recovered { hub, kind: k, at },
        })
    }

    #[test]
    fn changes_merge_into_the_waiting_opening_and_order_holds() {
        let mut backlog = Backlog::default();
        backlog.push(transition("opened", &["a", "b"], 1, false), t(1));
        backlog.push(transition("updated", &["a", "b", "c"], 2, true), t(2));
        backlog.push(transition("updated", &["a", "b", "c", "d"], 3, true), t(3));
        assert_eq!(backlog.len(), 1, "merged into the opening");
        let Decision::Transition(Transition::Opened { symptoms, at, .. }) = &backlog.front().unwrap().decision else {
            panic!()
        };
        assert_eq!((symptoms.users().len(), *at), (4, t(1)), "the opening keeps its time (its key)");
        backlog.push(transition("recovered", &[], 4, false), t(4));
        backlog.push(transition("opened", &["e", "f"], 5, false), t(5));
        backlog.push(transition("updated", &["e"], 6, false), t(6));
        backlog.push(transition("updated", &["e", "g"], 7, true), t(7));
        assert_eq!(backlog.len(), 3, "opening, recovery, second opening (with its changes merged)");
        let open = backlog.open_after(Vec::new(), |s| s.users().len());
        assert_eq!(open, vec![(HubName::new("temple"), IncidentKind::HubAccess, 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_and_reset_when_everything_is_stored() {
        let mut backlog = Backlog::default();
        backlog.push(transition("opened", &["a", "b"], 1, false), t(1));
        let now = Instant::now();
        assert!(backlog.due(now));
        for failures in 0..8u32 {
            backlog.failed(format!("disk full {failures}"), now);
        }
        assert!(!backlog.due(now + Duration::from_secs(9)) && backlog.due(now + RETRY_MAX));
        assert_eq!(backlog.first_error(), Some("disk full 0"));
        backlog.stored();
        assert!(backlog.is_empty() && backlog.first_error().is_none());
        backlog.push(transition("recovered", &[], 2, false), t(2));
        assert!(backlog.due(now), "no backoff left over");
    }
}
