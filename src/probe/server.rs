//! The server capability: stop what an earlier round left, `POST /hub/api/users/{u}/server`, then follow the
//! progress stream to `ready` or `failed` (201 and 202 both only mean "maybe"), and stop the server again,
//! waiting until the hub says it is gone.

use super::lane::{Context, Probe, Slot, Within};
use super::login::hub_url;
use super::round::HubProber;
use super::sse::SseParser;
use super::{Deadline, Look, OnServer, Stages, poll_until, user_path};
use crate::domain::wording::truncate;
use crate::domain::{Capability, ProbeOutcome, Secret, Stage, StepFailure};
use crate::http::{Auth, HttpClient, Streaming, scrub};
use futures_util::future::BoxFuture;
use hyper::header::AUTHORIZATION;
use hyper::{Method, StatusCode};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Progress messages kept for a failure's detail.
const PROGRESS_KEPT: usize = 8;
const PROGRESS_EVENT_LIMIT: usize = 64 * 1024;
const POLL: Duration = Duration::from_millis(500);

/// Every probe user but the kept server's starts a server, on the shortest of the server, kernel and home
/// intervals; the kernel and home probes run on it, each when due (all of them when corroborating).
pub(super) fn lane(prober: &HubProber, user: &str) -> Option<Box<dyn Probe>> {
    if prober.hub.sentinel_user() == Some(user) {
        return None;
    }
    let probes = &prober.hub.probes;
    Some(Box::new(ServerLane {
        every: probes.server.every.min(probes.kernel.every).min(probes.home.every),
        kernel: Within::every(probes.kernel.every),
        home: Within::every(probes.home.every),
        dask: Within::every(probes.dask_gateway.every),
    }))
}

struct ServerLane {
    every: Duration,
    kernel: Within,
    home: Within,
    /// Dask from inside the server, on the Dask probe's interval (only for hubs that ask for it).
    dask: Within,
}

impl Probe for ServerLane {
    fn capability(&self) -> Capability {
        Capability::Server
    }

    fn every(&self) -> Duration {
        self.every
    }

    fn round(&self, c: Context, slot: Slot, cancel: CancellationToken) -> BoxFuture<'static, Vec<ProbeOutcome>> {
        let on = match slot.corroborating {
            true => OnServer::ALL,
            false => OnServer {
                kernel: self.kernel.take(slot.due),
                home: self.home.take(slot.due),
                dask: self.dask.take(slot.due),
            },
        };
        Box::pin(async move { c.prober.probe_server(&c.user, on, &cancel).await })
    }
}

impl HubProber {
    /// The server capability, and on the server it started the kernel and home capabilities `on` asks for.
    /// The server is stopped at the end whatever happened. Empty when cancelled.
    pub async fn probe_server(&self, user: &str, on: OnServer, cancel: &CancellationToken) -> Vec<ProbeOutcome> {
        let _alone = self.exclusive(user, Capability::Server).await;
        let round = self.round(user, Capability::Server, self.hub.probes.server.timeout);
        let dask = on.dask && self.dask_from_server() && self.hub.user_probes(user, Capability::DaskGateway);
        let on = OnServer { dask, ..on };
        let siblings: Vec<_> =
            [(on.kernel, Capability::Kernel), (on.home, Capability::Home), (on.dask, Capability::DaskGateway)]
                .into_iter()
                .filter(|(wanted, _)| *wanted)
                .map(|(_, capability)| round.sibling(capability))
                .collect();
        let Ok((token, _)) = self.user_token(user, round.deadline, &Stages::default()).await else {
            return std::iter::once(round).chain(siblings).map(|r| r.blocked(Capability::Login)).collect();
        };
        let spawned = round.steps(cancel, self.spawn(user, &token, &round.stages, round.deadline)).await;
        let spawn_duration = round.elapsed();
        let on_server = match &spawned {
            Some(Ok(server)) => self.on_server(user, &token, &server.url, on, cancel).await,
            Some(Err(_)) => siblings.into_iter().map(|r| r.blocked(Capability::Server)).collect(),
            None => Vec::new(),
        };
        // Always stop: a failed or interrupted spawn may have left a pending server behind.
        let server = self.server_of(user);
        let stop = |deadline| server.stop(&token, deadline);
        let stopped = round.clean_up(Stage::StopServer, stop).await;
        let server = round.finish(spawned.map(|r| r.map(|_| ())), stopped, spawn_duration);
        let server = server.map(|outcome| outcome.slow_after(self.hub.probes.server.slow_after));
        server.into_iter().chain(on_server).collect()
    }

