//! `/api/v1/silences`: make (`POST`), list (`GET`: active and those ended in the last day) and end
//! (`DELETE /api/v1/silences/{id}`) silences, behind the pages' authentication. Refusals are `400
//! {"error": "..."}` naming what is wrong.

use super::auth::Authenticated;
use super::{WebState, store_failed};
use crate::domain::{HubName, Silence, SilenceSource};
use crate::incident::holds::{self, SilenceRequest};
use crate::tasks::off_runtime;
use crate::timefmt::rfc3339;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

/// How long an ended silence is still listed.
pub const ENDED_LISTED_FOR: Duration = Duration::from_secs(24 * 3600);
/// Active silences at most: each is shown on every page and checked on every decision.
pub const ACTIVE_SILENCES_MAX: usize = 1000;

pub fn to_json(silence: &Silence, now: SystemTime) -> Value {
    json!({
        "id": silence.id,
        "hub": silence.hub,
        "kind": silence.kind.map(|k| k.as_str()),
        "starts_at": rfc3339(silence.starts_at),
        "ends_at": rfc3339(silence.ends_at),
        "every": silence.every.map(|every| humantime::format_duration(every).to_string()),
        "next_window": silence.next_window(now).map(|(start, end)| json!({"starts_at": rfc3339(start), "ends_at": rfc3339(end)})),
        "reason": silence.reason,
        "created_by": silence.created_by,
        "source": silence.source.as_str(),
        "active": silence.is_active(now),
        "planned": !silence.is_active(now) && silence.next_window(now).is_some(),
    })
}

pub(super) fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(json!({"error": error}))).into_response()
}

/// Makes a silence; its author is the user the request authenticated as (the body's `created_by` only when
/// the pages need no login, else "anonymous").
pub async fn create(
    State(state): State<WebState>,
    user: Option<Extension<Authenticated>>,
    body: axum::body::Bytes,
) -> Response {
    let mut request: SilenceRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("the body is not a silence as JSON: {e}")),
    };
    request.created_by = match user {
        Some(Extension(Authenticated(user))) => Some(user),
        None => request.created_by.or_else(|| Some("anonymous".into())),
    };
    off_runtime(move || {
        let now = state.clock.now();
        match state.store.silences(now) {
            Ok(silences) if silences.iter().filter(|s| s.is_active(now)).count() >= ACTIVE_SILENCES_MAX => {
                let why = format!("there are {ACTIVE_SILENCES_MAX} active silences already: expire some first");
                return refuse(StatusCode::CONFLICT, why);
            }
            Ok(_) => {}
            Err(e) => return store_failed(e),
        }
        let hubs: Vec<HubName> = state.board.snapshot().into_keys().collect();
        let silence = match holds::validate(&request, &hubs, holds::new_silence_id(), SilenceSource::Api, now) {
            Ok(silence) => silence,
            Err(refused) => return refuse(StatusCode::BAD_REQUEST, refused.to_string()),
        };
        match holds::start_silence(&state.store, &silence, now) {
            Ok(()) => {
                tracing::warn!(id = %silence.id, hub = %silence.hub, kind = silence.kind.map(|k| k.as_str()),
                    until = %rfc3339(silence.ends_at), reason = %silence.reason, by = %silence.created_by, "silence added");
                (StatusCode::CREATED, Json(to_json(&silence, now))).into_response()
            }
            Err(e) => store_failed(e),
        }
    })
    .await
}

pub async fn list(State(state): State<WebState>) -> Response {
    off_runtime(move || {
        let now = state.clock.now();
        match state.store.silences(now.checked_sub(ENDED_LISTED_FOR).unwrap_or(now)) {
            Ok(silences) => Json(silences.iter().map(|s| to_json(s, now)).collect::<Vec<_>>()).into_response(),
            Err(e) => store_failed(e),
        }
    })
    .await
}

pub async fn expire(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    off_runtime(move || match state.store.expire_silence(&id, state.clock.now()) {
        Ok(Some(silence)) => {
            tracing::warn!(id = %silence.id, hub = %silence.hub, "silence expired by an operator");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(None) => refuse(StatusCode::NOT_FOUND, format!("no silence {id:?}")),
        Err(e) => store_failed(e),
    })
    .await
}
