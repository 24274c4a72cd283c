//! Rounds: what one probe user does for a capability, with the steps in order, later steps blocked when an
//! earlier one fails, the probe's own deadline, and clean-up (delete the kernel, stop the server, delete the
//! cluster) that runs whatever happened, under its own deadline, even when the round was cancelled.

use super::dask_gateway::Gateway;
use super::{Deadline, Stages, kernel, login, server};
use crate::config::{HubConfig, LoginMethod};
use crate::domain::Secret;
use crate::domain::{Capability, ProbeOutcome, ProbeResult, Stage, StepFailure};
use crate::http::{Auth, HttpClient};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

/// Minted probe tokens live an hour and are renewed when less than this is left, so that a token never
/// expires in the middle of a round (server 10 m + kernel 2 m + clean-up).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const RENEW_BEFORE: Duration = Duration::from_secs(1800);
/// Grace past a probe's deadline before the backstop timeout fires (every request already has the deadline).
const BACKSTOP: Duration = Duration::from_secs(1);

struct CachedToken {
    token: Secret,
    renew_at: Instant,
}

/// Probes one hub: one per hub, shared by all its probe users' rounds.
pub struct HubProber {
    pub hub: Arc<HubConfig>,
    http: HttpClient,
    cleanup_timeout: Duration,
    tokens: HashMap<String, Mutex<Option<CachedToken>>>,
}

/// How a round's main part ended.
enum Ended<T> {
    Done(Result<T, StepFailure>),
    /// The backstop fired: a step ignored the deadline.
    TimedOut,
    Cancelled,
}

impl<T> Ended<T> {
    /// The result, with a backstop timeout charged to `stage`; None when cancelled.
    fn result(self, deadline: Deadline, stage: Stage) -> Option<Result<T, StepFailure>> {
        match self {
            Ended::Done(result) => Some(result),
            Ended::TimedOut => Some(Err(deadline.timed_out(stage))),
            Ended::Cancelled => None,
        }
    }
}

impl HubProber {
    pub fn new(hub: Arc<HubConfig>, http: HttpClient, cleanup_timeout: Duration) -> Self {
        let tokens = hub.users.iter().map(|u| (u.clone(), Mutex::new(None))).collect();
        HubProber { hub, http, cleanup_timeout, tokens }
    }

    fn outcome(
        &self,
        user: &str,
        capability: Capability,
        started: (SystemTime, Instant),
        result: ProbeResult,
        stages: Vec<super::StageTiming>,
    ) -> ProbeOutcome {
        // A blocked capability was never tried, so it took no time.
        let duration = if matches!(result, ProbeResult::Blocked { .. }) { Duration::ZERO } else { started.1.elapsed() };
        ProbeOutcome {
            hub: self.hub.name.clone(),
            user: user.to_string(),
            capability,
            started_at: started.0,
            duration,
            result,
            stages,
        }
    }

    /// `capability` for `user`, not tried because `by` failed first.
    fn blocked(
        &self,
        user: &str,
        capability: Capability,
        by: Capability,
        started: (SystemTime, Instant),
    ) -> ProbeOutcome {
        self.outcome(user, capability, started, ProbeResult::Blocked { by }, vec![])
    }

