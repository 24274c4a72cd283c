//! The status pages as server-rendered HTML (pure functions of what they show; no JavaScript). Built to be
//! read on a phone at 3 a.m.: one column on narrow screens, state in words as well as colour. Rendered with
//! maud, which escapes every interpolated string by default: a hub's error message holding `<script>` is
//! shown as text. The style sheet is served beside the pages (no inline style or script).

use crate::domain::wording::{summary, summary_of};
use crate::domain::{Capability, HubName, IncidentKind, Silence};
use crate::incident::availability::{Availability, shown};
use crate::incident::history::{self, Day, DayTone, Spans};
use crate::status::{CapabilityState, CapabilityStatus, HubStatus, LatestProbe, LatestResult};
use crate::store::{Delivery, IncidentRecord, OutboxState, TimelineEntry, TimelineKind};
use crate::timefmt::{rfc3339, span};
use maud::{DOCTYPE, Markup, html};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// Served at [`STYLE_PATH`].
pub const STYLE: &str = "\
:root{color-scheme:light dark;--ok:#1a7f37;--ok-bg:#dafbe1;--warn:#7d4e00;--warn-bg:#fff8c5;--bad:#a40e26;\
--bad-bg:#ffebe9;--muted:#57606a;--line:#d0d7de}\
@media (prefers-color-scheme:dark){:root{--ok:#7ee2a8;--ok-bg:#12361f;--warn:#f2cc60;--warn-bg:#3b2e05;\
--bad:#ffaba8;--bad-bg:#4c1418;--muted:#9198a1;--line:#3d444d}}\
body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;padding:.75rem;max-width:80rem}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.2rem 0 .4rem}\
nav a{margin-right:1rem}a{color:inherit}.muted{color:var(--muted)}li,td,th{overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.45rem .5rem;\
border-bottom:1px solid var(--line)}\
.ok{background:var(--ok-bg);color:var(--ok)}.ticket{background:var(--warn-bg);color:var(--warn)}\
.incident{background:var(--bad-bg);color:var(--bad)}.unknown{color:var(--muted)}\
.silence{border:1px dashed var(--line);color:var(--muted)}\
.state{font-weight:700;text-transform:uppercase;font-size:.85rem;letter-spacing:.03em}\
ul.probes{list-style:none;margin:.2rem 0;padding:0;font-size:.9rem}\
.banner{padding:.6rem .8rem;margin:.6rem 0;border-radius:.4rem}\
pre{overflow-x:auto;padding:.75rem;font-size:.8rem;border:1px solid var(--line);border-radius:.4rem}\
ol.timeline{padding-left:1.2rem}ol.timeline li{margin:.35rem 0}\
.kind{font-weight:600}table.grid{table-layout:fixed}table.grid thead th:first-child{width:16%}\
@media (max-width:640px){table.grid thead{display:none}table.grid tr{display:block;margin-bottom:1rem;\
border:1px solid var(--line);border-radius:.4rem}table.grid th,table.grid td{display:block;border:0}\
table.grid td::before{content:attr(data-label);display:block;font-weight:600;color:var(--muted);font-size:.8rem}\
table.list thead{display:none}table.list tr{display:block;border-bottom:1px solid var(--line)}\
table.list td{display:block;border:0;padding:.1rem .5rem}table.list td[data-label]::before{\
content:attr(data-label) ': ';font-weight:600;color:var(--muted)}}.strip{display:flex;gap:1px;margin:.35rem 0 .15rem;max-width:26rem}.strip span{flex:1;height:1rem;\
border-radius:2px;background:#2da44e}.strip .dt,.strip .da{background:#d4a72c}.strip .di{background:#e5534b}\
.strip .dl{background:#a40e26}.small{font-size:.8rem}";
pub const STYLE_PATH: &str = "/style.css";

/// How much attention something needs, in the order hubs are listed (the most urgent first); also its
/// colour on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tone {
    Incident,
    Ticket,
    Ok,
    Unknown,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Incident => "incident",
            Tone::Ticket => "ticket",
            Tone::Ok => "ok",
            Tone::Unknown => "unknown",
        }
    }
}

