//! The detector: from probe outcomes (and, later, real-user signals) it keeps, per hub and incident kind,
//! the users affected, and says when an incident opens, changes and recovers. Pure: no I/O, no clock reads;
//! time is an argument.
//!
//! Rules (docs/incidents-and-paging.md):
//! - A user is *affected* in a capability when their latest attempt at it failed (a hub failure, not a
//!   monitor fault; blocked attempts are not attempts) and that failure is within `window`. Attempts are
//!   kept per vantage ([`Vantage`]): Dask from inside a user's server and Dask from hubwatch are two records,
//!   and a success of one never clears the other's failure; a reported user is seen again only where their
//!   failure was met (after a restart too).
//! - `hub_access` is the union of users affected in login, server and kernel; `dask_gateway` stands alone.
//! - An incident opens when at least `min_affected_users` distinct users are affected. Fewer is a support
//!   ticket: visible, never paged.
//! - While open, a change of the affected users or of the failing capabilities is an update; it is
//!   *material* when a user or a capability is added.
//! - Real users count too: a Kubernetes signal (their server pod stuck or crashing) makes a user affected in
//!   that capability for as long as the evidence holds (no window: the pod's state is current).
//! - It recovers when nobody is affected any more — no probe failure within the window and no real-user
//!   signal — and every probe user's last `recovery_successes` attempts at each capability of the kind
//!   that failed succeeded (a failure older than the window no longer holds it open; a capability that
//!   never failed holds nothing open).
//!   A capability that alternates fail/ok never has two successes in a row, so it stays one incident.
//! - And it stays recovered for `keep_open_for` (Prometheus' `keep_firing_for`): a failure inside that time
//!   continues the same incident (an update that says so, never a second page). The recovery is dated when
//!   service came back; it is decided `keep_open_for` later.
//! - The first-login check (a fresh user, once a day) is one check, not a user: its failure is a support
//!   ticket of its own until it passes, never counted toward an incident.
//! - A probe user whose latest server start was slow (it started, after `slow_after`) within `window` is
//!   *slow*; at least `min_affected_users` slow users are a support ticket of their own, never an incident.

use crate::domain::lookup::{NameMap, named, paired};
use crate::domain::{
    Capability, HubName, IncidentKind, ProbeOutcome, ProbeResult, SignalSource, Stage, Symptoms, Transition,
    UserFailure, Vantage,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy)]
pub struct DetectorSettings {
    pub min_affected_users: usize,
    pub window: Duration,
    pub recovery_successes: u32,
    pub keep_open_for: Duration,
}

/// The latest attempts of one user at one capability.
#[derive(Debug, Clone, Default)]
struct Attempts {
    /// The current run of failures, if the latest attempt failed (boxed: most users never fail, and each
    /// of the tens of thousands of records stays 16 bytes).
    failure: Option<Box<UserFailure>>,
    /// Successes in a row since the last failure.
    ok_streak: u32,
    /// Whether it ever failed: one that never did needs no run of successes to count as recovered (a
    /// capability probed rarely, such as home every 10 minutes, would otherwise hold an incident open).
    has_failed: bool,
}

/// Which attempts a record holds: one capability, probed from one vantage.
type AttemptsOf = (Capability, Vantage);

#[derive(Debug, Default)]
struct KindState {
    /// Each probe user's attempts, by capability and where they ran from (a few each: a vector).
    attempts: NameMap<String, Vec<(AttemptsOf, Attempts)>>,
    /// Real users affected now, from signals (not windowed: they hold while the evidence does), per source:
    /// each source speaks only for itself.
    signals: NameMap<(SignalSource, String, Capability), UserFailure>,
    /// Users who had a signal while the incident was open: a cleared signal is their recovery.
    signalled: BTreeSet<(String, Capability)>,
    /// While an incident is open: the symptoms last reported, and since when this detector has watched it
    /// (its opening, or its resumption after a restart).
    open: Option<(Symptoms, SystemTime)>,
    /// While an open incident meets the recovery rule: since when (it recovers `keep_open_for` later).
    healthy_since: Option<SystemTime>,
}

impl KindState {
    /// `user`'s records of `capability` (one per vantage it was probed from).
    fn attempts(&self, user: &str, capability: Capability) -> impl Iterator<Item = &Attempts> {
        self.attempts.get(user).into_iter().flatten().filter(move |((c, _), _)| *c == capability).map(|(_, a)| a)
    }

