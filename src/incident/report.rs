//! The incident report draft (`hubwatch report KEY`, `/incidents/{key}/report.md`), in the structure of the
//! on-call process's report: summary, impact start and end, data sources, the timeline with the commands
//! that were run and what they showed, an analysis prefilled with what the probes and diagnostics
//! established, and an empty list of action items. Blameless: it describes systems, never people. Pure.

use crate::domain::wording::{cannot, cluster_summary_of, hub_count, summary_of};
use crate::domain::{IncidentKey, IncidentKind};
use crate::store::{IncidentRecord, TimelineEntry, TimelineKind};
use crate::timefmt::{rfc3339, span};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::SystemTime;
use url::Url;

/// Lines of a command's output quoted in the timeline (the whole output is on the incident page).
const EXCERPT_LINES: usize = 8;

pub struct ReportInput<'a> {
    pub incident: &'a IncidentRecord,
    pub timeline: &'a [TimelineEntry],
    /// The latest Kubernetes diagnostics as stored (rendered kubectl text), if any were collected.
    pub diagnostics: Option<&'a (SystemTime, String)>,
    /// The PagerDuty incident the dedup key belongs to, once known (status notes found it).
    pub pagerduty_incident: Option<&'a str>,
    pub incident_url: &'a Url,
    pub hub_url: Option<&'a Url>,
    /// The affected-users threshold (N).
    pub threshold: usize,
    /// A cluster incident's parts (each hub's incident) with their pages; empty for a hub's incident.
    pub parts: &'a [(IncidentRecord, Url)],
}

/// One command of stored diagnostics and its output.
struct Command<'a> {
    command: &'a str,
    output: Vec<&'a str>,
}

/// Splits rendered diagnostics (`$ command` then its output) back into commands.
fn commands(text: &str) -> Vec<Command<'_>> {
    let mut out: Vec<Command> = Vec::new();
    for line in text.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            out.push(Command { command, output: Vec::new() });
        } else if let Some(last) = out.last_mut() {
            last.output.push(line);
        }
    }
    for command in &mut out {
        while command.output.last().is_some_and(|l| l.trim().is_empty()) {
            command.output.pop();
        }
    }
    out
}

fn what_users_could_not_do(kind: IncidentKind) -> &'static str {
    match kind {
        IncidentKind::HubAccess => "log in, start their servers or execute code",
        IncidentKind::DaskGateway => "create or use Dask Gateway clusters",
        IncidentKind::Binder => "launch repositories through the hub's BinderHub",
        IncidentKind::Monitor => "be watched: the hubwatch instance watching their hubs was down",
    }
}

/// The whole draft, section by section.
pub fn render(input: &ReportInput) -> String {
    let facts = Facts::of(input);
    let mut md = String::new();
    let _ = writeln!(md, "# Incident report: {}\n", facts.summary);
    md.push_str(
        "> Drafted by hubwatch from what its probes, Kubernetes signals and diagnostics recorded. Review it, add \
         what the response team did and learnt, and fill in the action items. Blameless: describe the systems \
         and processes that allowed this, not the people involved.\n\n",
    );
    overview(&mut md, input, &facts);
    summary(&mut md, input, &facts);
    hubs(&mut md, input);
    data_sources(&mut md, input, &facts);
    timeline(&mut md, input);
    analysis(&mut md, input);
    md.push_str(
        "\n### Contributing factors\n\n_What in the systems and processes made this possible, and what made it \
         longer or shorter._\n",
    );
    md.push_str("\n## Action items\n\n_Link each to a GitHub issue._\n\n- [ ] \n");
    md
}

/// What several sections repeat: who, what, and when it ended.
struct Facts<'a> {
    users: BTreeSet<&'a str>,
    capabilities: BTreeSet<crate::domain::Capability>,
    summary: String,
    /// The impact end, or "ongoing".
    end: String,
}

