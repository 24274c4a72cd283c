//! A local PagerDuty Events API v2 that answers as the documented one does: it validates every event
//! (required fields, enums, lengths, the 512 KB limit), answers 202 with the dedup key, keeps alerts open
//! per routing key and dedup key, and can be told to answer 400, 429 or 500, or to hang.
//!
//! And the part of the REST API status notes use, on the same server: an accepted trigger that opens an
//! alert makes an incident (`Q…` ids); `GET /incidents?incident_key=` finds it; `POST /incidents/{id}/notes`
//! adds a note. Every REST request must carry `Authorization: Token token=<API_TOKEN>` (else 401) and
//! `Accept: application/vnd.pagerduty+json;version=2` (else 406); `GET /incidents?statuses[]=…` lists open
//! ones by status, paged (`limit`, `offset`, `more`); writes need `Content-Type: application/json`
//! and a `From` of a known user (else 400), a body of exactly `{"note": {"content": …}}` with 1 to 25000
//! characters, and at most 2000 notes per incident. Priorities: `GET /priorities` lists P1..P3 (paged);
//! `PUT /incidents/{id}` takes exactly `{"incident": {"type": "incident_reference", "priority": {"id",
//! "type": "priority_reference"}}}` with a known priority id. `GET /incidents/{id}` shows what responders did,
//! which a test makes happen ([`PagerDuty::acknowledge`], [`PagerDuty::reassign`], [`PagerDuty::resolve_by`]). Routing keys it does not know (two services:
//! [`ROUTING_KEY`] and [`TEMPLE_ROUTING_KEY`]) are refused with 400, as an unknown integration key is.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Hang,
}

#[derive(Default)]
pub struct Inner {
    /// Answers to give before answering normally again, one per request.
    pub faults: VecDeque<Fault>,
    /// A fault to give to every request until cleared.
    pub outage: Option<Fault>,
    /// Every valid event accepted (202), in order.
    pub accepted: Vec<Value>,
    /// The same events with when they arrived and who sent them (the User-Agent: hubwatch names its replica).
    pub received: Vec<Received>,
    /// Every request, valid or not, with the status it got.
    pub requests: Vec<(u16, Value)>,
    pub open_alerts: HashSet<(String, String)>,
    /// Every valid Change Event accepted (202), in order.
    pub changes: Vec<Value>,
    /// Incidents made by triggers: (id, dedup key, status).
    pub incidents: Vec<(String, String, &'static str)>,
    /// Notes added, in order: (incident id, content, From).
    pub notes: Vec<(String, String, String)>,
    /// Every REST request: (method and path, status answered).
    pub rest_requests: Vec<(String, u16)>,
    /// REST requests received, answered or not (a hung one is never answered).
    pub rest_received: usize,
    /// Lookups to answer with no incident (PagerDuty makes incidents asynchronously).
    pub lookups_before_found: usize,
    /// A fault for every REST request until cleared.
    pub rest_outage: Option<Fault>,
    /// Priorities set, in order: (incident id, priority name).
    pub priorities_set: Vec<(String, String)>,
    /// Seconds a 429 asks to wait (`Retry-After`), when set.
    pub retry_after: Option<u64>,
    /// What responders did, per incident id.
    pub responders: std::collections::HashMap<String, Responders>,
}

/// What responders did with one incident, as `GET /incidents/{id}` shows it.
#[derive(Debug, Clone, Default)]
pub struct Responders {
    /// (at, who), while acknowledged.
    pub acknowledgements: Vec<(String, String)>,
    pub assignees: Vec<String>,
    /// (reference type, name, at) of the last status change.
    pub last_change: Option<(&'static str, String, String)>,
}

/// Who the escalation policy assigns a new incident to.
pub const FIRST_RESPONDER: &str = "Ana Oncall";

/// The account's priorities: (id, name).
pub const PRIORITIES: [(&str, &str); 3] = [("PRIO001", "P1"), ("PRIO002", "P2"), ("PRIO003", "P3")];

/// One accepted event, when it arrived and from whom.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::SystemTime,
    pub sender: String,
    pub event: Value,
}

#[derive(Clone, Default)]
pub struct PagerDuty {
    pub inner: Arc<Mutex<Inner>>,
}

pub const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";
/// The integration key of a second service (a hub routed to its own escalation policy).
pub const TEMPLE_ROUTING_KEY: &str = "fedcba9876543210fedcba9876543210";
/// The REST API token the stand-in accepts.
pub const API_TOKEN: &str = "u+rest-api-token-for-tests";
/// The one PagerDuty user the stand-in knows.
pub const FROM_EMAIL: &str = "oncall@example.org";

impl PagerDuty {
    /// A stand-in serving on a random loopback port: itself (what it accepted) and its events URL.
    pub async fn running() -> (PagerDuty, String) {
        let pd = PagerDuty::default();
        let url = pd.clone().start().await;
        (pd, url)
    }

