//! The binder capability: the hub's BinderHub asked to launch a repository, as a Binder link does. Its
//! `/health` first (the failing check's `service` is the reason), then `GET /build/{repo}/{ref}`, an event
//! stream whose phases are the stages (`waiting`/`fetching` → `resolve`, `building` → `build`, `pushing` →
//! `push`, `built`/`launching` → `launch`), until `ready` with the server's URL and token or `failed` with
//! BinderHub's words; then the launched server's `api` must answer with that token (`ready`), and it is shut
//! down (`POST {url}api/shutdown`) whatever happened after it came up. A pinned ref is a launch of a cached
//! image; `build: {ref, every}` makes a rarer real build.

use super::answers::{Text, on_origin};
use super::lane::{Context, Probe, Slot, Within};
use super::round::HubProber;
use super::sse::SseParser;
use super::{Deadline, Stages, user_path};
use crate::config::BinderHubConfig;
use crate::domain::wording::truncate;
use crate::domain::{Capability, ProbeOutcome, ProbeResult, Secret, Slowness, Stage, StepFailure};
use crate::http::{Auth, scrub};
use crate::sync::lock;
use futures_util::future::BoxFuture;
use hyper::{Method, StatusCode};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use url::Url;

const EVENT_LIMIT: usize = 64 * 1024;
/// BinderHub's messages kept for a failure's detail.
const MESSAGES_KEPT: usize = 8;

/// With a BinderHub named, every probe user launches through it on the binderhub interval, and builds on
/// `build.every` when the hub asks for builds.
pub(super) fn lane(prober: &HubProber, _: &str) -> Option<Box<dyn Probe>> {
    let binder = prober.hub.binderhub.as_ref()?;
    Some(Box::new(BinderLane {
        every: prober.hub.probes.binderhub.every,
        build: binder.build.as_ref().map(|build| Within::every(build.every)),
    }))
}

struct BinderLane {
    every: Duration,
    build: Option<Within>,
}

impl Probe for BinderLane {
    fn capability(&self) -> Capability {
        Capability::Binder
    }

    fn every(&self) -> Duration {
        self.every
    }

    fn round(&self, c: Context, slot: Slot, cancel: CancellationToken) -> BoxFuture<'static, Vec<ProbeOutcome>> {
        // A corroborating round only launches: a build takes minutes.
        let build = !slot.corroborating && self.build.as_ref().is_some_and(|b| b.take(slot.due));
        Box::pin(async move { c.prober.probe_binder(&c.user, build, &cancel).await.into_iter().collect() })
    }
}

/// A server BinderHub launched: where, and the token it gave for it.
struct Launched {
    url: Url,
    token: Secret,
    /// Launch attempts that failed before this one worked, and BinderHub's word on the last.
    retried: Option<(u32, String)>,
}

impl HubProber {
    /// The binder capability (a build of `build.ref` when `build`, else a launch of `ref`); None when the hub
    /// names no BinderHub or the round was cancelled.
    pub async fn probe_binder(&self, user: &str, build: bool, cancel: &CancellationToken) -> Option<ProbeOutcome> {
        let binder = self.hub.binderhub.as_ref()?;
        let _alone = self.exclusive(user, Capability::Binder).await;
        let round = self.round(user, Capability::Binder, self.hub.probes.binderhub.timeout);
        let (stages, deadline) = (&round.stages, round.deadline);
        let git_ref = match (build, &binder.build) {
            (true, Some(build)) => &build.git_ref,
            _ => &binder.git_ref,
        };
        let launched: Mutex<Option<Launched>> = Mutex::new(None);
        let steps = round
            .steps(cancel, async {
                stages.run(Stage::BinderHealth, self.binder_health(binder, deadline)).await?;
                let server = self.binder_launch(binder, git_ref, stages, deadline).await?;
                let (url, token) = (server.url.clone(), server.token.clone());
                *lock(&launched) = Some(server);
                stages.run(Stage::Ready, self.reach_launched(&url, &token, deadline)).await
            })
            .await;
        let duration = round.elapsed();
        let launched = crate::sync::into_inner(launched);
        let retried = launched.as_ref().and_then(|server| server.retried.clone());
        let cleaned = match launched {
            Some(server) => round.clean_up(Stage::StopBinder, |deadline| self.shut_down(server, deadline)).await,
            None => Ok(()),
        };
        let outcome = round.finish(steps, cleaned, duration)?;
        Some(match (&outcome.result, retried) {
            // Users waited through BinderHub's retries: it worked, slowly.
            (ProbeResult::Ok, Some((failed, last))) => {
                ProbeOutcome { result: ProbeResult::Slow(Slowness::Retried { failed, last }), ..outcome }
            }
            _ => outcome,
        })
    }

