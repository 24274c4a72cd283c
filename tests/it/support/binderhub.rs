//! A local BinderHub: `/health` and `/build/{provider}/{spec}` as BinderHub answers them (docs and the notes
//! in ../shared/notes/binderhub.md), replaying the event sequences BinderHub sends — a cached launch, a build,
//! a GitHub rate limit at resolve, a refused push, launch attempts exhausted — and keeping the stream open
//! after `ready`, as BinderHub does. A launch is real: the server is started on the lab's JupyterHub and the
//! ready event carries its URL and a token of its user. It wants `Authorization: token {TOKEN}`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TOKEN: &str = "binderhub-api-token-0123456789";

/// What the next build request replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// A cached image: built, launching, ready.
    Launch,
    /// The same, with one launch attempt failed and retried first (slow, not failed).
    LaunchRetried,
    RateLimited,
    PushRefused,
    LaunchExhausted,
}

#[derive(Default)]
struct Inner {
    script: Option<Script>,
    /// The failing health check's service, if any.
    unhealthy: Option<&'static str>,
    /// The lab's URL and hubwatch's token there, and the users whose servers launches start.
    lab: Option<(String, String)>,
    users: Vec<String>,
    /// Users a launch is starting a server for (until it is ready: then the hub lists it).
    launching: Vec<String>,
    requested: Vec<String>,
}

#[derive(Clone, Default)]
pub struct BinderHub {
    inner: Arc<Mutex<Inner>>,
}

impl BinderHub {
    /// Serves on a random loopback port; returns its URL (with a trailing slash).
    pub async fn start(self) -> String {
        let app = Router::new().route("/health", get(health)).route("/build/{*spec}", get(build)).with_state(self);
        let addr = super::serve::on_loopback(app).await;
        format!("http://{addr}/")
    }

    /// Launches start servers for `users` (one whose previous server is gone) on the lab at `url` (hubwatch's `token` there).
    pub fn launching_on(&self, url: &str, token: &str, users: &[&str]) {
        let mut inner = self.inner.lock().unwrap();
        inner.lab = Some((url.to_string(), token.to_string()));
        inner.users = users.iter().map(|u| u.to_string()).collect();
    }

    pub fn set_script(&self, script: Script) {
        self.inner.lock().unwrap().script = Some(script);
    }

    pub fn set_unhealthy(&self, service: Option<&'static str>) {
        self.inner.lock().unwrap().unhealthy = service;
    }

    /// The specs build requests asked for (`gh/org/repo/ref`).
    pub fn requested(&self) -> Vec<String> {
        self.inner.lock().unwrap().requested.clone()
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("token {TOKEN}"))
}

async fn health(State(binder): State<BinderHub>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return (StatusCode::FORBIDDEN, "no").into_response();
    }
    let unhealthy = binder.inner.lock().unwrap().unhealthy;
    let check = |service: &str| json!({"service": service, "ok": unhealthy != Some(service)});
    let checks = json!([check("Docker registry"), check("JupyterHub API"),
        {"service": "Pod quota", "total_pods": 12, "build_pods": 1, "user_pods": 11, "quota": 100, "ok": true}]);
    let status = if unhealthy.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, axum::Json(json!({"ok": unhealthy.is_none(), "checks": checks}))).into_response()
}

