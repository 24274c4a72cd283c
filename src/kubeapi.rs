//! Calls to the Kubernetes API as hubwatch makes them: each under a deadline, with failures in words a
//! responder can act on; lists in pages (`limit` and `continue`) up to a cap, so a namespace with a hundred
//! thousand events costs a bounded amount of memory and time, never the whole collection at once. And the
//! vocabulary the signals and the diagnostics share: z2jh's and Dask Gateway's labels, Kubernetes times.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Api;
use kube::api::{ApiResource, GroupVersionKind, ListParams};
use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Objects asked for per page (kubectl's default chunk size).
pub const PAGE: u32 = 500;
/// Most objects one listing returns; the rest are left unread (and said so).
pub const CAP: usize = 5_000;

/// The label z2jh puts on user server pods, and the annotation that names their user.
pub const USER_POD_SELECTOR: &str = "component=singleuser-server";
pub const USERNAME_ANNOTATION: &str = "hub.jupyter.org/username";
/// Dask Gateway's Kubernetes backend labels its pods with the cluster; the user is the DaskCluster's
/// `spec.username` (dask_gateway_server/backends/kubernetes: `get_labels`, `make_cluster_object`).
pub const DASK_CLUSTER_LABEL: &str = "gateway.dask.org/cluster";

pub fn daskcluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.dask.org", "v1alpha1", "DaskCluster"),
        "daskclusters",
    )
}

pub fn to_system_time(at: &Time) -> SystemTime {
    let ms = at.0.as_millisecond();
    if ms >= 0 { UNIX_EPOCH + Duration::from_millis(ms as u64) } else { UNIX_EPOCH }
}

/// When an event was last seen, as kubectl orders and prints it.
pub fn event_last_seen(event: &Event) -> Option<SystemTime> {
    if let Some(series) = &event.series {
        return series.last_observed_time.as_ref().map(|MicroTime(t)| to_system_time(&Time(*t)));
    }
    event
        .last_timestamp
        .as_ref()
        .or(event.first_timestamp.as_ref())
        .map(to_system_time)
        .or_else(|| event.event_time.as_ref().map(|MicroTime(t)| to_system_time(&Time(*t))))
}

/// apimachinery's `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

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
