//! PagerDuty's REST API, for status notes and priorities: find the PagerDuty incident of an alert by its
//! dedup key (`GET /incidents?incident_key=`), then `POST /incidents/{id}/notes`, or look the priority's id
//! up by name (`GET /priorities`) and `PUT /incidents/{id}` with it. Every request carries
//! `Authorization: Token token=…`, `Accept: application/vnd.pagerduty+json;version=2`, and writes a non-empty
//! `From` (a PagerDuty user's email). And what responders did: `GET /incidents/{id}`.

use super::pagerduty::Answer;
use crate::config::StatusUpdatesConfig;
use crate::domain::wording::truncate;
use crate::domain::{Act, Response, ResponseStatus};
use crate::http::{HttpClient, RequestBuilder};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

const ACCEPT_V2: &str = "application/vnd.pagerduty+json;version=2";

/// What became of one attempt to find an incident.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    /// PagerDuty has no incident with this dedup key (yet: events are processed asynchronously).
    NotFound,
    Failed(Answer),
}

pub struct RestClient<'a> {
    pub http: &'a HttpClient,
    pub settings: &'a StatusUpdatesConfig,
    pub timeout: Duration,
}

impl RestClient<'_> {
    fn headers(&self, write: bool) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let token = HeaderValue::from_str(&format!("Token token={}", self.settings.api_token.expose()))
            // Never quote the token: it is a secret.
            .map_err(|_| "pagerduty.api_token holds characters an HTTP header cannot carry".to_string())?;
        headers.insert(AUTHORIZATION, token);
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_V2));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if write {
            let from = HeaderValue::from_str(&self.settings.from_email)
                .map_err(|_| "pagerduty.from_email cannot be sent as a header".to_string())?;
            headers.insert("From", from);
        }
        Ok(headers)
    }

    async fn call(&self, request: RequestBuilder, write: bool) -> Result<(u16, Value, HeaderMap), Answer> {
        let headers = self.headers(write).map_err(Answer::Rejected)?;
        let deadline = Instant::now() + self.timeout;
        match self.http.send(request.headers(headers), deadline).await {
            Ok(response) => {
                let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                Ok((response.status.as_u16(), body, response.headers))
            }
            Err(e) => Err(Answer::Failed(e.to_string())),
        }
    }

    /// The PagerDuty incident whose alert has `dedup_key`.
    pub async fn find_incident(&self, dedup_key: &str) -> Lookup {
        let mut url = self.settings.api_url.clone();
        url.set_path(&format!("{}/incidents", url.path().trim_end_matches('/')));
        url.query_pairs_mut().append_pair("incident_key", dedup_key);
        let request = self.http.get(url);
        match self.call(request, false).await {
            Ok((200, body, _)) => {
                match body["incidents"].as_array().and_then(|list| list.first()).and_then(|i| i["id"].as_str()) {
                    Some(id) => Lookup::Found(id.to_string()),
                    None => Lookup::NotFound,
                }
            }
            Ok((status, body, headers)) => Lookup::Failed(answer(status, &body, &headers)),
            Err(answer) => Lookup::Failed(answer),
        }
    }

    /// Every open (triggered or acknowledged) PagerDuty incident the token can see, as (id, incident key),
    /// following `more` page by page (at most 10,000).
    pub async fn open_incidents(&self) -> Result<Vec<(String, String)>, Answer> {
        let (mut found, mut offset) = (Vec::new(), 0);
        loop {
            let mut url = self.settings.api_url.clone();
            url.set_path(&format!("{}/incidents", url.path().trim_end_matches('/')));
            url.query_pairs_mut()
                .append_pair("statuses[]", "triggered")
                .append_pair("statuses[]", "acknowledged")
                .append_pair("date_range", "all")
                .append_pair("limit", "100")
                .append_pair("offset", &offset.to_string());
            let (status, body, headers) = self.call(self.http.get(url), false).await?;
            if status != 200 {
                return Err(answer(status, &body, &headers));
            }
            let page = body["incidents"].as_array().cloned().unwrap_or_default();
            offset += page.len();
            for incident in &page {
                if let (Some(id), Some(key)) = (incident["id"].as_str(), incident["incident_key"].as_str()) {
                    found.push((id.to_string(), key.to_string()));
                }
            }
            if body["more"].as_bool() != Some(true) || page.is_empty() || offset >= 10_000 {
                return Ok(found);
            }
        }
    }

    /// What responders did with the incident `id` (`GET /incidents/{id}`).
    pub async fn response(&self, id: &str) -> Result<Response, Answer> {
        let mut url = self.settings.api_url.clone();
        url.set_path(&format!("{}/incidents/{id}", url.path().trim_end_matches('/')));
        match self.call(self.http.get(url), false).await? {
            (200, body, _) => read_response(&body["incident"])
                .ok_or_else(|| Answer::Rejected(format!("PagerDuty's incident {id} has no status hubwatch knows"))),
            (status, body, headers) => Err(answer(status, &body, &headers)),
        }
    }

    /// Posts `note` (`{"note": {"content": …}}`) to the incident `id`.
    pub async fn post_note(&self, id: &str, content: &str) -> Answer {
        let mut url = self.settings.api_url.clone();
        url.set_path(&format!("{}/incidents/{id}/notes", url.path().trim_end_matches('/')));
        let request = self.http.post(url).json(&serde_json::json!({"note": {"content": content}}));
        match self.call(request, true).await {
            Ok((status, body, headers)) => answer(status, &body, &headers),
            Err(answer) => answer,
        }
    }
}