fn layout(title: &str, refresh: bool, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="30"; }
                title { (title) }
                link rel="stylesheet" href=(STYLE_PATH);
            }
            body {
                nav { a href="/" { "Status" } a href="/incidents" { "Incidents" } a href="/availability" { "Availability" } a href="/api/v1/status" { "JSON" } a href="/metrics" { "Metrics" } }
                (body)
            }
        }
    }
    .into_string()
}

/// "12s ago", "5m ago", "3h ago", "2d ago".
pub fn ago(at: SystemTime, now: SystemTime) -> String {
    let seconds = now.duration_since(at).unwrap_or_default().as_secs();
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

/// A time as a `<time>` element: relative, with the exact UTC time on hover and for screen readers.
fn time(at: SystemTime, now: SystemTime) -> Markup {
    let exact = rfc3339(at);
    html! { time datetime=(exact) title=(exact) { (ago(at, now)) } }
}

fn capability_title(capability: Capability) -> &'static str {
    match capability {
        Capability::Login => "Log in",
        Capability::Server => "Start a server",
        Capability::Kernel => "Execute code",
        Capability::Home => "Save to home",
        Capability::DaskGateway => "Dask Gateway",
        Capability::Binder => "Binder",
        Capability::FirstLogin => "First login",
        Capability::Monitor => "Watched",
    }
}

/// The tone and words of a capability's state.
fn state_of(status: &CapabilityStatus) -> (Tone, String) {
    let users = count(status.affected.len(), "user", "users");
    match status.state() {
        CapabilityState::Incident => (Tone::Incident, format!("Incident · {users}")),
        CapabilityState::SupportTicket => (Tone::Ticket, format!("Support ticket · {users}")),
        CapabilityState::Slow => (Tone::Ticket, "Working, slowly".to_string()),
        CapabilityState::NotTried => (Tone::Unknown, "Not tried: an earlier step fails".to_string()),
        CapabilityState::NotProbedYet => (Tone::Unknown, "Not probed yet".to_string()),
        CapabilityState::Working => (Tone::Ok, "Working".to_string()),
    }
}

/// One probe user's latest attempt, in a grid cell.
fn probe_line(user: &str, latest: Option<&LatestProbe>, now: SystemTime) -> Markup {
    html! {
        li {
            @match latest {
                None => { (user) ": not probed yet" }
                Some(p) if p.result == LatestResult::Ok => { "✓ " (user) " ok " (time(p.at, now)) }
                Some(p) if matches!(p.result, LatestResult::Slow { .. }) => {
                    "◔ " (user) " slow " (time(p.at, now)) ": " (p.result.describe())
                }
                Some(p) if matches!(p.result, LatestResult::Blocked { .. }) => {
                    "– " (user) " " (p.result.describe()) " " (time(p.at, now))
                }
                Some(p) => { "✗ " (user) " " (p.result.as_str()) " " (time(p.at, now)) ": " (p.result.describe()) }
            }
        }
    }
}

fn cell(capability: Capability, status: &CapabilityStatus, now: SystemTime) -> Markup {
    let (tone, state) = state_of(status);
    let affected: Vec<&str> = status.affected.keys().map(String::as_str).collect();
    html! {
        td class=(tone.class()) data-label=(capability_title(capability)) {
            div.state { (state) }
            ul.probes { @for (user, latest) in status.probes.iter() { (probe_line(user, latest.as_ref(), now)) } }
            @match status.last_success() {
                Some(at) => div.muted { "last success " (time(at, now)) },
                None => div.muted { "no success yet" },
            }
            @if !affected.is_empty() { div { "affected: " (affected.join(", ")) } }
        }
    }
}

