//! The home capability: users can save their work. On the user's running server, through the Jupyter
//! contents API: write a small file in the home directory (`PUT`), read it back (`GET`: the same text), and
//! delete it (`DELETE`, as clean-up, whatever happened). A full or read-only home answers the write with the
//! server's own words — "[Errno 28] No space left on device", "Read-only file system", a quota message — and
//! the failure's reason quotes them. Home full is the outage users meet most often, and every other probe
//! passes through it: the server starts, the kernel runs, only saving fails.

use super::answers::Text;
use super::round::HubProber;
use super::{Deadline, Stages};
use crate::domain::{Capability, ProbeOutcome, Secret, Stage, StepFailure};
use crate::http::{Auth, HttpClient, Response};
use hyper::{Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use url::Url;

impl HubProber {
    /// The home capability on a running server; the file is deleted afterwards. None when cancelled.
    pub(super) async fn probe_home(
        &self,
        user: &str,
        token: &Secret,
        server_url: &Url,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<ProbeOutcome> {
        let round = self.round(user, Capability::Home, self.hub.probes.home.timeout);
        let file = HomeFile::new(&self.http, server_url, token, user);
        let tried = AtomicBool::new(false);
        let saved = round
            .steps(cancel, async {
                tried.store(true, Ordering::Relaxed);
                file.save(&round.stages, round.deadline).await
            })
            .await;
        let duration = round.elapsed();
        let deleted = match tried.load(Ordering::Relaxed) {
            // A write that failed half-way may still have left the file.
            true => round.clean_up(Stage::DeleteFile, |deadline| file.delete(deadline)).await,
            false => Ok(()),
        };
        round.finish(saved, deleted, duration)
    }
}

/// The probe's file in the user's home, through their server's contents API.
pub(super) struct HomeFile<'a> {
    http: &'a HttpClient,
    token: &'a Secret,
    url: Url,
    name: String,
    content: String,
}

impl<'a> HomeFile<'a> {
    pub(super) fn new(http: &'a HttpClient, server: &Url, token: &'a Secret, user: &str) -> Self {
        // Not a dot-file: jupyter-server refuses hidden files by default. Short: a long hex run in a name would
        // be taken for a token by the redactor and hide the name in reasons.
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let name = format!("hubwatch-probe-{id}.txt");
        let url = server.join(&format!("api/contents/{name}")).expect("a plain file name joins");
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let content = format!("hubwatch checked that {user} can save to their home directory at {at}.\n");
        HomeFile { http, token, url, name, content }
    }

    /// Write, then read back.
    pub(super) async fn save(&self, stages: &Stages, deadline: Deadline) -> Result<(), StepFailure> {
        stages.run(Stage::WriteFile, self.write(deadline)).await?;
        stages.run(Stage::ReadFile, self.read_back(deadline)).await
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        stage: Stage,
        deadline: Deadline,
    ) -> Result<Response, StepFailure> {
        self.http
            .call(method, url, Auth::Token(self.token), body, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(stage, e))
    }

    async fn write(&self, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::WriteFile;
        let body = json!({"type": "file", "format": "text", "content": self.content});
        let answer = self.call(Method::PUT, self.url.clone(), Some(&body), stage, deadline).await?;
        match answer.status {
            StatusCode::CREATED | StatusCode::OK => Ok(()),
            status => {
                Err(refused(stage, status, &answer, &format!("could not save {} in the home directory", self.name)))
            }
        }
    }

    async fn read_back(&self, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::ReadFile;
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("type", "file").append_pair("format", "text").append_pair("content", "1");
        let answer = self.call(Method::GET, url, None, stage, deadline).await?;
        if answer.status != StatusCode::OK {
            return Err(refused(stage, answer.status, &answer, &format!("could not read {} back", self.name)));
        }
        #[derive(serde::Deserialize)]
        struct Model {
            #[serde(default)]
            content: Text,
        }
        let model: Model = answer.json().map_err(|e| StepFailure::hub(stage, e))?;
        match model.content.as_deref() {
            Some(content) if content == self.content => Ok(()),
            Some(_) => Err(StepFailure::hub(stage, format!("{} read back different from what was written", self.name))),
            None => Err(StepFailure::hub(stage, format!("{} read back without its text", self.name))),
        }
    }

    async fn delete(&self, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::DeleteFile;
        let answer = self.call(Method::DELETE, self.url.clone(), None, stage, deadline).await?;
        match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            status => Err(refused(stage, status, &answer, &format!("could not delete {}", self.name))),
        }
    }
}

/// A refusal in the server's words; a redirect means the hub answered instead (the server is not running).
fn refused(stage: Stage, status: StatusCode, answer: &Response, what: &str) -> StepFailure {
    if status.is_redirection() {
        return StepFailure::hub(
            stage,
            format!("{what}: HTTP {status}: the hub redirected away from the server (it is not running)"),
        );
    }
    StepFailure::hub(stage, format!("{what}: {}", answer.describe()))
}
