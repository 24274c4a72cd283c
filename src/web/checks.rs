//! `POST /api/v1/hubs/{hub}/check`: every capability of the hub, for every probe user, now (behind the pages'
//! authentication; refused on a standby like every write). The answer is the rows `hubwatch check --output
//! json` prints; the outcomes count in detection, and are noted on the hub's open incidents.

use super::WebState;
use super::silences::refuse;
use crate::probe::on_demand::CheckRefused;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub async fn run(State(state): State<WebState>, Path(hub): Path<String>) -> Response {
    match state.on_demand.check(&hub).await {
        Ok(outcomes) => Json(outcomes.iter().map(|o| o.to_json()).collect::<Vec<_>>()).into_response(),
        Err(refused) => {
            let status = match &refused {
                CheckRefused::UnknownHub(_) => StatusCode::NOT_FOUND,
                CheckRefused::Running(_) => StatusCode::CONFLICT,
                CheckRefused::TooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
                CheckRefused::NotProbing => StatusCode::SERVICE_UNAVAILABLE,
                CheckRefused::Note(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut response = refuse(status, refused.to_string());
            if let CheckRefused::TooSoon { retry_after, .. } = refused {
                let seconds = retry_after.as_secs().max(1).to_string();
                response.headers_mut().insert(header::RETRY_AFTER, seconds.parse().expect("digits are a header value"));
            }
            response
        }
    }
}
