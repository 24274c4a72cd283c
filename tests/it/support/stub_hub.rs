//! A local stand-in for a hub that misbehaves in ways a real JupyterHub cannot be made to: garbage JSON,
//! endless or oversized event streams, huge bodies, handshakes that never complete. It answers the same
//! paths and shapes as JupyterHub 6 (see the lab notes) and records what the probe did.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State, WebSocketUpgrade, ws::Message};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mint {
    #[default]
    Ok,
    HugeBody,
    Garbage,
    /// 403 on minting; the service token itself is refused too.
    ServiceTokenRevoked,
    /// 403 on minting, but the service token is fine (missing scope).
    MissingScope,
    Hang,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Progress {
    #[default]
    Ready,
    /// Events every 10 ms, never a final one.
    Endless,
    /// One line that never ends.
    EndlessLine,
    Garbage,
    FailedEmpty,
    /// Failed, with the next of `Behaviour::failure_messages` (in turn) as the message.
    FailedWith,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelSocket {
    #[default]
    Answers,
    /// Accept the upgrade request and never answer it.
    HangHandshake,
    /// Answer the execute request with this wrong result.
    WrongResult,
    /// Send pings forever and nothing else.
    OnlyPings,
}

/// How the user's home directory behaves under the contents API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Home {
    #[default]
    Works,
    /// Writes fail as jupyter-server reports ENOSPC.
    Full,
    /// Writes fail as jupyter-server reports EROFS.
    ReadOnly,
}

/// How the stub's Dask Gateway (under `/services/dask-gateway/`) behaves.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum GatewayBehaviour {
    /// Creates `temple.<hex>` clusters that run at once.
    #[default]
    Healthy,
    /// Every long poll of a cluster answers 500 with a message.
    Errors,
    /// Answers a create with this name.
    ClusterName(String),
    /// Lists these as the probe user's running clusters.
    Leftovers(Vec<String>),
}

#[derive(Default)]
pub struct Behaviour {
    pub mint: Mint,
    pub progress: Progress,
    pub kernel_socket: KernelSocket,
    pub failure_messages: std::collections::VecDeque<String>,
    /// The server URL the hub gives (progress and user model); default `/user/NAME/`.
    pub server_url: Option<String>,
    /// The login form's action; default `/hub/login?next=`.
    pub form_action: Option<String>,
    /// The id a started kernel gets; default `k-1`.
    pub kernel_id: Option<String>,
    pub gateway: GatewayBehaviour,
    pub home: Home,
    /// Where `/hub/oauth_login` redirects (an identity provider's authorize URL); 404 when unset.
    pub oauth_authorize: Option<String>,
    /// How long stopping a server takes (a slow clean-up).
    pub stop_delay: Duration,
}

#[derive(Default)]
pub struct Record {
    pub server_running: bool,
    pub kernels_started: usize,
    pub kernels_deleted: usize,
    pub server_stops: usize,
    /// Every request, as "METHOD /path?query".
    pub requests: Vec<String>,
    /// Files in the probe users' homes, by path.
    pub files: std::collections::HashMap<String, String>,
}

#[derive(Clone, Default)]
pub struct Stub {
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub record: Arc<Mutex<Record>>,
}

pub const SERVICE_TOKEN: &str = "stub-service-token";

impl Stub {
    /// Serves on a random loopback port; returns the hub URL.
    pub async fn start(self) -> String {
        let addr = super::serve::on_loopback(self.router()).await;
        format!("http://{addr}/")
    }

    /// Serves over TLS with `cert` and `key` on a random loopback port; returns the hub URL.
    pub async fn start_tls(self, cert: &std::path::Path, key: &std::path::Path) -> String {
        let addr = super::serve::on_loopback_tls(self.router(), cert, key).await;
        format!("https://{addr}/")
    }

    fn router(self) -> Router {
        Router::new()
            .route("/hub/api/users/{user}/tokens", post(mint))
            .route("/hub/api/user", get(whoami))
            .route("/hub/login", get(login_page).post(login))
            .route("/hub/oauth_login", get(oauth_login))
            .route("/hub/api/users/{user}", get(user_model))
            .route("/hub/api/users/{user}/server", post(spawn).delete(stop))
            .route("/hub/api/users/{user}/server/progress", get(progress))
            .route("/user/{user}/api/kernels", post(start_kernel))
            .route("/user/{user}/api/kernels/{id}", delete(delete_kernel))
            .route("/user/{user}/api/kernels/{id}/channels", get(channels))
            .route("/user/{user}/api/contents/{name}", get(read_file).put(write_file).delete(delete_file))
            .route("/services/dask-gateway/api/v1/clusters/", get(list_clusters).post(create_cluster))
            .route("/services/dask-gateway/api/v1/clusters/{name}", get(cluster).delete(delete_cluster))
            .layer(axum::middleware::from_fn_with_state(self.clone(), record_request))
            .with_state(self)
    }

