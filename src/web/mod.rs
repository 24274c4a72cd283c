//! The daemon's HTTP endpoints: `/metrics`, `/healthz` (alive: no task given up, the state database not
//! unwritable for long), `/readyz` (probing has begun or the replica stands by, and its state takes writes;
//! see [`Health`]), and the status pages: `/` (hubs × capabilities), `/incidents`,
//! `/incidents/{key}` (the page every PagerDuty event links to), `/incidents/{key}/report.md` (the report
//! draft) and `/api/v1/status` (the grid as JSON). Server-rendered, no JavaScript; everything from hubs and
//! the cluster is escaped.

pub mod auth;
mod checks;
pub mod origin;
pub mod pages;
pub mod silences;
pub mod tls;

use crate::clock::Clock;
use crate::domain::{HubName, IncidentKey, Silence};
use crate::health::Health;
use crate::incident::availability;
use crate::incident::history::Spans;
use crate::incident::report::{self, ReportSettings};
use crate::metrics::Metrics;
use crate::status::{self, StatusBoard};
use crate::store::{Store, StoreError};
use crate::tasks::off_runtime;
use auth::Access;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use origin::Served;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Clone)]
pub struct WebState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub store: Arc<Store>,
    pub board: Arc<StatusBoard>,
    pub report: Arc<ReportSettings>,
    /// hubwatch's time (silences and holds are judged by it, as the recorder judges them).
    pub clock: Clock,
    /// Checks on demand.
    pub on_demand: Arc<crate::probe::on_demand::OnDemand>,
}

/// The pages, the API, `/metrics` and the probes' endpoints, behind `served` (no foreign Host, no cross-site
/// write) and then `access` (every path but `/healthz` and `/readyz`), every answer with security headers.
/// Serve it with `into_make_service_with_connect_info`.
pub fn router(state: WebState, access: Arc<Access>, served: Arc<Served>) -> Router {
    Router::new()
        .route("/", get(grid))
        .route("/api/v1/status", get(status_json))
        .route("/incidents", get(incidents))
        .route("/incidents/{key}", get(incident))
        .route("/incidents/{key}/report.md", get(report_md))
        .route("/availability", get(availability_page))
        .route("/api/v1/availability", get(availability_json))
        .route("/api/v1/silences", get(silences::list).post(silences::create))
        .route("/api/v1/silences/{id}", axum::routing::delete(silences::expire))
        .route("/api/v1/hubs/{hub}/check", axum::routing::post(checks::run))
        .route("/api/v1/discovered-hubs", get(discovered_hubs))
        .route("/api/v1/discovered-hubs/{name}", axum::routing::delete(forget_discovered_hub))
        .route(pages::STYLE_PATH, get(style))
        .merge(scrape_routes())
        .layer(middleware::from_fn_with_state(state.health.clone(), writes_on_the_leader_only))
        .with_state(state)
        .layer(middleware::from_fn_with_state(access, auth::require))
        .layer(middleware::from_fn_with_state(served, origin::require))
        .layer(middleware::from_fn(auth::headers))
}

/// `/metrics`, `/healthz` and `/readyz` only, never authenticated (`metrics_listen`: Prometheus scrapes as
/// it does everywhere).
pub fn metrics_router(state: WebState) -> Router {
    scrape_routes().with_state(state).layer(middleware::from_fn(auth::headers))
}

fn scrape_routes() -> Router<WebState> {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], pages::STYLE).into_response()
}