    /// `user`'s record of `capability` from `vantage`, if they have made an attempt there.
    fn attempt(&self, user: &str, capability: Capability, vantage: Vantage) -> Option<&Attempts> {
        self.attempts.get(user)?.iter().find(|(of, _)| *of == (capability, vantage)).map(|(_, a)| a)
    }

    /// `user`'s record of `capability` from `vantage`, made on their first attempt (the name is copied only
    /// then).
    fn attempts_mut(&mut self, user: &str, capability: Capability, vantage: Vantage) -> &mut Attempts {
        paired(named(&mut self.attempts, user), (capability, vantage))
    }

    fn every_attempts(&self) -> impl Iterator<Item = (&String, Capability, &Attempts)> {
        self.attempts.iter().flat_map(|(user, records)| records.iter().map(move |((c, _), a)| (user, *c, a)))
    }
}

/// Per hub and incident kind, who is affected; emits transitions.
#[derive(Debug)]
pub struct Detector {
    settings: DetectorSettings,
    /// Per hub, each incident kind's state (a few kinds: a vector). Keyed by the hub's shared name: an
    /// observation copies no name unless the user is new.
    state: NameMap<HubName, Vec<(IncidentKind, KindState)>>,
    /// Per hub, the probe users whose latest server start was slow, and when it ended.
    slow: NameMap<HubName, BTreeMap<String, SystemTime>>,
    /// Per hub, how its latest first-login check failed (none: it passed, or never ran).
    first_login: NameMap<HubName, UserFailure>,
}

impl Detector {
    pub fn new(settings: DetectorSettings) -> Self {
        Detector { settings, state: NameMap::default(), slow: NameMap::default(), first_login: NameMap::default() }
    }

    /// After a restart (at `now`): an incident the store says is open stays open until the recovery rule is
    /// met by attempts seen after the restart.
    pub fn resume(&mut self, hub: &HubName, kind: IncidentKind, symptoms: Symptoms, now: SystemTime) {
        self.kind_state_mut(hub, kind).open = Some((symptoms, now));
    }

    fn kind_state(&self, hub: &HubName, kind: IncidentKind) -> Option<&KindState> {
        self.state.get(hub)?.iter().find(|(k, _)| *k == kind).map(|(_, s)| s)
    }

    /// `hub`'s state of `kind`, made on first use.
    fn kind_state_mut(&mut self, hub: &HubName, kind: IncidentKind) -> &mut KindState {
        paired(named(&mut self.state, hub), kind)
    }

    /// Takes in one outcome, observed at `now` (the attempt's end), and evaluates its hub and kind.
    pub fn observe(&mut self, outcome: &ProbeOutcome, now: SystemTime) -> Vec<Transition> {
        if outcome.capability == Capability::FirstLogin {
            self.observe_first_login(outcome, now);
            return Vec::new();
        }
        self.observe_start(outcome, now);
        let kind = IncidentKind::of(outcome.capability);
        let state = self.kind_state_mut(&outcome.hub, kind);
        let attempts = state.attempts_mut(&outcome.user, outcome.capability, outcome.vantage());
        match &outcome.result {
            ProbeResult::Ok | ProbeResult::Slow(_) => {
                attempts.failure = None;
                attempts.ok_streak = attempts.ok_streak.saturating_add(1);
            }
            failed if failed.is_user_affecting() => {
                let ProbeResult::Failed(f) = failed else { unreachable!("is_user_affecting means Failed") };
                let since = attempts.failure.as_ref().map_or(now, |previous| previous.since);
                let failure = UserFailure { stage: f.stage, reason: f.reason.clone(), since, last: now };
                attempts.failure = Some(Box::new(failure));
                attempts.ok_streak = 0;
                attempts.has_failed = true;
            }
            // Blocked attempts were not tried, and monitor faults say nothing about users.
            _ => return Vec::new(),
        }
        self.evaluate(&outcome.hub, kind, now).into_iter().collect()
    }