/// "12 s", "2m 5s".
fn seconds(value: f64) -> String {
    match value {
        v if v < 100.0 => format!("{v:.0} s"),
        v => humantime::format_duration(std::time::Duration::from_secs(v.round() as u64)).to_string(),
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

/// How much attention a hub needs: its most urgent capability.
fn urgency(hub: &HubStatus) -> Tone {
    hub.capabilities.values().map(|s| state_of(s).0).min().unwrap_or(Tone::Unknown)
}

/// The support tickets on the grid: hub, capability, users affected.
fn tickets(hubs: &BTreeMap<HubName, HubStatus>) -> Vec<(&str, Capability, usize)> {
    hubs.iter()
        .flat_map(|(name, hub)| {
            hub.capabilities
                .iter()
                .filter(|(_, s)| s.state() == CapabilityState::SupportTicket)
                .map(move |(c, s)| (name.as_str(), *c, s.affected.len()))
        })
        .collect()
}

/// `/`: every hub × capability (the hubs that need attention first), with the open incidents and support
/// tickets on top.
pub fn grid(
    hubs: &BTreeMap<HubName, HubStatus>,
    open: &[IncidentRecord],
    silences: &[Silence],
    history: &Spans,
    now: SystemTime,
) -> String {
    let tickets = tickets(hubs);
    // A column for each capability some hub has: an optional one (Binder, first login) only where used.
    let columns: Vec<Capability> =
        Capability::ALL.into_iter().filter(|c| hubs.values().any(|h| h.capabilities.contains_key(c))).collect();
    let mut rows: Vec<(&HubName, &HubStatus)> = hubs.iter().collect();
    rows.sort_by_key(|(name, hub)| (urgency(hub), *name));
    let body = html! {
        h1 { "hubwatch" }
        p.muted {
            (count(hubs.len(), "hub", "hubs")) " · " (count(open.len(), "open incident", "open incidents")) " · "
            (count(tickets.len(), "support ticket", "support tickets")) " · as of " (rfc3339(now)) " (refreshes every 30 s)"
        }
        @for incident in open {
            div.banner.incident {
                span.state { (incident_state(incident)) } " "
                a href={ "/incidents/" (incident.key) } { (summary(&incident.hub, incident.kind, &incident.symptoms)) }
                " · impact started " (time(incident.impact_start, now))
                @if let Some(held) = incident.hold.as_ref().filter(|h| !h.resolved_in_pagerduty) {
                    " · not paged: held by " (held.why) " until " (rfc3339(held.until()))
                }
                @if let Some(response) = &incident.response { " · " (response.who_has_it()) }
            }
        }
        @for silence in silences {
            @if let Some((start, end)) = silence.next_window(now) {
                div.banner.silence {
                    span.state { @if start <= now { "Silenced" } @else { "Planned" } } " " (silence.hub) " · "
                    (silence.kind.map_or("every kind", |k| k.as_str()))
                    @if start > now { " from " (rfc3339(start)) }
                    " until " (rfc3339(end))
                    @if let Some(every) = silence.every { " · every " (humantime::format_duration(every)) }
                    " · " (silence.reason) " (" (silence.created_by) ", " (silence.id) ")"
                }
            }
        }
        @for (hub, capability, users) in &tickets {
            div.banner.ticket {
                span.state { "Support ticket" } " "
                (summary_of(hub, IncidentKind::of(*capability), *users, &BTreeSet::from([*capability])))
                " (below the incident threshold)"
            }
        }
        table.grid {
            thead { tr { th { "Hub" } @for capability in &columns { th { (capability_title(*capability)) } } } }
            tbody { @for (name, hub) in rows { (hub_row(name, hub, open, &history.hub_days(name, now), &columns, now)) } }
        }
        @if hubs.is_empty() { p { "No hubs are watched yet." } }
    };
    layout("hubwatch status", true, body)
}

/// A hub's last 30 days, a cell a day (today last), with the same in words: colour is never all it says.
fn strip(days: &[Day]) -> Markup {
    html! {
        div.strip aria-hidden="true" {
            @for day in days { span class=(day_class(day.tone())) {} }
        }
        div.muted.small { (history::words(days)) }
    }
}

fn day_class(tone: DayTone) -> &'static str {
    match tone {
        DayTone::Clear => "d0",
        DayTone::Ticket => "dt",
        DayTone::ShortIncident => "di",
        DayTone::LongIncident => "dl",
    }
}

/// An incident's course as a strip from impact start to impact end (or now), each cell the phase it was in:
/// unseen, detected (not yet paged), paged, acknowledged; and the same in words.
fn course(record: &IncidentRecord, timeline: &[TimelineEntry], now: SystemTime) -> Markup {
    const CELLS: u32 = 48;
    let first = |kind: TimelineKind| timeline.iter().find(|e| e.kind == kind).map(|e| e.at);
    let (start, end) = (record.impact_start, record.recovered_at.unwrap_or(now).max(record.impact_start));
    let (paged, acknowledged) = (first(TimelineKind::PageSent), first(TimelineKind::Acknowledged));
    let length = end.duration_since(start).unwrap_or_default();
    let phase = |at: SystemTime| match () {
        _ if at < record.opened_at => "di",
        _ if acknowledged.is_some_and(|a| at >= a) => "da",
        _ if paged.is_some_and(|p| at >= p) => "dl",
        _ => "di",
    };
    let mut words =
        vec![format!("impact start {}", rfc3339(start)), format!("detected after {}", span(start, record.opened_at))];
    words.extend(paged.map(|p| format!("paged after {}", span(start, p))));
    words.extend(acknowledged.map(|a| format!("acknowledged after {}", span(start, a))));
    words.push(match record.recovered_at {
        Some(end) => format!("impact end after {}", span(start, end)),
        None => format!("ongoing after {}", span(start, now)),
    });
    html! {
        div.strip aria-hidden="true" {
            @for cell in 0..CELLS { span class=(phase(start + length * (2 * cell + 1) / (2 * CELLS))) {} }
        }
        p.muted.small { (words.join(" → ")) }
    }
}

/// An open incident's banner word: held pages say by what.
fn incident_state(incident: &IncidentRecord) -> &'static str {
    match (&incident.hold, &incident.part_of) {
        (Some(held), _) if held.resolved_in_pagerduty => "Incident (resolved in PagerDuty)",
        (Some(held), _) if held.silence.is_some() => "Incident (silenced)",
        (Some(held), _) if held.fold.is_some() => "Incident (waiting for its cluster)",
        (Some(_), _) => "Incident (held: rollout)",
        (None, Some(_)) => "Incident (paged with its cluster)",
        (None, None) if incident.cluster.is_some() => "Cluster incident",
        (None, None) => "Incident",
    }
}