    /// Serves `POST /v2/enqueue` on a random loopback port; returns the events URL.
    pub async fn start(self) -> String {
        let app = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .route("/v2/change/enqueue", post(change_enqueue))
            .route("/incidents", get(list_incidents))
            .route("/incidents/{id}/notes", post(add_note))
            .route("/incidents/{id}", get(show_incident).put(update_incident))
            .route("/priorities", get(list_priorities))
            .with_state(self);
        let addr = super::serve::on_loopback(app).await;
        format!("http://{addr}/v2/enqueue")
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn changes(&self) -> Vec<Value> {
        self.inner.lock().unwrap().changes.clone()
    }

    pub fn accepted_actions(&self) -> Vec<String> {
        self.accepted().iter().map(|e| e["event_action"].as_str().unwrap().to_string()).collect()
    }

    pub fn set_outage(&self, fault: Option<Fault>) {
        self.inner.lock().unwrap().outage = fault;
    }

    pub fn queue_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// The notes added, as (incident id, content, From).
    pub fn notes(&self) -> Vec<(String, String, String)> {
        self.inner.lock().unwrap().notes.clone()
    }

    /// The priorities set, as (incident id, priority name).
    pub fn priorities_set(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().priorities_set.clone()
    }

    /// The incident id PagerDuty made for `dedup_key`.
    pub fn incident_of(&self, dedup_key: &str) -> Option<String> {
        self.inner.lock().unwrap().incidents.iter().find(|(_, k, _)| k == dedup_key).map(|(id, _, _)| id.clone())
    }

    pub fn rest_requests(&self) -> Vec<(String, u16)> {
        self.inner.lock().unwrap().rest_requests.clone()
    }

    /// An alert (and its incident) already open on `routing_key` under `dedup_key`, as an earlier leader left
    /// it; the incident's id.
    /// A responder acknowledges the incident of `dedup_key` in PagerDuty.
    pub fn acknowledge(&self, dedup_key: &str, by: &str) {
        self.respond(dedup_key, |status, responders| {
            *status = "acknowledged";
            responders.acknowledgements.push((now_rfc3339(), by.to_string()));
            responders.last_change = Some(("user_reference", by.to_string(), now_rfc3339()));
        });
    }

    /// The incident is handed to `to`: as in PagerDuty, a reassignment makes it triggered again for them.
    pub fn reassign(&self, dedup_key: &str, to: &str) {
        self.respond(dedup_key, |status, responders| {
            *status = "triggered";
            responders.acknowledgements.clear();
            responders.assignees = vec![to.to_string()];
        });
    }

    /// A responder resolves it in PagerDuty: its alert closes, so a later trigger with the key opens a new one.
    pub fn resolve_by(&self, dedup_key: &str, by: &str) {
        self.respond(dedup_key, |status, responders| {
            *status = "resolved";
            responders.acknowledgements.clear();
            responders.assignees.clear();
            responders.last_change = Some(("user_reference", by.to_string(), now_rfc3339()));
        });
        self.inner.lock().unwrap().open_alerts.retain(|(_, key)| key != dedup_key);
    }

    fn respond(&self, dedup_key: &str, change: impl FnOnce(&mut &'static str, &mut Responders)) {
        let mut inner = self.inner.lock().unwrap();
        let Inner { incidents, responders, .. } = &mut *inner;
        let (id, _, status) =
            incidents.iter_mut().rev().find(|(_, k, _)| k == dedup_key).expect("an incident with the key");
        change(status, responders.entry(id.clone()).or_default());
    }

    pub fn open_alert(&self, routing_key: &str, dedup_key: &str) -> String {
        let mut inner = self.inner.lock().unwrap();
        inner.open_alerts.insert((routing_key.to_string(), dedup_key.to_string()));
        let id = format!("Q{:06}", inner.incidents.len() + 1);
        inner.incidents.push((id.clone(), dedup_key.to_string(), "triggered"));
        id
    }

    /// The dedup keys of the alerts open on `routing_key`.
    pub fn open_alerts(&self, routing_key: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        let mut keys: Vec<String> =
            inner.open_alerts.iter().filter(|(k, _)| k == routing_key).map(|(_, d)| d.clone()).collect();
        keys.sort();
        keys
    }
}

/// The REST API's error body.
fn rest_error(status: u16, message: &str, errors: &[&str]) -> Response {
    let body = json!({"error": {"message": message, "code": 2001, "errors": errors}});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// The headers every REST request needs (and `write` ones more); the error answer if they are wrong.
fn check_rest_headers(headers: &HeaderMap, write: bool) -> Option<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("authorization") != format!("Token token={API_TOKEN}") {
        return Some(rest_error(401, "Authentication required", &[]));
    }
    if header("accept") != "application/vnd.pagerduty+json;version=2" {
        return Some(rest_error(406, "The Accept header must ask for application/vnd.pagerduty+json;version=2", &[]));
    }
    if write {
        if !header("content-type").starts_with("application/json") {
            return Some(rest_error(400, "Invalid Input Provided", &["Content-Type must be application/json"]));
        }
        if header("from") != FROM_EMAIL {
            return Some(rest_error(400, "Invalid Input Provided", &["Requester User Not Found"]));
        }
    }
    None
}

fn rest_fault(pd: &PagerDuty) -> Option<Response> {
    let inner = pd.inner.lock().unwrap();
    match inner.rest_outage {
        Some(Fault::Status(429)) => {
            let mut throttled = rest_error(429, "Rate Limit Exceeded", &[]);
            if let Some(seconds) = inner.retry_after {
                throttled.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
            }
            Some(throttled)
        }
        Some(Fault::Status(status)) => Some(rest_error(status, "Injected", &[])),
        // Answered only by the client giving up: a REST API that accepts the request and never answers.
        Some(Fault::Hang) => Some(StatusCode::GATEWAY_TIMEOUT.into_response()),
        None => None,
    }
}

/// Counts a REST request, and holds it for an hour when the REST API hangs.
async fn rest_hang(pd: &PagerDuty) {
    let hangs = {
        let mut inner = pd.inner.lock().unwrap();
        inner.rest_received += 1;
        inner.rest_outage == Some(Fault::Hang)
    };
    if hangs {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// `GET /incidents`: by `incident_key`, or by `statuses[]` (repeated), two per page so that a client must
/// follow `more`.
async fn list_incidents(
    State(pd): State<PagerDuty>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    rest_hang(&pd).await;
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let value = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let statuses: Vec<String> = pairs.iter().filter(|(k, _)| k == "statuses[]").map(|(_, v)| v.clone()).collect();
    let answer = rest_fault(&pd).or_else(|| check_rest_headers(&headers, false)).unwrap_or_else(|| {
        let mut inner = pd.inner.lock().unwrap();
        let listed = |(id, k, status): &(String, String, &str)| {
            json!({"id": id, "type": "incident", "incident_key": k, "status": status})
        };
        if let Some(key) = value("incident_key") {
            let found: Vec<Value> = if inner.lookups_before_found > 0 {
                inner.lookups_before_found -= 1;
                Vec::new()
            } else {
                inner.incidents.iter().filter(|(_, k, _)| *k == key).map(listed).collect()
            };
            let body = json!({"incidents": found, "limit": 25, "offset": 0, "more": false, "total": null});
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
        let offset: usize = value("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        let all: Vec<Value> = inner
            .incidents
            .iter()
            .filter(|(_, _, status)| statuses.is_empty() || statuses.iter().any(|s| s == status))
            .map(listed)
            .collect();
        let page: Vec<Value> = all.iter().skip(offset).take(2).cloned().collect();
        let more = offset + page.len() < all.len();
        let body = json!({"incidents": page, "limit": 2, "offset": offset, "more": more, "total": null});
        (StatusCode::OK, axum::Json(body)).into_response()
    });
    pd.inner.lock().unwrap().rest_requests.push(("GET /incidents".into(), answer.status().as_u16()));
    answer
}

async fn add_note(State(pd): State<PagerDuty>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    rest_hang(&pd).await;
    let answer = rest_fault(&pd).or_else(|| check_rest_headers(&headers, true)).unwrap_or_else(|| {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let content = body["note"]["content"].as_str().unwrap_or("");
        let shape_ok =
            body.as_object().is_some_and(|o| o.len() == 1) && body["note"].as_object().is_some_and(|o| o.len() == 1);
        if !shape_ok || content.is_empty() || content.chars().count() > 25000 {
            return rest_error(400, "Invalid Input Provided", &["Note content must be 1 to 25000 characters"]);
        }
        let mut inner = pd.inner.lock().unwrap();
        if !inner.incidents.iter().any(|(i, _, _)| *i == id) {
            return rest_error(404, "Not Found", &[]);
        }
        if inner.notes.iter().filter(|(i, _, _)| *i == id).count() >= 2000 {
            return rest_error(400, "Invalid Input Provided", &["Incident has reached the limit of 2000 notes"]);
        }
        let from = headers.get("from").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        inner.notes.push((id.clone(), content.to_string(), from.clone()));
        let note = json!({"note": {"id": format!("N{}", inner.notes.len()), "content": content,
            "user": {"type": "user_reference", "summary": from}}});
        (StatusCode::CREATED, axum::Json(note)).into_response()
    });
    pd.inner.lock().unwrap().rest_requests.push((format!("POST /incidents/{id}/notes"), answer.status().as_u16()));
    answer
}

/// `GET /priorities?limit=&offset=`: two per page, so a client must follow `more`.
async fn list_priorities(
    State(pd): State<PagerDuty>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    rest_hang(&pd).await;
    let answer = rest_fault(&pd).or_else(|| check_rest_headers(&headers, false)).unwrap_or_else(|| {
        let offset: usize = query.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        let page: Vec<Value> = PRIORITIES
            .iter()
            .skip(offset)
            .take(2)
            .map(|(id, name)| json!({"id": id, "type": "priority", "name": name, "summary": name}))
            .collect();
        let more = offset + page.len() < PRIORITIES.len();
        (StatusCode::OK, axum::Json(json!({"priorities": page, "limit": 2, "offset": offset, "more": more})))
            .into_response()
    });
    pd.inner.lock().unwrap().rest_requests.push(("GET /priorities".into(), answer.status().as_u16()));
    answer
}

/// `PUT /incidents/{id}` with a priority reference (and nothing else).
async fn update_incident(
    State(pd): State<PagerDuty>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    rest_hang(&pd).await;
    let answer = rest_fault(&pd).or_else(|| check_rest_headers(&headers, true)).unwrap_or_else(|| {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let incident = &body["incident"];
        let shape_ok = body.as_object().is_some_and(|o| o.len() == 1)
            && incident["type"] == "incident_reference"
            && incident["priority"]["type"] == "priority_reference"
            && incident.as_object().is_some_and(|o| o.keys().all(|k| k == "type" || k == "priority"));
        if !shape_ok {
            return rest_error(400, "Invalid Input Provided", &["incident must be an incident_reference with a priority_reference"]);
        }
        let Some((_, name)) = PRIORITIES.iter().find(|(p, _)| incident["priority"]["id"] == *p) else {
            return rest_error(400, "Invalid Input Provided", &["Priority not found"]);
        };
        let mut inner = pd.inner.lock().unwrap();
        if !inner.incidents.iter().any(|(i, _, _)| *i == id) {
            return rest_error(404, "Not Found", &[]);
        }
        inner.priorities_set.push((id.clone(), name.to_string()));
        let answer = json!({"incident": {"id": id, "type": "incident", "priority": {"id": incident["priority"]["id"], "type": "priority", "name": name}}});
        (StatusCode::OK, axum::Json(answer)).into_response()
    });
    pd.inner.lock().unwrap().rest_requests.push((format!("PUT /incidents/{id}"), answer.status().as_u16()));
    answer
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `GET /incidents/{id}`: the incident with its acknowledgements (while acknowledged), assignments (until
/// resolved) and the last status change, as the REST API shows them.
async fn show_incident(State(pd): State<PagerDuty>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    rest_hang(&pd).await;
    let answer = rest_fault(&pd).or_else(|| check_rest_headers(&headers, false)).unwrap_or_else(|| {
        let inner = pd.inner.lock().unwrap();
        let Some((_, key, status)) = inner.incidents.iter().find(|(i, _, _)| *i == id) else {
            return rest_error(404, "Not Found", &[]);
        };
        let responders = inner.responders.get(&id).cloned().unwrap_or_default();
        let person = |name: &str| json!({"id": "PUSER01", "type": "user_reference", "summary": name});
        let acknowledgements: Vec<Value> = match *status {
            "acknowledged" => responders
                .acknowledgements
                .iter()
                .map(|(at, by)| json!({"at": at, "acknowledger": person(by)}))
                .collect(),
            _ => Vec::new(),
        };
        let assignments: Vec<Value> = match *status {
            "resolved" => Vec::new(),
            _ => responders.assignees.iter().map(|to| json!({"at": now_rfc3339(), "assignee": person(to)})).collect(),
        };
        let (by, at) = match &responders.last_change {
            Some((kind, name, at)) => (json!({"id": "PCHANGE", "type": kind, "summary": name}), json!(at)),
            None => {
                (json!({"id": "PSERVICE", "type": "service_reference", "summary": "hubwatch"}), json!(now_rfc3339()))
            }
        };
        let resolved_at = if *status == "resolved" { at.clone() } else { Value::Null };
        let incident = json!({"id": id, "type": "incident", "incident_key": key, "status": status,
            "acknowledgements": acknowledgements, "assignments": assignments, "last_status_change_by": by,
            "last_status_change_at": at, "resolved_at": resolved_at});
        (StatusCode::OK, axum::Json(json!({"incident": incident}))).into_response()
    });
    pd.inner.lock().unwrap().rest_requests.push((format!("GET /incidents/{id}"), answer.status().as_u16()));
    answer
}

/// An integration key the stand-in's account has.
fn known_routing_key(event: &Value) -> bool {
    event["routing_key"].as_str().is_some_and(|k| k == ROUTING_KEY || k == TEMPLE_ROUTING_KEY)
}

/// The schema check: the reasons an event is invalid, as PagerDuty lists them in `errors`.
pub fn validate(event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(object) = event.as_object() else { return vec!["the event is not a JSON object".into()] };
    const TOP: [&str; 8] =
        ["routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"];
    for key in object.keys() {
        if !TOP.contains(&key.as_str()) {
            errors.push(format!("'{key}' is not a known field"));
        }
    }
    match event["routing_key"].as_str() {
        Some(k) if k.len() == 32 => {}
        Some(_) => errors.push("'routing_key' must be 32 characters".into()),
        None => errors.push("'routing_key' is missing".into()),
    }
    let action = event["event_action"].as_str().unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errors.push("'event_action' must be trigger, acknowledge or resolve".into());
    }
    match &event["dedup_key"] {
        Value::String(k) if k.len() > 255 => errors.push("'dedup_key' is longer than 255 characters".into()),
        Value::String(k) if k.is_empty() => errors.push("'dedup_key' is empty".into()),
        Value::String(_) => {}
        Value::Null if action == "trigger" => {}
        Value::Null => errors.push("'dedup_key' is required for acknowledge and resolve".into()),
        _ => errors.push("'dedup_key' must be a string".into()),
    }
    if action == "trigger" {
        let payload = &event["payload"];
        if !payload.is_object() {
            errors.push("'payload' is required for trigger".into());
        } else {
            match payload["summary"].as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
                Some(_) => errors.push("'payload.summary' must be 1 to 1024 characters".into()),
                None => errors.push("'payload.summary' is missing".into()),
            }
            if payload["source"].as_str().is_none_or(str::is_empty) {
                errors.push("'payload.source' is missing".into());
            }
            if !["critical", "error", "warning", "info"].contains(&payload["severity"].as_str().unwrap_or("")) {
                errors.push("'payload.severity' must be critical, error, warning or info".into());
            }
            if let Some(ts) = payload.get("timestamp")
                && ts.as_str().is_none_or(|t| humantime::parse_rfc3339_weak(t).is_err())
            {
                errors.push("'payload.timestamp' must be ISO 8601".into());
            }
            for key in ["component", "group", "class"] {
                if payload.get(key).is_some_and(|v| !v.is_string()) {
                    errors.push(format!("'payload.{key}' must be a string"));
                }
            }
            if payload.get("custom_details").is_some_and(|v| !v.is_object()) {
                errors.push("'payload.custom_details' must be an object".into());
            }
        }
        if let Some(links) = event.get("links") {
            match links.as_array() {
                Some(links) if links.iter().all(|l| l["href"].as_str().is_some_and(|h| !h.is_empty())) => {}
                _ => errors.push("'links' must be objects with an 'href'".into()),
            }
        }
        if let Some(images) = event.get("images")
            && !images
                .as_array()
                .is_some_and(|i| i.iter().all(|i| i["src"].as_str().is_some_and(|s| s.starts_with("https://"))))
        {
            errors.push("'images' must be objects with an https 'src'".into());
        }
    } else {
        for key in ["payload", "links", "images", "client", "client_url"] {
            if object.contains_key(key) {
                errors.push(format!("'{key}' is only for trigger"));
            }
        }
    }
    errors
}

async fn enqueue(State(pd): State<PagerDuty>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = {
        let mut inner = pd.inner.lock().unwrap();
        inner.faults.pop_front().or(inner.outage)
    };
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = |status: u16, body: Value, event: Value| {
        pd.inner.lock().unwrap().requests.push((status, event));
        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
    };
    match fault {
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(Fault::Status(429)) => {
            let retry_after = pd.inner.lock().unwrap().retry_after;
            let mut throttled = answer(
                429,
                json!({"status": "throttle exceeded", "message": "Requests for this service are arriving too quickly."}),
                event,
            );
            if let Some(seconds) = retry_after {
                throttled.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
            }
            return throttled;
        }
        Some(Fault::Status(status)) if status >= 500 => return answer(status, json!({}), event),
        Some(Fault::Status(status)) => {
            return answer(
                status,
                json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["injected"]}),
                event,
            );
        }
        None => {}
    }
    if body.len() > 512 * 1024 {
        return answer(
            400,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["the event is larger than 512 KB"]}),
            event,
        );
    }
    let mut errors = validate(&event);
    if errors.is_empty() && !known_routing_key(&event) {
        errors.push("Invalid routing key".into());
    }
    if !errors.is_empty() {
        return answer(
            400,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
            event,
        );
    }
    let key = event["dedup_key"].as_str().map(str::to_string).unwrap_or_else(|| format!("generated-{}", body.len()));
    {
        let mut inner = pd.inner.lock().unwrap();
        let alert = (event["routing_key"].as_str().unwrap().to_string(), key.clone());
        let action = event["event_action"].as_str().unwrap();
        // A trigger that opens an alert makes an incident; the resolve of an open alert resolves it.
        if action == "trigger" && inner.open_alerts.insert(alert.clone()) {
            let id = format!("Q{:06}", inner.incidents.len() + 1);
            let assigned = Responders { assignees: vec![FIRST_RESPONDER.to_string()], ..Responders::default() };
            inner.responders.insert(id.clone(), assigned);
            inner.incidents.push((id, key.clone(), "triggered"));
        }
        if action == "resolve"
            && inner.open_alerts.remove(&alert)
            && let Some(incident) =
                inner.incidents.iter_mut().rev().find(|(_, k, status)| *k == key && *status != "resolved")
        {
            incident.2 = "resolved";
        }
        inner.accepted.push(event.clone());
        let sender = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        inner.received.push(Received { at: std::time::SystemTime::now(), sender, event: event.clone() });
    }
    answer(202, json!({"status": "success", "message": "Event processed", "dedup_key": key}), event)
}

/// The Change Events schema: `routing_key`, `payload{summary (<= 1024), source, timestamp, custom_details}`,
/// `links`; nothing else.
pub fn validate_change(event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(object) = event.as_object() else { return vec!["the event is not a JSON object".into()] };
    for key in object.keys() {
        if !["routing_key", "payload", "links", "images"].contains(&key.as_str()) {
            errors.push(format!("'{key}' is not a known field"));
        }
    }
    if event["routing_key"].as_str().is_none_or(|k| k.len() != 32) {
        errors.push("'routing_key' must be 32 characters".into());
    }
    let payload = &event["payload"];
    match payload["summary"].as_str() {
        Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
        _ => errors.push("'payload.summary' must be 1 to 1024 characters".into()),
    }
    if let Some(object) = payload.as_object() {
        for key in object.keys() {
            if !["summary", "source", "timestamp", "custom_details"].contains(&key.as_str()) {
                errors.push(format!("'payload.{key}' is not a known field"));
            }
        }
    }
    if let Some(ts) = payload.get("timestamp")
        && ts.as_str().is_none_or(|t| humantime::parse_rfc3339_weak(t).is_err())
    {
        errors.push("'payload.timestamp' must be ISO 8601".into());
    }
    errors
}

async fn change_enqueue(State(pd): State<PagerDuty>, body: Bytes) -> Response {
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut errors = validate_change(&event);
    if errors.is_empty() && !known_routing_key(&event) {
        errors.push("Invalid routing key".into());
    }
    let mut inner = pd.inner.lock().unwrap();
    if !errors.is_empty() {
        inner.requests.push((400, event));
        let body = json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    inner.requests.push((202, event.clone()));
    inner.changes.push(event);
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "success", "message": "Change event processed"})))
        .into_response()
}