async fn build(State(binder): State<BinderHub>, Path(spec): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return (StatusCode::FORBIDDEN, "no").into_response();
    }
    let script = {
        let mut inner = binder.inner.lock().unwrap();
        inner.requested.push(spec.clone());
        inner.script.unwrap_or(Script::Launch)
    };
    let mut events = match script {
        Script::Launch | Script::LaunchRetried => vec![
            json!({"phase": "built", "imageName": "registry.example.org/binder/r2d-abc:0123abc",
                "message": "Found built image, launching...\n"}),
            json!({"phase": "launching", "message": "Launching server...\n"}),
        ],
        Script::RateLimited => vec![
            json!({"phase": "waiting", "message": "Waiting for build to start...\n"}),
            json!({"phase": "failed", "message": format!("Error resolving ref for gh:{}: GitHub rate limit exceeded. Try again in 5 minutes.\n",
                spec.split_once('/').map_or(spec.as_str(), |(_, rest)| rest))}),
        ],
        Script::PushRefused => vec![
            json!({"phase": "waiting", "message": "Waiting for build to start...\n"}),
            json!({"phase": "fetching", "message": "Picked Git content provider.\n"}),
            json!({"phase": "building", "message": "Step 1/9 : FROM docker.io/library/buildpack-deps:jammy\n"}),
            json!({"phase": "pushing", "message": "Pushing image\n", "progress": {"layer": "pushing"}}),
            json!({"phase": "failed", "message": "Failed to push image registry.example.org/binder/r2d-abc:0123abc: denied: requested access to the resource is denied\n"}),
        ],
        Script::LaunchExhausted => (1..=4)
            .map(|n| json!({"phase": "launching", "message": format!("Launch attempt {n} failed, retrying...\n")}))
            .chain([json!({"phase": "failed", "message": "Failed to launch image registry.example.org/binder/r2d-abc:0123abc\n"})])
            .collect(),
    };
    if script == Script::LaunchRetried {
        events.push(json!({"phase": "launching", "message": "Launch attempt 1 failed, retrying...\n"}));
    }
    if matches!(script, Script::Launch | Script::LaunchRetried) {
        events.push(launch(&binder).await);
    }
    let lines: Vec<Result<String, std::io::Error>> = events.iter().map(|e| Ok(format!("data: {e}\n\n"))).collect();
    // BinderHub keeps the stream open after the last event: the client closes it.
    let body = futures_util::stream::iter(lines).chain(futures_util::stream::pending());
    Response::builder().header("Content-Type", "text/event-stream").body(Body::from_stream(body)).unwrap()
}

use futures_util::StreamExt;

/// Starts a server on the lab for one of the users whose previous launch has gone (BinderHub gives each
/// launch a fresh user; the stand-in reuses its few, so it waits for one with no server) and mints a token
/// for it: the ready event.
async fn launch(binder: &BinderHub) -> Value {
    let (url, token) = binder.inner.lock().unwrap().lab.clone().expect("a launch needs the lab");
    let user = free_user(binder, &url, &token).await;
    let hub = |method: reqwest::Method, path: &str| user_api(method, &url, &token, &user, path);
    hub(reqwest::Method::POST, "/server").send().await.unwrap();
    for _ in 0..120 {
        if user_model(&url, &token, &user).await["servers"][""]["ready"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let minted = super::json_of(
        hub(reqwest::Method::POST, "/tokens").json(&json!({"expires_in": 600, "note": "binderhub stand-in launch"})),
    )
    .await;
    binder.inner.lock().unwrap().launching.retain(|u| *u != user);
    let server = format!("{url}/user/{user}/");
    json!({"phase": "ready", "message": format!("server running at {server}\n"), "image": "registry.example.org/binder/r2d-abc:0123abc",
        "repo_url": "https://github.com/binder-examples/requirements", "url": server, "token": minted["token"]})
}

/// A user with no server on the hub and no launch starting one, taken for this launch (waits up to 60 s for
/// the hub to forget a shut-down server).
async fn free_user(binder: &BinderHub, url: &str, token: &str) -> String {
    for _ in 0..240 {
        let candidates: Vec<String> = {
            let inner = binder.inner.lock().unwrap();
            inner.users.iter().filter(|u| !inner.launching.contains(u)).cloned().collect()
        };
        for user in candidates {
            let model = user_model(url, token, &user).await;
            let mut inner = binder.inner.lock().unwrap();
            if model["servers"].as_object().is_some_and(|s| s.is_empty()) && !inner.launching.contains(&user) {
                inner.launching.push(user.clone());
                return user;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no stand-in user free for a launch within 60 s")
}

/// A request to the lab's REST API about `user` (`path` after `/hub/api/users/{user}`), as the hub's admin.
fn user_api(method: reqwest::Method, url: &str, token: &str, user: &str, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{url}/hub/api/users/{user}{path}"))
        .header("Authorization", format!("token {token}"))
}

/// The hub's model of `user` (their servers, ready or not).
async fn user_model(url: &str, token: &str, user: &str) -> Value {
    super::json_of(user_api(reqwest::Method::GET, url, token, user, "")).await
}
