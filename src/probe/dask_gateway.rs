//! The dask_gateway capability, as a user does it through the hub: create a cluster, wait for RUNNING,
//! scale to N workers, wait until the scheduler really has them (its `json/counts.json`, proxied by the
//! gateway), then delete the cluster. The cluster is deleted whatever happened: leaked clusters cost money.

use super::answers::Text;
use super::kernel::KernelWork;
use super::lane::{Plain, PlainRound, Probe};
use super::round::HubProber;
use super::{Deadline, Look, Stages, poll_until};
use crate::config::{DaskGatewayConfig, KernelCell};
use crate::domain::{Capability, ProbeOutcome, Secret, Stage, StepFailure};
use crate::http::{Auth, HttpClient, Response};
use crate::sync::lock;
use hyper::{Method, StatusCode};
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

const POLL: Duration = Duration::from_millis(500);
/// The gateway long-polls `?wait` for up to 20 s; each wait gets a little more than that.
const LONG_POLL: Duration = Duration::from_secs(25);

/// With a gateway configured, every probe user makes and uses a cluster, on the Dask Gateway interval.
pub(super) fn lane(prober: &HubProber, _: &str) -> Option<Box<dyn Probe>> {
    prober.hub.dask_gateway.as_ref()?;
    let round: PlainRound =
        |c, cancel| Box::pin(async move { c.prober.probe_dask_gateway(&c.user, &cancel).await.into_iter().collect() });
    Some(Box::new(Plain { capability: Capability::DaskGateway, every: prober.hub.probes.dask_gateway.every, round }))
}

/// The cell a user server's kernel runs for Dask from inside: the server's own gateway settings (`Gateway()`
/// as users call it), one worker, a sum computed on it, the cluster shut down whatever happened. Python's
/// own timeouts end before the probe's, so a blocked route fails with Dask's words, not a cut-off.
fn from_server_cell(cluster_options: &serde_json::Map<String, Value>, timeout: Duration) -> KernelCell {
    let wait = timeout.saturating_sub(Duration::from_secs(15)).max(Duration::from_secs(30)).as_secs() / 3;
    let options = serde_json::to_string(&Value::Object(cluster_options.clone()).to_string()).expect("a string");
    let code = format!(
        r#"import json as _hubwatch_json
import dask as _hubwatch_dask
from dask_gateway import Gateway as _HubwatchGateway
_hubwatch_dask.config.set({{"distributed.comm.timeouts.connect": "{wait}s"}})
with _HubwatchGateway() as _hubwatch_gateway:
    _hubwatch_cluster = _hubwatch_gateway.new_cluster(**_hubwatch_json.loads({options}))
    try:
        _hubwatch_cluster.scale(1)
        with _hubwatch_cluster.get_client(set_as_default=False) as _hubwatch_client:
            _hubwatch_client.wait_for_workers(1, timeout={wait})
            _hubwatch_sum = _hubwatch_client.submit(sum, [1, 2]).result(timeout={wait})
    finally:
        _hubwatch_cluster.shutdown()
_hubwatch_sum"#
    );
    KernelCell { code, expect: Some("3".into()), expect_regex: None }
}

impl HubProber {
    /// Dask Gateway from inside the running server at `server_url`: the dask_gateway capability, at stage
    /// `connect_from_server`. None when the hub has no gateway or the round was cancelled.
    pub(super) async fn probe_dask_from_server(
        &self,
        user: &str,
        token: &Secret,
        server_url: &Url,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<ProbeOutcome> {
        let gateway = self.hub.dask_gateway.as_ref()?;
        // The user's Dask round deletes their clusters it finds as leftovers: not while this one computes.
        let _alone = self.exclusive(user, Capability::DaskGateway).await;
        let timeout = self.hub.probes.dask_gateway.timeout;
        let cells = [from_server_cell(&gateway.cluster_options, timeout)];
        let work =
            KernelWork { capability: Capability::DaskGateway, timeout, cells: &cells, stage: Stage::ConnectFromServer };
        self.on_kernel(user, token, server_url, work, cancel).await
    }

    /// The dask_gateway capability; None when the hub has no gateway configured or the round was cancelled.
    pub async fn probe_dask_gateway(
        &self,
        user: &str,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<ProbeOutcome> {
        let config = self.hub.dask_gateway.as_ref()?;
        let _alone = self.exclusive(user, Capability::DaskGateway).await;
        let settings = &self.hub.probes.dask_gateway;
        let round = self.round(user, Capability::DaskGateway, settings.timeout);
        let Ok((token, _)) = self.user_token(user, round.deadline, &Stages::default()).await else {
            return Some(round.blocked(Capability::Login));
        };
        let gateway = Gateway::new(&self.http, config, &token);
        let (stages, deadline) = (&round.stages, round.deadline);
        let cluster: std::sync::Mutex<Option<String>> = Default::default();
        let used = round
            .steps(cancel, async {
                stages.run(Stage::DeleteLeftoverClusters, gateway.delete_leftovers(deadline)).await?;
                let created = gateway.create(&config.cluster_options, deadline);
                let name = stages.run(Stage::CreateCluster, created).await?;
                *lock(&cluster) = Some(name.clone());
                stages.run(Stage::WaitRunning, gateway.wait_running(&name, deadline)).await?;
                stages.run(Stage::Scale, gateway.scale(&name, settings.workers, deadline)).await?;
                stages.run(Stage::WaitWorker, gateway.wait_workers(&name, settings.workers, deadline)).await
            })
            .await;
        let duration = round.elapsed();
        // Deleted whatever happened: a leaked cluster costs money.
        let deleted = match crate::sync::into_inner(cluster) {
            Some(name) => {
                let delete = |deadline| async move { gateway.delete(&name, deadline).await };
                round.clean_up(Stage::DeleteCluster, delete).await
            }
            None => Ok(()),
        };
        round.finish(used, deleted, duration)
    }

    /// At start-up: clusters an earlier run left (as the probe user); how many were deleted.
    pub(super) async fn delete_leftover_clusters(&self, user: &str, deadline: Deadline) -> Result<usize, StepFailure> {
        let Some(config) = &self.hub.dask_gateway else { return Ok(0) };
        let (token, _) = self.user_token(user, deadline, &Stages::default()).await?;
        Gateway::new(&self.http, config, &token).delete_leftovers(deadline).await
    }
}

/// The fields of the gateway's cluster model hubwatch reads.
#[derive(serde::Deserialize)]
struct ClusterModel {
    #[serde(default)]
    name: Text,
    #[serde(default)]
    status: Text,
}

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
        let clusters: HashMap<String, IgnoredAny> = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        let names: Vec<String> = clusters.into_keys().collect();
        let (names, odd): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| super::answers::path_segment(n));
        for name in &names {
            self.delete_as(name, stage, deadline).await?;
        }
        if !odd.is_empty() {
            return Err(StepFailure::hub(
                stage,
                format!("the gateway listed {} cluster names that are not names (not used in a URL)", odd.len()),
            ));
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
        let model: ClusterModel = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        // On Kubernetes a name is "namespace.id"; anything that is not one plain path segment is refused.
        model
            .name
            .0
            .filter(|n| super::answers::path_segment(n))
            .ok_or_else(|| StepFailure::hub(stage, "the gateway answered without a usable cluster name"))
    }

