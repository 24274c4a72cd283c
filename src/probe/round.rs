//! The contract every capability's round follows, in one place: its steps run under the probe's own deadline
//! (with a backstop should a step ignore it) and stop when the round is cancelled; its clean-up (delete the
//! kernel, stop the server, delete the cluster) runs whatever happened, under its own deadline; a failed step
//! is the attempt's failure, else a failed clean-up is; a capability whose earlier step failed is `blocked`.
//! Each capability's file (`login.rs`, `server.rs`, `kernel.rs`, `dask_gateway.rs`) writes its steps against
//! [`Round`].

use super::{Deadline, Stages};
use crate::config::HubConfig;
use crate::domain::wording::in_profile;
use crate::domain::{Capability, ProbeOutcome, ProbeResult, Stage, StepFailure};
use crate::http::HttpClient;
use crate::redact::Redactor;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;
use tokio::time::{Instant, Timeout, timeout_at};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Grace past a probe's deadline before the backstop timeout fires (every request already has the deadline).
const BACKSTOP: Duration = Duration::from_secs(1);

/// Probes one hub: one per hub, shared by all its probe users' rounds.
pub struct HubProber {
    pub hub: Arc<HubConfig>,
    pub(super) http: HttpClient,
    pub(super) cleanup_timeout: Duration,
    /// What the hub says goes through it before it becomes an outcome.
    redactor: Arc<Redactor>,
    /// Each probe user's minted token (see `login.rs`).
    pub(super) tokens: HashMap<String, Mutex<Option<super::login::CachedToken>>>,
    /// Per probe user and capability with something to clean up (a server, clusters, a launch, a fresh user):
    /// taken by each such round, so that a check on demand and a scheduled round of the same user never
    /// tread on each other (one would stop the other's server as a leftover).
    exclusive: std::sync::Mutex<HashMap<(String, Capability), Exclusive>>,
    /// Whether the kept server was running at its last look (or hubwatch had just started it): gone at the
    /// next look without hubwatch stopping it, it was lost (see `sentinel.rs`).
    pub(super) kept_running: AtomicBool,
}

/// One probe user's capability, taken by one round at a time.
type Exclusive = Arc<Mutex<()>>;

impl HubProber {
    pub fn new(hub: Arc<HubConfig>, http: HttpClient, cleanup_timeout: Duration, redactor: Arc<Redactor>) -> Self {
        let tokens = hub.probe_users().map(|u| (u.to_string(), Mutex::new(None))).collect();
        let (exclusive, kept_running) = Default::default();
        HubProber { hub, http, cleanup_timeout, redactor, tokens, exclusive, kept_running }
    }

    /// Waits until no other round of `capability` for `user` runs; it holds while the guard lives.
    pub(super) async fn exclusive(&self, user: &str, capability: Capability) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = crate::sync::lock(&self.exclusive).entry((user.to_string(), capability)).or_default().clone();
        lock.lock_owned().await
    }

    /// A round of `capability` for `user`, starting now, with `timeout` for its steps.
    pub(super) fn round<'a>(&'a self, user: &'a str, capability: Capability, timeout: Duration) -> Round<'a> {
        Round {
            prober: self,
            user,
            capability,
            started: (SystemTime::now(), Instant::now()),
            deadline: Deadline::after(timeout),
            stages: Stages::default(),
        }
    }

    /// The other capabilities of the user whose `login` failed, each blocked by it.
    pub fn blocked_after_login(&self, login: &ProbeOutcome) -> Vec<ProbeOutcome> {
        self.hub
            .capabilities()
            .into_iter()
            .filter(|c| *c != Capability::Login)
            .map(|c| {
                let mut round = self.round(&login.user, c, Duration::ZERO);
                round.started.0 = login.started_at;
                round.blocked(Capability::Login)
            })
            .collect()
    }

    /// Every capability `user` probes, once, in order (`hubwatch check`, a check on demand): login first (a
    /// user who cannot log in cannot do the rest: those are blocked, not tried), then the server with its
    /// kernel and home, Dask Gateway, Binder and the first login. With `keep_kept`, the kept server's user
    /// looks at it as its lane does (a running daemon's check must not stop it).
    pub async fn check_user(&self, user: &str, keep_kept: bool, cancel: &CancellationToken) -> Vec<ProbeOutcome> {
        if keep_kept && self.hub.sentinel_user() == Some(user) {
            return self.probe_sentinel(user, cancel).await;
        }
        if self.hub.profile_of(user).is_some() {
            // A profile's users only start its servers (and use them).
            return self.probe_server(user, super::OnServer { dask: false, ..super::OnServer::ALL }, cancel).await;
        }
        let Some(login) = self.probe_login(user, cancel).await else { return Vec::new() };
        if login.result != ProbeResult::Ok {
            let blocked = self.blocked_after_login(&login);
            return std::iter::once(login).chain(blocked).collect();
        }
        let mut outcomes = vec![login];
        outcomes.extend(self.probe_server(user, super::OnServer::ALL, cancel).await);
        outcomes.extend(self.probe_dask_gateway(user, cancel).await);
        outcomes.extend(self.probe_binder(user, false, cancel).await);
        if self.hub.user_probes(user, Capability::FirstLogin) {
            outcomes.extend(self.probe_first_login(user, cancel).await);
        }
        outcomes
    }

    /// At start-up: stop a probe server and delete probe clusters that a crashed earlier run left behind.
    /// Returns what was cleaned, for the log.
    pub async fn clean_up_leftovers(&self, user: &str) -> Result<Vec<&'static str>, StepFailure> {
        let deadline = Deadline::after(self.cleanup_timeout);
        let mut cleaned = Vec::new();
        if self.stop_leftover_server(user, deadline).await? {
            cleaned.push("server");
        }
        if self.delete_leftover_clusters(user, deadline).await? > 0 {
            cleaned.push("dask clusters");
        }
        if self.hub.user_probes(user, Capability::FirstLogin) && self.delete_leftover_fresh_users(deadline).await? > 0 {
            cleaned.push("first-login users");
        }
        Ok(cleaned)
    }
}