    /// The kernel and home probes `on` asks for, one after the other, on the running server at `url`.
    pub(super) async fn on_server(
        &self,
        user: &str,
        token: &Secret,
        url: &Url,
        on: OnServer,
        cancel: &CancellationToken,
    ) -> Vec<ProbeOutcome> {
        let kernel = match on.kernel {
            true => self.probe_kernel(user, token, url, cancel).await,
            false => None,
        };
        let home = match on.home {
            true => self.probe_home(user, token, url, cancel).await,
            false => None,
        };
        let dask = match on.dask && self.dask_from_server() {
            true => self.probe_dask_from_server(user, token, url, cancel).await,
            false => None,
        };
        kernel.into_iter().chain(home).chain(dask).collect()
    }

    /// Whether the hub asks for Dask Gateway from inside its servers.
    fn dask_from_server(&self) -> bool {
        self.hub.dask_gateway.as_ref().is_some_and(|gateway| gateway.from_server)
    }

    /// The server's steps: stop a leftover, request the spawn, follow the progress to ready or failed.
    pub(super) async fn spawn(
        &self,
        user: &str,
        token: &Secret,
        stages: &Stages,
        deadline: Deadline,
    ) -> Result<StartedServer, StepFailure> {
        let server = self.server_of(user);
        stages.run(Stage::StopLeftover, server.stop_leftover(Auth::Token(token), deadline)).await?;
        let options = self.hub.profile_of(user).map_or(&self.hub.probes.server.user_options, |p| &p.user_options);
        let answer = stages.run(Stage::RequestSpawn, server.request_spawn(token, options, deadline)).await?;
        let refused = match answer {
            SpawnAnswer::Accepted => None,
            SpawnAnswer::Refused(reason) => Some(reason),
        };
        let stuck_after = self.hub.probes.server.stuck_after;
        stages.run(Stage::Progress, server.follow_progress(token, refused, stuck_after, deadline)).await
    }

    pub(super) fn server_of<'a>(&'a self, user: &'a str) -> UserServer<'a> {
        UserServer { http: &self.http, hub: &self.hub.url, user }
    }

    /// At start-up: a server an earlier run left (as hubwatch's service); whether there was one.
    pub(super) async fn stop_leftover_server(&self, user: &str, deadline: Deadline) -> Result<bool, StepFailure> {
        self.server_of(user).stop_leftover(Auth::Token(&self.hub.token), deadline).await
    }
}

/// A server that came up: where it is, and what the hub said on the way.
#[derive(Debug)]
pub struct StartedServer {
    pub url: Url,
    pub progress: Vec<String>,
}

/// One probe user's server on one hub, as the hub's REST API sees it.
pub struct UserServer<'a> {
    pub http: &'a HttpClient,
    pub hub: &'a Url,
    pub user: &'a str,
}

