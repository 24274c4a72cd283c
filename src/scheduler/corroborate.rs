//! Corroboration: when a lane's result flips (a capability fails that worked, or works again after failing),
//! the lanes of the same hub and kind — the other probe users, and this one again — run soon instead of at
//! their next slot; when it works again, so do the hub's other lanes that are failing (a frozen proxy fails
//! login and server alike, and recovery waits for both). An outage needs `min_affected_users` users to be seen failing, and its end needs
//! `recovery_successes` successes per user; waiting a whole interval for each of those observations is what
//! made paging and resolving slow (docs/benchmarks.md, detection latency). A lane is pulled forward at most
//! once per its interval to confirm its own flip and once to corroborate a peer's, so a flapping hub costs
//! at most three times the usual probes.

use crate::domain::{Capability, FailureCause, ProbeOutcome, ProbeResult};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// What one round said about one capability: `Some(true)` failed by the hub's fault, `Some(false)` worked,
/// `None` no evidence (blocked, or hubwatch's own fault).
pub(super) type Observation = (Capability, Option<bool>);

pub(super) fn observations(results: &[ProbeOutcome]) -> Vec<Observation> {
    results
        .iter()
        .map(|outcome| {
            let failed = match &outcome.result {
                ProbeResult::Ok | ProbeResult::Slow(_) => Some(false),
                ProbeResult::Failed(failure) if failure.cause == FailureCause::Hub => Some(true),
                ProbeResult::Failed(_) | ProbeResult::Blocked { .. } => None,
            };
            (outcome.capability, failed)
        })
        .collect()
}

/// How soon a pulled-forward lane runs: a quarter of its interval, at most 5 s — long enough for the hub to
/// settle after the round that flipped, short against any interval an operator would choose.
pub(super) fn confirm_delay(every: Duration) -> Duration {
    (every / 4).min(Duration::from_secs(5))
}

pub(super) struct Corroboration {
    /// Per lane, the lanes of the same hub and kind (itself included).
    peers: Vec<Vec<usize>>,
    /// Per lane, every lane of the same hub (itself included).
    hub_lanes: Vec<Vec<usize>>,
    every: Vec<Duration>,
    last_failed: HashMap<(usize, Capability), bool>,
    /// When each lane was last pulled forward to confirm its own flip, and to corroborate a peer's.
    confirmed_at: Vec<Option<Instant>>,
    corroborated_at: Vec<Option<Instant>>,
}

impl Corroboration {
    /// `groups[i]` is lane `i`'s hub and kind; lanes with equal pairs corroborate each other.
    pub(super) fn new<H, K>(groups: Vec<(H, K)>, every: Vec<Duration>) -> Self
    where
        H: Eq + std::hash::Hash + Clone,
        K: Eq + std::hash::Hash + Clone,
    {
        fn members<T: Eq + std::hash::Hash>(keys: &[T]) -> Vec<Vec<usize>> {
            let mut by_key: HashMap<&T, Vec<usize>> = HashMap::new();
            for (index, key) in keys.iter().enumerate() {
                by_key.entry(key).or_default().push(index);
            }
            keys.iter().map(|key| by_key[key].clone()).collect()
        }
        let hubs: Vec<H> = groups.iter().map(|(hub, _)| hub.clone()).collect();
        let lanes = groups.len();
        Corroboration {
            peers: members(&groups),
            hub_lanes: members(&hubs),
            every,
            last_failed: HashMap::new(),
            confirmed_at: vec![None; lanes],
            corroborated_at: vec![None; lanes],
        }
    }