    fn behaviour<T>(&self, f: impl FnOnce(&Behaviour) -> T) -> T {
        f(&self.behaviour.lock().unwrap())
    }
}

fn token_of(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "))
        .unwrap_or("")
        .to_string()
}

async fn mint(State(stub): State<Stub>, Path(user): Path<String>, headers: HeaderMap) -> Response {
    assert_eq!(token_of(&headers), SERVICE_TOKEN, "tokens are minted with the service token");
    match stub.behaviour(|b| b.mint) {
        Mint::Ok => (StatusCode::CREATED, axum::Json(json!({"token": format!("user-token-{user}"), "user": user})))
            .into_response(),
        Mint::HugeBody => {
            let chunk = vec![b' '; 64 * 1024];
            let stream = futures_util::stream::iter((0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            (StatusCode::CREATED, Body::from_stream(stream)).into_response()
        }
        Mint::Garbage => {
            (StatusCode::CREATED, [("content-type", "application/json")], "{\"token\": <<<").into_response()
        }
        Mint::ServiceTokenRevoked | Mint::MissingScope => {
            (StatusCode::FORBIDDEN, axum::Json(json!({"status": 403, "message": null}))).into_response()
        }
        Mint::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

async fn whoami(State(stub): State<Stub>, headers: HeaderMap) -> Response {
    let token = token_of(&headers);
    if token == SERVICE_TOKEN {
        return match stub.behaviour(|b| b.mint) {
            Mint::ServiceTokenRevoked => {
                (StatusCode::FORBIDDEN, axum::Json(json!({"status": 403, "message": null}))).into_response()
            }
            _ => axum::Json(json!({"kind": "service", "name": "hubwatch"})).into_response(),
        };
    }
    match token.strip_prefix("user-token-") {
        Some(user) => axum::Json(json!({"kind": "user", "name": user})).into_response(),
        None => (StatusCode::FORBIDDEN, axum::Json(json!({"status": 403, "message": null}))).into_response(),
    }
}

async fn user_model(State(stub): State<Stub>, Path(user): Path<String>) -> Response {
    let running = stub.record.lock().unwrap().server_running;
    let url = stub.behaviour(|b| b.server_url.clone()).unwrap_or_else(|| format!("/user/{user}/"));
    let servers =
        if running { json!({"": {"ready": true, "pending": null, "stopped": false, "url": url}}) } else { json!({}) };
    axum::Json(json!({"name": user, "servers": servers})).into_response()
}

async fn spawn(State(stub): State<Stub>) -> Response {
    stub.record.lock().unwrap().server_running = true;
    StatusCode::ACCEPTED.into_response()
}

async fn stop(State(stub): State<Stub>) -> Response {
    let delay = stub.behaviour(|b| b.stop_delay);
    tokio::time::sleep(delay).await;
    let mut record = stub.record.lock().unwrap();
    record.server_running = false;
    record.server_stops += 1;
    StatusCode::NO_CONTENT.into_response()
}

async fn progress(State(stub): State<Stub>, Path(user): Path<String>) -> Response {
    let url = stub.behaviour(|b| b.server_url.clone()).unwrap_or_else(|| format!("/user/{user}/"));
    let body = match stub.behaviour(|b| b.progress) {
        Progress::Ready => {
            let event = json!({"progress": 100, "ready": true, "url": url, "message": "Server ready"});
            Body::from(format!("\n\ndata: {event}\n\n"))
        }
        Progress::Endless => Body::from_stream(futures_util::stream::unfold(0u64, |n| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((
                Ok::<_, std::io::Error>(format!("data: {{\"progress\": 50, \"message\": \"still spawning {n}\"}}\n\n")),
                n + 1,
            ))
        })),
        Progress::EndlessLine => Body::from_stream(futures_util::stream::unfold((), |_| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Some((
                Ok::<_, std::io::Error>(
                    "data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".repeat(64),
                ),
                (),
            ))
        })),
        Progress::Garbage => Body::from("data: {not json\n\n"),
        Progress::FailedEmpty => {
            Body::from("data: {\"progress\": 100, \"failed\": true, \"message\": \"Spawn failed: \"}\n\n")
        }
        Progress::FailedWith => {
            let message = {
                let mut behaviour = stub.behaviour.lock().unwrap();
                let next = behaviour.failure_messages.pop_front().unwrap_or_default();
                behaviour.failure_messages.push_back(next.clone());
                next
            };
            let event = json!({"progress": 100, "failed": true, "message": format!("Spawn failed: {message}")});
            Body::from(format!("data: {event}\n\n"))
        }
    };
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn start_kernel(State(stub): State<Stub>) -> Response {
    stub.record.lock().unwrap().kernels_started += 1;
    let id = stub.behaviour(|b| b.kernel_id.clone()).unwrap_or_else(|| "k-1".into());
    (StatusCode::CREATED, axum::Json(json!({"id": id, "name": "python3", "execution_state": "starting"})))
        .into_response()
}

async fn delete_kernel(State(stub): State<Stub>) -> Response {
    stub.record.lock().unwrap().kernels_deleted += 1;
    StatusCode::NO_CONTENT.into_response()
}

async fn channels(State(stub): State<Stub>, upgrade: WebSocketUpgrade) -> Response {
    let behaviour = stub.behaviour(|b| b.kernel_socket);
    if behaviour == KernelSocket::HangHandshake {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    upgrade.on_upgrade(move |mut socket| async move {
        loop {
            let Some(Ok(Message::Text(text))) = socket.recv().await else { return };
            let request: serde_json::Value = serde_json::from_str(&text).unwrap();
            let parent = request["header"].clone();
            if behaviour == KernelSocket::OnlyPings {
                loop {
                    if socket.send(Message::Ping(vec![1].into())).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let result = if behaviour == KernelSocket::WrongResult { "21" } else { "20" };
            for (msg_type, content) in [
                ("status", json!({"execution_state": "busy"})),
                ("execute_result", json!({"data": {"text/plain": result}, "execution_count": 1})),
                ("execute_reply", json!({"status": "ok", "execution_count": 1})),
                ("status", json!({"execution_state": "idle"})),
            ] {
                let frame = json!({"header": {"msg_type": msg_type, "msg_id": "x"}, "parent_header": parent, "content": content});
                socket.send(Message::Text(frame.to_string().into())).await.unwrap();
            }
        }
    })
}

async fn record_request(
    State(stub): State<Stub>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri());
    stub.record.lock().unwrap().requests.push(line);
    next.run(request).await
}

async fn login_page(State(stub): State<Stub>) -> Response {
    let action = stub.behaviour(|b| b.form_action.clone()).unwrap_or_else(|| "/hub/login?next=".into());
    let html = format!(
        "<html><form action=\"{action}\" method=\"post\"><input type=\"hidden\" name=\"_xsrf\" value=\"x1\"/></form></html>"
    );
    ([("content-type", "text/html"), ("set-cookie", "_xsrf=x1; Path=/hub/")], html).into_response()
}

async fn login() -> Response {
    (StatusCode::FOUND, [("location", "/hub/"), ("set-cookie", "jupyterhub-hub-login=stub-session; Path=/hub/")])
        .into_response()
}

async fn list_clusters(State(stub): State<Stub>) -> Response {
    let names = match stub.behaviour(|b| b.gateway.clone()) {
        GatewayBehaviour::Leftovers(names) => names,
        _ => vec![],
    };
    let clusters: serde_json::Map<String, serde_json::Value> =
        names.into_iter().map(|n| (n.clone(), json!({"name": n, "status": "RUNNING"}))).collect();
    axum::Json(clusters).into_response()
}

async fn create_cluster(State(stub): State<Stub>) -> Response {
    let name = match stub.behaviour(|b| b.gateway.clone()) {
        GatewayBehaviour::ClusterName(name) => name,
        _ => "temple.8f14e45fceea167a5a36dedd4bea2543".into(),
    };
    (StatusCode::CREATED, axum::Json(json!({"name": name}))).into_response()
}

async fn cluster(State(stub): State<Stub>, Path(name): Path<String>) -> Response {
    match stub.behaviour(|b| b.gateway.clone()) {
        GatewayBehaviour::Errors => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"status": 500, "message": "backend unavailable: cannot reach the Kubernetes API"})),
        )
            .into_response(),
        _ => axum::Json(json!({"name": name, "status": "RUNNING"})).into_response(),
    }
}

async fn delete_cluster() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A server on another port of loopback (another origin): records every request it gets, so a test can
/// show hubwatch sent nothing there.
pub async fn bystander() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(format!("{} {}", request.method(), request.uri()));
            StatusCode::OK
        }
    });
    let addr = super::serve::on_loopback(app).await;
    (format!("127.0.0.1:{}", addr.port()), seen)
}