fn hub_row(
    name: &str,
    hub: &HubStatus,
    open: &[IncidentRecord],
    days: &[Day],
    columns: &[Capability],
    now: SystemTime,
) -> Markup {
    html! {
        tr {
            th scope="row" {
                a href=(hub.url) { (name) }
                (strip(days))
                @for incident in open.iter().filter(|i| i.hub == name) {
                    div { a href={ "/incidents/" (incident.key) } { "incident " (incident.key) } }
                }
                @if let (starts, Some((p50, p90))) = hub.starts.figures(now) {
                    div.muted title="how long servers took to start over the last day (probe and real users)" {
                        "server starts: p50 " (seconds(p50)) " · p90 " (seconds(p90)) " (" (count(starts as usize, "start", "starts")) ", last day)"
                    }
                }
            }
            @for capability in columns.iter().copied() {
                @match hub.capabilities.get(&capability) {
                    Some(status) => (cell(capability, status, now)),
                    None => td.unknown data-label=(capability_title(capability)) { "not configured" },
                }
            }
        }
    }
}

fn everyone(incident: &IncidentRecord) -> BTreeSet<&str> {
    incident.affected_ever.values().flatten().map(String::as_str).collect()
}

fn summary_ever(incident: &IncidentRecord) -> String {
    let capabilities = incident.affected_ever.keys().copied().collect();
    summary_of(&incident.hub, incident.kind, everyone(incident).len(), &capabilities)
}

/// An incident's status in words, and its tone.
fn status_of(incident: &IncidentRecord) -> (Tone, &'static str) {
    match (incident.open, &incident.hold, &incident.part_of) {
        (true, Some(held), _) if held.fold.is_some() => {
            (Tone::Incident, "open, waiting for its cluster (not paged yet)")
        }
        (true, Some(_), _) => (Tone::Incident, "open, silenced (not paged)"),
        (true, None, Some(_)) => (Tone::Incident, "open, paged as part of a cluster incident"),
        (true, None, None) => (Tone::Incident, "open"),
        (false, _, _) => (Tone::Ok, "recovered"),
    }
}

/// One page of `/incidents`: which page, of how many, and the incidents on it (newest first).
pub struct IncidentsPage<'a> {
    pub page: usize,
    pub pages: usize,
    pub total: usize,
    pub incidents: &'a [IncidentRecord],
}

