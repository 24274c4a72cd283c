//! The daemon's scheduler: per hub, per probe user, per capability `every`, each lane started at a random
//! phase within its interval so hubs do not probe in lock-step, and kept at that phase. A lane never
//! overlaps itself (a round that overruns skips the slots it missed); a global semaphore bounds the rounds
//! running at once; every round has its own deadline, so one slow hub never holds up the others beyond it.
//!
//! It knows lanes, not capabilities: which lanes a probe user has, and what their rounds do, is the probe
//! contract's ([`crate::probe::lane`]).
//!
//! When a round's result flips, the lanes of the same hub and kind run again soon (see [`corroborate`]).

mod corroborate;

use crate::config::SchedulerConfig;
use crate::domain::ProbeOutcome;
use crate::metrics::Metrics;
use crate::probe::lane::{Lane, Slot, next_slot};
use corroborate::{Corroboration, Observation, confirm_delay, observations};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

/// A lane and where it is in its schedule.
struct Scheduled {
    lane: Lane,
    /// A slot of the lane's phase: its rounds are due at `anchor + k * every`.
    anchor: Instant,
    /// When its next round is due; `None` while a round runs.
    due: Option<Instant>,
    /// The slot the running (or last) round was started for.
    started_for: Instant,
    /// The next round was pulled forward to corroborate a flip (a server round then also runs everything
    /// on the server).
    corroborating: bool,
}

impl Scheduled {
    fn every(&self) -> Duration {
        self.lane.probe.every()
    }
}

/// The lanes' next slots, soonest first.
type Due = BinaryHeap<Reverse<(Instant, usize)>>;

/// The rounds running now: bounded by the permits, each known by its lane.
struct Running {
    permits: Arc<Semaphore>,
    running: JoinSet<(usize, Vec<Observation>)>,
    /// Which lane a running round belongs to (to go on with the lane when its round panics).
    lanes_of: HashMap<tokio::task::Id, usize>,
}

