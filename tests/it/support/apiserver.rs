//! A local server that answers the part of the Kubernetes API hubwatch reads the way kube-apiserver does:
//! lists with `kind`/`apiVersion`/`metadata.resourceVersion` (items without kind, as the real server sends
//! them), label selectors (`k=v`, `k!=v`, `k`), pod logs with `container`, `tailLines` and `previous` and the
//! real errors (a multi-container pod without `container`, no previous container), watches as a stream of
//! `{"type","object"}` lines, `Status` objects for 403/404/410, and faults: down (503), slow (a delay on every
//! answer), forbidden resources (RBAC denials worded as the API server words them).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

#[derive(Default)]
pub struct Inner {
    /// Objects per plural resource ("pods", "events", "nodes", "persistentvolumeclaims", "resourcequotas",
    /// "daskclusters"), each with `metadata.namespace` unless cluster-scoped.
    pub objects: HashMap<String, Vec<Value>>,
    /// Logs per (pod, container, previous).
    pub logs: HashMap<(String, String, bool), String>,
    /// Lines written since, per (pod, container), with when: what `follow=true` streams.
    pub written: HashMap<(String, String), Vec<(std::time::SystemTime, String)>>,
    /// Bumped to end every open log stream (the API server or the kubelet dropping them).
    pub streams_ended: u64,
    /// Resources the service account may not list: answered 403.
    pub forbidden: HashSet<String>,
    /// Every answer is 503, as an API server behind a failing load balancer.
    pub down: bool,
    /// Every answer waits this long first.
    pub delay: Option<Duration>,
    /// Requests bearing these tokens are accepted and never answered (a partition between one client and
    /// the API server, while others still reach it).
    pub hanging: HashSet<String>,
    /// The bearer token of every request, in order.
    pub tokens: Vec<String>,
    pub resource_version: u64,
    /// Request paths with their query, in order.
    pub requests: Vec<String>,
}

#[derive(Clone)]
pub struct ApiServer {
    pub inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<(String, &'static str, Value)>,
}

impl Default for ApiServer {
    fn default() -> Self {
        ApiServer { inner: Arc::default(), changes: broadcast::channel(1024).0 }
    }
}

pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:hubwatch:hubwatch";

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), [(header::CONTENT_TYPE, "application/json")], body.to_string())
        .into_response()
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "pods" => "Pod",
        "events" => "Event",
        "nodes" => "Node",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "resourcequotas" => "ResourceQuota",
        "daskclusters" => "DaskCluster",
        "deployments" => "Deployment",
        "services" => "Service",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "leases" => "Lease",
        "ingresses" => "Ingress",
        _ => "Unknown",
    }
}

fn api_version_of(resource: &str) -> &'static str {
    match resource {
        "daskclusters" => "gateway.dask.org/v1alpha1",
        "deployments" => "apps/v1",
        "leases" => "coordination.k8s.io/v1",
        "ingresses" => "networking.k8s.io/v1",
        _ => "v1",
    }
}

/// `k=v`, `k==v`, `k!=v` and `k` (exists), joined by commas, as the API server reads label selectors.
fn matches_selector(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').map(str::trim).filter(|r| !r.is_empty()).all(|requirement| {
        if let Some((key, value)) = requirement.split_once("!=") {
            labels[key.trim()].as_str() != Some(value.trim())
        } else if let Some((key, value)) = requirement.split_once('=') {
            labels[key.trim()].as_str() == Some(value.trim_start_matches('=').trim())
        } else {
            !labels[requirement].is_null()
        }
    })
}

