//! What the detector decides: incident kinds, who is affected and how, and the transitions of an incident.

use super::HubName;
use super::probe::{Capability, Stage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    HubAccess,
    DaskGateway,
    /// The hub's BinderHub cannot build or launch.
    Binder,
    /// A peer hubwatch (in another cluster) is down or unhealthy: one "user", the peer; no threshold.
    Monitor,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 4] =
        [IncidentKind::HubAccess, IncidentKind::DaskGateway, IncidentKind::Binder, IncidentKind::Monitor];

    pub fn of(capability: Capability) -> IncidentKind {
        match capability {
            // A first login's failure is a support ticket of its own, never counted in an incident.
            Capability::Login | Capability::Server | Capability::Kernel | Capability::Home | Capability::FirstLogin => {
                IncidentKind::HubAccess
            }
            Capability::DaskGateway => IncidentKind::DaskGateway,
            Capability::Binder => IncidentKind::Binder,
            Capability::Monitor => IncidentKind::Monitor,
        }
    }

    /// The capabilities whose failures make this kind of incident.
    pub fn capabilities(self) -> &'static [Capability] {
        match self {
            IncidentKind::HubAccess => &[Capability::Login, Capability::Server, Capability::Kernel, Capability::Home],
            IncidentKind::DaskGateway => &[Capability::DaskGateway],
            IncidentKind::Binder => &[Capability::Binder],
            IncidentKind::Monitor => &[Capability::Monitor],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::HubAccess => "hub_access",
            IncidentKind::DaskGateway => "dask_gateway",
            IncidentKind::Binder => "binder",
            IncidentKind::Monitor => "monitor",
        }
    }

    /// How many affected users make an incident: a peer's outage is one "user" and always one.
    pub fn threshold(self, min_affected_users: usize) -> usize {
        match self {
            IncidentKind::Monitor => 1,
            _ => min_affected_users,
        }
    }

    pub fn parse(text: &str) -> Option<IncidentKind> {
        IncidentKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// What a support ticket is about: users affected below the incident threshold in one kind, or starts that
/// were slow (never an incident).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketKind {
    HubAccess,
    DaskGateway,
    Binder,
    Monitor,
    SlowStarts,
    /// The first-login check failed.
    FirstLogin,
}

impl TicketKind {
    pub const ALL: [TicketKind; 6] = [
        TicketKind::HubAccess,
        TicketKind::DaskGateway,
        TicketKind::Binder,
        TicketKind::Monitor,
        TicketKind::SlowStarts,
        TicketKind::FirstLogin,
    ];

    pub fn of(kind: IncidentKind) -> TicketKind {
        match kind {
            IncidentKind::HubAccess => TicketKind::HubAccess,
            IncidentKind::DaskGateway => TicketKind::DaskGateway,
            IncidentKind::Binder => TicketKind::Binder,
            IncidentKind::Monitor => TicketKind::Monitor,
        }
    }

    /// The same words as [`IncidentKind::as_str`] for the kinds an incident also has.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketKind::HubAccess => "hub_access",
            TicketKind::DaskGateway => "dask_gateway",
            TicketKind::Binder => "binder",
            TicketKind::Monitor => "monitor",
            TicketKind::SlowStarts => "slow_starts",
            TicketKind::FirstLogin => "first_login",
        }
    }

    pub fn parse(text: &str) -> Option<TicketKind> {
        TicketKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Why one user is affected in one capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFailure {
    pub stage: Stage,
    pub reason: String,
    /// The first failure of the current run of failures.
    pub since: SystemTime,
    /// The latest failure.
    pub last: SystemTime,
}

/// Who is affected, per capability, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Symptoms {
    pub affected: BTreeMap<Capability, BTreeMap<String, UserFailure>>,
}

/// Everyone affected during an incident, per capability (the union of its symptoms over time).
pub type AffectedEver = BTreeMap<Capability, BTreeSet<String>>;