    /// `GET {binder}health`: 200, or 503 naming the failing checks.
    async fn binder_health(&self, binder: &BinderHubConfig, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::BinderHealth;
        let url = binder.url.join("health").expect("a relative path joins");
        let auth = binder.token.as_ref().map_or(Auth::None, |t| Auth::Token(t));
        let response = self
            .http
            .call(Method::GET, url, auth, None, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(stage, e))?;
        if response.status == StatusCode::OK {
            return Ok(());
        }
        #[derive(serde::Deserialize)]
        struct Health {
            #[serde(default)]
            checks: Vec<Check>,
        }
        #[derive(serde::Deserialize)]
        struct Check {
            #[serde(default)]
            service: Text,
            #[serde(default)]
            ok: Option<bool>,
        }
        let failing: Vec<String> = response
            .json::<Health>()
            .map(|h| h.checks.into_iter().filter(|c| c.ok == Some(false)).filter_map(|c| c.service.0).collect())
            .unwrap_or_default();
        let reason = match failing.as_slice() {
            [] => format!("BinderHub is unhealthy: {}", response.describe()),
            failing => format!("BinderHub is unhealthy: {} failing", truncate(&failing.join(", "), 200)),
        };
        Err(StepFailure::hub(stage, reason))
    }

    /// `GET {binder}build/{repo}/{ref}` followed to `ready`: the launched server, or the phase that failed
    /// with BinderHub's message.
    async fn binder_launch(
        &self,
        binder: &BinderHubConfig,
        git_ref: &str,
        stages: &Stages,
        deadline: Deadline,
    ) -> Result<Launched, StepFailure> {
        let mut phases = Phases::new(stages);
        let url = binder.url.join(&format!("build/{}/{}", binder.repo, user_path(git_ref))).map_err(|e| {
            StepFailure::monitor(Stage::Resolve, format!("binderhub.repo and ref do not make a URL: {e}"))
        })?;
        let auth = binder.token.as_deref().map_or(Auth::None, Auth::Token);
        let request = self.http.get(url).header(hyper::header::ACCEPT, "text/event-stream").auth(auth);
        let opened = self.http.open(request, deadline.at).await;
        let mut response = match opened {
            Err(e) => return Err(deadline.request_failure(Stage::Resolve, e)),
            Ok(response) if response.status == StatusCode::OK => response,
            Ok(response) => {
                let answer = response
                    .read(EVENT_LIMIT, deadline.at)
                    .await
                    .map_err(|e| deadline.request_failure(Stage::Resolve, e))?;
                return Err(StepFailure::hub(
                    Stage::Resolve,
                    format!("BinderHub refused the build: {}", answer.describe()),
                ));
            }
        };
        let mut parser = SseParser::new(EVENT_LIMIT);
        let result = loop {
            let chunk = match timeout_at(deadline.at, response.chunk()).await {
                Err(_) => break Err(phases.timed_out(deadline)),
                Ok(Err(e)) => break Err(deadline.request_failure(phases.stage, e)),
                Ok(Ok(None)) => break Err(phases.failed("the event stream ended before the server was ready")),
                Ok(Ok(Some(chunk))) => chunk,
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(e) => break Err(phases.failed(&format!("the event stream sent {e}"))),
            };
            if let Some(ended) = events.iter().find_map(|event| phases.take(event, &self.hub.url)) {
                break ended;
            }
        };
        // BinderHub keeps the stream open after `ready`: dropping the response closes it.
        phases.end();
        result
    }