    /// The probe user's token: cached, minted with the service token when missing or due for renewal.
    async fn user_token(
        &self,
        user: &str,
        deadline: Deadline,
        stages: &mut Stages,
    ) -> Result<(Secret, bool), StepFailure> {
        let slot = self.tokens.get(user).expect("tokens are made for every configured user");
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok((c.token.clone(), true));
        }
        let minted = stages
            .run(
                Stage::MintToken,
                login::mint_token(&self.http, &self.hub.url, &self.hub.token, user, TOKEN_LIFETIME, deadline),
            )
            .await?;
        let renew_at = Instant::now() + minted.lifetime.saturating_sub(RENEW_BEFORE);
        *cached = Some(CachedToken { token: minted.token.clone(), renew_at });
        Ok((minted.token, false))
    }

    async fn forget_token(&self, user: &str) {
        if let Some(slot) = self.tokens.get(user) {
            *slot.lock().await = None;
        }
    }

    /// Runs `body` until it ends, the deadline (plus a backstop margin) passes, or the round is cancelled.
    async fn bounded<T>(
        deadline: Deadline,
        cancel: &CancellationToken,
        body: impl Future<Output = Result<T, StepFailure>>,
    ) -> Ended<T> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Ended::Cancelled,
            result = timeout_at(deadline.at + BACKSTOP, body) => match result {
                Ok(result) => Ended::Done(result),
                Err(_) => Ended::TimedOut,
            },
        }
    }

    /// The other capabilities of the user whose `login` failed, each blocked by it.
    pub fn blocked_after_login(&self, login: &ProbeOutcome) -> Vec<ProbeOutcome> {
        let started = (login.started_at, Instant::now());
        let mut capabilities = vec![Capability::Server, Capability::Kernel];
        if self.hub.dask_gateway.is_some() {
            capabilities.push(Capability::DaskGateway);
        }
        capabilities.into_iter().map(|c| self.blocked(&login.user, c, Capability::Login, started)).collect()
    }

    /// The login capability for `user`. None when cancelled.
    pub async fn probe_login(&self, user: &str, cancel: &CancellationToken) -> Option<ProbeOutcome> {
        let started = (SystemTime::now(), Instant::now());
        let deadline = Deadline::after(self.hub.probes.login.timeout);
        let mut stages = Stages::default();
        let body = async {
            match &self.hub.login {
                LoginMethod::Token => {
                    let (token, was_cached) = self.user_token(user, deadline, &mut stages).await?;
                    let checked = stages
                        .run(
                            Stage::WhoAmI,
                            login::whoami(&self.http, &self.hub.url, Auth::Token(&token), None, user, deadline),
                        )
                        .await;
                    if checked.is_err() && was_cached {
                        // A cached token may have been revoked (a hub database reset): mint afresh once.
                        self.forget_token(user).await;
                        let (token, _) = self.user_token(user, deadline, &mut stages).await?;
                        stages
                            .run(
                                Stage::WhoAmI,
                                login::whoami(&self.http, &self.hub.url, Auth::Token(&token), None, user, deadline),
                            )
                            .await?;
                    } else {
                        checked?;
                    }
                    stages
                        .run(Stage::LoginPage, async {
                            login::login_page(&self.http, &self.hub.url, deadline).await.map(|_| ())
                        })
                        .await
                }
                LoginMethod::Form { password } => {
                    stages
                        .run(Stage::LoginSubmit, login::form_login(&self.http, &self.hub.url, user, password, deadline))
                        .await
                }
            }
        };
        let ended = Self::bounded(deadline, cancel, body).await;
        let result = match ended.result(deadline, Stage::WhoAmI)? {
            Ok(()) => ProbeResult::Ok,
            Err(failure) => ProbeResult::Failed(failure),
        };
        Some(self.outcome(user, Capability::Login, started, result, stages.list))
    }

    /// The server capability, and the kernel capability on the server it started when `with_kernel`.
    /// The server is stopped at the end whatever happened. Empty when cancelled.
    pub async fn probe_server(&self, user: &str, with_kernel: bool, cancel: &CancellationToken) -> Vec<ProbeOutcome> {
        let started = (SystemTime::now(), Instant::now());
        let settings = &self.hub.probes;
        let deadline = Deadline::after(settings.server.schedule.timeout);
        let mut stages = Stages::default();
        let mut outcomes = Vec::new();

        let token = match self.user_token(user, deadline, &mut Stages::default()).await {
            Ok((token, _)) => token,
            Err(_) => {
                outcomes.push(self.blocked(user, Capability::Server, Capability::Login, started));
                if with_kernel {
                    outcomes.push(self.blocked(user, Capability::Kernel, Capability::Login, started));
                }
                return outcomes;
            }
        };

        let mut last_stage = Stage::StopLeftover;
        let body = async {
            last_stage = Stage::StopLeftover;
            stages
                .run(
                    Stage::StopLeftover,
                    server::stop_leftover(&self.http, &self.hub.url, Auth::Token(&token), user, deadline),
                )
                .await?;
            last_stage = Stage::RequestSpawn;
            let answer = stages
                .run(
                    Stage::RequestSpawn,
                    server::request_spawn(
                        &self.http,
                        &self.hub.url,
                        &token,
                        user,
                        &settings.server.user_options,
                        deadline,
                    ),
                )
                .await?;
            let refused = match answer {
                server::SpawnAnswer::Accepted => None,
                server::SpawnAnswer::Refused(reason) => Some(reason),
            };
            last_stage = Stage::Progress;
            stages
                .run(
                    Stage::Progress,
                    server::follow_progress(&self.http, &self.hub.url, &token, user, refused, deadline),
                )
                .await
        };
        let ended = Self::bounded(deadline, cancel, body).await;
        let spawn_duration = started.1.elapsed();
        let spawned = ended.result(deadline, last_stage);

        if let Some(Ok(started_server)) = &spawned
            && with_kernel
            && let Some(kernel_outcome) = self.probe_kernel(user, &token, &started_server.url, cancel).await
        {
            outcomes.push(kernel_outcome);
        }

        // Always stop: a failed or interrupted spawn may have left a pending server behind.
        let stop_deadline = Deadline::after(self.cleanup_timeout);
        let stopped =
            stages.run(Stage::StopServer, server::stop(&self.http, &self.hub.url, &token, user, stop_deadline)).await;

        let result = match spawned {
            None => {
                if let Err(failure) = stopped {
                    tracing::warn!(hub = %self.hub.name, user, reason = %failure.reason, "could not stop the probe server after an interrupted round");
                }
                return outcomes;
            }
            Some(Err(failure)) => {
                if let Err(stop_failure) = stopped {
                    tracing::warn!(hub = %self.hub.name, user, reason = %stop_failure.reason, "could not stop the probe server after a failed spawn");
                }
                if with_kernel {
                    outcomes.push(self.blocked(user, Capability::Kernel, Capability::Server, started));
                }
                ProbeResult::Failed(failure)
            }
            Some(Ok(_)) => match stopped {
                Ok(()) => ProbeResult::Ok,
                Err(failure) => ProbeResult::Failed(failure),
            },
        };
        let mut server_outcome = self.outcome(user, Capability::Server, started, result, stages.list);
        server_outcome.duration = spawn_duration;
        outcomes.insert(0, server_outcome);
        outcomes
    }

    /// The kernel capability on a running server; the kernel is deleted afterwards. None when cancelled.
    async fn probe_kernel(
        &self,
        user: &str,
        token: &Secret,
        server_url: &url::Url,
        cancel: &CancellationToken,
    ) -> Option<ProbeOutcome> {
        let started = (SystemTime::now(), Instant::now());
        let settings = &self.hub.probes.kernel;
        let deadline = Deadline::after(settings.schedule.timeout);
        let mut stages = Stages::default();
        let mut kernel_id: Option<String> = None;
        let mut last_stage = Stage::StartKernel;
        let body = async {
            let id = stages
                .run(
                    Stage::StartKernel,
                    kernel::start_kernel(&self.http, server_url, token, settings.kernel_name.as_deref(), deadline),
                )
                .await?;
            kernel_id = Some(id.clone());
            last_stage = Stage::Connect;
            let mut socket = stages.run(Stage::Connect, kernel::connect(server_url, token, &id, deadline)).await?;
            last_stage = Stage::Execute;
            let executed = stages
                .run(Stage::Execute, kernel::execute(&mut socket, &settings.code, &settings.expect, deadline))
                .await;
            let _ = timeout_at(deadline.at, socket.close(None)).await;
            executed
        };
        let ended = Self::bounded(deadline, cancel, body).await.result(deadline, last_stage);
        let duration = started.1.elapsed();

        let deleted = match &kernel_id {
            Some(id) => {
                let cleanup = Deadline::after(self.cleanup_timeout);
                stages.run(Stage::DeleteKernel, kernel::delete_kernel(&self.http, server_url, token, id, cleanup)).await
            }
            None => Ok(()),
        };
        let result = match ended? {
            Err(failure) => {
                if let Err(delete_failure) = deleted {
                    tracing::warn!(hub = %self.hub.name, user, reason = %delete_failure.reason, "could not delete the probe kernel");
                }
                ProbeResult::Failed(failure)
            }
            Ok(()) => match deleted {
                Ok(()) => ProbeResult::Ok,
                Err(failure) => ProbeResult::Failed(failure),
            },
        };
        let mut outcome = self.outcome(user, Capability::Kernel, started, result, stages.list);
        outcome.duration = duration;
        Some(outcome)
    }

    /// The dask_gateway capability; None when the hub has no gateway configured or the round was cancelled.
    pub async fn probe_dask_gateway(&self, user: &str, cancel: &CancellationToken) -> Option<ProbeOutcome> {
        let gateway_config = self.hub.dask_gateway.as_ref()?;
        let started = (SystemTime::now(), Instant::now());
        let settings = &self.hub.probes.dask_gateway;
        let deadline = Deadline::after(settings.schedule.timeout);
        let mut stages = Stages::default();
        let token = match self.user_token(user, deadline, &mut Stages::default()).await {
            Ok((token, _)) => token,
            Err(_) => return Some(self.blocked(user, Capability::DaskGateway, Capability::Login, started)),
        };
        let gateway = Gateway::new(&self.http, gateway_config, &token);
        let mut cluster: Option<String> = None;
        let mut last_stage = Stage::DeleteLeftoverClusters;
        let body = async {
            stages.run(Stage::DeleteLeftoverClusters, gateway.delete_leftovers(deadline)).await?;
            last_stage = Stage::CreateCluster;
            let name =
                stages.run(Stage::CreateCluster, gateway.create(&gateway_config.cluster_options, deadline)).await?;
            cluster = Some(name.clone());
            last_stage = Stage::WaitRunning;
            stages.run(Stage::WaitRunning, gateway.wait_running(&name, deadline)).await?;
            last_stage = Stage::Scale;
            stages.run(Stage::Scale, gateway.scale(&name, settings.workers, deadline)).await?;
            last_stage = Stage::WaitWorker;
            stages.run(Stage::WaitWorker, gateway.wait_workers(&name, settings.workers, deadline)).await
        };
        let ended = Self::bounded(deadline, cancel, body).await.result(deadline, last_stage);
        let duration = started.1.elapsed();

        let deleted = match &cluster {
            Some(name) => {
                stages.run(Stage::DeleteCluster, gateway.delete(name, Deadline::after(self.cleanup_timeout))).await
            }
            None => Ok(()),
        };
        let result = match ended {
            None => {
                if let Err(failure) = deleted {
                    tracing::warn!(hub = %self.hub.name, user, reason = %failure.reason, "could not delete the probe cluster after an interrupted round");
                }
                return None;
            }
            Some(Err(failure)) => {
                if let Err(delete_failure) = deleted {
                    tracing::warn!(hub = %self.hub.name, user, reason = %delete_failure.reason, "could not delete the probe cluster");
                }
                ProbeResult::Failed(failure)
            }
            Some(Ok(())) => match deleted {
                Ok(()) => ProbeResult::Ok,
                Err(failure) => ProbeResult::Failed(failure),
            },
        };
        let mut outcome = self.outcome(user, Capability::DaskGateway, started, result, stages.list);
        outcome.duration = duration;
        Some(outcome)
    }

    /// At start-up: stop a probe server and delete probe clusters that a crashed earlier run left behind.
    /// Returns what was cleaned, for the log.
    pub async fn clean_up_leftovers(&self, user: &str) -> Result<Vec<&'static str>, StepFailure> {
        let deadline = Deadline::after(self.cleanup_timeout);
        let mut cleaned = Vec::new();
        if server::stop_leftover(&self.http, &self.hub.url, Auth::Token(&self.hub.token), user, deadline).await? {
            cleaned.push("server");
        }
        if let Some(gateway_config) = &self.hub.dask_gateway {
            let (token, _) = self.user_token(user, deadline, &mut Stages::default()).await?;
            if Gateway::new(&self.http, gateway_config, &token).delete_leftovers(deadline).await? > 0 {
                cleaned.push("dask clusters");
            }
        }
        Ok(cleaned)
    }
}