impl<'a> Facts<'a> {
    fn of(input: &ReportInput<'a>) -> Self {
        let incident = input.incident;
        let users: BTreeSet<&str> = incident.affected_ever.values().flatten().map(String::as_str).collect();
        let capabilities: BTreeSet<_> = incident.affected_ever.keys().copied().collect();
        let summary = match &incident.cluster {
            Some(cluster) => cluster_summary_of(cluster, input.parts.len(), incident.kind, users.len(), &capabilities),
            None => summary_of(&incident.hub, incident.kind, users.len(), &capabilities),
        };
        let end = incident.recovered_at.map_or_else(|| "ongoing".to_string(), rfc3339);
        Facts { users, capabilities, summary, end }
    }
}

/// What the report calls the incident's place: `the hub NAME`, or `3 hubs of cluster east (a, b, c)`.
fn place(input: &ReportInput) -> String {
    match &input.incident.cluster {
        Some(cluster) => {
            let hubs: Vec<&str> = input.parts.iter().map(|(p, _)| p.hub.as_str()).collect();
            format!("{} of cluster {cluster} ({})", hub_count(hubs.len()), hubs.join(", "))
        }
        None => format!("the hub {}", input.incident.hub),
    }
}

/// A cluster incident's hubs, each with its own incident: where its evidence and its own timeline are.
fn hubs(md: &mut String, input: &ReportInput) {
    if input.incident.cluster.is_none() {
        return;
    }
    md.push_str("\n## Hubs\n\nPaged once for them all; each hub's incident keeps its own timeline and evidence.\n\n");
    for (part, url) in input.parts {
        let users: BTreeSet<&str> = part.affected_ever.values().flatten().map(String::as_str).collect();
        let _ = writeln!(
            md,
            "- **{}**: incident `{}` (<{url}>, report <{url}/report.md>), impact {} to {}, {} users: {}",
            part.hub,
            part.key,
            rfc3339(part.impact_start),
            part.recovered_at.map_or_else(|| "ongoing".to_string(), rfc3339),
            users.len(),
            users.iter().map(|u| shown(u)).collect::<Vec<_>>().join(", ")
        );
    }
}

/// The table at the top: key, hub, kind, status, impact start and end, detection, duration, users.
fn overview(md: &mut String, input: &ReportInput, facts: &Facts) {
    let incident = input.incident;
    let (status, duration) = match incident.recovered_at {
        Some(end) => ("resolved", span(incident.impact_start, end)),
        None => ("ongoing", "ongoing".to_string()),
    };
    let users = facts.users.iter().map(|u| shown(u)).collect::<Vec<_>>().join(", ");
    let rows = [
        ("Incident key (PagerDuty dedup key)", format!("`{}`", incident.key)),
        match &incident.cluster {
            Some(_) => ("Hubs", place(input)),
            None => ("Hub", incident.hub.to_string()),
        },
        ("Kind", format!("{} (users cannot {})", incident.kind.as_str(), what_users_could_not_do(incident.kind))),
        ("Status", status.to_string()),
        (
            "Impact Start Time",
            format!("{} (the earliest failure among the affected users)", rfc3339(incident.impact_start)),
        ),
        (
            "Detected",
            format!(
                "{} ({} after impact start)",
                rfc3339(incident.opened_at),
                span(incident.impact_start, incident.opened_at)
            ),
        ),
        ("Impact End Time", format!("{} (every capability worked again)", facts.end)),
        ("Duration of impact", duration),
        ("Users affected", format!("{}: {users}", facts.users.len())),
    ];
    md.push_str("| | |\n|---|---|\n");
    for (label, value) in rows {
        let _ = writeln!(md, "| {label} | {value} |");
    }
    if let Some(cluster_key) = &incident.part_of {
        let _ =
            writeln!(md, "| Paged as part of | `{cluster_key}` (one page for its cluster's hubs failing at once) |");
    }
    if let Some(id) = input.pagerduty_incident {
        let _ = writeln!(md, "| PagerDuty incident | {id} |");
    }
    let paged = input.timeline.iter().find(|e| e.kind == TimelineKind::PageSent).map(|e| e.at);
    let acknowledged = input.timeline.iter().find(|e| e.kind == TimelineKind::Acknowledged);
    if let (Some(paged), Some(ack)) = (paged, acknowledged) {
        let _ = writeln!(
            md,
            "| Time to acknowledge | {} after the page ({}) |",
            span(paged, ack.at.max(paged)),
            shown(&ack.text)
        );
    }
}