pin_project_lite::pin_project! {
    /// A round's steps ([`Round::steps`]); a combinator for the reason [`super::Timed`] is one.
    pub(super) struct Steps<'r, F> {
        round: &'r Round<'r>,
        #[pin]
        cancelled: WaitForCancellationFuture<'r>,
        #[pin]
        steps: Timeout<F>,
    }
}

impl<T, F: Future<Output = Result<T, StepFailure>>> Future for Steps<'_, F> {
    type Output = Option<Result<T, StepFailure>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.cancelled.poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        let ended = ready!(this.steps.poll(cx));
        let cut_off = || this.round.deadline.timed_out(this.round.stages.running().unwrap_or(Stage::WhoAmI));
        Poll::Ready(Some(ended.unwrap_or_else(|_| Err(cut_off()))))
    }
}

/// One attempt at one capability by one probe user.
pub(super) struct Round<'a> {
    pub prober: &'a HubProber,
    pub user: &'a str,
    pub capability: Capability,
    started: (SystemTime, Instant),
    pub deadline: Deadline,
    pub stages: Stages,
}

impl<'a> Round<'a> {
    /// Runs the round's `steps` (which record themselves in [`Round::stages`]) until they end, the deadline
    /// (plus a backstop margin) passes, or the round is cancelled (`None`). A backstop timeout is charged to
    /// the stage that was running.
    pub fn steps<'r, T, F>(&'r self, cancel: &'r CancellationToken, steps: F) -> Steps<'r, F>
    where
        F: Future<Output = Result<T, StepFailure>>,
    {
        let steps = timeout_at(self.deadline.at + BACKSTOP, steps);
        Steps { round: self, cancelled: cancel.cancelled(), steps }
    }

    /// A clean-up step, under the clean-up timeout (it runs also after a timeout or a cancellation).
    pub async fn clean_up<F>(&self, stage: Stage, step: impl FnOnce(Deadline) -> F) -> Result<(), StepFailure>
    where
        F: Future<Output = Result<(), StepFailure>>,
    {
        self.stages.run(stage, step(Deadline::after(self.prober.cleanup_timeout))).await
    }

    /// Another capability's round within this one (the kernel's, on the server this round starts), started
    /// with it.
    pub fn sibling(&self, capability: Capability) -> Round<'a> {
        Round { capability, stages: Stages::default(), ..*self }
    }

    /// How long the round has taken so far.
    pub fn elapsed(&self) -> Duration {
        self.started.1.elapsed()
    }

    /// The outcome of a round whose steps ended with `steps` (`None`: cancelled, no outcome) and whose
    /// clean-up ended with `cleaned`, taking `duration`. A clean-up failure hidden by a step failure (or by a
    /// cancellation) is logged: what it left behind is removed by the next round or the next start.
    pub fn finish(
        self,
        steps: Option<Result<(), StepFailure>>,
        cleaned: Result<(), StepFailure>,
        duration: Duration,
    ) -> Option<ProbeOutcome> {
        let result = match (steps, cleaned) {
            (Some(Ok(())), Ok(())) => ProbeResult::Ok,
            (Some(Ok(())), Err(failure)) => ProbeResult::Failed(failure),
            (steps, Err(left)) => {
                let after = if steps.is_none() { "an interrupted round" } else { "a failed round" };
                tracing::warn!(hub = %self.prober.hub.name, user = self.user, capability = self.capability.as_str(),
                    stage = %left.stage, reason = %left.reason, "could not clean up after {after}");
                ProbeResult::Failed(steps?.err()?)
            }
            (steps, Ok(())) => ProbeResult::Failed(steps?.err()?),
        };
        Some(self.outcome(result, duration))
    }

    /// Not tried: `by` failed first.
    pub fn blocked(self, by: Capability) -> ProbeOutcome {
        self.outcome(ProbeResult::Blocked { by }, Duration::ZERO)
    }

    /// The attempt's outcome; a failure's words (which quote the hub) redacted, and naming the profile when
    /// the user probes one.
    pub fn outcome(self, result: ProbeResult, duration: Duration) -> ProbeOutcome {
        let redactor = &self.prober.redactor;
        let profile = self.prober.hub.profile_of(self.user).map(|p| p.name.as_str());
        let result = match result {
            ProbeResult::Failed(failure) => ProbeResult::Failed(StepFailure {
                reason: in_profile(profile, &redactor.redact(&failure.reason)),
                detail: failure.detail.map(|d| redactor.redact(&d)),
                ..failure
            }),
            other => other,
        };
        ProbeOutcome {
            hub: self.prober.hub.name.clone(),
            user: self.user.to_string(),
            capability: self.capability,
            started_at: self.started.0,
            duration,
            result,
            stages: self.stages.into_list(),
        }
    }
}
