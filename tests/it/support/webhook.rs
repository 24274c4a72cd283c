//! A local webhook receiver (a helpdesk, a chat bridge): answers 503 to the first `failures` POSTs (a receiver
//! that is down, then recovers), then 200, or holds every POST unanswered while told to hang; keeps every body
//! it accepted, and checks what every sink receiver would: JSON with a version, an event, an id, and the
//! Authorization header it was configured with.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub const AUTHORIZATION: &str = "Bearer helpdesk-webhook-secret";

#[derive(Default)]
struct Inner {
    failures: usize,
    accepted: Vec<Value>,
    refused: usize,
    attempts: usize,
    /// Accepts every connection and request, and never answers.
    hang: bool,
}

#[derive(Clone, Default)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Serves on a random loopback port; returns its URL.
    pub async fn start(self, failures: usize) -> String {
        self.inner.lock().unwrap().failures = failures;
        let app = Router::new().route("/hooks/hubwatch", post(receive)).with_state(self);
        let addr = super::serve::on_loopback(app).await;
        format!("http://{addr}/hooks/hubwatch")
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    /// (event, id) of every accepted body, in order.
    pub fn events(&self) -> Vec<(String, String)> {
        self.accepted()
            .iter()
            .map(|b| (b["event"].as_str().unwrap().to_string(), b["id"].as_str().unwrap().to_string()))
            .collect()
    }

    pub fn attempts(&self) -> usize {
        self.inner.lock().unwrap().attempts
    }

    /// From now on, every POST is held and never answered (a helpdesk that hangs).
    pub fn set_hang(&self, hang: bool) {
        self.inner.lock().unwrap().hang = hang;
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let hang = {
        let mut inner = receiver.inner.lock().unwrap();
        inner.attempts += 1;
        inner.hang
    };
    if hang {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    let mut inner = receiver.inner.lock().unwrap();
    if inner.failures > 0 {
        inner.failures -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "the helpdesk is down".into());
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(AUTHORIZATION) {
        inner.refused += 1;
        return (StatusCode::UNAUTHORIZED, "no".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let complete =
        body["version"] == 1 && body["event"].is_string() && body["id"].is_string() && body["hub"].is_string();
    if !complete {
        return (StatusCode::UNPROCESSABLE_ENTITY, format!("missing fields in {body}"));
    }
    inner.accepted.push(body);
    (StatusCode::OK, "ok".into())
}