fn summary(md: &mut String, input: &ReportInput, facts: &Facts) {
    let incident = input.incident;
    md.push_str("\n## Summary\n\n");
    let per_capability: Vec<String> = incident
        .affected_ever
        .iter()
        .map(|(capability, users)| {
            format!("{}: {}", capability.as_str(), users.iter().map(|u| shown(u)).collect::<Vec<_>>().join(", "))
        })
        .collect();
    let _ = write!(
        md,
        "Between {} and {}, {} users of {} could not {} ({}). hubwatch detected it at {} when {} or more \
         users were affected, and paged. ",
        rfc3339(incident.impact_start),
        facts.end,
        facts.users.len(),
        place(input),
        cannot(incident.kind, &facts.capabilities),
        per_capability.join("; "),
        rfc3339(incident.opened_at),
        input.threshold
    );
    match incident.recovered_at {
        Some(end) => {
            let _ = writeln!(md, "Service was verified restored at {} by hubwatch's probes.", rfc3339(end));
        }
        None => md.push_str("The incident is still open.\n"),
    }
    md.push_str("\n_Add what caused it and how it was fixed, once known._\n");
}

fn data_sources(md: &mut String, input: &ReportInput, facts: &Facts) {
    let incident = input.incident;
    md.push_str("\n## Data sources\n\n");
    let _ = writeln!(
        md,
        "- hubwatch's incident page: <{}> (timeline, affected users, whole diagnostics)",
        input.incident_url
    );
    let _ = writeln!(
        md,
        "- PagerDuty: the incident with dedup key `{}`{} (status notes posted by hubwatch)",
        incident.key,
        input.pagerduty_incident.map(|id| format!(" ({id})")).unwrap_or_default()
    );
    let matcher = match incident.cluster {
        Some(_) => {
            let hubs: Vec<&str> = input.parts.iter().map(|(p, _)| p.hub.as_str()).collect();
            format!("hub=~\"{}\"", hubs.join("|"))
        }
        None => format!("hub=\"{}\"", incident.hub),
    };
    let _ = writeln!(
        md,
        "- Prometheus: `hubwatch_probe_runs_total{{{matcher}}}` (by result) and `hubwatch_affected_users{{{matcher}}}` \
         from {} to {}",
        rfc3339(incident.impact_start),
        facts.end
    );
    if let Some((at, _)) = input.diagnostics {
        let _ =
            writeln!(md, "- Kubernetes diagnostics collected by hubwatch at {} (quoted in the timeline)", rfc3339(*at));
    }
    if let Some(url) = input.hub_url {
        let _ = writeln!(md, "- The hub: <{url}>");
    }
    md.push_str("- _Add the incident's Slack channel, support tickets, and GitHub issues and pull requests._\n");
}

fn timeline_label(kind: TimelineKind) -> &'static str {
    match kind {
        TimelineKind::ImpactStart => "Impact start",
        TimelineKind::Detected => "Detected",
        TimelineKind::Changed => "Affected users changed",
        TimelineKind::Diagnostics => "Diagnostics collected",
        TimelineKind::PageSent => "Paged",
        TimelineKind::HubChanged => "Hub changed",
        TimelineKind::StatusUpdate => "Status update",
        TimelineKind::StateDelayed => "Recorded late (hubwatch could not write its state)",
        TimelineKind::Recovered => "Impact end",
        TimelineKind::ResolveSent => "Resolved in PagerDuty",
        TimelineKind::Held => "Page held (silence, rollout or cluster wait)",
        TimelineKind::Acknowledged => "Acknowledged in PagerDuty",
        TimelineKind::Assigned => "Assigned in PagerDuty",
        TimelineKind::ResolvedInPagerDuty => "Resolved in PagerDuty by a responder",
    }
}

