//! The status notes posted to an incident's PagerDuty incident (the process's "communicate our status every
//! few hours"): who is affected, what the probes see now, what changed since the last note. Pure: built from
//! the stored incident, the status board and the timeline.

use crate::domain::wording::{summary_of, truncate};
use crate::status::{HubStatus, LatestResult};
use crate::store::{IncidentRecord, TimelineEntry, TimelineKind};
use crate::timefmt::{rfc3339, span};
use std::fmt::Write as _;
use std::time::SystemTime;
use url::Url;

/// Notes are kept short enough to read on a phone; the whole record is one link away.
const NOTE_LIMIT: usize = 4000;

pub struct NoteInput<'a> {
    pub incident: &'a IncidentRecord,
    /// The hub's row on the status board, if it is still watched.
    pub probes: Option<&'a HubStatus>,
    /// Timeline entries since the last note (or since detection).
    pub since_last: &'a [TimelineEntry],
    pub incident_url: &'a Url,
    pub now: SystemTime,
}

/// The note's text (plain text: PagerDuty shows notes as typed).
pub fn status_note(input: &NoteInput) -> String {
    let incident = input.incident;
    let users: std::collections::BTreeSet<&str> =
        incident.affected_ever.values().flatten().map(String::as_str).collect();
    let summary =
        summary_of(&incident.hub, incident.kind, users.len(), &incident.affected_ever.keys().copied().collect());
    let mut note = match incident.recovered_at {
        Some(end) => resolved(incident, &summary, end),
        None => ongoing(incident, &summary, input.now),
    };
    if let Some(hub) = input.probes {
        note.push_str(&what_the_probes_see(incident, hub));
    }
    note.push_str(&what_changed(input.since_last));
    let link = format!("\nTimeline and Kubernetes diagnostics: {}", input.incident_url);
    truncate(&note, NOTE_LIMIT - link.len()) + &link
}

fn resolved(incident: &IncidentRecord, summary: &str, end: SystemTime) -> String {
    format!(
        "hubwatch: RESOLVED. {summary}\nService is back: every capability worked again at {} (impact {} to {}, {}).\n",
        rfc3339(end),
        rfc3339(incident.impact_start),
        rfc3339(end),
        span(incident.impact_start, end)
    )
}

/// The headline, since when, and who is affected now and how.
fn ongoing(incident: &IncidentRecord, summary: &str, now: SystemTime) -> String {
    let mut note = format!(
        "hubwatch status update: ONGOING. {summary}\nImpact started {} ({} ago); detected {}.\n\nAffected now:\n",
        rfc3339(incident.impact_start),
        span(incident.impact_start, now),
        rfc3339(incident.opened_at)
    );
    for (capability, users) in &incident.symptoms.affected {
        for (user, failure) in users {
            let _ = writeln!(
                note,
                "- {} {user}: {} since {}: {}",
                capability.as_str(),
                failure.stage.as_str(),
                rfc3339(failure.since),
                failure.reason
            );
        }
    }
    note
}

/// Each probe user's latest attempt at each capability of the incident's kind.
fn what_the_probes_see(incident: &IncidentRecord, hub: &HubStatus) -> String {
    let mut note = String::from("\nWhat the probes see now:\n");
    for capability in incident.kind.capabilities() {
        let Some(status) = hub.capabilities.get(capability) else { continue };
        let results: Vec<String> = status
            .probes
            .iter()
            .map(|(user, latest)| match latest {
                None => format!("{user} not probed yet"),
                Some(p) if p.result == LatestResult::Ok => format!("{user} ok at {}", rfc3339(p.at)),
                Some(p) => format!("{user} {} at {} ({})", p.result.as_str(), rfc3339(p.at), p.result.describe()),
            })
            .collect();
        let _ = writeln!(note, "- {}: {}", capability.as_str(), results.join("; "));
    }
    note
}

/// The changes of who is affected, of the hub, and the recovery, since the last note.
fn what_changed(since_last: &[TimelineEntry]) -> String {
    let mut note = String::from("\nWhat changed since the last update:\n");
    let changes: Vec<&TimelineEntry> = since_last
        .iter()
        .filter(|e| matches!(e.kind, TimelineKind::Changed | TimelineKind::HubChanged | TimelineKind::Recovered))
        .collect();
    if changes.is_empty() {
        note.push_str("- nothing\n");
    }
    for entry in changes {
        let _ = writeln!(note, "- {} {}", rfc3339(entry.at), entry.text);
    }
    note
}
