//! Talking to a running hubwatch's API from the CLI (`hubwatch silence`, `hubwatch check --url`), as amtool
//! talks to Alertmanager: credentials from `HUBWATCH_WEB_USER` / `HUBWATCH_WEB_PASSWORD` when its pages need
//! them.

use crate::http::HttpClient;
use serde_json::Value;
use std::time::Duration;
use url::Url;

/// One request to the API; its JSON answer, or what went wrong (hubwatch's own `error` when it gives one).
pub async fn call(
    http: &HttpClient,
    method: hyper::Method,
    base: &Url,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Result<Value, String> {
    let base = if base.path().ends_with('/') {
        base.clone()
    } else {
        Url::parse(&format!("{base}/")).map_err(|e| e.to_string())?
    };
    let url = base.join(path).map_err(|e| e.to_string())?;
    let mut request = http.request(method, &url);
    if let Ok(user) = std::env::var("HUBWATCH_WEB_USER") {
        request = request.basic_auth(&user, std::env::var("HUBWATCH_WEB_PASSWORD").ok().as_deref());
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = http
        .send(request, tokio::time::Instant::now() + timeout)
        .await
        .map_err(|e| format!("cannot reach hubwatch at {base}: {e}"))?;
    let status = response.status.as_u16();
    let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    match status {
        200..=299 => Ok(json),
        401 => Err("hubwatch wants credentials: set HUBWATCH_WEB_USER and HUBWATCH_WEB_PASSWORD".into()),
        _ => Err(json["error"].as_str().map_or_else(
            || format!("HTTP {status} from {url}: {}", String::from_utf8_lossy(&response.body).trim()),
            String::from,
        )),
    }
}