/// `/incidents?page=N`: the incidents, newest first, [`crate::web::INCIDENTS_PER_PAGE`] at a time.
pub fn incidents(listing: &IncidentsPage, now: SystemTime) -> String {
    let all = listing.incidents;
    let body = html! {
        h1 { "Incidents" }
        p.muted { (listing.total) " incidents, newest first" @if listing.pages > 1 { " · page " (listing.page) " of " (listing.pages) } }
        table.list {
            thead { tr { th { "Incident" } th { "Status" } th { "Users" } th { "Impact start" } th { "Impact end" } th { "Duration" } } }
            tbody {
                @for incident in all {
                    @let (tone, status) = status_of(incident);
                    tr {
                        td {
                            a href={ "/incidents/" (incident.key) } { (summary_ever(incident)) }
                            div.muted { (incident.key) " · " (incident.kind.as_str()) }
                        }
                        td class=(tone.class()) { span.state { (status) } }
                        td { (everyone(incident).into_iter().collect::<Vec<_>>().join(", ")) }
                        td { (rfc3339(incident.impact_start)) }
                        td { (incident.recovered_at.map_or("—".to_string(), rfc3339)) }
                        td { (span(incident.impact_start, incident.recovered_at.unwrap_or(now))) }
                    }
                }
            }
        }
        @if listing.total == 0 { p { "No incidents so far." } }
        @if listing.pages > 1 {
            p.pages {
                @if listing.page > 1 { a href={ "/incidents?page=" (listing.page - 1) } { "← newer" } " " }
                @if listing.page < listing.pages { a href={ "/incidents?page=" (listing.page + 1) } { "older →" } }
            }
        }
    };
    layout("hubwatch incidents", false, body)
}

/// `/availability`: per hub and kind over the period.
pub fn availability(since: &str, rows: &[Availability], history: &Spans, now: SystemTime) -> String {
    let body = html! {
        h1 { "Availability" }
        p.muted { "Over the last " (since) ": the share of the time without an open incident. "
            a href="/availability?since=7d" { "7d" } " · " a href="/availability?since=30d" { "30d" } " · "
            a href="/availability?since=90d" { "90d" } " · " a href={ "/api/v1/availability?since=" (since) } { "JSON" } }
        table.list {
            thead { tr { th { "Hub" } th { "Kind" } th { "Availability" } th { "Incidents" } th { "Impact (min)" }
                th { "Mean time to page" } th { "Mean time to resolve" } } }
            tbody {
                @for row in rows {
                    tr {
                        td { (row.hub) (strip(&history.kind_days(&row.hub, row.kind, now))) }
                        td data-label="Kind" { (row.kind.as_str()) }
                        td data-label="Availability" { (row.percent()) }
                        td data-label="Incidents" { (row.incidents) }
                        td data-label="Impact (min)" { (format!("{:.1}", row.impact_minutes)) }
                        td data-label="Mean time to page" { (shown(row.mean_time_to_page)) }
                        td data-label="Mean time to resolve" { (shown(row.mean_time_to_resolve)) }
                    }
                }
            }
        }
    };
    layout("hubwatch availability", false, body)
}

pub struct IncidentPage<'a> {
    pub record: &'a IncidentRecord,
    pub timeline: &'a [TimelineEntry],
    pub diagnostics: Option<&'a (SystemTime, String)>,
    pub pagerduty_incident: Option<&'a str>,
    pub hub_url: Option<String>,
    /// What became of its events so far (the latest of each action).
    pub deliveries: &'a [Delivery],
    /// A cluster incident's hubs' incidents.
    pub parts: &'a [IncidentRecord],
}

fn timeline_label(kind: TimelineKind) -> &'static str {
    match kind {
        TimelineKind::ImpactStart => "impact start",
        TimelineKind::Detected => "detected",
        TimelineKind::Changed => "changed",
        TimelineKind::Diagnostics => "diagnostics",
        TimelineKind::PageSent => "paged",
        TimelineKind::HubChanged => "hub changed",
        TimelineKind::StatusUpdate => "status update",
        TimelineKind::StateDelayed => "recorded late",
        TimelineKind::Recovered => "impact end",
        TimelineKind::ResolveSent => "resolved",
        TimelineKind::Held => "held",
        TimelineKind::Acknowledged => "acknowledged",
        TimelineKind::Assigned => "assigned",
        TimelineKind::ResolvedInPagerDuty => "resolved in PagerDuty",
    }
}