impl UserServer<'_> {
    pub(super) async fn state(
        &self,
        auth: Auth<'_>,
        stage: Stage,
        deadline: Deadline,
    ) -> Result<ServerState, StepFailure> {
        let (http, hub, user) = (self.http, self.hub, self.user);
        let url = hub_url(hub, &format!("hub/api/users/{}", user_path(user)));
        let response = http
            .call(Method::GET, url, auth, None, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(stage, e))?;
        match response.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(StepFailure::monitor(stage, format!("probe user {user:?} does not exist on the hub")));
            }
            _ => return Err(StepFailure::hub(stage, format!("reading the user model: {}", response.describe()))),
        }
        let model: UserModel = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        let Some(server) = model.servers.get("") else { return Ok(ServerState::Absent) };
        if server.stopped == Some(true) {
            return Ok(ServerState::Absent);
        }
        match (server.pending.as_deref(), server.ready) {
            (Some(pending), _) => Ok(ServerState::Pending(pending.to_string())),
            (None, Some(true)) => Ok(ServerState::Ready { url: server.url.0.clone() }),
            (None, _) => Ok(ServerState::Pending("unknown".into())),
        }
    }

    /// Stops a server left running (or starting) by an earlier round, so this round starts from nothing.
    pub async fn stop_leftover(&self, auth: Auth<'_>, deadline: Deadline) -> Result<bool, StepFailure> {
        match self.state(auth, Stage::StopLeftover, deadline).await? {
            ServerState::Absent => Ok(false),
            _ => {
                self.stop_as(auth, Stage::StopLeftover, deadline).await?;
                Ok(true)
            }
        }
    }

    /// Stops the server and waits until the hub no longer lists it.
    pub async fn stop(&self, token: &Secret, deadline: Deadline) -> Result<(), StepFailure> {
        self.stop_as(Auth::Token(token), Stage::StopServer, deadline).await
    }

    async fn stop_as(&self, auth: Auth<'_>, stage: Stage, deadline: Deadline) -> Result<(), StepFailure> {
        let (http, hub, user) = (self.http, self.hub, self.user);
        let url = hub_url(hub, &format!("hub/api/users/{}/server", user_path(user)));
        let request_stop = || {
            let url = url.clone();
            async move {
                let response = http
                    .call(Method::DELETE, url, auth, None, deadline.at)
                    .await
                    .map_err(|e| deadline.request_failure(stage, e))?;
                match response.status {
                    StatusCode::NO_CONTENT | StatusCode::ACCEPTED | StatusCode::OK => Ok(Look::Done(())),
                    // "... is pending spawn, please wait": the stop is refused until the spawn ends.
                    StatusCode::BAD_REQUEST => Ok(Look::NotYet(response.describe())),
                    _ => Err(StepFailure::hub(stage, format!("stopping the server: {}", response.describe()))),
                }
            }
        };
        let refused = |saw| StepFailure::hub(stage, format!("the hub keeps refusing to stop the server: {saw}"));
        poll_until(deadline, POLL, request_stop, refused).await?;
        let gone = || async move {
            match self.state(auth, stage, deadline).await? {
                ServerState::Absent => Ok(Look::Done(())),
                state => Ok(Look::NotYet(format!("{state:?}"))),
            }
        };
        let budget = humantime::format_duration(deadline.budget);
        let still =
            |saw| StepFailure::hub(stage, format!("the server did not stop within the {budget} timeout ({saw})"));
        poll_until(deadline, POLL, gone, still).await
    }

    /// Requests the spawn. A 500 hides the reason, which the progress stream then replays.
    pub async fn request_spawn(
        &self,
        token: &Secret,
        user_options: &Map<String, Value>,
        deadline: Deadline,
    ) -> Result<SpawnAnswer, StepFailure> {
        let (http, hub, user) = (self.http, self.hub, self.user);
        let stage = Stage::RequestSpawn;
        let url = hub_url(hub, &format!("hub/api/users/{}/server", user_path(user)));
        let body = Value::Object(user_options.clone());
        let response = http
            .call(Method::POST, url, Auth::Token(token), Some(&body), deadline.at)
            .await
            .map_err(|e| deadline.request_failure(stage, e))?;
        match response.status {
            StatusCode::CREATED | StatusCode::ACCEPTED => Ok(SpawnAnswer::Accepted),
            StatusCode::BAD_REQUEST if response.describe().contains("already running") => Ok(SpawnAnswer::Accepted),
            s if s.is_server_error() => Ok(SpawnAnswer::Refused(response.describe())),
            StatusCode::TOO_MANY_REQUESTS => {
                Err(StepFailure::hub(stage, format!("the hub is throttling spawns: {}", response.describe())))
            }
            StatusCode::NOT_FOUND => {
                Err(StepFailure::monitor(stage, format!("probe user {user:?} does not exist on the hub")))
            }
            _ => Err(StepFailure::hub(stage, response.describe())),
        }
    }

    /// Follows `GET .../server/progress` until `ready` or `failed`, or until the hub has said nothing new for
    /// `stuck_after` (a spawner that stopped watching the cluster, a pod no node can take): the start is
    /// failed then, without waiting for the timeout.
    pub async fn follow_progress(
        &self,
        token: &Secret,
        refused: Option<String>,
        stuck_after: Duration,
        deadline: Deadline,
    ) -> Result<StartedServer, StepFailure> {
        let (hub, user) = (self.hub, self.user);
        let stage = Stage::Progress;
        let mut response = match self.open_progress(token, deadline).await? {
            Ok(response) => response,
            // 400 "not starting": the spawn already ended; the user model says how.
            Err(answer) if answer.status == StatusCode::BAD_REQUEST => {
                return match self.state(Auth::Token(token), stage, deadline).await? {
                    ServerState::Ready { url } => {
                        Ok(StartedServer { url: server_url(hub, url.as_deref(), user)?, progress: vec![] })
                    }
                    _ => Err(StepFailure::hub(
                        stage,
                        refused.unwrap_or_else(|| format!("the spawn ended without a server ({})", answer.describe())),
                    )),
                };
            }
            Err(answer) => {
                return Err(StepFailure::hub(stage, format!("reading spawn progress: {}", answer.describe())));
            }
        };
        let mut progress = Progress::default();
        if let Some(url) = read_events(&mut response, &mut progress, stuck_after, deadline).await? {
            return Ok(StartedServer { url: server_url(hub, url.as_deref(), user)?, progress: progress.kept.into() });
        }
        // The stream ended without a final event: the user model decides.
        match self.state(Auth::Token(token), stage, deadline).await? {
            ServerState::Ready { url } => {
                Ok(StartedServer { url: server_url(hub, url.as_deref(), user)?, progress: progress.kept.into() })
            }
            state => Err(StepFailure::hub(
                stage,
                format!("the progress stream ended before the server was ready ({state:?})"),
            )
            .with_detail(progress.detail())),
        }
    }

    /// The progress stream, or the hub's answer when it was not 200.
    async fn open_progress(
        &self,
        token: &Secret,
        deadline: Deadline,
    ) -> Result<Result<Streaming, crate::http::Response>, StepFailure> {
        let (http, hub, user) = (self.http, self.hub, self.user);
        let stage = Stage::Progress;
        let url = hub_url(hub, &format!("hub/api/users/{}/server/progress", user_path(user)));
        let mut header = hyper::header::HeaderValue::from_str(&format!("token {}", token.expose()))
            .map_err(|_| StepFailure::monitor(stage, "the probe user's token is not a valid header value"))?;
        header.set_sensitive(true);
        let request = http.get(url).header(AUTHORIZATION, header).header(hyper::header::ACCEPT, "text/event-stream");
        let response = http.open(request, deadline.at).await.map_err(|e| deadline.request_failure(stage, e))?;
        if response.status == StatusCode::OK {
            return Ok(Ok(response));
        }
        let answer = response.read(64 * 1024, deadline.at).await.map_err(|e| deadline.request_failure(stage, e))?;
        Ok(Err(answer))
    }
}