fn html(page: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn store_failed(e: StoreError) -> Response {
    tracing::error!(error = %e, "cannot read the state database");
    (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the state database\n").into_response()
}

/// The open incidents for `/api/v1/status`: a held page says by what; an incident under an active silence
/// (held, or paged before the silence began: its follow-ups wait) names the silence.
fn open_incidents(
    store: &Store,
    silences: &[Silence],
    now: SystemTime,
) -> Result<Vec<status::OpenIncident>, StoreError> {
    let open = store.open_incidents()?.into_iter().map(|i| {
        let held_by = i.hold.as_ref().and_then(|h| h.silence.as_deref());
        let silence = silences
            .iter()
            .filter(|s| held_by.is_none_or(|id| id == s.id))
            .find(|s| s.covers(&i.hub, i.kind, now))
            .map(|s| (s.id.clone(), s.ends_at));
        status::OpenIncident {
            kind: i.kind.as_str(),
            held: i.hold.as_ref().map(|h| (h.why.clone(), h.until())),
            silence,
            responder: i.response.as_ref().map(|r| r.who_has_it()),
            part_of: i.part_of,
            hub: i.hub,
            key: i.key,
        }
    });
    Ok(open.collect())
}

async fn grid(State(state): State<WebState>) -> Response {
    let read = |store: &Store, now| -> Result<_, StoreError> {
        Ok((store.open_incidents()?, store.silences(now)?, Spans::from_store(store, now)?))
    };
    off_runtime(move || {
        let now = state.clock.now();
        match read(&state.store, now) {
            Ok((open, silences, history)) => {
                html(pages::grid(&state.board.snapshot(), &open, &silences, &history, now))
            }
            Err(e) => store_failed(e),
        }
    })
    .await
}

async fn status_json(State(state): State<WebState>) -> Response {
    let read = |store: &Store, now| -> Result<_, StoreError> {
        let active = store.silences(now)?;
        let silences = active.iter().map(|s| silences::to_json(s, now)).collect::<Vec<_>>();
        Ok((open_incidents(store, &active, now)?, silences))
    };
    let now = state.clock.now();
    off_runtime(move || match read(&state.store, now) {
        Ok((open, silences)) => {
            let json = status::to_json(&state.board.snapshot(), &open, &silences, now);
            ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
        }
        Err(e) => store_failed(e),
    })
    .await
}

/// Incidents listed on one page of `/incidents`: the page costs the same however many there are.
pub const INCIDENTS_PER_PAGE: usize = 50;

#[derive(serde::Deserialize)]
struct IncidentsQuery {
    page: Option<usize>,
}

async fn incidents(State(state): State<WebState>, Query(query): Query<IncidentsQuery>) -> Response {
    let page = query.page.unwrap_or(1).max(1);
    off_runtime(move || {
        let offset = (page - 1).saturating_mul(INCIDENTS_PER_PAGE);
        match state.store.incidents_page(offset, INCIDENTS_PER_PAGE) {
            Ok((incidents, total)) => {
                let pages = total.div_ceil(INCIDENTS_PER_PAGE).max(1);
                let listing = pages::IncidentsPage { page, pages, total, incidents: &incidents };
                html(pages::incidents(&listing, state.clock.now()))
            }
            Err(e) => store_failed(e),
        }
    })
    .await
}

async fn incident(State(state): State<WebState>, Path(key): Path<String>) -> Response {
    off_runtime(move || incident_page(&state, &key)).await
}

fn incident_page(state: &WebState, key: &str) -> Response {
    let key = &IncidentKey::from(key);
    let read = || -> Result<Option<String>, StoreError> {
        let Some(record) = state.store.incident(key)? else { return Ok(None) };
        let (timeline, diagnostics) = (state.store.timeline(key)?, state.store.diagnostics(key)?);
        let pagerduty_incident = state.store.pagerduty_incident(key)?;
        let deliveries = state.store.deliveries(key)?;
        let parts = if record.cluster.is_some() { state.store.parts(key)? } else { Vec::new() };
        let page = pages::IncidentPage {
            deliveries: &deliveries,
            parts: &parts,
            timeline: &timeline,
            diagnostics: diagnostics.as_ref(),
            pagerduty_incident: pagerduty_incident.as_deref(),
            hub_url: state.board.hub(&record.hub).map(|h| h.url),
            record: &record,
        };
        Ok(Some(pages::incident(&page, state.clock.now())))
    };
    match read() {
        Ok(Some(page)) => html(page),
        Ok(None) => not_found(key),
        Err(e) => store_failed(e),
    }
}

async fn report_md(State(state): State<WebState>, Path(key): Path<String>) -> Response {
    off_runtime(move || {
        let hub_url = |hub: &str| state.board.hub(hub).and_then(|h| url::Url::parse(&h.url).ok());
        match report::draft(&state.store, &IncidentKey::from(key.as_str()), hub_url, &state.report) {
            Ok(Some(markdown)) => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], markdown).into_response(),
            Ok(None) => not_found(&key),
            Err(e) => store_failed(e),
        }
    })
    .await
}

#[derive(serde::Deserialize)]
struct AvailabilityQuery {
    since: Option<String>,
}

/// Why the availability cannot be given.
enum NoAvailability {
    /// `?since=` is not a duration.
    Period(String),
    Store(StoreError),
}

