//! A simulated fleet: one local server answering, instantly, the JupyterHub and Dask Gateway endpoints
//! hubwatch uses, for any number of hubs under `/{hub}/` (tokens, user, login page, user model, spawn with a
//! progress stream, kernels with a websocket, files in home, gateway clusters). It stands in for thousands of hubs so the
//! benchmarks measure hubwatch, not JupyterHub.

#![allow(dead_code)]

use axum::Router;
use axum::extract::{Path, WebSocketUpgrade, ws::Message};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn user_of(headers: &HeaderMap) -> String {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    auth.rsplit(' ').next().and_then(|t| t.strip_prefix("sim-")).unwrap_or("hubwatch").to_string()
}

/// Serves on a random loopback port with `threads` worker threads of its own; returns the base URL.
pub fn start(threads: usize) -> String {
    start_origins(threads, 1).remove(0)
}

/// The same fleet behind `origins` loopback ports (each a base URL): hubs spread over them have origins of
/// their own, as real hubs do, so a client's per-origin connection pool works as it would against them.
pub fn start_origins(threads: usize, origins: usize) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = router();
            let mut served = Vec::new();
            for _ in 0..origins {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                served.push(tokio::spawn(axum::serve(listener, app.clone()).into_future()));
            }
            for serving in served {
                serving.await.unwrap().unwrap();
            }
        });
    });
    (0..origins).map(|_| format!("http://{}", rx.recv().unwrap())).collect()
}

pub fn router() -> Router {
    Router::new()
        .route("/{hub}/hub/api/users/{user}/tokens", post(|Path((_, user)): Path<(String, String)>| async move {
            (StatusCode::CREATED, axum::Json(json!({"token": format!("sim-{user}"), "user": user})))
        }))
        .route("/{hub}/hub/api/user", get(|headers: HeaderMap| async move { axum::Json(json!({"kind": "user", "name": user_of(&headers)})) }))
        .route("/{hub}/hub/login", get(|| async { ([("content-type", "text/html")], "<html><form action=\"login\"></form></html>") }))
        .route("/{hub}/hub/api/users/{user}", get(|Path((_, user)): Path<(String, String)>| async move { axum::Json(json!({"name": user, "servers": {}})) }))
        .route("/{hub}/hub/api/users/{user}/server", post(|| async { StatusCode::CREATED }).delete(|| async { StatusCode::NO_CONTENT }))
        .route("/{hub}/hub/api/users/{user}/server/progress", get(|Path((hub, user)): Path<(String, String)>| async move {
            let event = format!("data: {{\"progress\": 100, \"ready\": true, \"url\": \"/{hub}/user/{user}/\", \"message\": \"ready\"}}\n\n");
            ([("content-type", "text/event-stream")], event)
        }))
        .route("/{hub}/user/{user}/api/kernels", post(|| async { (StatusCode::CREATED, axum::Json(json!({"id": "k", "name": "python3"}))) }))
        .route("/{hub}/user/{user}/api/kernels/{id}", delete(|| async { StatusCode::NO_CONTENT }))
        .route("/{hub}/user/{user}/api/kernels/{id}/channels", get(kernel_socket))
        .route("/{hub}/user/{user}/api/contents/{name}", contents(Files::default()))
        .route("/{hub}/services/dask-gateway/api/v1/clusters/", get(|| async { axum::Json(json!({})) }).post(|| async {
            (StatusCode::CREATED, axum::Json(json!({"name": "c0ffee"})))
        }))
        .route("/{hub}/services/dask-gateway/api/v1/clusters/{name}", get(|| async { axum::Json(json!({"name": "c0ffee", "status": "RUNNING"})) }).delete(|| async { StatusCode::NO_CONTENT }))
        .route("/{hub}/services/dask-gateway/api/v1/clusters/{name}/scale", post(|| async { axum::Json(json!({"ok": true, "msg": null})) }))
        .route("/{hub}/services/dask-gateway/clusters/{name}/json/counts.json", get(|| async { axum::Json(json!({"workers": 4})) }))
}

/// The files the home probes saved, by hub, user and name, until they delete them.
type Files = Arc<Mutex<HashMap<String, String>>>;
type FilePath = Path<(String, String, String)>;

/// The contents API of the home probe: a file saved is read back as saved, then deleted.
fn contents(files: Files) -> MethodRouter {
    let (saved, read, deleted) = (files.clone(), files.clone(), files);
    put(move |Path((hub, user, name)): FilePath, axum::Json(model): axum::Json<serde_json::Value>| {
        let files = saved.clone();
        async move {
            let content = model["content"].as_str().unwrap_or_default().to_string();
            files.lock().unwrap().insert(format!("{hub}/{user}/{name}"), content);
            (StatusCode::CREATED, axum::Json(json!({"name": name, "type": "file"})))
        }
    })
    .get(move |Path((hub, user, name)): FilePath| {
        let files = read.clone();
        async move {
            match files.lock().unwrap().get(&format!("{hub}/{user}/{name}")).cloned() {
                Some(content) => {
                    axum::Json(json!({"name": name, "type": "file", "format": "text", "content": content}))
                        .into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    })
    .delete(move |Path((hub, user, name)): FilePath| {
        let files = deleted.clone();
        async move {
            files.lock().unwrap().remove(&format!("{hub}/{user}/{name}"));
            StatusCode::NO_CONTENT
        }
    })
}

async fn kernel_socket(upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .on_upgrade(|mut socket| async move {
            while let Some(Ok(Message::Text(text))) = socket.recv().await {
                let Ok(request) = serde_json::from_str::<serde_json::Value>(&text) else { return };
                let parent = request["header"].clone();
                for (msg_type, content) in [
                    ("execute_result", json!({"data": {"text/plain": "20"}})),
                    ("execute_reply", json!({"status": "ok"})),
                    ("status", json!({"execution_state": "idle"})),
                ] {
                    let frame = json!({"header": {"msg_type": msg_type}, "parent_header": parent, "content": content});
                    if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        })
        .into_response()
}