/// What the hub's user model says of the default server.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ServerState {
    Absent,
    Ready { url: Option<String> },
    Pending(String),
}

pub enum SpawnAnswer {
    Accepted,
    /// The hub answered 5xx; the reason, if any, is in the progress stream.
    Refused(String),
}

/// The last progress messages (for a failure's detail).
#[derive(Default)]
struct Progress {
    kept: VecDeque<String>,
}

impl Progress {
    fn keep(&mut self, message: String) {
        if self.kept.len() == PROGRESS_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(message);
    }

    fn detail(&self) -> String {
        format!("progress: {}", self.kept.iter().cloned().collect::<Vec<_>>().join(" → "))
    }

    fn last(&self) -> String {
        self.kept.back().map(|m| format!("; last progress: {m}")).unwrap_or_default()
    }

    /// Why a start that went quiet was given up: "no progress for 3m; last: Pod is pending".
    fn stuck(&self, stuck_after: Duration) -> StepFailure {
        let quiet = humantime::format_duration(stuck_after);
        let last = self.kept.back().map_or("no message since the spawn was requested", String::as_str);
        StepFailure::hub(Stage::Progress, format!("no progress for {quiet}; last: {last}")).with_detail(self.detail())
    }
}

/// Reads progress events until `ready` (`Some(the server's url, if the hub gave one)`), `failed` (an error
/// with the hub's message), the end of the stream (`None`), or `stuck_after` without a new event (the hub's
/// keep-alive blank lines are not progress).
async fn read_events(
    response: &mut Streaming,
    progress: &mut Progress,
    stuck_after: Duration,
    deadline: Deadline,
) -> Result<Option<Option<String>>, StepFailure> {
    let stage = Stage::Progress;
    let mut parser = SseParser::new(PROGRESS_EVENT_LIMIT);
    let mut quiet_until = tokio::time::Instant::now() + stuck_after;
    loop {
        let chunk = match timeout_at(deadline.at.min(quiet_until), response.chunk()).await {
            Err(_) if quiet_until < deadline.at => return Err(progress.stuck(stuck_after)),
            Err(_) => {
                let budget = humantime::format_duration(deadline.budget);
                let reason = format!("the server was not ready within the {budget} timeout{}", progress.last());
                return Err(StepFailure::hub(stage, reason).with_detail(progress.detail()));
            }
            Ok(Err(e)) => return Err(deadline.request_failure(stage, e).with_detail(progress.detail())),
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(chunk))) => chunk,
        };
        let events =
            parser.push(&chunk).map_err(|e| StepFailure::hub(stage, format!("the progress stream sent {e}")))?;
        if !events.is_empty() {
            quiet_until = tokio::time::Instant::now() + stuck_after;
        }
        for event in events {
            if let Some(ready) = final_event(&event, progress)? {
                return Ok(Some(ready));
            }
        }
    }
}

