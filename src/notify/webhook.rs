//! The webhook sink: one JSON POST per event, with the configured headers. 2xx is accepted; 408, 425, 429
//! and 5xx (and network errors) are retried with backoff; any other 4xx is refused for good (retrying an
//! event the receiver finds invalid cannot help).

use super::pagerduty::Answer;
use crate::config::WebhookConfig;
use crate::http::{HttpClient, truncate};
use reqwest::header::{HeaderName, HeaderValue, USER_AGENT};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

pub async fn post(http: &HttpClient, webhook: &WebhookConfig, body: &Value, agent: &str, budget: Duration) -> Answer {
    let mut request = http.reqwest().post(webhook.url.clone()).header(USER_AGENT, agent).json(body);
    for (name, value) in &webhook.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.expose()))
        else {
            // Never quote the value: it is a secret.
            return Answer::Rejected(format!("webhook.headers.{name} cannot be sent as an HTTP header"));
        };
        request = request.header(name, value);
    }
    match http.send(request, Instant::now() + budget).await {
        Ok(response) => classify(response.status.as_u16(), &response.body),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

fn classify(status: u16, body: &[u8]) -> Answer {
    let said = truncate(String::from_utf8_lossy(body).trim(), 200);
    match status {
        200..=299 => Answer::Accepted(format!("HTTP {status}")),
        408 | 425 | 429 | 500..=599 => Answer::Failed(format!("HTTP {status} {said}").trim().to_string()),
        _ => Answer::Rejected(format!("HTTP {status} {said}").trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_for_retrying() {
        assert_eq!(classify(204, b""), Answer::Accepted("HTTP 204".into()));
        assert!(matches!(classify(503, b"down"), Answer::Failed(r) if r == "HTTP 503 down"));
        assert!(matches!(classify(429, b""), Answer::Failed(_)));
        assert!(matches!(classify(400, b"bad field"), Answer::Rejected(r) if r == "HTTP 400 bad field"));
    }
}