impl NoAvailability {
    fn answer(self) -> Response {
        match self {
            NoAvailability::Period(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            NoAvailability::Store(e) => store_failed(e),
        }
    }
}

/// The figures over `?since=` (default 30d), for every hub on the board.
fn availability_of(
    state: &WebState,
    query: &AvailabilityQuery,
) -> Result<(String, Vec<availability::Availability>, SystemTime), NoAvailability> {
    let text = query.since.clone().unwrap_or_else(|| "30d".to_string());
    let since = humantime::parse_duration(&text)
        .map_err(|e| NoAvailability::Period(format!("since={text:?} is not a duration such as 30d or 12h ({e})\n")))?;
    let hubs: Vec<(HubName, bool)> = state
        .board
        .snapshot()
        .into_iter()
        .map(|(name, hub)| (name, hub.capabilities.contains_key(&crate::domain::Capability::DaskGateway)))
        .collect();
    let now = state.clock.now();
    let rows =
        availability::from_store(&state.store, &hubs, now.checked_sub(since).unwrap_or(std::time::UNIX_EPOCH), now)
            .map_err(NoAvailability::Store)?;
    Ok((text, rows, now))
}

async fn availability_page(State(state): State<WebState>, Query(query): Query<AvailabilityQuery>) -> Response {
    off_runtime(move || match availability_of(&state, &query) {
        Ok((since, rows, now)) => match Spans::from_store(&state.store, now) {
            Ok(history) => html(pages::availability(&since, &rows, &history, now)),
            Err(e) => store_failed(e),
        },
        Err(failure) => failure.answer(),
    })
    .await
}

async fn availability_json(State(state): State<WebState>, Query(query): Query<AvailabilityQuery>) -> Response {
    off_runtime(move || match availability_of(&state, &query) {
        Ok((_, rows, _)) => {
            let list: Vec<serde_json::Value> = rows.iter().map(|r| r.to_json()).collect();
            ([(header::CONTENT_TYPE, "application/json")], serde_json::Value::from(list).to_string()).into_response()
        }
        Err(failure) => failure.answer(),
    })
    .await
}

/// What discovery remembers: every hub it found, and since when and why the gone ones are gone.
async fn discovered_hubs(State(state): State<WebState>) -> Response {
    off_runtime(move || match state.store.discovered_hubs() {
        Ok(hubs) => {
            let time = |at: SystemTime| humantime::format_rfc3339_seconds(at).to_string();
            let list: Vec<serde_json::Value> = hubs
                .into_iter()
                .map(|h| {
                    serde_json::json!({
                        "name": h.name, "namespace": h.namespace, "url": h.url, "users": h.users,
                        "last_seen": time(h.last_seen),
                        "gone_since": h.gone.as_ref().map(|(since, _)| time(*since)),
                        "gone_why": h.gone.as_ref().map(|(_, why)| why.clone()),
                    })
                })
                .collect();
            ([(header::CONTENT_TYPE, "application/json")], serde_json::Value::from(list).to_string()).into_response()
        }
        Err(e) => store_failed(e),
    })
    .await
}

/// An operator's "this hub is gone for good": no longer probed or reported gone (204; 404 if unknown).
/// A standby's state is the leader's copy, replaced at every mirror, and a replica taking over restores the
/// mirror over its own: a change made on either would be lost. Every request that changes state (anything
/// but GET and HEAD) is refused there with 503, to be made again on the leader.
async fn writes_on_the_leader_only(
    State(health): State<Arc<Health>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let reads = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if reads || !health.is_standing_by() {
        return next.run(request).await;
    }
    let why =
        "this replica stands by (or is taking over): changes are made on the leader (hubwatch_ha_leader 1); try again";
    let mut refused = silences::refuse(StatusCode::SERVICE_UNAVAILABLE, why.to_string());
    refused.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    refused
}

async fn forget_discovered_hub(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    off_runtime(move || match state.store.forget_discovered_hub(&name) {
        Ok(true) => {
            tracing::warn!(hub = %name, "a discovered hub was forgotten by an operator");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => (StatusCode::NOT_FOUND, format!("no discovered hub {name:?}\n")).into_response(),
        Err(e) => store_failed(e),
    })
    .await
}

fn not_found(key: &str) -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("no incident {key:?}\n"))
        .into_response()
}

/// Takes in what the store says of its writes, for the answers that depend on it.
fn observe_state(state: &WebState) {
    state.health.observe_writes(state.store.health());
    let failing = state.store.health().failing();
    state.metrics.set_state(
        state.store.health().failures(),
        failing.is_none(),
        state.health.unstored(),
        state.store.size_bytes(),
    );
}

/// [`observe_state`] reads the database files' sizes: a hung disk hangs this answer, never the runtime.
async fn observed(state: WebState) -> WebState {
    off_runtime(move || {
        observe_state(&state);
        state
    })
    .await
}

async fn metrics(State(state): State<WebState>) -> impl IntoResponse {
    let state = observed(state).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn readyz(State(state): State<WebState>) -> impl IntoResponse {
    let state = observed(state).await;
    match state.health.readiness() {
        Ok(what) => (StatusCode::OK, format!("{what}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn healthz(State(state): State<WebState>) -> impl IntoResponse {
    let state = observed(state).await;
    match state.health.liveness(SystemTime::now()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}