/// Every timeline entry; the latest diagnostics go under the entry that collected them, each command with
/// the first lines of what it showed.
fn timeline(md: &mut String, input: &ReportInput) {
    md.push_str("\n## Timeline\n\nAll times are UTC.\n\n");
    for entry in input.timeline {
        let _ = writeln!(md, "- **{}** {}: {}", rfc3339(entry.at), timeline_label(entry.kind), shown(&entry.text));
        let latest = input.diagnostics.filter(|(at, _)| *at == entry.at && entry.kind == TimelineKind::Diagnostics);
        if let Some((_, text)) = latest {
            commands(text).iter().for_each(|command| excerpt(md, command));
        }
    }
    md.push_str("- _Add the actions the response team took (paste the commands) and what they showed._\n");
}

/// A command and the first lines of its output, in a fenced block.
fn excerpt(md: &mut String, command: &Command) {
    let _ = writeln!(md, "  - `{}` showed:", command.command);
    md.push_str("    ```\n");
    for line in command.output.iter().take(EXCERPT_LINES) {
        let _ = writeln!(md, "    {}", fence_safe(line));
    }
    if command.output.len() > EXCERPT_LINES {
        let _ = writeln!(md, "    [{} more lines on hubwatch's incident page]", command.output.len() - EXCERPT_LINES);
    }
    md.push_str("    ```\n");
}

/// What the probes established (per user: capability, stage, since when, the hub's reason) and what the
/// diagnostics showed.
fn analysis(md: &mut String, input: &ReportInput) {
    let incident = input.incident;
    md.push_str("\n## Analysis\n\n### What the probes established\n\n");
    for (capability, users) in &incident.failures_ever.affected {
        for (user, failure) in users {
            let _ = writeln!(
                md,
                "- {} failed for {} at stage `{}` from {}: {}",
                capability.as_str(),
                shown(user),
                failure.stage.as_str(),
                rfc3339(failure.since),
                shown(&failure.reason)
            );
        }
    }
    if incident.failures_ever.affected.values().all(BTreeMap::is_empty) {
        md.push_str("- No failures are recorded with the incident's last state.\n");
    }
    md.push_str("\n### What the Kubernetes diagnostics showed\n\n");
    match input.diagnostics {
        Some((_, text)) => md.push_str(&diagnostics_findings(text)),
        None if input.incident.cluster.is_some() => {
            md.push_str("- Each hub's incident holds its own (listed under Hubs); the page carried them all.\n")
        }
        None => {
            md.push_str("- None were collected for this incident (see the diagnostics entry of the incident page).\n")
        }
    }
}

