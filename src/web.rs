//! The daemon's HTTP endpoints: `/metrics`, `/healthz` (the process serves), `/readyz` (start-up clean-up is
//! done and probing has begun), and `/incidents/{key}`: the page a PagerDuty event links to, with the
//! incident's affected users, timeline and whole diagnostics (server-rendered; everything from hubs and the
//! cluster is escaped).

use crate::incident::store::Store;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct WebState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub store: Arc<Store>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/incidents/{key}", get(incident))
        .with_state(state)
}

/// HTML-escapes text from hubs and the cluster (a hub error message may hold `<script>`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

async fn incident(State(state): State<WebState>, Path(key): Path<String>) -> Response {
    let record = match state.store.incident(&key) {
        Ok(Some(record)) => record,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no incident {key:?}\n")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the incident");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the state database\n").into_response();
        }
    };
    let timeline = state.store.timeline(&key).unwrap_or_default();
    let diagnostics = state.store.diagnostics(&key).unwrap_or_default();
    let title = escape(&format!("{} {} incident {}", record.hub, record.kind.as_str(), record.key));
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;margin:1rem;max-width:70rem}}\
         pre{{overflow-x:auto;background:#f4f4f4;padding:.75rem;font-size:.8rem}}td{{padding:.2rem .6rem;vertical-align:top}}</style>\
         </head><body><h1>{title}</h1>"
    );
    let status = if record.open { "open".to_string() } else { "recovered".to_string() };
    let _ = write!(
        html,
        "<table><tr><td>status</td><td>{}</td></tr><tr><td>impact start</td><td>{}</td></tr>\
         <tr><td>detected</td><td>{}</td></tr><tr><td>impact end</td><td>{}</td></tr></table>",
        status,
        time(record.impact_start),
        time(record.opened_at),
        record.recovered_at.map_or("-".to_string(), time)
    );
    html.push_str("<h2>Affected users</h2><ul>");
    for (capability, users) in &record.symptoms.affected {
        for (user, failure) in users {
            let _ = write!(
                html,
                "<li>{} — {}: {} at {}: {}</li>",
                escape(capability.as_str()),
                escape(user),
                escape(failure.stage.as_str()),
                time(failure.last),
                escape(&failure.reason)
            );
        }
    }
    html.push_str("</ul><h2>Timeline</h2><ul>");
    for (at, entry) in &timeline {
        let _ = write!(html, "<li>{} {}</li>", time(*at), escape(entry));
    }
    html.push_str("</ul><h2>Diagnostics</h2>");
    match diagnostics {
        Some((_, text)) => {
            let _ = write!(html, "<pre>{}</pre>", escape(&text));
        }
        None => html.push_str("<p>None collected.</p>"),
    }
    html.push_str("</body></html>");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn metrics(State(state): State<WebState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn readyz(State(state): State<WebState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting: cleaning up what an earlier run left behind\n")
    }
}