    /// `GET {url}api` with the launched server's token: the server a user would land on answers.
    async fn reach_launched(&self, url: &Url, token: &Secret, deadline: Deadline) -> Result<(), StepFailure> {
        let api = url.join("api").expect("a relative path joins");
        let response = self
            .http
            .call(Method::GET, api, Auth::Token(token), None, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(Stage::Ready, e))?;
        match response.status {
            StatusCode::OK => Ok(()),
            _ => Err(StepFailure::hub(
                Stage::Ready,
                format!("the launched server does not answer: {}", response.describe()),
            )),
        }
    }

    /// `POST {url}api/shutdown`: the launched server stops itself (its user may be BinderHub's, not ours).
    async fn shut_down(&self, server: Launched, deadline: Deadline) -> Result<(), StepFailure> {
        let url = server.url.join("api/shutdown").expect("a relative path joins");
        let response = self
            .http
            .call(Method::POST, url, Auth::Token(&server.token), None, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(Stage::StopBinder, e))?;
        match response.status {
            s if s.is_success() => Ok(()),
            _ => Err(StepFailure::hub(
                Stage::StopBinder,
                format!("shutting the launched server down: {}", response.describe()),
            )),
        }
    }
}

/// The build stream's phases as stages: each phase's time is its stage's, and a failure is charged to the
/// phase it came in.
struct Phases<'a> {
    stages: &'a Stages,
    stage: Stage,
    since: tokio::time::Instant,
    messages: VecDeque<String>,
    /// "Launch attempt N failed, retrying...": how many, and the last.
    retried: Option<(u32, String)>,
}

impl<'a> Phases<'a> {
    fn new(stages: &'a Stages) -> Self {
        stages.enter(Stage::Resolve);
        let since = tokio::time::Instant::now();
        Phases { stages, stage: Stage::Resolve, since, messages: VecDeque::new(), retried: None }
    }

    /// One event: `Some` when the stream ended in it (ready, or failed).
    fn take(&mut self, event: &str, hub: &Url) -> Option<Result<Launched, StepFailure>> {
        let Ok(event) = serde_json::from_str::<Event>(event) else {
            return Some(Err(self.failed("the event stream sent an event that is not JSON")));
        };
        if let Some(message) = event.message.0.as_deref().map(|m| truncate(&scrub(m.trim()), 300)) {
            if message.starts_with("Launch attempt") && message.contains("failed") {
                let failed = self.retried.as_ref().map_or(0, |(n, _)| *n) + 1;
                self.retried = Some((failed, message.clone()));
            }
            if !message.is_empty() {
                if self.messages.len() == MESSAGES_KEPT {
                    self.messages.pop_front();
                }
                self.messages.push_back(message);
            }
        }
        let next = match event.phase.0.as_deref().unwrap_or_default() {
            "waiting" | "fetching" => Stage::Resolve,
            "building" => Stage::Build,
            "pushing" => Stage::Push,
            "built" | "launching" => Stage::Launch,
            "ready" => return Some(self.ready(event, hub)),
            "failed" => {
                let said = self.messages.back().cloned().unwrap_or_else(|| "no reason given".into());
                return Some(Err(self.failed(&said)));
            }
            _ => self.stage,
        };
        if next != self.stage {
            self.end();
            self.stages.enter(next);
            (self.stage, self.since) = (next, tokio::time::Instant::now());
        }
        None
    }

    /// The ready event's server: on the hub's origin only (its token goes there), with a token.
    fn ready(&mut self, event: Event, hub: &Url) -> Result<Launched, StepFailure> {
        let (Some(url), Some(token)) = (event.url.0, event.token.0) else {
            return Err(self.failed("BinderHub said ready without the server's url and token"));
        };
        let mut url = on_origin(hub, &url)
            .map_err(|why| self.failed(&format!("BinderHub launched a server hubwatch will not use: {why}")))?;
        if !url.path().ends_with('/') {
            let with_slash = format!("{}/", url.path());
            url.set_path(&with_slash);
        }
        Ok(Launched { url, token: Secret::new(token), retried: self.retried.take() })
    }