    /// Replaces the real users `source` says are affected in `capability` of `hub`, and evaluates.
    /// `users` maps each user to their evidence: `since` when it began, `reason` what the cluster shows.
    pub fn signals(
        &mut self,
        hub: &HubName,
        source: SignalSource,
        capability: Capability,
        users: BTreeMap<String, (String, SystemTime)>,
        now: SystemTime,
    ) -> Vec<Transition> {
        let kind = IncidentKind::of(capability);
        let state = self.kind_state_mut(hub, kind);
        state.signals.retain(|(s, _, c), _| (*s, *c) != (source, capability));
        // The watcher speaks for every real user of the capability: those an open incident reported (also one
        // resumed after a restart) who are not probe users recover when their signal is gone.
        if let Some((reported, _)) = &state.open {
            for user in reported.affected.get(&capability).into_iter().flat_map(BTreeMap::keys) {
                if state.attempts(user, capability).next().is_none() {
                    state.signalled.insert((user.clone(), capability));
                }
            }
        }
        for (user, (reason, since)) in users {
            if state.open.is_some() {
                state.signalled.insert((user.clone(), capability));
            }
            let failure = UserFailure { stage: Stage::UserPod, reason, since, last: now };
            state.signals.insert((source, user, capability), failure);
        }
        self.evaluate(hub, kind, now).into_iter().collect()
    }