impl Symptoms {
    /// Adds these symptoms' users to `ever`.
    pub fn merge_into(&self, ever: &mut AffectedEver) {
        for (capability, users) in &self.affected {
            if !users.is_empty() {
                ever.entry(*capability).or_default().extend(users.keys().cloned());
            }
        }
    }

    /// Adds these symptoms' failures to `ever`: per user and capability, when their failing began first and
    /// how it failed last.
    pub fn merge_failures_into(&self, ever: &mut Symptoms) {
        for (capability, users) in &self.affected {
            for (user, failure) in users {
                let slot = ever.affected.entry(*capability).or_default().entry(user.clone()).or_insert(failure.clone());
                let since = slot.since.min(failure.since);
                if failure.last >= slot.last {
                    *slot = failure.clone();
                }
                slot.since = since;
            }
        }
    }

    pub fn users(&self) -> BTreeSet<&str> {
        self.affected.values().flat_map(|users| users.keys().map(String::as_str)).collect()
    }

    pub fn capabilities(&self) -> BTreeSet<Capability> {
        self.affected.iter().filter(|(_, users)| !users.is_empty()).map(|(c, _)| *c).collect()
    }

    /// The earliest failure among the affected: the best guess of when the impact started.
    pub fn impact_start(&self) -> Option<SystemTime> {
        self.earliest_failure().map(|(_, _, f)| f.since)
    }

    /// Who failed first, at what, and how.
    pub fn earliest_failure(&self) -> Option<(Capability, &str, &UserFailure)> {
        self.affected
            .iter()
            .flat_map(|(capability, users)| users.iter().map(move |(user, f)| (*capability, user.as_str(), f)))
            .min_by_key(|(_, _, f)| f.since)
    }

    pub fn is_empty(&self) -> bool {
        self.affected.values().all(BTreeMap::is_empty)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Opened {
        hub: HubName,
        kind: IncidentKind,
        symptoms: Symptoms,
        at: SystemTime,
    },
    /// New symptoms; `relapse`: users fail again after this long healthy, inside `keep_open_for` (the same
    /// incident goes on, nothing new is paged for it).
    Updated {
        hub: HubName,
        kind: IncidentKind,
        symptoms: Symptoms,
        material: bool,
        relapse: Option<std::time::Duration>,
        at: SystemTime,
    },
    /// Service is back (since `at`) and stayed back for `keep_open_for`.
    Recovered {
        hub: HubName,
        kind: IncidentKind,
        at: SystemTime,
    },
}

/// Where the news of real users affected comes from; each source's news replaces only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalSource {
    /// Their server pods stuck or crashing.
    Pods,
    /// The hub's and the proxy's logs: errors on their requests, failed spawns.
    HubLogs,
    /// A discovered hub that is gone: its probe users cannot log in.
    HubGone,
    /// A peer hubwatch that does not answer as healthy.
    Peer,
}

impl SignalSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalSource::Pods => "pods",
            SignalSource::HubLogs => "hub_logs",
            SignalSource::HubGone => "hub_gone",
            SignalSource::Peer => "peer",
        }
    }
}

/// The real users affected in one capability of one hub now, as one source sees them, each with the
/// evidence and since when; it replaces that source's previous set for that capability.
#[derive(Debug, Clone, PartialEq)]
pub struct RealUsers {
    pub hub: HubName,
    pub source: SignalSource,
    pub capability: Capability,
    pub users: BTreeMap<String, (String, SystemTime)>,
}

/// A hub's Deployment got a new pod template (an upgrade, a config change): what changed, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubChange {
    pub hub: HubName,
    pub namespace: String,
    pub deployment: String,
    pub generation: i64,
    pub changes: Vec<String>,
}

/// What the hub Deployment watch tells the recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubNews {
    /// A new pod template (a Change Event).
    Changed(HubChange),
    /// Its rollout and silence annotations, whenever listed or changed.
    Deployment(super::DeploymentState),
}
