//! Calls to the Kubernetes API as hubwatch makes them: each under a deadline, with failures in words a
//! responder can act on; lists in pages (`limit` and `continue`) up to a cap, so a namespace with a hundred
//! thousand events costs a bounded amount of memory and time, never the whole collection at once.

use kube::Api;
use kube::api::ListParams;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Objects asked for per page (kubectl's default chunk size).
pub const PAGE: u32 = 500;
/// Most objects one listing returns; the rest are left unread (and said so).
pub const CAP: usize = 5_000;

/// What failed, in words a responder can act on (RBAC denials name the verb and resource).
pub fn reason(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() { status.reason.clone() } else { status.message.clone() };
            format!("{message} (HTTP {})", status.code)
        }
        other => other.to_string(),
    }
}

fn no_answer(timeout: Duration) -> String {
    format!("the Kubernetes API did not answer within {}", humantime::format_duration(timeout))
}

/// One call under `timeout`.
pub async fn timed<T, F>(timeout: Duration, call: F) -> Result<T, String>
where
    F: Future<Output = Result<T, kube::Error>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(reason),
        Err(_) => Err(no_answer(timeout)),
    }
}

/// Lists `params`' objects a page at a time until the end or [`CAP`] (the rest left unread); all pages
/// together within `timeout`.
pub async fn list<K>(api: Api<K>, params: ListParams, timeout: Duration) -> Result<Vec<K>, String>
where
    K: Clone + serde::de::DeserializeOwned + Debug,
{
    let deadline = Instant::now() + timeout;
    let mut params = params.limit(PAGE);
    let mut items = Vec::new();
    loop {
        let page = match tokio::time::timeout_at(deadline, api.list(&params)).await {
            Ok(page) => page.map_err(reason)?,
            Err(_) => return Err(no_answer(timeout)),
        };
        items.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) if items.len() < CAP => params = params.continue_token(&token),
            _ => {
                items.truncate(CAP);
                return Ok(items);
            }
        }
    }
}
