//! The kept server (`sentinel: {every: 1m}`): one probe user's server kept running between rounds, looked
//! at every interval the way a user already working meets it — through the hub's public URL — then a kernel
//! run and a file saved on it. A proxy that lost its routes (restarted, out of memory) sends users already
//! working round a login loop while a freshly started server gets a fresh route, so only a server that was
//! already running shows it; a kernel that crashes or a home that fills is seen within one interval instead
//! of at the next server round. A kept server that is not running (culled, crashed, never started) is
//! started again; that start is the server attempt. One that was running at the last look and is gone
//! without hubwatch stopping it (its process ended, its pod deleted or evicted, its node drained) was lost,
//! as a working user's would be: that look fails ("server lost"), and the next starts it again. A lost
//! route is not repaired by restarting: the kept server goes on showing what users see until the hub puts
//! the routes back.

use super::answers::on_origin;
use super::lane::{Plain, PlainRound, Probe};
use super::round::HubProber;
use super::server::{ServerState, server_url};
use super::{Deadline, OnServer, Stages};
use crate::domain::{Capability, ProbeOutcome, Secret, Stage, StepFailure};
use crate::http::Auth;
use hyper::{Method, StatusCode, header::LOCATION};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// The kept server's user looks at it on the sentinel interval, in place of server rounds; its looks see
/// what server rounds see, so they corroborate each other.
pub(super) fn lane(prober: &HubProber, user: &str) -> Option<Box<dyn Probe>> {
    let sentinel = prober.hub.sentinel.filter(|_| prober.hub.sentinel_user() == Some(user))?;
    let round: PlainRound = |c, cancel| Box::pin(async move { c.prober.probe_sentinel(&c.user, &cancel).await });
    Some(Box::new(Plain { capability: Capability::Server, every: sentinel.every, round }))
}

impl HubProber {
    /// One look at `user`'s kept server, and the kernel and home probes on it; blocked when it is not
    /// reachable. Empty when cancelled. The server is left running (see [`HubProber::stop_kept_server`]).
    pub async fn probe_sentinel(&self, user: &str, cancel: &CancellationToken) -> Vec<ProbeOutcome> {
        let _alone = self.exclusive(user, Capability::Server).await;
        let timeout = self.hub.sentinel.map_or(Duration::from_secs(30), |s| s.timeout);
        let look = self.round(user, Capability::Server, timeout);
        let Ok((token, _)) = self.user_token(user, look.deadline, &Stages::default()).await else {
            let siblings = [look.sibling(Capability::Kernel), look.sibling(Capability::Home)];
            return std::iter::once(look).chain(siblings).map(|r| r.blocked(Capability::Login)).collect();
        };
        let server = self.server_of(user);
        let state =
            look.stages.run(Stage::KeptServer, server.state(Auth::Token(&token), Stage::KeptServer, look.deadline));
        let (outcome, reachable) = match look.steps(cancel, state).await {
            None => return Vec::new(),
            Some(Ok(ServerState::Ready { url })) => {
                self.kept_running.store(true, Ordering::Relaxed);
                let routed = look
                    .steps(cancel, async {
                        let url = server_url(&self.hub.url, url.as_deref(), user)?;
                        look.stages.run(Stage::Route, self.reach(&url, &token, look.deadline)).await.map(|_| url)
                    })
                    .await;
                let Some(routed) = routed else { return Vec::new() };
                let (url, duration) = (routed.as_ref().ok().cloned(), look.elapsed());
                (look.finish(Some(routed.map(|_| ())), Ok(()), duration), url)
            }
            Some(Ok(gone)) if self.kept_running.swap(false, Ordering::Relaxed) => {
                let duration = look.elapsed();
                (look.finish(Some(Err(lost(&gone))), Ok(()), duration), None)
            }
            Some(Ok(_)) => match self.start_kept_server(user, &token, cancel).await {
                Some(started) => started,
                None => return Vec::new(),
            },
            Some(Err(failure)) => {
                let duration = look.elapsed();
                (look.finish(Some(Err(failure)), Ok(()), duration), None)
            }
        };
        let on_server = match &reachable {
            Some(url) => self.on_server(user, &token, url, OnServer { dask: false, ..OnServer::ALL }, cancel).await,
            None => [Capability::Kernel, Capability::Home]
                .into_iter()
                .map(|c| self.round(user, c, Duration::ZERO).blocked(Capability::Server))
                .collect(),
        };
        outcome.into_iter().chain(on_server).collect()
    }

    /// Starts the kept server (a server attempt under the server probe's timeout); a failed start is stopped
    /// again so the next look starts from nothing. `None` when cancelled.
    async fn start_kept_server(
        &self,
        user: &str,
        token: &Secret,
        cancel: &CancellationToken,
    ) -> Option<(Option<ProbeOutcome>, Option<Url>)> {
        tracing::info!(hub = %self.hub.name, user, "the kept server is not running: starting it");
        let start = self.round(user, Capability::Server, self.hub.probes.server.timeout);
        let spawned = start.steps(cancel, self.spawn(user, token, &start.stages, start.deadline)).await?;
        let duration = start.elapsed();
        match spawned {
            Ok(started) => {
                self.kept_running.store(true, Ordering::Relaxed);
                Some((start.finish(Some(Ok(())), Ok(()), duration), Some(started.url)))
            }
            Err(failure) => {
                let server = self.server_of(user);
                let stopped = start.clean_up(Stage::StopServer, |deadline| server.stop(token, deadline)).await;
                Some((start.finish(Some(Err(failure)), stopped, duration), None))
            }
        }
    }

