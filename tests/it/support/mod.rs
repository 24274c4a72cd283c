pub mod apiserver;
pub mod binderhub;
pub mod daemon;
pub mod decisions;
pub mod disk;
pub mod golden;
pub mod invariants;
pub mod k8s_fixtures;
pub mod lab;
pub mod outcomes;
pub mod pagerduty;
pub mod paging;
pub mod scenario;
pub mod serve;
pub mod stub_hub;
pub mod tiers;
pub mod tls;
pub mod webhook;

/// Sends `request` and reads its answer as JSON: a test's look at an API it relies on (any failure panics).
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// A page for `hub`'s hub_access incident as the incident manager queues one, for tests that only need one stored.
pub fn a_trigger(hub: &str, at: std::time::SystemTime) -> hubwatch::store::NewEvent {
    use hubwatch::domain::{IncidentKind, Message, Page, Severity, Symptoms};
    hubwatch::store::NewEvent::now(Message::Trigger(Box::new(Page {
        hub: hub.into(),
        hub_url: format!("https://{hub}.example.org/").parse().unwrap(),
        kind: IncidentKind::HubAccess,
        summary: format!("{hub}: 2 users cannot start their servers"),
        severity: Severity::Critical,
        symptoms: Symptoms::default(),
        impact_start: at,
        threshold: 2,
        window: std::time::Duration::from_secs(900),
        incident_url: format!("http://127.0.0.1/incidents/{hub}").parse().unwrap(),
        diagnostics: String::new(),
        routing: None,
        parts: Vec::new(),
        at,
    })))
}
