//! The status pages as plain server-rendered HTML (pure functions of what they show; no JavaScript).
//! Built to be read on a phone at 3 a.m.: one column on narrow screens, state in words as well as colour.
//! Every string that comes from a hub, a user or the cluster goes through [`escape`].

use crate::domain::Capability;
use crate::domain::IncidentKind;
use crate::domain::wording::summary_of;
use crate::status::{CapabilityState, CapabilityStatus, HubStatus, LatestResult};
use crate::store::{IncidentRecord, TimelineEntry, TimelineKind};
use crate::timefmt::{rfc3339, span};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::SystemTime;

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

const STYLE: &str = "\
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
table.list td{display:block;border:0;padding:.1rem .5rem}}";

fn layout(title: &str, refresh: bool, body: &str) -> String {
    let refresh = if refresh { "<meta http-equiv=\"refresh\" content=\"30\">" } else { "" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{}</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">Status</a><a href=\"/incidents\">Incidents</a><a href=\"/api/v1/status\">JSON</a>\
         <a href=\"/metrics\">Metrics</a></nav>{body}</body></html>",
        escape(title)
    )
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
fn time(at: SystemTime, now: SystemTime) -> String {
    format!("<time datetime=\"{0}\" title=\"{0}\">{1}</time>", rfc3339(at), ago(at, now))
}

fn capability_title(capability: Capability) -> &'static str {
    match capability {
        Capability::Login => "Log in",
        Capability::Server => "Start a server",
        Capability::Kernel => "Execute code",
        Capability::DaskGateway => "Dask Gateway",
    }
}

/// The CSS class and words of a capability's state.
fn state_of(status: &CapabilityStatus) -> (&'static str, String) {
    let users = count(status.affected.len(), "user", "users");
    match status.state() {
        CapabilityState::Incident => ("incident", format!("Incident · {users}")),
        CapabilityState::SupportTicket => ("ticket", format!("Support ticket · {users}")),
        CapabilityState::NotTried => ("unknown", "Not tried: an earlier step fails".to_string()),
        CapabilityState::NotProbedYet => ("unknown", "Not probed yet".to_string()),
        CapabilityState::Working => ("ok", "Working".to_string()),
    }
}

