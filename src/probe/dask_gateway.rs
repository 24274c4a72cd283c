//! The dask_gateway capability, as a user does it through the hub: create a cluster, wait for RUNNING,
//! scale to N workers, wait until the scheduler really has them (its `json/counts.json`, proxied by the
//! gateway), then delete the cluster. The cluster is deleted whatever happened: leaked clusters cost money.

use super::Deadline;
use crate::config::DaskGatewayConfig;
use crate::domain::Secret;
use crate::domain::{Stage, StepFailure};
use crate::http::{Auth, HttpClient, Response};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use url::Url;

const POLL: Duration = Duration::from_millis(500);
/// The gateway long-polls `?wait` for up to 20 s; each wait gets a little more than that.
const LONG_POLL: Duration = Duration::from_secs(25);

pub struct Gateway<'a> {
    http: &'a HttpClient,
    /// The gateway's address as users give it (`.../services/dask-gateway/`).
    base: &'a Url,
    token: &'a Secret,
}

impl<'a> Gateway<'a> {
    pub fn new(http: &'a HttpClient, config: &'a DaskGatewayConfig, token: &'a Secret) -> Self {
        Gateway { http, base: &config.url, token }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        stage: Stage,
        deadline: Deadline,
    ) -> Result<Response, StepFailure> {
        let url = self.base.join(path).map_err(|e| StepFailure::hub(stage, format!("bad gateway path: {e}")))?;
        let at = deadline.at;
        self.http
            .call(method, url, Auth::Gateway(self.token), body, at)
            .await
            .map_err(|e| deadline.request_failure(stage, e))
    }

    /// Deletes clusters the probe user still has running or pending (the probe user is hubwatch's own).
    pub async fn delete_leftovers(&self, deadline: Deadline) -> Result<usize, StepFailure> {
        let stage = Stage::DeleteLeftoverClusters;
        let response = self.call(Method::GET, "api/v1/clusters/?status=running,pending", None, stage, deadline).await?;
        if response.status != StatusCode::OK {
            return Err(StepFailure::hub(stage, format!("listing clusters: {}", response.describe())));
        }
        let clusters = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        let names: Vec<String> = clusters.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for name in &names {
            self.delete_as(name, stage, deadline).await?;
        }
        Ok(names.len())
    }

    pub async fn create(
        &self,
        options: &serde_json::Map<String, Value>,
        deadline: Deadline,
    ) -> Result<String, StepFailure> {
        let stage = Stage::CreateCluster;
        let body = json!({"cluster_options": options});
        let response = self.call(Method::POST, "api/v1/clusters/", Some(&body), stage, deadline).await?;
        if response.status != StatusCode::CREATED && response.status != StatusCode::OK {
            return Err(StepFailure::hub(stage, response.describe()));
        }
        let json = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        json.get("name")
            .and_then(Value::as_str)
            .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && !n.is_empty())
            .map(str::to_string)
            .ok_or_else(|| StepFailure::hub(stage, "the gateway answered without a usable cluster name"))
    }

    /// Long-polls the cluster until it leaves PENDING; RUNNING is success, anything else a failure.
    pub async fn wait_running(&self, name: &str, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::WaitRunning;
        loop {
            let poll = Deadline { at: deadline.at.min(Instant::now() + LONG_POLL), budget: deadline.budget };
            let response =
                match self.call(Method::GET, &format!("api/v1/clusters/{name}?wait"), None, stage, poll).await {
                    // The long poll ran out before the probe did: ask again.
                    Err(_) if Instant::now() < deadline.at && poll.at < deadline.at => continue,
                    Err(_) => {
                        return Err(StepFailure::hub(
                            stage,
                            format!(
                                "the cluster was not running within the {} timeout (still PENDING)",
                                humantime::format_duration(deadline.budget)
                            ),
                        ));
                    }
                    Ok(r) => r,
                };
            if response.status != StatusCode::OK {
                return Err(StepFailure::hub(stage, response.describe()));
            }
            let model = response.json().map_err(|e| StepFailure::hub(stage, e))?;
            match model.get("status").and_then(Value::as_str) {
                Some("RUNNING") => return Ok(()),
                Some("PENDING") => {}
                Some("FAILED") => {
                    return Err(StepFailure::hub(
                        stage,
                        "the cluster FAILED to start (the gateway gives no reason; see its logs)",
                    ));
                }
                Some(other) => {
                    return Err(StepFailure::hub(stage, format!("the cluster went {other} before it was running")));
                }
                None => return Err(StepFailure::hub(stage, "the gateway's cluster model has no status")),
            }
        }
    }

    pub async fn scale(&self, name: &str, workers: u32, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::Scale;
        let body = json!({"count": workers});
        let response =
            self.call(Method::POST, &format!("api/v1/clusters/{name}/scale"), Some(&body), stage, deadline).await?;
        if response.status != StatusCode::OK {
            return Err(StepFailure::hub(stage, response.describe()));
        }
        let answer = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        if answer.get("ok").and_then(Value::as_bool) != Some(true) {
            let why = answer.get("msg").and_then(Value::as_str).unwrap_or("no reason given");
            return Err(StepFailure::hub(
                stage,
                format!("the gateway refused to scale to {workers}: {}", crate::http::scrub(why)),
            ));
        }
        Ok(())
    }

    /// Waits until the scheduler counts `workers` workers: the REST model has no worker count.
    pub async fn wait_workers(&self, name: &str, workers: u32, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::WaitWorker;
        loop {
            let last =
                match self.call(Method::GET, &format!("clusters/{name}/json/counts.json"), None, stage, deadline).await
                {
                    Ok(response) if response.status == StatusCode::OK => {
                        let counts = response.json().map_err(|e| StepFailure::hub(stage, e))?;
                        let have = counts.get("workers").and_then(Value::as_u64).unwrap_or(0);
                        if have >= u64::from(workers) {
                            return Ok(());
                        }
                        format!("{have} of {workers} workers")
                    }
                    Ok(response) => response.describe(),
                    Err(failure) if Instant::now() >= deadline.at => return Err(failure),
                    Err(failure) => failure.reason,
                };
            if Instant::now() + POLL >= deadline.at {
                return Err(StepFailure::hub(
                    stage,
                    format!(
                        "the cluster did not get its workers within the {} timeout ({last})",
                        humantime::format_duration(deadline.budget)
                    ),
                ));
            }
            sleep(POLL).await;
        }
    }

    pub async fn delete(&self, name: &str, deadline: Deadline) -> Result<(), StepFailure> {
        self.delete_as(name, Stage::DeleteCluster, deadline).await
    }

    async fn delete_as(&self, name: &str, stage: Stage, deadline: Deadline) -> Result<(), StepFailure> {
        let response = self.call(Method::DELETE, &format!("api/v1/clusters/{name}"), None, stage, deadline).await?;
        match response.status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(StepFailure::hub(stage, format!("deleting the cluster: {}", response.describe()))),
        }
    }
}