    /// Reaches the running server at `url` through the hub's public URL, as its user's browser would: its
    /// own API answers when the proxy has its route; without one, the hub answers instead.
    async fn reach(&self, url: &Url, token: &Secret, deadline: Deadline) -> Result<(), StepFailure> {
        let status = url.join("api/status").expect("a relative path joins");
        let response = self
            .http
            .call(Method::GET, status.clone(), Auth::Token(token), None, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(Stage::Route, e))?;
        route_answer(&self.hub.url, &status, response.status, response.headers.get(LOCATION), || response.describe())
    }

    /// At shutdown (or when the generation of hubs ends): stops `user`'s kept server.
    pub async fn stop_kept_server(&self, user: &str) -> Result<(), StepFailure> {
        let deadline = Deadline::after(self.cleanup_timeout);
        let token = self.user_token(user, deadline, &Stages::default()).await?.0;
        self.kept_running.store(false, Ordering::Relaxed);
        self.server_of(user).stop(&token, deadline).await
    }
}

/// The kept server, running at the last look, is `gone` now and hubwatch did not stop it.
fn lost(gone: &ServerState) -> StepFailure {
    let now = match gone {
        ServerState::Pending(pending) => format!("its server is pending {pending}"),
        _ => "the hub lists no server".to_string(),
    };
    StepFailure::hub(
        Stage::KeptServer,
        format!(
            "server lost: the kept server was running at the last look and {now}, though hubwatch did not stop it \
             (its process ended, or its pod was deleted, evicted or its node drained); it is started again at the next look"
        ),
    )
}

/// What the answer to a running server's `api/status` says about its route.
fn route_answer(
    hub: &Url,
    asked: &Url,
    status: StatusCode,
    location: Option<&hyper::header::HeaderValue>,
    describe: impl FnOnce() -> String,
) -> Result<(), StepFailure> {
    let path = asked.path();
    let lost = |what: String| {
        Err(StepFailure::hub(
            Stage::Route,
            format!("route lost: {what} for the running server at {path}; users already working meet a login loop"),
        ))
    };
    match status {
        StatusCode::OK => Ok(()),
        s if s.is_redirection() => {
            let target = location.and_then(|l| l.to_str().ok()).unwrap_or_default();
            let hub_path = format!("{}hub/", hub.path());
            match on_origin(asked, target) {
                Ok(to) if to.path().starts_with(&hub_path) => {
                    lost(format!("the proxy sends it to the hub, which redirects to {}", to.path()))
                }
                _ => Err(StepFailure::hub(
                    Stage::Route,
                    format!("the server answered HTTP {} to {path}, not its status", s.as_u16()),
                )),
            }
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::NOT_FOUND => {
            lost(format!("the proxy answered {}", describe()))
        }
        _ => Err(StepFailure::hub(Stage::Route, format!("reaching the running server: {}", describe()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn answer(status: u16, location: Option<&str>) -> Result<(), StepFailure> {
        let hub = Url::parse("https://hub.example.org/prefix/").unwrap();
        let asked = Url::parse("https://hub.example.org/prefix/user/probe-3/api/status").unwrap();
        let location = location.map(|l| HeaderValue::from_str(l).unwrap());
        let status = StatusCode::from_u16(status).unwrap();
        route_answer(&hub, &asked, status, location.as_ref(), || format!("HTTP {status}: Service Unavailable"))
    }

    #[test]
    fn a_redirect_to_the_hub_or_a_proxy_error_is_a_lost_route() {
        assert!(answer(200, None).is_ok());
        let redirected = answer(302, Some("/prefix/hub/user/probe-3/api/status")).unwrap_err();
        assert_eq!(redirected.stage, Stage::Route);
        assert_eq!(
            redirected.reason,
            "route lost: the proxy sends it to the hub, which redirects to /prefix/hub/user/probe-3/api/status for \
             the running server at /prefix/user/probe-3/api/status; users already working meet a login loop"
        );
        let absolute = answer(302, Some("https://hub.example.org/prefix/hub/user/probe-3/api/status")).unwrap_err();
        assert!(absolute.reason.starts_with("route lost"), "{}", absolute.reason);
        assert!(answer(503, None).unwrap_err().reason.starts_with("route lost: the proxy answered HTTP 503"));
        let elsewhere = answer(302, Some("https://login.example.com/authorize")).unwrap_err();
        assert!(!elsewhere.reason.contains("route lost"), "{}", elsewhere.reason);
        assert!(answer(500, None).unwrap_err().reason.starts_with("reaching the running server"));
    }
}
