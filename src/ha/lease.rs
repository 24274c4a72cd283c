//! Leader election on a Kubernetes Lease with client-go's semantics (not only its shape):
//! - a candidate remembers when *it* last saw the lease record change (`observed`), and takes a lease held by
//!   another replica only when that record has not changed for the lease's duration on its own monotonic
//!   clock, so a holder whose wall clock is off (an hour ahead or behind) is judged by what it does, never
//!   by the `renewTime` it writes;
//! - every write carries the `resourceVersion` it read, so two candidates can never both win (409 Conflict);
//! - every call has a deadline; the holder renews every `retry_period` and stops leading at once when no
//!   renewal succeeded within `renew_deadline` (< `lease_duration`), before any other replica may take over;
//! - `leaseTransitions` counts holders: it is the leader's *term*, which fences its mirrored state. Terms never
//!   go backwards: a candidate writes at least its *floor* (one more than the highest term it knows of, from
//!   the mirrored state), so a Lease that was deleted and created again continues from the mirror's term
//!   instead of starting at 0 below it (where every mirror write would be refused). A Lease that vanished
//!   (`kubectl delete lease`) is made again at once by its holder, while another candidate waits one lease
//!   duration from when it last saw the holder renew, as if it were still there: the leader keeps leading
//!   and nobody steps down.
//!
//! kube 5 has no leader election of its own, and kube-lease-manager (0.13) judges expiry by `renewTime`
//! against the local clock, which a skewed clock defeats; hence this small implementation.

use super::HaError;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::future::Future;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What the lease says: who holds it, for how long, and how many holders it had.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderRecord {
    pub holder: String,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<MicroTime>,
    pub renew_time: Option<MicroTime>,
    pub transitions: i32,
}