    /// Re-evaluates everything at `now`, so failures older than the window stop counting.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Transition> {
        let keys: Vec<(HubName, IncidentKind)> =
            self.state.iter().flat_map(|(hub, kinds)| kinds.iter().map(|(kind, _)| (hub.clone(), *kind))).collect();
        keys.into_iter().filter_map(|(hub, kind)| self.evaluate(&hub, kind, now)).collect()
    }

    /// The users affected now, per capability (also below the threshold: a support ticket).
    pub fn symptoms(&self, hub: &HubName, kind: IncidentKind, now: SystemTime) -> Symptoms {
        self.kind_state(hub, kind).map(|s| self.current(s, now)).unwrap_or_default()
    }

    /// The probe users whose server starts are slow (within the window), when there are enough of them to be
    /// a support ticket; empty otherwise.
    pub fn slow_starts(&self, hub: &HubName, now: SystemTime) -> Vec<String> {
        let slow: Vec<String> = self
            .slow
            .get(hub)
            .into_iter()
            .flatten()
            .filter(|(_, at)| self.within_window(**at, now))
            .map(|(user, _)| user.clone())
            .collect();
        if slow.len() >= self.settings.min_affected_users { slow } else { Vec::new() }
    }

    /// A server start that was slow marks its user slow; one in time, or a failure (which is worse, and
    /// counted as such), clears it.
    fn observe_start(&mut self, outcome: &ProbeOutcome, now: SystemTime) {
        if outcome.capability != Capability::Server {
            return;
        }
        match &outcome.result {
            ProbeResult::Slow(_) => {
                self.slow.entry(outcome.hub.clone()).or_default().insert(outcome.user.clone(), now);
            }
            ProbeResult::Ok | ProbeResult::Failed(_) => {
                if let Some(slow) = self.slow.get_mut(&outcome.hub) {
                    slow.remove(&outcome.user);
                }
            }
            ProbeResult::Blocked { .. } => {}
        }
    }

    /// How the hub's latest first-login check failed, if it did.
    pub fn first_login_failure(&self, hub: &HubName) -> Option<&UserFailure> {
        self.first_login.get(hub)
    }

    /// A first login is one check, not a user among users: its failure is a support ticket of its own.
    fn observe_first_login(&mut self, outcome: &ProbeOutcome, now: SystemTime) {
        match &outcome.result {
            ProbeResult::Failed(f) if outcome.result.is_user_affecting() => {
                let since = self.first_login.get(&outcome.hub).map_or(now, |previous| previous.since);
                let failure = UserFailure { stage: f.stage, reason: f.reason.clone(), since, last: now };
                self.first_login.insert(outcome.hub.clone(), failure);
            }
            result if result.is_success() => {
                self.first_login.remove(&outcome.hub);
            }
            _ => {}
        }
    }

    pub fn is_open(&self, hub: &HubName, kind: IncidentKind) -> bool {
        self.kind_state(hub, kind).is_some_and(|s| s.open.is_some())
    }

    /// Nothing to show for `hub` and `kind`: no incident open, no signal, no failure on record (however old).
    /// Then no outcome or tick can change what the observers show until something fails.
    pub fn is_quiet(&self, hub: &HubName, kind: IncidentKind) -> bool {
        self.kind_state(hub, kind).is_none_or(|s| {
            s.open.is_none() && s.signals.is_empty() && s.every_attempts().all(|(_, _, a)| a.failure.is_none())
        })
    }

    fn current(&self, state: &KindState, now: SystemTime) -> Symptoms {
        let mut symptoms = Symptoms::default();
        // A probe's own failure (below) says more than a pod's state, so it takes the place of a signal.
        for ((_, user, capability), failure) in &state.signals {
            symptoms.affected.entry(*capability).or_default().insert(user.clone(), failure.clone());
        }
        for (user, capability, attempts) in state.every_attempts() {
            if let Some(failure) = &attempts.failure
                && self.within_window(failure.last, now)
            {
                symptoms.affected.entry(capability).or_default().insert(user.clone(), (**failure).clone());
            }
        }
        symptoms
    }

    fn within_window(&self, at: SystemTime, now: SystemTime) -> bool {
        now.duration_since(at).map_or(true, |age| age <= self.settings.window)
    }

    /// Recovered: nobody is affected, every attempt record shows enough successes (or a failure older than
    /// the window), and every user the incident reported has been seen again since it was watched, unless a
    /// whole window has passed without a sign of them (a user no longer probed).
    fn recovered(&self, state: &KindState, current: &Symptoms, now: SystemTime) -> bool {
        let Some((reported, watched_since)) = &state.open else { return false };
        let settled = |a: &Attempts| match &a.failure {
            Some(failure) => !self.within_window(failure.last, now),
            None => !a.has_failed || a.ok_streak >= self.settings.recovery_successes,
        };
        // Seen again where the failure was met: after a restart, the gateway answering hubwatch is no sign
        // that a user's server reaches it.
        let seen_again = reported.affected.iter().all(|(capability, users)| {
            users.iter().all(|(user, failure)| {
                if state.attempt(user, *capability, Vantage::of(*capability, failure.stage)).is_some() {
                    state.attempts(user, *capability).all(settled)
                } else if state.signalled.contains(&(user.clone(), *capability)) {
                    // A real user (no probe attempts): their signal has cleared.
                    !state.signals.keys().any(|(_, u, c)| (u, c) == (user, capability))
                } else {
                    !self.within_window(*watched_since, now)
                }
            })
        });
        // An incident known only by its key (adopted from PagerDuty) reported nobody: it needs a sign that the
        // hub works (a probe user's run of successes), or a whole window without any sign of trouble.
        let evidence = !reported.is_empty()
            || state
                .every_attempts()
                .any(|(_, _, a)| a.failure.is_none() && a.ok_streak >= self.settings.recovery_successes)
            || !self.within_window(*watched_since, now);
        current.is_empty() && seen_again && evidence && state.every_attempts().all(|(_, _, a)| settled(a))
    }

    fn evaluate(&mut self, hub: &HubName, kind: IncidentKind, now: SystemTime) -> Option<Transition> {
        let state = self.kind_state(hub, kind)?;
        let current = self.current(state, now);
        if state.open.is_none() && current.is_empty() {
            return None; // the common case, decided without a copy of anything
        }
        match &state.open {
            None if current.users().len() >= kind.threshold(self.settings.min_affected_users) => {
                let state = self.kind_state_mut(hub, kind);
                state.open = Some((current.clone(), now));
                state.healthy_since = None;
                state.signalled = state.signals.keys().map(|(_, u, c)| (u.clone(), *c)).collect();
                Some(Transition::Opened { hub: hub.clone(), kind, symptoms: current, at: now })
            }
            None => None,
            Some(_) if self.recovered(state, &current, now) => {
                let keep_open_for = self.settings.keep_open_for;
                let state = self.kind_state_mut(hub, kind);
                let since = *state.healthy_since.get_or_insert(now);
                if now.duration_since(since).unwrap_or_default() < keep_open_for {
                    return None;
                }
                (state.open, state.healthy_since) = (None, None);
                state.signalled.clear();
                Some(Transition::Recovered { hub: hub.clone(), kind, at: since })
            }
            Some((reported, watched_since)) => {
                let watched_since = *watched_since;
                let same_people =
                    reported.users() == current.users() && reported.capabilities() == current.capabilities();
                let material = !current.users().is_subset(&reported.users())
                    || !current.capabilities().is_subset(&reported.capabilities());
                let state = self.kind_state_mut(hub, kind);
                // Healthy no more: a relapse when someone fails again (not merely a success still missing).
                let relapse = match state.healthy_since.take() {
                    Some(since) if !current.is_empty() => Some(now.duration_since(since).unwrap_or_default()),
                    _ => None,
                };
                if current.is_empty() || (same_people && relapse.is_none()) {
                    return None;
                }
                state.open = Some((current.clone(), watched_since));
                Some(Transition::Updated { hub: hub.clone(), kind, symptoms: current, material, relapse, at: now })
            }
        }
    }
}

#[cfg(test)]
mod tests;