    /// BinderHub's words for the phase it failed in, with its last messages as the detail.
    fn failed(&self, reason: &str) -> StepFailure {
        let detail = self.messages.iter().cloned().collect::<Vec<_>>().join(" → ");
        StepFailure::hub(self.stage, reason.to_string()).with_detail(format!("binderhub: {detail}"))
    }

    fn timed_out(&self, deadline: Deadline) -> StepFailure {
        let last = self.messages.back().map(|m| format!("; last: {m}")).unwrap_or_default();
        let budget = humantime::format_duration(deadline.budget);
        StepFailure { reason: format!("not ready within the {budget} timeout{last}"), ..self.failed("") }
    }

    fn end(&self) {
        self.stages.leave(self.stage, self.since);
    }
}

/// One event of BinderHub's build stream.
#[derive(serde::Deserialize)]
struct Event {
    #[serde(default)]
    phase: Text,
    #[serde(default)]
    message: Text,
    #[serde(default)]
    url: Text,
    #[serde(default)]
    token: Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(phases: &mut Phases, lines: &[&str]) -> Option<Result<Launched, StepFailure>> {
        let hub = Url::parse("https://hub.example.org/").unwrap();
        lines.iter().find_map(|line| phases.take(line, &hub))
    }

    #[test]
    fn phases_are_stages_and_a_failure_is_in_binderhubs_words() {
        let stages = Stages::default();
        let mut phases = Phases::new(&stages);
        let failed = events(
            &mut phases,
            &[
                r#"{"phase": "waiting", "message": "Waiting for build to start...\n"}"#,
                r#"{"phase": "failed", "message": "Error resolving ref for gh:org/repo/main: GitHub rate limit exceeded. Try again in 5 minutes.\n"}"#,
            ],
        );
        let failure = failed.unwrap().err().unwrap();
        assert_eq!(failure.stage, Stage::Resolve);
        assert_eq!(
            failure.reason,
            "Error resolving ref for gh:org/repo/main: GitHub rate limit exceeded. Try again in 5 minutes."
        );
        let stages = Stages::default();
        let mut phases = Phases::new(&stages);
        let pushed = events(
            &mut phases,
            &[
                r#"{"phase": "building", "message": "Step 1/9 : FROM buildpack-deps:jammy\n"}"#,
                r#"{"phase": "pushing", "message": "Pushing image\n", "progress": {}}"#,
                r#"{"phase": "failed", "message": "Failed to push image: denied: requested access to the resource is denied\n"}"#,
            ],
        );
        assert_eq!(pushed.unwrap().err().unwrap().stage, Stage::Push);
        phases.end();
        let timed: Vec<Stage> = stages.into_list().into_iter().map(|t| t.stage).collect();
        assert_eq!(timed, [Stage::Resolve, Stage::Build, Stage::Push]);
    }

    #[test]
    fn ready_gives_a_server_on_the_hubs_origin_only() {
        let stages = Stages::default();
        let mut phases = Phases::new(&stages);
        let ready = events(
            &mut phases,
            &[
                r#"{"phase": "built", "message": "Found built image, launching...\n"}"#,
                r#"{"phase": "launching", "message": "Launch attempt 1 failed, retrying...\n"}"#,
                r#"{"phase": "ready", "message": "server running at https://hub.example.org/user/org-repo-x1/\n", "url": "https://hub.example.org/user/org-repo-x1", "token": "abc123"}"#,
            ],
        );
        let launched = ready.unwrap().unwrap();
        assert_eq!(launched.url.as_str(), "https://hub.example.org/user/org-repo-x1/");
        assert_eq!(launched.retried, Some((1, "Launch attempt 1 failed, retrying...".to_string())), "it was slow");
        let mut phases = Phases::new(&stages);
        let elsewhere = events(
            &mut phases,
            &[r#"{"phase": "ready", "url": "https://evil.example.com/user/x/", "token": "abc123"}"#],
        );
        let refused = elsewhere.unwrap().err().unwrap();
        assert!(refused.reason.contains("not the hub"), "{refused:?}");
        assert_eq!(refused.stage, Stage::Resolve, "charged to the phase it came in");
    }
}