/// One progress event: `Some(url)` when the server is ready, an error when the spawn failed.
fn final_event(event: &str, progress: &mut Progress) -> Result<Option<Option<String>>, StepFailure> {
    let stage = Stage::Progress;
    let Ok(event) = serde_json::from_str::<ProgressEvent>(event) else {
        return Err(StepFailure::hub(stage, "the progress stream sent an event that is not JSON")
            .with_detail(progress.detail()));
    };
    let message = event.message.as_deref().map(|m| truncate(&scrub(m), 300));
    if let Some(message) = &message {
        progress.keep(message.clone());
    }
    if event.failed == Some(true) {
        let reason = match message.as_deref().map(str::trim) {
            None | Some("") | Some("Spawn failed:") => {
                "Spawn failed with no reason given (the spawner's start timeout is the usual cause)".to_string()
            }
            Some(m) => m.to_string(),
        };
        return Err(StepFailure::hub(stage, reason).with_detail(progress.detail()));
    }
    if event.ready == Some(true) {
        return Ok(Some(event.url.0));
    }
    Ok(None)
}

/// The fields of the hub's user model a probe reads (`GET /hub/api/users/{name}`).
#[derive(serde::Deserialize)]
struct UserModel {
    #[serde(default)]
    servers: std::collections::HashMap<String, ServerModel>,
}

#[derive(serde::Deserialize)]
struct ServerModel {
    #[serde(default)]
    ready: Option<bool>,
    #[serde(default)]
    stopped: Option<bool>,
    #[serde(default)]
    pending: super::answers::Text,
    #[serde(default)]
    url: super::answers::Text,
}

/// One spawn progress event.
#[derive(serde::Deserialize)]
struct ProgressEvent {
    #[serde(default)]
    message: super::answers::Text,
    #[serde(default)]
    failed: Option<bool>,
    #[serde(default)]
    ready: Option<bool>,
    #[serde(default)]
    url: super::answers::Text,
}

/// The server's base URL: the hub's `url` for it when given (it carries the hub's base path), else
/// `/user/{u}/`; never on another host than the hub's (the probe user's token goes there).
pub(super) fn server_url(hub: &Url, url: Option<&str>, user: &str) -> Result<Url, StepFailure> {
    let path = match url {
        Some(u) if !u.trim().is_empty() => u.to_string(),
        _ => format!("{}user/{}/", hub.path(), user_path(user)),
    };
    let mut base = super::answers::on_origin(hub, &path).map_err(|why| {
        StepFailure::hub(Stage::Progress, format!("the hub gave a server URL hubwatch will not use: {why}"))
    })?;
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_uses_the_hubs_path() {
        let hub = Url::parse("https://hub.example.org/prefix/").unwrap();
        assert_eq!(
            server_url(&hub, Some("/prefix/user/a@b/"), "a@b").unwrap().as_str(),
            "https://hub.example.org/prefix/user/a@b/"
        );
        assert_eq!(server_url(&hub, None, "a@b").unwrap().as_str(), "https://hub.example.org/prefix/user/a%40b/");
        let elsewhere = server_url(&hub, Some("//evil.example.com/user/a/"), "a").unwrap_err();
        assert!(elsewhere.reason.contains("points to https://evil.example.com, not the hub"), "{elsewhere:?}");
    }
}