fn cell(capability: Capability, status: &CapabilityStatus, now: SystemTime) -> String {
    let (class, state) = state_of(status);
    let mut html = format!(
        "<td class=\"{class}\" data-label=\"{}\"><div class=\"state\">{}</div><ul class=\"probes\">",
        capability_title(capability),
        escape(&state)
    );
    for (user, latest) in &status.probes {
        let _ = match latest {
            None => write!(html, "<li>{}: not probed yet</li>", escape(user)),
            Some(p) if p.result == LatestResult::Ok => {
                write!(html, "<li>✓ {} ok {}</li>", escape(user), time(p.at, now))
            }
            Some(p) if matches!(p.result, LatestResult::Blocked { .. }) => {
                write!(html, "<li>– {} {} {}</li>", escape(user), escape(&p.result.describe()), time(p.at, now))
            }
            Some(p) => write!(
                html,
                "<li>✗ {} {} {}: {}</li>",
                escape(user),
                p.result.as_str(),
                time(p.at, now),
                escape(&p.result.describe())
            ),
        };
    }
    html.push_str("</ul>");
    match status.last_success() {
        Some(at) => {
            let _ = write!(html, "<div class=\"muted\">last success {}</div>", time(at, now));
        }
        None => html.push_str("<div class=\"muted\">no success yet</div>"),
    }
    if !status.affected.is_empty() {
        let users: Vec<String> = status.affected.keys().map(|u| escape(u)).collect();
        let _ = write!(html, "<div>affected: {}</div>", users.join(", "));
    }
    html.push_str("</td>");
    html
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

/// How much attention a hub needs: an open incident first, then a support ticket, then the rest.
fn urgency(hub: &HubStatus) -> u8 {
    let states: Vec<&str> = hub.capabilities.values().map(|s| state_of(s).0).collect();
    if states.contains(&"incident") {
        0
    } else if states.contains(&"ticket") {
        1
    } else {
        2
    }
}

/// `/`: every hub × capability (the hubs that need attention first), with the open incidents and support
/// tickets on top.
pub fn grid(hubs: &BTreeMap<String, HubStatus>, open: &[IncidentRecord], now: SystemTime) -> String {
    let tickets: Vec<(&String, Capability, usize)> = hubs
        .iter()
        .flat_map(|(name, hub)| {
            hub.capabilities
                .iter()
                .filter(|(_, s)| s.state() == CapabilityState::SupportTicket)
                .map(move |(c, s)| (name, *c, s.affected.len()))
        })
        .collect();
    let mut body = format!(
        "<h1>hubwatch</h1><p class=\"muted\">{} · {} · {} · as of {} (refreshes every 30 s)</p>",
        count(hubs.len(), "hub", "hubs"),
        count(open.len(), "open incident", "open incidents"),
        count(tickets.len(), "support ticket", "support tickets"),
        rfc3339(now)
    );
    for incident in open {
        let _ = write!(
            body,
            "<div class=\"banner incident\"><span class=\"state\">Incident</span> <a href=\"/incidents/{}\">{}</a> \
             · impact started {}</div>",
            escape(&incident.key),
            escape(&crate::domain::wording::summary(&incident.hub, incident.kind, &incident.symptoms)),
            time(incident.impact_start, now)
        );
    }
    for (hub, capability, users) in &tickets {
        let summary = summary_of(hub, IncidentKind::of(*capability), *users, &BTreeSet::from([*capability]));
        let _ = write!(
            body,
            "<div class=\"banner ticket\"><span class=\"state\">Support ticket</span> {} (below the incident \
             threshold)</div>",
            escape(&summary)
        );
    }
    body.push_str("<table class=\"grid\"><thead><tr><th>Hub</th>");
    for capability in Capability::ALL {
        let _ = write!(body, "<th>{}</th>", capability_title(capability));
    }
    body.push_str("</tr></thead><tbody>");
    let mut rows: Vec<(&String, &HubStatus)> = hubs.iter().collect();
    rows.sort_by_key(|(name, hub)| (urgency(hub), *name));
    for (name, hub) in rows {
        let _ = write!(body, "<tr><th scope=\"row\"><a href=\"{}\">{}</a>", escape(&hub.url), escape(name));
        for incident in open.iter().filter(|i| &i.hub == name) {
            let _ = write!(body, "<div><a href=\"/incidents/{0}\">incident {0}</a></div>", escape(&incident.key));
        }
        body.push_str("</th>");
        for capability in Capability::ALL {
            match hub.capabilities.get(&capability) {
                Some(status) => body.push_str(&cell(capability, status, now)),
                None => {
                    let _ = write!(
                        body,
                        "<td class=\"unknown\" data-label=\"{}\">not configured</td>",
                        capability_title(capability)
                    );
                }
            }
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table>");
    if hubs.is_empty() {
        body.push_str("<p>No hubs are watched yet.</p>");
    }
    layout("hubwatch status", true, &body)
}

fn everyone(incident: &IncidentRecord) -> BTreeSet<&str> {
    incident.affected_ever.values().flatten().map(String::as_str).collect()
}

fn summary_ever(incident: &IncidentRecord) -> String {
    let capabilities = incident.affected_ever.keys().copied().collect();
    summary_of(&incident.hub, incident.kind, everyone(incident).len(), &capabilities)
}

/// `/incidents`: every incident, newest first.
pub fn incidents(all: &[IncidentRecord], now: SystemTime) -> String {
    let mut body = format!("<h1>Incidents</h1><p class=\"muted\">{} incidents, newest first</p>", all.len());
    body.push_str(
        "<table class=\"list\"><thead><tr><th>Incident</th><th>Status</th><th>Users</th><th>Impact start</th>\
         <th>Impact end</th><th>Duration</th></tr></thead><tbody>",
    );
    for incident in all {
        let (class, status) = if incident.open { ("incident", "open") } else { ("ok", "recovered") };
        let end = incident.recovered_at.map_or("—".to_string(), rfc3339);
        let users: Vec<String> = everyone(incident).into_iter().map(escape).collect();
        let _ = write!(
            body,
            "<tr><td><a href=\"/incidents/{}\">{}</a><div class=\"muted\">{} · {}</div></td>\
             <td class=\"{class}\"><span class=\"state\">{status}</span></td><td>{}</td><td>{}</td><td>{end}</td>\
             <td>{}</td></tr>",
            escape(&incident.key),
            escape(&summary_ever(incident)),
            escape(&incident.key),
            incident.kind.as_str(),
            users.join(", "),
            rfc3339(incident.impact_start),
            span(incident.impact_start, incident.recovered_at.unwrap_or(now)),
        );
    }
    body.push_str("</tbody></table>");
    if all.is_empty() {
        body.push_str("<p>No incidents so far.</p>");
    }
    layout("hubwatch incidents", false, &body)
}

pub struct IncidentPage<'a> {
    pub record: &'a IncidentRecord,
    pub timeline: &'a [TimelineEntry],
    pub diagnostics: Option<&'a (SystemTime, String)>,
    pub pagerduty_incident: Option<&'a str>,
    pub hub_url: Option<String>,
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
    }
}

/// `/incidents/{key}`: status, symptoms, timeline, the whole diagnostics, and links.
pub fn incident(page: &IncidentPage, now: SystemTime) -> String {
    let record = page.record;
    let key = escape(&record.key);
    let (class, status) = if record.open { ("incident", "open") } else { ("ok", "recovered") };
    let mut body = format!(
        "<h1>{}</h1><div class=\"banner {class}\"><span class=\"state\">{status}</span> · {} · {}</div>",
        escape(&summary_ever(record)),
        key,
        record.kind.as_str()
    );
    let end = record.recovered_at.map_or("ongoing".to_string(), rfc3339);
    let _ = write!(
        body,
        "<table><tr><th>Impact start</th><td>{} ({})</td></tr><tr><th>Detected</th><td>{}</td></tr>\
         <tr><th>Impact end</th><td>{end}</td></tr><tr><th>Duration</th><td>{}</td></tr>",
        rfc3339(record.impact_start),
        ago(record.impact_start, now),
        rfc3339(record.opened_at),
        span(record.impact_start, record.recovered_at.unwrap_or(now)),
    );
    if let Some(id) = page.pagerduty_incident {
        let _ = write!(body, "<tr><th>PagerDuty incident</th><td>{}</td></tr>", escape(id));
    }
    let _ = write!(body, "<tr><th>PagerDuty dedup key</th><td><code>{key}</code></td></tr></table>");
    let _ = write!(body, "<p><a href=\"/incidents/{key}/report.md\">Incident report draft (Markdown)</a>");
    if let Some(url) = &page.hub_url {
        let _ = write!(body, " · <a href=\"{}\">the hub</a>", escape(url));
    }
    body.push_str(" · <a href=\"/\">status of every hub</a></p>");

    body.push_str(if record.open { "<h2>Affected now</h2><ul>" } else { "<h2>Last symptoms</h2><ul>" });
    for (capability, users) in &record.symptoms.affected {
        for (user, failure) in users {
            let _ = write!(
                body,
                "<li><b>{}</b> — {}: stage {} since {}: {}</li>",
                escape(user),
                capability_title(*capability),
                escape(failure.stage.as_str()),
                rfc3339(failure.since),
                escape(&failure.reason)
            );
        }
    }
    body.push_str("</ul>");
    let users: Vec<String> = everyone(record).into_iter().map(escape).collect();
    let _ = write!(body, "<p>Everyone affected during the incident: {}</p>", users.join(", "));

    body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
    for entry in page.timeline {
        let _ = write!(
            body,
            "<li><time datetime=\"{0}\">{0}</time> <span class=\"kind\">{1}</span>: {2}</li>",
            rfc3339(entry.at),
            timeline_label(entry.kind),
            escape(&entry.text)
        );
    }
    body.push_str("</ol><h2>Kubernetes diagnostics</h2>");
    match page.diagnostics {
        Some((_, text)) => {
            let _ = write!(body, "<pre>{}</pre>", escape(text));
        }
        None => body.push_str("<p>None collected (the timeline and the PagerDuty event say why).</p>"),
    }
    let title = format!("{} {} incident {}", record.hub, record.kind.as_str(), record.key);
    layout(&title, record.open, &body)
}