impl ApiServer {
    /// Serves on a random loopback port; returns the server URL for a kubeconfig or `kube::Config`.
    pub async fn start(&self) -> String {
        let app = Router::new()
            .route("/api/v1/{resource}", get(list_cluster))
            .route("/api/v1/namespaces/{ns}/{resource}", get(list_namespaced).post(create_core))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route("/api/v1/namespaces/{ns}/{resource}/{name}", get(get_namespaced).put(replace_core))
            .route("/apis/{group}/{version}/{resource}", get(list_grouped_all))
            .route("/apis/{group}/{version}/namespaces/{ns}/{resource}", get(list_grouped).post(create_grouped))
            .route("/apis/{group}/{version}/namespaces/{ns}/{resource}/{name}", get(get_grouped).put(replace_grouped))
            .fallback(|| async { status(404, "NotFound", "the server could not find the requested resource".into()) })
            .layer(axum::middleware::from_fn_with_state(self.clone(), partition))
            .with_state(self.clone());
        let addr = super::serve::on_loopback(app).await;
        format!("http://{addr}")
    }

    /// Writes a kubeconfig pointing at `server` (as `KUBECONFIG` for a hubwatch process).
    pub fn kubeconfig(server: &str, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n\
             contexts:\n- name: local\n  context:\n    cluster: local\n    user: hubwatch\n\
             current-context: local\nusers:\n- name: hubwatch\n  user:\n    token: canary-kube-token-0123456789\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn put(&self, resource: &str, object: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.resource_version += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
        let name = object["metadata"]["name"].clone();
        let namespace = object["metadata"]["namespace"].clone();
        let list = inner.objects.entry(resource.to_string()).or_default();
        let existing =
            list.iter().position(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == namespace);
        let change = match existing {
            Some(i) => {
                list[i] = object.clone();
                "MODIFIED"
            }
            None => {
                list.push(object.clone());
                "ADDED"
            }
        };
        let _ = self.changes.send((resource.to_string(), change, object));
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        let list = inner.objects.get(resource)?;
        list.iter().find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == namespace).cloned()
    }

    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.resource_version += 1;
        let version = inner.resource_version.to_string();
        let list = inner.objects.entry(resource.to_string()).or_default();
        if let Some(i) =
            list.iter().position(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == namespace)
        {
            let mut object = list.remove(i);
            object["metadata"]["resourceVersion"] = json!(version);
            let _ = self.changes.send((resource.to_string(), "DELETED", object));
        }
    }

    /// Writes a kubeconfig named `name` whose user authenticates with `token` (one per replica, so that
    /// [`ApiServer::hang_client`] can cut one replica off).
    pub fn kubeconfig_for(server: &str, dir: &std::path::Path, name: &str, token: &str) -> std::path::PathBuf {
        let path = dir.join(format!("kubeconfig-{name}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n\
             contexts:\n- name: local\n  context:\n    cluster: local\n    user: hubwatch\n\
             current-context: local\nusers:\n- name: hubwatch\n  user:\n    token: {token}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// From now on, every request with `token` hangs (or, with `false`, is answered again).
    pub fn hang_client(&self, token: &str, hang: bool) {
        let mut inner = self.inner.lock().unwrap();
        if hang {
            inner.hanging.insert(token.to_string());
        } else {
            inner.hanging.remove(token);
        }
    }

    pub fn set_log(&self, pod: &str, container: &str, previous: bool, text: &str) {
        self.inner.lock().unwrap().logs.insert((pod.into(), container.into(), previous), text.into());
    }

    /// A line the container writes now: sent to every open `follow=true` stream of it.
    pub fn write_log(&self, pod: &str, container: &str, line: &str) {
        let mut inner = self.inner.lock().unwrap();
        let lines = inner.written.entry((pod.into(), container.into())).or_default();
        lines.push((std::time::SystemTime::now(), line.to_string()));
    }

    /// Ends every open log stream, as a restarted API server or kubelet does; clients must reopen them.
    pub fn end_log_streams(&self) {
        self.inner.lock().unwrap().streams_ended += 1;
    }

    pub fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }

    pub fn set_delay(&self, delay: Option<Duration>) {
        self.inner.lock().unwrap().delay = delay;
    }

    pub fn forbid(&self, resource: &str) {
        self.inner.lock().unwrap().forbidden.insert(resource.into());
    }

    pub fn allow(&self, resource: &str) {
        self.inner.lock().unwrap().forbidden.remove(resource);
    }

    /// The state a leader mirrored into its Secret (`hubwatch-state`), as JSON text.
    pub fn mirrored_state(&self) -> Option<String> {
        use base64::Engine;
        use std::io::Read;
        let secrets = self.inner.lock().unwrap().objects.get("secrets").cloned().unwrap_or_default();
        let secret = secrets.iter().find(|s| s["metadata"]["name"] == "hubwatch-state")?;
        let gzip = base64::engine::general_purpose::STANDARD.decode(secret["data"]["state.json.gz"].as_str()?).ok()?;
        let mut json = String::new();
        flate2::read::GzDecoder::new(gzip.as_slice()).read_to_string(&mut json).ok()?;
        Some(json)
    }

    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The common gate of every request: records it, then waits, fails or denies as configured.
    async fn gate(&self, path: String, resource: &str, namespace: Option<&str>) -> Option<Response> {
        let (delay, down, forbidden) = {
            let mut inner = self.inner.lock().unwrap();
            inner.requests.push(path);
            (inner.delay, inner.down, inner.forbidden.contains(resource))
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if down {
            return Some(status(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request".into(),
            ));
        }
        if forbidden {
            let scope = match namespace {
                Some(ns) => format!("in the namespace \"{ns}\""),
                None => "at the cluster scope".into(),
            };
            let group = if resource == "daskclusters" { "gateway.dask.org" } else { "" };
            return Some(status(
                403,
                "Forbidden",
                format!(
                    "{resource} is forbidden: User \"{SERVICE_ACCOUNT}\" cannot list resource \"{resource}\" in API group \"{group}\" {scope}"
                ),
            ));
        }
        None
    }

    async fn list(&self, resource: &str, namespace: Option<&str>, query: &HashMap<String, String>) -> Response {
        let selector = query.get("labelSelector").cloned().unwrap_or_default();
        let in_scope = |o: &Value| {
            namespace.is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns)) && matches_selector(o, &selector)
        };
        if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            return self.watch(resource, namespace.map(String::from), selector, query).await;
        }
        let inner = self.inner.lock().unwrap();
        let mut items: Vec<Value> =
            inner.objects.get(resource).into_iter().flatten().filter(|o| in_scope(o)).cloned().collect();
        // Chunked lists as the API server serves them: in key order, `limit` at a time, `continue` to go on
        // (opaque to clients; here the offset of the next item).
        let key = |o: &Value| {
            (o["metadata"]["namespace"].as_str().map(String::from), o["metadata"]["name"].as_str().map(String::from))
        };
        items.sort_by_key(key);
        let from = match query.get("continue") {
            None => 0,
            Some(token) => match token.strip_prefix("offset-").and_then(|n| n.parse::<usize>().ok()) {
                Some(offset) => offset,
                None => return status(400, "BadRequest", format!("invalid continue token {token:?}")),
            },
        };
        let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
        let to = limit.map_or(items.len(), |l| (from + l).min(items.len()));
        let mut metadata = json!({"resourceVersion": inner.resource_version.to_string()});
        if to < items.len() {
            metadata["continue"] = json!(format!("offset-{to}"));
            metadata["remainingItemCount"] = json!(items.len() - to);
        }
        let body = json!({
            "kind": format!("{}List", kind_of(resource)),
            "apiVersion": api_version_of(resource),
            "metadata": metadata,
            "items": items.get(from.min(items.len())..to).unwrap_or_default(),
        });
        ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }

    /// A watch from `resourceVersion`: changes after it as JSON lines, until `timeoutSeconds`.
    async fn watch(
        &self,
        resource: &str,
        namespace: Option<String>,
        selector: String,
        query: &HashMap<String, String>,
    ) -> Response {
        let timeout = query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(290u64);
        let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut changes = self.changes.subscribe();
        let resource = resource.to_string();
        let kind = kind_of(&resource);
        let api_version = api_version_of(&resource);
        let stream =
            async_stream(move |sender: tokio::sync::mpsc::Sender<Result<String, std::io::Error>>| async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
                loop {
                    let change = tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => return,
                        change = changes.recv() => change,
                    };
                    let Ok((changed, kind_of_change, mut object)) = change else { return };
                    let version: u64 =
                        object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
                    let in_scope = changed == resource
                        && version > from
                        && namespace.as_deref().is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
                        && matches_selector(&object, &selector);
                    if !in_scope {
                        continue;
                    }
                    object["kind"] = json!(kind);
                    object["apiVersion"] = json!(api_version);
                    let line = json!({"type": kind_of_change, "object": object}).to_string() + "\n";
                    if sender.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
            });
        ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
    }
}