/// jupyter-server's contents API: `PUT` saves (or fails as a full or read-only disk makes it fail, in
/// jupyter-server's words), `GET` reads, `DELETE` removes.
async fn write_file(
    State(stub): State<Stub>,
    Path((user, name)): Path<(String, String)>,
    axum::Json(model): axum::Json<serde_json::Value>,
) -> Response {
    let error = match stub.behaviour(|b| b.home) {
        Home::Works => None,
        Home::Full => Some(format!("[Errno 28] No space left on device: '/home/{user}/{name}'")),
        Home::ReadOnly => Some(format!("[Errno 30] Read-only file system: '/home/{user}/{name}'")),
    };
    if let Some(error) = error {
        let message = format!("Unexpected error while saving file: {name} {error}");
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"message": message, "reason": null})))
            .into_response();
    }
    let content = model["content"].as_str().unwrap_or_default().to_string();
    stub.record.lock().unwrap().files.insert(format!("{user}/{name}"), content);
    let saved = json!({"name": name, "path": name, "type": "file", "format": null, "content": null, "writable": true});
    (StatusCode::CREATED, axum::Json(saved)).into_response()
}

async fn read_file(State(stub): State<Stub>, Path((user, name)): Path<(String, String)>) -> Response {
    match stub.record.lock().unwrap().files.get(&format!("{user}/{name}")) {
        Some(content) => {
            axum::Json(json!({"name": name, "type": "file", "format": "text", "content": content})).into_response()
        }
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"message": format!("No such file or directory: {name}")})))
            .into_response(),
    }
}