/// `/incidents/{key}`: status, symptoms, timeline, the whole diagnostics, and links.
pub fn incident(page: &IncidentPage, now: SystemTime) -> String {
    let record = page.record;
    let (tone, status) = status_of(record);
    let body = html! {
        h1 { (summary_ever(record)) }
        div class={ "banner " (tone.class()) } { span.state { (status) } " · " (record.key) " · " (record.kind.as_str()) }
        (course(record, page.timeline, now))
        (incident_facts(page, now))
        p {
            a href={ "/incidents/" (record.key) "/report.md" } { "Incident report draft (Markdown)" }
            @if let Some(url) = &page.hub_url { " · " a href=(url) { "the hub" } }
            " · " a href="/" { "status of every hub" }
        }
        @if !page.parts.is_empty() {
            h2 { "Hubs" }
            ul {
                @for part in page.parts {
                    li {
                        a href={ "/incidents/" (part.key) } { (part.hub) } " — "
                        @if part.open { "failing" } @else { "recovered" } ": " (summary_ever(part))
                    }
                }
            }
        }
        h2 { @if record.open { "Affected now" } @else { "Last symptoms" } }
        ul {
            @for (capability, users) in &record.symptoms.affected {
                @for (user, failure) in users {
                    li {
                        b { (user) } " — " (capability_title(*capability)) ": stage " (failure.stage.as_str())
                        " since " (rfc3339(failure.since)) ": " (failure.reason)
                    }
                }
            }
        }
        p { "Everyone affected during the incident: " (everyone(record).into_iter().collect::<Vec<_>>().join(", ")) }
        h2 { "Timeline" }
        ol.timeline {
            @for entry in page.timeline {
                li { time datetime=(rfc3339(entry.at)) { (rfc3339(entry.at)) } " " span.kind { (timeline_label(entry.kind)) } ": " (entry.text) }
            }
        }
        h2 { "Kubernetes diagnostics" }
        @match page.diagnostics {
            Some((_, text)) => pre { (text) },
            None => p { "None collected (the timeline and the PagerDuty event say why)." },
        }
    };
    let title = format!("{} {} incident {}", record.hub, record.kind.as_str(), record.key);
    layout(&title, record.open, body)
}

/// The incident's table of times and PagerDuty references.
fn incident_facts(page: &IncidentPage, now: SystemTime) -> Markup {
    let record = page.record;
    html! {
        table {
            tr { th { "Impact start" } td { (rfc3339(record.impact_start)) " (" (ago(record.impact_start, now)) ")" } }
            tr { th { "Detected" } td { (rfc3339(record.opened_at)) } }
            tr { th { "Impact end" } td { (record.recovered_at.map_or("ongoing".to_string(), rfc3339)) } }
            tr { th { "Duration" } td { (span(record.impact_start, record.recovered_at.unwrap_or(now))) } }
            @if let Some(held) = &record.hold {
                @if held.resolved_in_pagerduty {
                    tr { th { "Not paged again" } td { (held.why) } }
                } @else {
                    tr { th { "Page held by" } td { (held.why) " until " (rfc3339(held.until())) } }
                }
            }
            @if let Some(response) = &record.response {
                tr { th { "In PagerDuty" } td { (response.who_has_it()) } }
            }
            @if let Some(cluster_key) = &record.part_of {
                tr { th { "Paged as part of" } td { a href={ "/incidents/" (cluster_key) } { (cluster_key) } } }
            }
            @if let Some(id) = page.pagerduty_incident { tr { th { "PagerDuty incident" } td { (id) } } }
            tr { th { "PagerDuty dedup key" } td { code { (record.key) } } }
            @for delivery in page.deliveries {
                tr { th { (delivery.action.as_str()) } td { (delivery_state(delivery)) } }
            }
        }
    }
}

/// "sent", or "waiting: attempt 3 failed (HTTP 403 …); next at …".
fn delivery_state(delivery: &Delivery) -> String {
    match (delivery.state, &delivery.last_error) {
        (OutboxState::Pending, Some(error)) => format!(
            "waiting: attempt {} failed ({error}); next at {}",
            delivery.attempts,
            delivery.next_attempt_at.map_or("once due".into(), rfc3339)
        ),
        (OutboxState::Pending, None) => "waiting to be sent".into(),
        (state, Some(error)) => format!("{}: {error}", state.as_str()),
        (state, None) => state.as_str().into(),
    }
}