impl Running {
    /// On shutdown: running rounds clean up for at most `grace`, then are abandoned.
    async fn drain(mut self, grace: Duration) {
        tracing::info!(running = self.running.len(), grace = %humantime::format_duration(grace), "shutting down: letting running rounds clean up");
        let drained = tokio::time::timeout(grace, async { while self.running.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(left = self.running.len(), "rounds still running after the grace period were abandoned");
            self.running.abort_all();
        }
    }
}

/// Lanes due within this much of each other start together, so that thousands of lanes cost tens of
/// wake-ups a second, not thousands (measured: docs/benchmarks.md). A lane starts at most this early.
const BATCH: Duration = Duration::from_millis(100);

pub struct Scheduler {
    lanes: Vec<Scheduled>,
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
    outcomes: mpsc::Sender<ProbeOutcome>,
}

impl Scheduler {
    /// Schedules `lanes` (see [`crate::probe::lanes`]).
    pub fn new(
        lanes: Vec<Lane>,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
        outcomes: mpsc::Sender<ProbeOutcome>,
    ) -> Self {
        let now = Instant::now();
        let lanes = lanes
            .into_iter()
            .map(|lane| Scheduled { lane, anchor: now, due: None, started_for: now, corroborating: false })
            .collect();
        Scheduler { lanes, config, metrics, outcomes }
    }

    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// Runs until `shutdown` is cancelled; then running rounds are interrupted, clean up, and are awaited
    /// for at most the configured grace period.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut rounds = Running {
            permits: Arc::new(Semaphore::new(self.config.max_concurrent_probes)),
            running: JoinSet::new(),
            lanes_of: HashMap::new(),
        };
        let mut due = self.first_slots();
        let mut corroboration = Corroboration::new(
            self.lanes.iter().map(|s| (s.lane.hub().to_string(), s.lane.probe.capability())).collect(),
            self.lanes.iter().map(|lane| lane.every()).collect(),
        );
        loop {
            let next = due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = rounds.running.join_next_with_id(), if !rounds.running.is_empty() => {
                    let Some((index, observed)) = self.ended(done, &mut rounds) else { continue };
                    let now = Instant::now();
                    let lane = &mut self.lanes[index];
                    let next = after_round(lane.anchor, lane.every(), lane.started_for, now);
                    lane.due = Some(next);
                    due.push(Reverse((next, index)));
                    for peer in corroboration.on_round(index, &observed, now) {
                        self.pull_forward(peer, now, &mut due);
                    }
                }
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.start_due(&mut due, &mut rounds, &shutdown);
                }
            }
        }
        rounds.drain(self.config.shutdown_grace).await;
    }

    /// Every lane's first slot: a random phase within its interval, kept from then on.
    fn first_slots(&mut self) -> Due {
        let start = Instant::now();
        let mut due = BinaryHeap::new();
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            let phase = start + lane.every().mul_f64(fastrand::f64());
            due.push(Reverse((phase, index)));
            (lane.anchor, lane.due) = (phase, Some(phase));
        }
        due
    }

    /// Starts every lane due within [`BATCH`] from now.
    fn start_due(&mut self, due: &mut Due, rounds: &mut Running, shutdown: &CancellationToken) {
        let horizon = Instant::now() + BATCH;
        while let Some(Reverse((at, index))) = due.peek().copied() {
            if at > horizon {
                break;
            }
            due.pop();
            if self.lanes[index].due != Some(at) {
                continue; // superseded: the lane was pulled forward, or is running
            }
            let id = self.start_round(index, at, &mut rounds.running, &rounds.permits, shutdown);
            rounds.lanes_of.insert(id, index);
        }
    }

    /// A round that ended: its lane and what it observed. A round that panicked is counted and logged, and
    /// its lane goes on at its next slot.
    fn ended(
        &self,
        done: Result<(tokio::task::Id, (usize, Vec<Observation>)), tokio::task::JoinError>,
        rounds: &mut Running,
    ) -> Option<(usize, Vec<Observation>)> {
        match done {
            Ok((id, ended)) => {
                rounds.lanes_of.remove(&id);
                Some(ended)
            }
            Err(e) => {
                let index = rounds.lanes_of.remove(&e.id())?;
                let lane = &self.lanes[index].lane;
                self.metrics.count_task_restart("probe_lane");
                tracing::error!(hub = lane.hub(), user = lane.user(), lane = lane.probe.capability().as_str(), error = %e,
                    "a probe round panicked: its lane goes on at its next slot");
                Some((index, Vec::new()))
            }
        }
    }

    /// Runs lane `index` soon, unless it is running (its result is on the way) or due sooner anyway.
    fn pull_forward(&mut self, index: usize, now: Instant, due: &mut Due) {
        let lane = &mut self.lanes[index];
        let at = now + confirm_delay(lane.every());
        if lane.due.is_some_and(|current| at < current) {
            lane.due = Some(at);
            lane.corroborating = true;
            due.push(Reverse((at, index)));
        }
    }

    fn start_round(
        &mut self,
        index: usize,
        was_due: Instant,
        running: &mut JoinSet<(usize, Vec<Observation>)>,
        permits: &Arc<Semaphore>,
        shutdown: &CancellationToken,
    ) -> tokio::task::Id {
        let lane = &mut self.lanes[index];
        let round = lane.lane.round(Slot { due: was_due, corroborating: lane.corroborating }, shutdown.clone());
        // A round may start up to BATCH before its slot and end before it: the next one is after that slot.
        (lane.due, lane.corroborating, lane.started_for) = (None, false, was_due);
        let (permits, metrics, outcomes) = (permits.clone(), self.metrics.clone(), self.outcomes.clone());
        let handle = running.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return (index, Vec::new()) };
            metrics.schedule_lag.observe(was_due.elapsed().as_secs_f64());
            let _in_flight = InFlight::start(&metrics);
            let results = round.await;
            let observed = observations(&results);
            for outcome in results {
                // The receiver lives as long as the daemon; a send error only happens while shutting down.
                let _ = outcomes.send(outcome).await;
            }
            (index, observed)
        });
        handle.id()
    }
}

/// Counts a round in `hubwatch_probes_in_flight` while it lives (also when it panics).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.probes_in_flight.inc();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.probes_in_flight.dec();
    }
}