async fn delete_file(State(stub): State<Stub>, Path((user, name)): Path<(String, String)>) -> Response {
    stub.record.lock().unwrap().files.remove(&format!("{user}/{name}"));
    StatusCode::NO_CONTENT.into_response()
}

async fn oauth_login(State(stub): State<Stub>) -> Response {
    match stub.behaviour(|b| b.oauth_authorize.clone()) {
        Some(authorize) => (StatusCode::FOUND, [("location", authorize)]).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// How the identity provider's authorize endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Its sign-in page.
    SignIn,
    /// GitHub's way with a wrong callback: back to the registered callback with the error.
    RedirectsWithError,
    /// Google's way: an error page.
    ErrorPage,
    Down,
}

/// An identity provider's authorize endpoint on loopback (another origin than the hub); returns its authorize
/// URL and what it received (it must never see a credential).
pub async fn identity_provider(answer: Provider) -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().route(
        "/login/oauth/authorize",
        get(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(headers);
                match answer {
                    Provider::SignIn => ([("content-type", "text/html")], "<html><title>Sign in to GitHub</title></html>").into_response(),
                    Provider::RedirectsWithError => (
                        StatusCode::FOUND,
                        [("location", "http://127.0.0.1:9/hub/oauth_callback?error=redirect_uri_mismatch&error_description=The+redirect_uri+MUST+match+the+registered+callback+URL+for+this+application.")],
                    )
                        .into_response(),
                    Provider::ErrorPage => (
                        StatusCode::BAD_REQUEST,
                        [("content-type", "text/html")],
                        "<html><title>Error 400: invalid_client</title><body>The OAuth client was not found.</body></html>",
                    )
                        .into_response(),
                    Provider::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                }
            }
        }),
    );
    let addr = super::serve::on_loopback(app).await;
    let url = format!(
        "http://{addr}/login/oauth/authorize?client_id=hub-temple&redirect_uri=https%3A%2F%2Fhub.example.org%2Fhub%2Foauth_callback&response_type=code&state=eyJzdGF0ZV9pZCI6ICIxIn0"
    );
    (url, seen)
}
