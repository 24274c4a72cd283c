//! The first-login check (opt-in, `first_login: {token}` on a hub): probe users have logged in thousands of
//! times, so what only a brand-new user meets — a home directory that cannot be created, a user-creation
//! path that fails — passes them by. Once a day a fresh user `hubwatch-first-<random>` is created with the
//! check's own service token, gets a token, is known by it (`whoami`), starts a server (the server stages),
//! saves a file in the new home, stops the server, and is deleted whatever happened. At start-up, users a
//! crashed run left behind are deleted. A failure is a support ticket naming the stage, never a page.

use super::home::HomeFile;
use super::lane::{Plain, PlainRound, Probe};
use super::login::{hub_url, mint_token, whoami};
use super::round::HubProber;
use super::{Deadline, user_path};
use crate::config::FRESH_PREFIX;
use crate::domain::{Capability, ProbeOutcome, Secret, Stage, StepFailure};
use crate::http::Auth;
use hyper::{Method, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The fresh user's token lives no longer than the check can.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The hub's first probe user runs the check (its lane; the check makes its own user).
pub(super) fn lane(prober: &HubProber, _: &str) -> Option<Box<dyn Probe>> {
    prober.hub.first_login.as_ref()?;
    let round: PlainRound =
        |c, cancel| Box::pin(async move { c.prober.probe_first_login(&c.user, &cancel).await.into_iter().collect() });
    Some(Box::new(Plain { capability: Capability::FirstLogin, every: prober.hub.probes.first_login.every, round }))
}

impl HubProber {
    /// The first-login check, reported as `user`'s (the probe user whose lane runs it); None when the hub
    /// does not ask for it or the round was cancelled.
    pub async fn probe_first_login(&self, user: &str, cancel: &CancellationToken) -> Option<ProbeOutcome> {
        let admin = &self.hub.first_login.as_ref()?.token;
        let _alone = self.exclusive(user, Capability::FirstLogin).await;
        // Eight hex digits: unique enough for one check a day, short enough not to pass for a token.
        let fresh = format!("{FRESH_PREFIX}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let round = self.round(user, Capability::FirstLogin, self.hub.probes.first_login.timeout);
        let (stages, deadline) = (&round.stages, round.deadline);
        let created = AtomicBool::new(false);
        let steps = round
            .steps(cancel, async {
                stages.run(Stage::CreateUser, self.create_user(&fresh, admin, deadline)).await?;
                created.store(true, Ordering::Relaxed);
                let mint = mint_token(&self.http, &self.hub.url, admin, &fresh, TOKEN_LIFETIME, deadline);
                let token = stages.run(Stage::MintToken, mint).await?.token;
                let known = whoami(&self.http, &self.hub.url, Auth::Token(&token), None, &fresh, deadline);
                stages.run(Stage::WhoAmI, known).await?;
                let server = self.spawn(&fresh, &token, stages, deadline).await?;
                HomeFile::new(&self.http, &server.url, &token, &fresh).save(stages, deadline).await?;
                stages.run(Stage::StopServer, self.server_of(&fresh).stop(&token, deadline)).await
            })
            .await;
        let duration = round.elapsed();
        let deleted = match created.load(Ordering::Relaxed) {
            // Deleting the user stops a server still running and drops their tokens.
            true => round.clean_up(Stage::DeleteUser, |deadline| self.delete_user(&fresh, admin, deadline)).await,
            false => Ok(()),
        };
        let steps = steps.map(|result| result.map_err(|f| f.with_detail(format!("as the new user {fresh}"))));
        round.finish(steps, deleted, duration)
    }

    /// `POST /hub/api/users/{name}`: the user exists (a 409 is a leftover of the same name: an error).
    async fn create_user(&self, name: &str, admin: &Secret, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::CreateUser;
        let response = self.user_call(Method::POST, name, admin, stage, deadline).await?;
        match response.status {
            StatusCode::CREATED | StatusCode::OK => Ok(()),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(StepFailure::monitor(
                stage,
                "the first-login token may not create users: its role needs admin:users, admin:servers, tokens and access:servers",
            )),
            _ => Err(StepFailure::hub(stage, format!("creating a new user: {}", response.describe()))),
        }
    }

    /// `DELETE /hub/api/users/{name}`; a user already gone is fine.
    async fn delete_user(&self, name: &str, admin: &Secret, deadline: Deadline) -> Result<(), StepFailure> {
        let stage = Stage::DeleteUser;
        let response = self.user_call(Method::DELETE, name, admin, stage, deadline).await?;
        match response.status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(StepFailure::hub(stage, format!("deleting the new user {name}: {}", response.describe()))),
        }
    }

    /// `method` on `/hub/api/users/{name}` with the check's token; a request that got no answer fails `stage`.
    async fn user_call(
        &self,
        method: Method,
        name: &str,
        admin: &Secret,
        stage: Stage,
        deadline: Deadline,
    ) -> Result<crate::http::Response, StepFailure> {
        let url = hub_url(&self.hub.url, &format!("hub/api/users/{}", user_path(name)));
        self.http
            .call(method, url, Auth::Token(admin), None, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(stage, e))
    }

    /// At start-up: deletes the fresh users an earlier run left (`GET /hub/api/users?name_filter=…`); how many.
    pub(super) async fn delete_leftover_fresh_users(&self, deadline: Deadline) -> Result<usize, StepFailure> {
        let Some(first) = &self.hub.first_login else { return Ok(0) };
        let stage = Stage::DeleteUser;
        let query =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("name_filter", FRESH_PREFIX).finish();
        let url = hub_url(&self.hub.url, &format!("hub/api/users?{query}"));
        let response = self
            .http
            .call(Method::GET, url, Auth::Token(&first.token), None, deadline.at)
            .await
            .map_err(|e| deadline.request_failure(stage, e))?;
        if response.status != StatusCode::OK {
            return Err(StepFailure::hub(stage, format!("listing users: {}", response.describe())));
        }
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        let users: Vec<Named> = response.json().map_err(|e| StepFailure::hub(stage, e))?;
        let leftovers: Vec<String> =
            users.into_iter().map(|u| u.name).filter(|name| name.starts_with(FRESH_PREFIX)).collect();
        for name in &leftovers {
            self.delete_user(name, &first.token, deadline).await?;
        }
        Ok(leftovers.len())
    }
}