impl LeaderRecord {
    fn of(lease: &Lease) -> LeaderRecord {
        let spec = lease.spec.clone().unwrap_or_default();
        LeaderRecord {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!self.holder.is_empty()).then(|| self.holder.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.clone(),
            renew_time: self.renew_time.clone(),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// The record as this candidate last saw it change, and when (its own monotonic clock).
#[derive(Debug, Clone)]
pub struct Observed {
    pub record: LeaderRecord,
    pub at: Instant,
}

/// What a candidate does with the lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Another replica holds it and was seen renewing within its duration.
    Wait { holder: String },
    /// Write this record (take the lease, or renew it).
    Write(LeaderRecord),
}

/// client-go's `tryAcquireOrRenew`, without I/O: `current` was read at `now`; the term written is at least
/// `floor`. Updates `observed`.
pub fn decide(
    observed: &mut Option<Observed>,
    current: &LeaderRecord,
    me: &str,
    lease_duration: Duration,
    now: Instant,
    floor: i32,
) -> Decision {
    if observed.as_ref().is_none_or(|o| o.record != *current) {
        *observed = Some(Observed { record: current.clone(), at: now });
    }
    let seen_at = observed.as_ref().map_or(now, |o| o.at);
    let held_by_other = !current.holder.is_empty() && current.holder != me;
    let held_for = Duration::from_secs(u64::try_from(current.lease_duration_seconds).unwrap_or(0));
    if held_by_other && seen_at + held_for > now {
        return Decision::Wait { holder: current.holder.clone() };
    }
    let mine = current.holder == me;
    let wall = micro_now();
    Decision::Write(LeaderRecord {
        holder: me.to_string(),
        lease_duration_seconds: i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX),
        acquire_time: if mine { current.acquire_time.clone() } else { Some(wall.clone()) },
        renew_time: Some(wall),
        transitions: if mine { current.transitions.max(floor) } else { (current.transitions + 1).max(floor) },
    })
}

/// For people and other tools reading the Lease: never compared by hubwatch.
fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::try_from(SystemTime::now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    call_timeout: Duration,
    observed: Option<Observed>,
    /// The lowest term this candidate may write (see the module's notes).
    floor: i32,
    /// The Lease as this candidate last wrote it, while it holds it.
    held: Option<Lease>,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease; its term (the lease's transitions).
    Leading { term: i64 },
    /// Another replica holds it.
    Held { holder: String },
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration, call_timeout: Duration) -> Self {
        Elector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration,
            call_timeout,
            observed: None,
            floor: 0,
            held: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// From now on, the term written is at least `term` (a holder's next renewal moves to it).
    pub fn raise_floor(&mut self, term: i64) {
        self.floor = self.floor.max(i32::try_from(term).unwrap_or(i32::MAX));
    }

    /// One attempt to take or keep the lease, done within `budget` (each call also within the call timeout).
    pub async fn try_acquire_or_renew(&mut self, budget: Duration) -> Result<Attempt, HaError> {
        let started = Instant::now();
        let deadline = started + budget;
        // The holder renews with one call, writing over the Lease it wrote last: a slow API server costs a
        // renewal one call's time, not two. Anyone's write since makes it a 409, and then it reads first.
        if let Some(held) = self.held.take() {
            if let Some(attempt) = self.write(held, started, deadline).await? {
                return Ok(attempt);
            }
        }
        let read = call(deadline.min(started + self.call_timeout), self.api.get_opt(&self.name)).await?;
        let Some(lease) = read else {
            if let Some(holder) = self.vanished_holder(started) {
                return Ok(Attempt::Held { holder });
            }
            return self.create(deadline).await;
        };
        let holder = LeaderRecord::of(&lease).holder;
        Ok(self.write(lease, started, deadline).await?.unwrap_or(Attempt::Held { holder }))
    }

    /// Decides on `lease` (as read, or as this candidate last wrote it) and writes it if this candidate may
    /// take or keep it; `None` on a 409 (someone wrote it since).
    async fn write(
        &mut self,
        mut lease: Lease,
        started: Instant,
        deadline: Instant,
    ) -> Result<Option<Attempt>, HaError> {
        let current = LeaderRecord::of(&lease);
        let decided = decide(&mut self.observed, &current, &self.identity, self.lease_duration, started, self.floor);
        let record = match decided {
            Decision::Wait { holder } => return Ok(Some(Attempt::Held { holder })),
            Decision::Write(record) => record,
        };
        lease.spec = Some(record.to_spec());
        // `lease` carries the resourceVersion it was read (or last written) with: a concurrent writer makes
        // this a 409.
        let limit = deadline.min(Instant::now() + self.call_timeout);
        match call(limit, self.api.replace(&self.name, &PostParams::default(), &lease)).await {
            // 409: someone wrote it since; 404: it was deleted since (this candidate's copy was the last).
            Err(HaError::Api { source: kube::Error::Api(status), .. }) if [404, 409].contains(&status.code) => Ok(None),
            Err(e) => Err(e),
            Ok(written) => {
                let term = i64::from(record.transitions);
                self.observed = Some(Observed { record, at: started });
                self.held = Some(written);
                Ok(Some(Attempt::Leading { term }))
            }
        }
    }

    /// When the Lease is gone: the other replica last seen holding it, while its lease duration since it was
    /// last seen renewing has not passed (it may be alive, and making the Lease again).
    fn vanished_holder(&self, now: Instant) -> Option<String> {
        let seen = self.observed.as_ref()?;
        let held_for = Duration::from_secs(u64::try_from(seen.record.lease_duration_seconds).unwrap_or(0));
        let other = !seen.record.holder.is_empty() && seen.record.holder != self.identity;
        (other && seen.at + held_for > now).then(|| seen.record.holder.clone())
    }

    async fn create(&mut self, deadline: Instant) -> Result<Attempt, HaError> {
        let started = Instant::now();
        let Decision::Write(record) =
            decide(&mut None, &LeaderRecord::default(), &self.identity, self.lease_duration, started, self.floor)
        else {
            unreachable!("an empty lease is always free");
        };
        // A Lease made afresh (the first, or one deleted) starts at the floor, not at 0 below the mirror's term.
        let record = LeaderRecord { transitions: self.floor, ..record };
        let lease = Lease {
            metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
            spec: Some(record.to_spec()),
        };
        let limit = deadline.min(started + self.call_timeout);
        match call(limit, self.api.create(&PostParams::default(), &lease)).await {
            Err(HaError::Api { source: kube::Error::Api(status), .. }) if status.code == 409 => {
                Ok(Attempt::Held { holder: String::new() })
            }
            Err(e) => Err(e),
            Ok(created) => {
                self.held = Some(created);
                let term = i64::from(record.transitions);
                self.observed = Some(Observed { record, at: started });
                Ok(Attempt::Leading { term })
            }
        }
    }

    /// Gives the lease up (a graceful stop), so a standby takes over at once instead of after its duration.
    pub async fn release(&mut self) -> Result<(), HaError> {
        self.held = None;
        let Some(mut lease) = call(Instant::now() + self.call_timeout, self.api.get_opt(&self.name)).await? else {
            return Ok(());
        };
        let current = LeaderRecord::of(&lease);
        if current.holder != self.identity {
            return Ok(());
        }
        lease.spec = Some(LeaderRecord { holder: String::new(), renew_time: Some(micro_now()), ..current }.to_spec());
        call(Instant::now() + self.call_timeout, self.api.replace(&self.name, &PostParams::default(), &lease)).await?;
        Ok(())
    }
}

/// A Kubernetes call on the lease that must be done by `deadline`.
async fn call<T>(deadline: Instant, request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, HaError> {
    match tokio::time::timeout_at(deadline, request).await {
        Err(_) => Err(HaError::Timeout { what: "lease" }),
        Ok(result) => result.map_err(|source| HaError::Api { what: "lease", source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn held_by(holder: &str, renewed: &str, transitions: i32) -> LeaderRecord {
        let at = |text: &str| Some(MicroTime(text.parse().unwrap()));
        LeaderRecord {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: at("2026-11-30T10:00:00Z"),
            renew_time: at(renewed),
            transitions,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_is_judged_by_when_this_candidate_saw_the_record_change_not_by_renew_time() {
        let mut observed = None;
        // The holder's clock is an hour ahead: its renewTime lies in the future. A naive check would wait an
        // hour after it died; this one waits one lease duration of seeing no change.
        let ahead = held_by("a", "2099-01-01T00:00:00Z", 3);
        assert_eq!(decide(&mut observed, &ahead, "b", LEASE, Instant::now(), 0), Decision::Wait { holder: "a".into() });
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(matches!(decide(&mut observed, &ahead, "b", LEASE, Instant::now(), 0), Decision::Wait { .. }));
        tokio::time::advance(Duration::from_secs(2)).await;
        let Decision::Write(taken) = decide(&mut observed, &ahead, "b", LEASE, Instant::now(), 0) else { panic!() };
        assert_eq!((taken.holder.as_str(), taken.transitions), ("b", 4), "a new holder: a new term");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_whose_clock_is_behind_keeps_its_lease_while_it_renews() {
        let mut observed = None;
        // An hour behind: a naive check would find it expired at every look and take it while it still leads.
        for minute in 0..5 {
            let behind = held_by("a", &format!("2000-01-01T00:{minute:02}:00Z"), 3);
            assert!(matches!(decide(&mut observed, &behind, "b", LEASE, Instant::now(), 0), Decision::Wait { .. }));
            tokio::time::advance(Duration::from_secs(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_renews_its_own_term_and_a_released_lease_is_taken_at_once() {
        let mut observed = None;
        let mine = held_by("a", "2026-11-30T10:00:00Z", 7);
        let Decision::Write(renewed) = decide(&mut observed, &mine, "a", LEASE, Instant::now(), 0) else { panic!() };
        assert_eq!(
            (renewed.transitions, &renewed.acquire_time),
            (7, &mine.acquire_time),
            "same term, same acquisition"
        );
        let released = LeaderRecord { holder: String::new(), ..mine };
        let Decision::Write(taken) = decide(&mut None, &released, "b", LEASE, Instant::now(), 0) else { panic!() };
        assert_eq!((taken.holder.as_str(), taken.transitions), ("b", 8));
    }

    #[tokio::test(start_paused = true)]
    async fn terms_never_go_backwards_below_the_floor() {
        // A Lease deleted and made again reads as empty (term 0) while the mirror holds term 6.
        let Decision::Write(taken) = decide(&mut None, &LeaderRecord::default(), "b", LEASE, Instant::now(), 7) else {
            panic!()
        };
        assert_eq!(taken.transitions, 7, "continues from the mirror's term");
        // The holder learns of a higher term (its takeover read the mirror): its next renewal moves to it.
        let mine = held_by("a", "2026-11-30T10:00:00Z", 2);
        let Decision::Write(renewed) = decide(&mut None, &mine, "a", LEASE, Instant::now(), 5) else { panic!() };
        assert_eq!(renewed.transitions, 5);
        let Decision::Write(kept) = decide(&mut None, &mine, "a", LEASE, Instant::now(), 0) else { panic!() };
        assert_eq!(kept.transitions, 2, "a low floor changes nothing");
    }
}