    /// Records lane `index`'s round and returns the lanes to pull forward (possibly none).
    pub(super) fn on_round(&mut self, index: usize, observed: &[Observation], now: Instant) -> Vec<usize> {
        let (mut flipped, mut recovered) = (false, false);
        for &(capability, failed) in observed {
            let Some(failed) = failed else { continue };
            let before = self.last_failed.insert((index, capability), failed);
            // A first failure counts as a flip (hubwatch may start during an outage); a first success does not.
            let flip = match before {
                None => failed,
                Some(before) => before != failed,
            };
            flipped |= flip;
            recovered |= flip && !failed;
        }
        if !flipped {
            return Vec::new();
        }
        let failing = |lane: usize| self.last_failed.iter().any(|(&(l, _), &failed)| l == lane && failed);
        let mut candidates = self.peers[index].clone();
        if recovered {
            let others: Vec<usize> = self.hub_lanes[index]
                .iter()
                .copied()
                .filter(|lane| !candidates.contains(lane) && failing(*lane))
                .collect();
            candidates.extend(others);
        }
        let mut pulled = Vec::new();
        for peer in candidates {
            let last = if peer == index { &mut self.confirmed_at[peer] } else { &mut self.corroborated_at[peer] };
            if last.is_none_or(|at| now.duration_since(at) >= self.every[peer]) {
                *last = Some(now);
                pulled.push(peer);
            }
        }
        pulled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(600);

    fn two_hubs_two_users() -> Corroboration {
        // Lanes 0 and 1: hub a's server lanes; lane 2: hub b's server lane; lane 3: hub a's login lane.
        Corroboration::new(vec![("a", "server"), ("a", "server"), ("b", "server"), ("a", "login")], vec![EVERY; 4])
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_pulls_forward_the_same_hub_and_kind_only() {
        let mut corroboration = two_hubs_two_users();
        let now = Instant::now();
        let ok = [(Capability::Server, Some(false)), (Capability::Kernel, Some(false))];
        assert!(corroboration.on_round(0, &ok, now).is_empty(), "a first success is not news");
        let failed = [(Capability::Server, Some(true)), (Capability::Kernel, None)];
        assert_eq!(corroboration.on_round(0, &failed, now), vec![0, 1]);
        // Still failing: no news, nothing pulled.
        assert!(corroboration.on_round(0, &failed, now + Duration::from_secs(5)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn each_lane_confirms_its_own_flip_and_a_peers_at_most_once_per_interval() {
        let mut corroboration = two_hubs_two_users();
        let t0 = Instant::now();
        let failed = [(Capability::Server, Some(true))];
        let ok = [(Capability::Server, Some(false))];
        assert_eq!(corroboration.on_round(1, &failed, t0), vec![0, 1]);
        // Lane 0 fails too (it was pulled to corroborate): it confirms its own flip, and lane 1 corroborates.
        assert_eq!(corroboration.on_round(0, &failed, t0 + Duration::from_secs(5)), vec![0, 1]);
        // Works again a minute later: a flip, but both lanes used both kinds of pull less than an interval ago.
        assert!(corroboration.on_round(1, &ok, t0 + Duration::from_secs(60)).is_empty());
        assert!(corroboration.on_round(0, &ok, t0 + Duration::from_secs(61)).is_empty());
        // A flip after the interval has passed pulls them forward again.
        assert_eq!(corroboration.on_round(1, &failed, t0 + EVERY), vec![0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovery_also_pulls_the_hubs_other_failing_lanes() {
        let mut corroboration = two_hubs_two_users();
        let t0 = Instant::now();
        // A frozen proxy: hub a's login lane and one server lane fail; hub b's server lane fails too.
        corroboration.on_round(3, &[(Capability::Login, Some(true))], t0);
        corroboration.on_round(0, &[(Capability::Server, Some(true))], t0);
        corroboration.on_round(2, &[(Capability::Server, Some(true))], t0);
        // An interval later the login works again: the failing server lane of hub a comes along, not hub b's.
        let later = t0 + EVERY;
        assert_eq!(corroboration.on_round(3, &[(Capability::Login, Some(false))], later), vec![3, 0]);
        // A new failure pulls only the same kind.
        let much_later = later + EVERY;
        assert_eq!(corroboration.on_round(3, &[(Capability::Login, Some(true))], much_later), vec![3]);
    }

    #[tokio::test(start_paused = true)]
    async fn blocked_and_monitor_faults_are_not_evidence() {
        let mut corroboration = two_hubs_two_users();
        let now = Instant::now();
        assert!(corroboration.on_round(2, &[(Capability::Server, None)], now).is_empty());
        assert_eq!(corroboration.on_round(2, &[(Capability::Server, Some(true))], now), vec![2]);
    }

    #[test]
    fn the_confirmation_comes_soon_but_not_at_once() {
        assert_eq!(confirm_delay(Duration::from_secs(10)), Duration::from_millis(2500));
        assert_eq!(confirm_delay(Duration::from_secs(600)), Duration::from_secs(5));
    }
}