    /// Long-polls the cluster until it leaves PENDING; RUNNING is success, anything else a failure. A long
    /// poll that runs out is asked again at once; an error (no answer, a 5xx) is asked again after a pause,
    /// and is what the failure quotes if the deadline comes first.
    pub async fn wait_running(&self, name: &str, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::WaitRunning;
        let look = || async move {
            let poll = Deadline { at: deadline.at.min(Instant::now() + LONG_POLL), budget: deadline.budget };
            let response =
                match self.call(Method::GET, &format!("api/v1/clusters/{name}?wait"), None, stage, poll).await {
                    Ok(response) => response,
                    // The long poll ran out before the probe did.
                    Err(_) if Instant::now() >= poll.at && poll.at < deadline.at => {
                        return Ok(Look::NotYet("still PENDING".into()));
                    }
                    Err(failure) => return Ok(Look::NotYet(failure.reason)),
                };
            if response.status.is_server_error() {
                // The gateway's backend may be catching up: asked again after the pause, quoted if it stays.
                return Ok(Look::NotYet(response.describe()));
            }
            if response.status != StatusCode::OK {
                return Err(StepFailure::hub(stage, response.describe()));
            }
            let model: ClusterModel = response.json().map_err(|e| StepFailure::hub(stage, e))?;
            match model.status.as_deref() {
                Some("RUNNING") => Ok(Look::Done(())),
                Some("PENDING") => Ok(Look::NotYet("still PENDING".into())),
                Some("FAILED") => Err(StepFailure::hub(
                    stage,
                    "the cluster FAILED to start (the gateway gives no reason; see its logs)",
                )),
                Some(other) => Err(StepFailure::hub(stage, format!("the cluster went {other} before it was running"))),
                None => Err(StepFailure::hub(stage, "the gateway's cluster model has no status")),
            }
        };
        let budget = humantime::format_duration(deadline.budget);
        let late =
            |saw| StepFailure::hub(stage, format!("the cluster was not running within the {budget} timeout ({saw})"));
        poll_until(deadline, POLL, look, late).await
    }

    pub async fn scale(&self, name: &str, workers: u32, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::Scale;
        let body = json!({"count": workers});
        let response =
            self.call(Method::POST, &format!("api/v1/clusters/{name}/scale"), Some(&body), stage, deadline).await?;
        if response.status != StatusCode::OK {
            return Err(StepFailure::hub(stage, response.describe()));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            ok: Option<bool>,
            #[serde(default)]
            msg: Text,
        }
        let answer: Answer = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        if answer.ok != Some(true) {
            let why = answer.msg.as_deref().unwrap_or("no reason given");
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
        let count = || async move {
            let path = format!("clusters/{name}/json/counts.json");
            let seen = match self.call(Method::GET, &path, None, stage, deadline).await {
                Ok(response) if response.status == StatusCode::OK => {
                    #[derive(serde::Deserialize)]
                    struct Counts {
                        #[serde(default)]
                        workers: Option<u64>,
                    }
                    let counts: Counts = response.json().map_err(|e| StepFailure::hub(stage, e))?;
                    let have = counts.workers.unwrap_or(0);
                    if have >= u64::from(workers) {
                        return Ok(Look::Done(()));
                    }
                    format!("{have} of {workers} workers")
                }
                Ok(response) => response.describe(),
                Err(failure) if Instant::now() >= deadline.at => return Err(failure),
                Err(failure) => failure.reason,
            };
            Ok(Look::NotYet(seen))
        };
        let budget = humantime::format_duration(deadline.budget);
        let late = |saw| {
            StepFailure::hub(stage, format!("the cluster did not get its workers within the {budget} timeout ({saw})"))
        };
        poll_until(deadline, POLL, count, late).await
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