/// Text that came from a hub, a cluster or a user name, as Markdown that shows it and does nothing else: on
/// one line (a hub's error text may span several), with what could open a link or an image (`[`), HTML or
/// an autolink (`<`), emphasis, code, strikethrough or a table cell escaped: `[x](https://evil)` and
/// `![](https://tracker)` stay those characters. (`_` inside a word, as in `hub_access`, opens nothing.)
fn shown(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, word) in raw.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let chars: Vec<char> = word.chars().collect();
        for (j, &c) in chars.iter().enumerate() {
            let inside_a_word = |k: Option<usize>| k.and_then(|k| chars.get(k)).is_some_and(|c| c.is_alphanumeric());
            let opens = match c {
                '\\' | '`' | '*' | '[' | ']' | '<' | '~' | '|' => true,
                '_' => !(inside_a_word(j.checked_sub(1)) && inside_a_word(Some(j + 1))),
                _ => false,
            };
            if opens {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// A name from the cluster as a code span (which renders nothing inside it), or [`shown`] if it holds a
/// backtick that would end the span.
fn code(name: &str) -> String {
    if name.contains('`') {
        shown(name)
    } else {
        format!("`{}`", name.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// A line inside a fenced block must not close the fence.
fn fence_safe(line: &str) -> String {
    line.replace("```", "'''")
}

/// What stands out in the diagnostics: warning events by reason, pods not running or not ready, and what
/// could not be collected.
fn diagnostics_findings(text: &str) -> String {
    let mut out = String::new();
    let commands = commands(text);
    let mut warnings: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for command in commands.iter().filter(|c| c.command.contains("type=Warning")) {
        for line in command.output.iter().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(at) = fields.iter().position(|f| *f == "Warning")
                && let Some(reason) = fields.get(at + 1)
            {
                let object = fields.get(at + 2).copied().unwrap_or("");
                let entry = warnings.entry(reason).or_insert((0, object));
                entry.0 += 1;
            }
        }
    }
    for (reason, (count, object)) in &warnings {
        let _ = writeln!(out, "- Warning events {}: {count} (first on {})", code(reason), shown(object));
    }
    for command in commands.iter().filter(|c| c.command.contains(" get pods")) {
        for line in command.output.iter().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(name), Some(ready), Some(status)) = (fields.first(), fields.get(1), fields.get(2)) else {
                continue;
            };
            let not_ready = ready.split_once('/').is_some_and(|(a, b)| a != b);
            if *status != "Completed" && (*status != "Running" || not_ready) {
                let _ = writeln!(out, "- Pod {}: {}, {ready} ready (`{}`)", code(name), shown(status), command.command);
            }
        }
    }
    for command in &commands {
        if let Some(reason) = command.output.first().and_then(|l| l.strip_prefix("(not collected: ")) {
            let _ = writeln!(out, "- Not collected: `{}`: {}", command.command, shown(reason.trim_end_matches(')')));
        }
    }
    if out.is_empty() {
        out.push_str("- Nothing unusual stood out (no warning events, every pod running and ready).\n");
    }
    out
}

/// What a report needs beyond the store: where hubwatch's pages are, and the threshold.
pub struct ReportSettings {
    pub public_url: Url,
    pub threshold: usize,
}

/// The report of the incident `key` from the store, or `None` if there is no such incident. `hub_url` gives
/// a hub's URL by name, where it is known.
pub fn draft(
    store: &crate::store::Store,
    key: &IncidentKey,
    hub_url: impl FnOnce(&str) -> Option<Url>,
    settings: &ReportSettings,
) -> Result<Option<String>, crate::store::StoreError> {
    let Some(incident) = store.incident(key)? else { return Ok(None) };
    let hub_url = hub_url(&incident.hub);
    let timeline = store.timeline(key)?;
    let diagnostics = store.diagnostics(key)?;
    let pagerduty_incident = store.pagerduty_incident(key)?;
    let incident_url = super::incident_url(&settings.public_url, key);
    let parts: Vec<(IncidentRecord, Url)> = match incident.cluster {
        Some(_) => store
            .parts(key)?
            .into_iter()
            .map(|p| {
                let url = super::incident_url(&settings.public_url, &p.key);
                (p, url)
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Some(render(&ReportInput {
        incident: &incident,
        timeline: &timeline,
        diagnostics: diagnostics.as_ref(),
        pagerduty_incident: pagerduty_incident.as_deref(),
        incident_url: &incident_url,
        hub_url: hub_url.as_ref(),
        threshold: settings.threshold,
        parts: &parts,
    })))
}

#[cfg(test)]
mod tests {
    use super::{code, shown};

    #[test]
    fn hub_text_cannot_make_links_images_or_html() {
        let hostile = "Spawn failed: [click here](https://evil.example.com) ![x](https://tracker.example.com/p.png) \
                       <img src=x onerror=alert(1)> **bold** _em_ `code` | cell ~~gone~~ hub_access\n second line";
        assert_eq!(
            shown(hostile),
            "Spawn failed: \\[click here\\](https://evil.example.com) !\\[x\\](https://tracker.example.com/p.png) \
             \\<img src=x onerror=alert(1)> \\*\\*bold\\*\\* \\_em\\_ \\`code\\` \\| cell \\~\\~gone\\~\\~ hub_access \
             second line"
        );
        assert_eq!(code("jupyter-alice"), "`jupyter-alice`");
        assert_eq!(code("a`](x)"), "a\\`\\](x)");
    }
}