impl RestClient<'_> {
    /// The id of the account's priority named `name` (`GET /priorities`, every page); `Rejected` naming the
    /// ones there are when none has that name (priorities may be off for the account).
    pub async fn priority_id(&self, name: &str) -> Result<String, Answer> {
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let mut url = self.settings.api_url.clone();
            url.set_path(&format!("{}/priorities", url.path().trim_end_matches('/')));
            url.query_pairs_mut().append_pair("limit", "100").append_pair("offset", &offset.to_string());
            let (status, body, headers) = self.call(self.http.get(url), false).await?;
            if status != 200 {
                return Err(answer(status, &body, &headers));
            }
            let listed = body["priorities"].as_array().cloned().unwrap_or_default();
            for priority in &listed {
                match (priority["name"].as_str(), priority["id"].as_str()) {
                    (Some(n), Some(id)) if n == name => return Ok(id.to_string()),
                    (Some(n), _) => names.push(n.to_string()),
                    _ => {}
                }
            }
            if body["more"].as_bool() != Some(true) || listed.is_empty() || offset > 10_000 {
                break;
            }
            offset += listed.len();
        }
        let there =
            if names.is_empty() { "none (priorities may be off for the account)".into() } else { names.join(", ") };
        Err(Answer::Rejected(format!("PagerDuty has no priority named {name:?}; it has: {there}")))
    }

    /// Sets the priority `priority_id` on the incident `id` (`PUT /incidents/{id}`).
    pub async fn set_priority(&self, id: &str, priority_id: &str) -> Answer {
        let mut url = self.settings.api_url.clone();
        url.set_path(&format!("{}/incidents/{id}", url.path().trim_end_matches('/')));
        let body = serde_json::json!({"incident": {"type": "incident_reference",
            "priority": {"id": priority_id, "type": "priority_reference"}}});
        match self.call(self.http.put(url).json(&body), true).await {
            Ok((status, body, headers)) => answer(status, &body, &headers),
            Err(answer) => answer,
        }
    }
}

/// An incident object as the REST API gives it: `status`, `acknowledgements[{at, acknowledger{summary}}]`
/// (while acknowledged), `assignments[{assignee{summary}}]` (until resolved), and who changed its status last
/// (`last_status_change_by`: a user, or its service for an event or an auto-resolve) and when.
fn read_response(incident: &Value) -> Option<Response> {
    let status = match incident["status"].as_str()? {
        "triggered" => ResponseStatus::Triggered,
        "acknowledged" => ResponseStatus::Acknowledged,
        "resolved" => ResponseStatus::Resolved,
        _ => return None,
    };
    let time = |v: &Value| v.as_str().and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    let name = |v: &Value| v["summary"].as_str().filter(|s| !s.is_empty()).map(|s| truncate(s, 200));
    let acknowledged = incident["acknowledgements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some(Act { by: name(&a["acknowledger"])?, at: time(&a["at"])? }))
        .max_by_key(|act| act.at);
    let assignees =
        incident["assignments"].as_array().into_iter().flatten().filter_map(|a| name(&a["assignee"])).collect();
    let resolved = (status == ResponseStatus::Resolved).then(|| {
        let changer = &incident["last_status_change_by"];
        let by = match (changer["type"].as_str(), name(changer)) {
            (Some(t), Some(n)) if t.starts_with("service") => format!("its service {n} (an event or an auto-resolve)"),
            (_, Some(n)) => n,
            (_, None) => "someone PagerDuty does not name".to_string(),
        };
        let at = time(&incident["resolved_at"]).or_else(|| time(&incident["last_status_change_at"]));
        Act { by, at: at.unwrap_or_else(std::time::SystemTime::now) }
    });
    Some(Response { status, acknowledged, assignees, resolved })
}

/// 2xx accepted; 429 rate limited; 5xx retried; any other 4xx (a bad token, no such incident, an invalid
/// note) is rejected: retrying cannot help.
fn answer(status: u16, body: &Value, headers: &HeaderMap) -> Answer {
    let message = body["error"]["message"].as_str().unwrap_or("");
    let errors = body["error"]["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default();
    let reason = truncate(format!("HTTP {status} {message} {errors}").trim(), 300);
    match status {
        200..=299 => Answer::Accepted(format!("HTTP {status}")),
        429 => Answer::RateLimited(super::pagerduty::retry_after(headers)),
        400..=499 => Answer::Rejected(reason),
        _ => Answer::Failed(reason),
    }
}
