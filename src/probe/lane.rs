//! The probe contract. A lane is what one probe user does on one hub on its own interval: a [`Probe`] (a
//! capability's round, from that capability's file) with its [`Context`]. The scheduler knows lanes, not
//! capabilities: adding a capability is one file (its round and its `lane` builder) and one line in
//! [`REGISTRY`].

use super::HubProber;
use crate::domain::{Capability, ProbeOutcome};
use crate::sync::lock;
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every kind of lane, each deciding from the hub's config whether a probe user has it.
const REGISTRY: [Builder; 6] = [
    super::login::lane,
    super::server::lane,
    super::sentinel::lane,
    super::dask_gateway::lane,
    super::binder::lane,
    super::first_login::lane,
];

/// A capability's lane for one probe user of a hub, when the hub's config gives them one.
type Builder = fn(&HubProber, &str) -> Option<Box<dyn Probe>>;

/// What a round runs with: its hub's prober and its probe user.
#[derive(Clone)]
pub struct Context {
    pub prober: Arc<HubProber>,
    pub user: Arc<str>,
}

/// The slot a round is started for.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// When the round was due.
    pub due: Instant,
    /// Pulled forward to corroborate a flip: the round runs everything it can.
    pub corroborating: bool,
}

/// One capability's rounds, for one lane.
pub trait Probe: Send + Sync {
    /// What the lane's rounds are about: lanes of one hub with the same capability corroborate each other.
    fn capability(&self) -> Capability;
    /// How often the lane runs.
    fn every(&self) -> Duration;
    /// A round for `slot`, deciding now what it runs; its outcomes (none when cancelled).
    fn round(&self, context: Context, slot: Slot, cancel: CancellationToken) -> BoxFuture<'static, Vec<ProbeOutcome>>;
}

/// A probe user's lane of one capability.
pub struct Lane {
    pub context: Context,
    pub probe: Box<dyn Probe>,
}

impl Lane {
    pub fn hub(&self) -> &str {
        &self.context.prober.hub.name
    }

    pub fn user(&self) -> &str {
        &self.context.user
    }

    pub fn round(&self, slot: Slot, cancel: CancellationToken) -> BoxFuture<'static, Vec<ProbeOutcome>> {
        self.probe.round(self.context.clone(), slot, cancel)
    }
}

/// Every lane of `probers`' hubs: per probe user, each kind of [`REGISTRY`] the hub's config asks for.
pub fn lanes(probers: &[Arc<HubProber>]) -> Vec<Lane> {
    let mut lanes = Vec::new();
    for prober in probers {
        for user in prober.hub.probe_users() {
            let lanes_of_user = REGISTRY.iter().filter_map(|lane| lane(prober, user));
            for probe in lanes_of_user.filter(|probe| prober.hub.user_probes(user, probe.capability())) {
                lanes.push(Lane { context: Context { prober: prober.clone(), user: user.into() }, probe });
            }
        }
    }
    lanes
}

/// The round of a capability that runs the same way in every slot.
pub type PlainRound = fn(Context, CancellationToken) -> BoxFuture<'static, Vec<ProbeOutcome>>;

/// A lane whose rounds need nothing but the context: most capabilities.
pub struct Plain {
    pub capability: Capability,
    pub every: Duration,
    pub round: PlainRound,
}

impl Probe for Plain {
    fn capability(&self) -> Capability {
        self.capability
    }

    fn every(&self) -> Duration {
        self.every
    }

    fn round(&self, context: Context, _: Slot, cancel: CancellationToken) -> BoxFuture<'static, Vec<ProbeOutcome>> {
        (self.round)(context, cancel)
    }
}

/// When a probe that runs within another's round (the kernel and home probes on a server round's server)
/// is next due: at the lane's first round, then on its own interval from there.
#[derive(Debug)]
pub struct Within {
    every: Duration,
    due: Mutex<Option<Instant>>,
}

impl Within {
    pub fn every(every: Duration) -> Within {
        Within { every, due: Mutex::new(None) }
    }

    /// Whether it is due in the round started for the slot `was_due`; if so, its next slot is taken.
    pub fn take(&self, was_due: Instant) -> bool {
        let mut due = lock(&self.due);
        let slot = due.unwrap_or(was_due);
        let taken = slot <= was_due;
        if taken {
            *due = Some(next_slot(slot, self.every, was_due));
        }
        taken
    }
}

/// The first slot `phase + k * every` strictly after `after` (k >= 1 from `phase`).
pub fn next_slot(phase: Instant, every: Duration, after: Instant) -> Instant {
    let mut next = phase + every;
    if next <= after {
        let behind = after.duration_since(next);
        let skipped = (behind.as_secs_f64() / every.as_secs_f64()).floor() as u32 + 1;
        next += every * skipped;
    }
    next
}