/// The slot after a round that was started for `started_for` and finished at `finished`: a round may start
/// up to [`BATCH`] early and end before its slot, which must not make it due again for the same slot.
fn after_round(anchor: Instant, every: Duration, started_for: Instant, finished: Instant) -> Instant {
    next_slot(anchor, every, finished.max(started_for))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_keep_their_phase_and_skip_what_was_missed() {
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        assert_eq!(next_slot(t0, every, t0 + Duration::from_secs(5)), t0 + every);
        // A round that took 150 s skips the slots at 60 s and 120 s.
        assert_eq!(next_slot(t0, every, t0 + Duration::from_secs(150)), t0 + Duration::from_secs(180));
        // Exactly on a slot boundary: the next one.
        assert_eq!(next_slot(t0, every, t0 + Duration::from_secs(120)), t0 + Duration::from_secs(180));
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_that_started_early_and_ended_before_its_slot_is_not_run_again_for_it() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        let slot = t0 + Duration::from_secs(20);
        // Started 90 ms early with its batch, done 40 ms before its slot: next is the following slot.
        let finished = slot - Duration::from_millis(40);
        assert_eq!(after_round(t0, every, slot, finished), t0 + Duration::from_secs(30));
        // A round pulled forward off the grid keeps the lane's phase.
        let pulled = t0 + Duration::from_secs(23);
        assert_eq!(after_round(t0, every, pulled, pulled + Duration::from_millis(500)), t0 + Duration::from_secs(30));
        // A round that overran its interval skips the slots it missed.
        assert_eq!(after_round(t0, every, slot, slot + Duration::from_secs(25)), t0 + Duration::from_secs(50));
    }
}

#[cfg(test)]
mod supervision {
    use super::*;
    use crate::config::{HubConfig, ProbeSettings};
    use crate::domain::{Capability, ProbeResult, Secret};
    use crate::probe::HubProber;
    use crate::probe::lane::{Context, Probe};
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;

    /// Logins whose round panics for one user and succeeds for the other.
    #[derive(Clone, Default)]
    struct Flaky {
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Probe for Flaky {
        fn capability(&self) -> Capability {
            Capability::Login
        }

        fn every(&self) -> Duration {
            Duration::from_secs(60)
        }

        fn round(&self, c: Context, _: Slot, _: CancellationToken) -> BoxFuture<'static, Vec<ProbeOutcome>> {
            let calls = self.calls.clone();
            Box::pin(async move {
                calls.lock().unwrap().push(c.user.to_string());
                assert_ne!(&*c.user, "broken", "injected panic in a probe round");
                vec![ProbeOutcome {
                    hub: c.prober.hub.name.clone(),
                    user: c.user.to_string(),
                    capability: Capability::Login,
                    started_at: std::time::SystemTime::now(),
                    duration: Duration::ZERO,
                    result: ProbeResult::Ok,
                    stages: vec![],
                }]
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_whose_round_panics_is_restarted_and_counted_and_the_others_keep_probing() {
        let url = "https://temple.example.org/".parse().unwrap();
        let users = vec!["broken".into(), "fine".into()];
        let hub = HubConfig::found("temple", url, Secret::new("t"), users, ProbeSettings::default());
        let http = crate::http::HttpClient::new().unwrap();
        let redactor = Arc::new(crate::redact::Redactor::new());
        let prober = Arc::new(HubProber::new(Arc::new(hub), http, Duration::from_secs(5), redactor));
        let flaky = Flaky::default();
        let lanes = ["broken", "fine"]
            .map(|user| Lane {
                context: Context { prober: prober.clone(), user: user.into() },
                probe: Box::new(flaky.clone()),
            })
            .into();
        let metrics = Arc::new(Metrics::new());
        let (outcomes_tx, mut outcomes) = mpsc::channel(1024);
        let config = SchedulerConfig {
            max_concurrent_probes: 8,
            shutdown_grace: Duration::from_secs(5),
            cleanup_timeout: Duration::from_secs(5),
        };
        let scheduler = Scheduler::new(lanes, config, metrics.clone(), outcomes_tx);
        let stop = CancellationToken::new();
        let running = tokio::spawn(scheduler.run(stop.clone()));
        // Logins every minute by default: ten minutes of (paused) time.
        tokio::time::sleep(Duration::from_secs(600)).await;
        stop.cancel();
        running.await.unwrap();
        let calls = flaky.calls.lock().unwrap().clone();
        let broken = calls.iter().filter(|u| *u == "broken").count();
        let fine = calls.iter().filter(|u| *u == "fine").count();
        assert!(broken >= 9, "the panicking lane kept its schedule: {broken} rounds");
        assert!(fine >= 9, "the other lane kept probing: {fine} rounds");
        let mut ok = 0;
        while let Ok(outcome) = outcomes.try_recv() {
            assert_eq!(outcome.user, "fine");
            ok += 1;
        }
        assert_eq!(ok, fine);
        let text = metrics.render();
        let restarts = format!(r#"hubwatch_task_restarts_total{{task="probe_lane"}} {broken}"#);
        assert!(text.contains(&restarts), "{restarts} in:\n{text}");
        assert!(text.contains("hubwatch_probes_in_flight 0"), "a panicked round leaves the in-flight gauge");
    }
}