/// A stream fed by a task, so a watch can end when the client goes away.
fn async_stream<F, Fut>(body: F) -> tokio_stream_shim::ReceiverStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<String, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(sender));
    tokio_stream_shim::ReceiverStream(receiver)
}

mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct ReceiverStream(pub tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>);

    impl futures_util::Stream for ReceiverStream {
        type Item = Result<String, std::io::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

/// Records each request's bearer token, and holds forever the requests of a client cut off.
async fn partition(
    State(server): State<ApiServer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let hangs = {
        let mut inner = server.inner.lock().unwrap();
        inner.tokens.push(token.clone());
        inner.hanging.contains(&token)
    };
    if hangs {
        std::future::pending::<()>().await;
    }
    next.run(request).await
}

/// The API server refuses a Secret or ConfigMap whose data is larger than 1 MiB (Secrets count the decoded
/// bytes of their base64 values).
fn too_large(resource: &str, name: &str, body: &Value) -> Option<Response> {
    const LIMIT: usize = 1 << 20;
    let data = body["data"].as_object()?;
    let size: usize = match resource {
        "secrets" => data.values().filter_map(Value::as_str).map(|v| v.len() / 4 * 3).sum(),
        "configmaps" => data.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum(),
        _ => return None,
    };
    (size > LIMIT).then(|| {
        status(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: data: Too long: must have at most {LIMIT} bytes", kind_of(resource)),
        )
    })
}

fn full_path(path: &str, query: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    if pairs.is_empty() { path.to_string() } else { format!("{path}?{}", pairs.join("&")) }
}

async fn list_cluster(
    State(server): State<ApiServer>,
    Path(resource): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(denied) = server.gate(full_path(&format!("/api/v1/{resource}"), &query), &resource, None).await {
        return denied;
    }
    if resource != "nodes" {
        return status(404, "NotFound", "the server could not find the requested resource".into());
    }
    server.list(&resource, None, &query).await
}

async fn list_namespaced(
    State(server): State<ApiServer>,
    Path((ns, resource)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = full_path(&format!("/api/v1/namespaces/{ns}/{resource}"), &query);
    if let Some(denied) = server.gate(path, &resource, Some(&ns)).await {
        return denied;
    }
    if kind_of(&resource) == "Unknown" {
        return status(404, "NotFound", "the server could not find the requested resource".into());
    }
    server.list(&resource, Some(&ns), &query).await
}

async fn list_grouped(
    State(server): State<ApiServer>,
    Path((group, version, ns, resource)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = full_path(&format!("/apis/{group}/{version}/namespaces/{ns}/{resource}"), &query);
    if let Some(denied) = server.gate(path, &resource, Some(&ns)).await {
        return denied;
    }
    let known = format!("{group}/{version}") == api_version_of(&resource) && resource != "pods";
    if !known {
        return status(404, "NotFound", "the server could not find the requested resource".into());
    }
    server.list(&resource, Some(&ns), &query).await
}

async fn list_grouped_all(
    State(server): State<ApiServer>,
    Path((group, version, resource)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = full_path(&format!("/apis/{group}/{version}/{resource}"), &query);
    if let Some(denied) = server.gate(path, &resource, None).await {
        return denied;
    }
    if format!("{group}/{version}") != api_version_of(&resource) || resource == "pods" {
        return status(404, "NotFound", "the server could not find the requested resource".into());
    }
    server.list(&resource, None, &query).await
}

fn qualified(resource: &str) -> String {
    match api_version_of(resource).split_once('/') {
        Some((group, _)) => format!("{resource}.{group}"),
        None => resource.to_string(),
    }
}

/// `GET` of one object by name: 404 `{resource} "{name}" not found` when absent.
async fn get_namespaced(
    State(server): State<ApiServer>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    server.get_object(&ns, &resource, &name).await
}

async fn get_grouped(
    State(server): State<ApiServer>,
    Path((_group, _version, ns, resource, name)): Path<(String, String, String, String, String)>,
) -> Response {
    server.get_object(&ns, &resource, &name).await
}

async fn create_core(
    State(server): State<ApiServer>,
    Path((ns, resource)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    server.create_object(&ns, &resource, body).await
}

async fn create_grouped(
    State(server): State<ApiServer>,
    Path((_group, _version, ns, resource)): Path<(String, String, String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    server.create_object(&ns, &resource, body).await
}

async fn replace_core(
    State(server): State<ApiServer>,
    Path((ns, resource, name)): Path<(String, String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    server.replace_object(&ns, &resource, &name, body).await
}

async fn replace_grouped(
    State(server): State<ApiServer>,
    Path((_group, _version, ns, resource, name)): Path<(String, String, String, String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    server.replace_object(&ns, &resource, &name, body).await
}

impl ApiServer {
    fn find(&self, ns: &str, resource: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .get(resource)
            .into_iter()
            .flatten()
            .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == ns)
            .cloned()
    }

    fn answer(resource: &str, status: StatusCode, mut object: Value) -> Response {
        object["kind"] = json!(kind_of(resource));
        object["apiVersion"] = json!(api_version_of(resource));
        (status, [(header::CONTENT_TYPE, "application/json")], object.to_string()).into_response()
    }

    /// `POST`: 409 AlreadyExists when the name is taken; 422 for data beyond 1 MiB.
    async fn create_object(&self, ns: &str, resource: &str, mut body: Value) -> Response {
        let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if let Some(denied) = self.gate(format!("POST {resource}/{name}"), resource, Some(ns)).await {
            return denied;
        }
        if let Some(invalid) = too_large(resource, &name, &body) {
            return invalid;
        }
        if self.find(ns, resource, &name).is_some() {
            return status(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(resource)));
        }
        body["metadata"]["namespace"] = json!(ns);
        self.put(resource, body);
        Self::answer(resource, StatusCode::CREATED, self.find(ns, resource, &name).unwrap())
    }

    /// `PUT`: 404 when absent; 409 Conflict when `metadata.resourceVersion` is not the stored one.
    async fn replace_object(&self, ns: &str, resource: &str, name: &str, mut body: Value) -> Response {
        if let Some(denied) = self.gate(format!("PUT {resource}/{name}"), resource, Some(ns)).await {
            return denied;
        }
        if let Some(invalid) = too_large(resource, name, &body) {
            return invalid;
        }
        let Some(stored) = self.find(ns, resource, name) else {
            return status(404, "NotFound", format!("{} \"{name}\" not found", qualified(resource)));
        };
        if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
            return status(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(resource)
                ),
            );
        }
        body["metadata"]["namespace"] = json!(ns);
        self.put(resource, body);
        Self::answer(resource, StatusCode::OK, self.find(ns, resource, name).unwrap())
    }

    async fn get_object(&self, ns: &str, resource: &str, name: &str) -> Response {
        let path = format!("/api/v1/namespaces/{ns}/{resource}/{name}");
        if let Some(denied) = self.gate(path, resource, Some(ns)).await {
            return denied;
        }
        match self.find(ns, resource, name) {
            Some(object) => Self::answer(resource, StatusCode::OK, object),
            None => status(404, "NotFound", format!("{} \"{name}\" not found", qualified(resource))),
        }
    }
}

async fn pod_log(
    State(server): State<ApiServer>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = full_path(&format!("/api/v1/namespaces/{ns}/pods/{name}/log"), &query);
    if let Some(denied) = server.gate(path, "pods/log", Some(&ns)).await {
        return denied;
    }
    let inner = server.inner.lock().unwrap();
    let pod = inner
        .objects
        .get("pods")
        .into_iter()
        .flatten()
        .find(|p| p["metadata"]["name"] == name.as_str() && p["metadata"]["namespace"] == ns.as_str());
    let Some(pod) = pod else { return status(404, "NotFound", format!("pods \"{name}\" not found")) };
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let container = match query.get("container") {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => return status(400, "BadRequest", format!("container {c} is not valid for pod {name}")),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return status(
                400,
                "BadRequest",
                format!("a container name must be specified for pod {name}, choose one of: [{}]", containers.join(" ")),
            );
        }
    };
    let previous = query.get("previous").is_some_and(|p| p == "true");
    if query.get("follow").is_some_and(|f| f == "true") {
        drop(inner);
        return follow_log(server, (name, container), &query);
    }
    let Some(text) = inner.logs.get(&(name.clone(), container.clone(), previous)) else {
        return if previous {
            status(
                400,
                "BadRequest",
                format!("previous terminated container \"{container}\" in pod \"{name}\" not found"),
            )
        } else {
            (StatusCode::OK, String::new()).into_response()
        };
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = query.get("tailLines").and_then(|t| t.parse::<usize>().ok()).unwrap_or(lines.len());
    let kept: String = lines[lines.len().saturating_sub(tail)..].iter().map(|l| format!("{l}\n")).collect();
    // limitBytes: the first bytes of what would be returned, cut wherever they end (even mid-line).
    let limit = query.get("limitBytes").and_then(|l| l.parse::<usize>().ok()).unwrap_or(kept.len());
    let kept = kept.as_bytes()[..limit.min(kept.len())].to_vec();
    ([(header::CONTENT_TYPE, "text/plain")], kept).into_response()
}

/// `follow=true`: the lines written within `sinceSeconds` (each behind its RFC 3339 time with
/// `timestamps=true`, as the kubelet writes them), then every line written while the stream is open, until
/// the client goes away or [`ApiServer::end_log_streams`].
fn follow_log(server: ApiServer, (pod, container): (String, String), query: &HashMap<String, String>) -> Response {
    let since = query.get("sinceSeconds").and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs);
    let stamped = query.get("timestamps").is_some_and(|t| t == "true");
    let start = since.map_or(std::time::UNIX_EPOCH, |s| std::time::SystemTime::now() - s);
    let (sent, ended_at_open) = {
        let inner = server.inner.lock().unwrap();
        let lines = inner.written.get(&(pod.clone(), container.clone()));
        (lines.map_or(0, |l| l.iter().take_while(|(at, _)| *at < start).count()), inner.streams_ended)
    };
    // The state carried from chunk to chunk: how many lines were sent.
    let stream = futures_util::stream::unfold(sent, move |sent| {
        let (server, pod, container) = (server.clone(), pod.clone(), container.clone());
        async move {
            loop {
                let (chunk, total, ended) = {
                    let inner = server.inner.lock().unwrap();
                    let lines = inner.written.get(&(pod.clone(), container.clone())).map(Vec::as_slice).unwrap_or(&[]);
                    let chunk: String = lines[sent.min(lines.len())..]
                        .iter()
                        .map(|(at, line)| match stamped {
                            true => format!("{} {line}\n", humantime::format_rfc3339_nanos(*at)),
                            false => format!("{line}\n"),
                        })
                        .collect();
                    (chunk, lines.len(), inner.streams_ended != ended_at_open)
                };
                if ended {
                    return None;
                }
                if !chunk.is_empty() {
                    return Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)), total));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    ([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response()
}
