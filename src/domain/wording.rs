//! How hubwatch words an incident, in one place: the summary every page, note, report, listing and status
//! page leads with ("temple: 3 users cannot start their servers"), and the lines its timeline repeats.

use super::incident::{IncidentKind, Symptoms};
use super::probe::Capability;
use std::collections::BTreeSet;

/// PagerDuty's limit for a summary (the longest wording anywhere).
pub const SUMMARY_LIMIT: usize = 1024;

/// "temple: 3 users cannot start their servers or execute code"; "… (profile gpu)" when every affected user
/// probes that one profile.
pub fn summary(hub: &str, kind: IncidentKind, symptoms: &Symptoms) -> String {
    let summary = summary_of(hub, kind, symptoms.users().len(), &symptoms.capabilities());
    let mut profiles = symptoms.affected.values().flat_map(|users| users.values()).map(|f| profile_in(&f.reason));
    match profiles.next() {
        Some(Some(profile)) if profiles.all(|p| p == Some(profile)) => {
            truncate(&format!("{summary} (profile {profile})"), SUMMARY_LIMIT - 4)
        }
        _ => summary,
    }
}

/// A profile probe user's failure, in words that name the profile: "profile gpu: Spawn failed: …".
pub fn in_profile(profile: Option<&str>, reason: &str) -> String {
    match profile {
        Some(profile) => format!("profile {profile}: {reason}"),
        None => reason.to_string(),
    }
}

/// The profile [`in_profile`] named in a failure's words.
pub fn profile_in(reason: &str) -> Option<&str> {
    let (profile, _) = reason.strip_prefix("profile ")?.split_once(": ")?;
    (!profile.is_empty() && !profile.contains(' ')).then_some(profile)
}

/// The summary for `users` users failing `capabilities`.
pub fn summary_of(hub: &str, kind: IncidentKind, users: usize, capabilities: &BTreeSet<Capability>) -> String {
    if kind == IncidentKind::Monitor {
        return format!("{hub}: the hubwatch instance there is down or unhealthy: its hubs go unwatched");
    }
    truncate(&format!("{hub}: {} {}", users_cannot(users), cannot(kind, capabilities)), SUMMARY_LIMIT - 4)
}

/// A cluster incident's summary: "cluster east: 3 hubs, 41 users cannot start their servers".
pub fn cluster_summary(cluster: &str, hubs: usize, kind: IncidentKind, symptoms: &Symptoms) -> String {
    cluster_summary_of(cluster, hubs, kind, symptoms.users().len(), &symptoms.capabilities())
}

/// [`cluster_summary`] from counts (the report's, over everyone ever affected).
pub fn cluster_summary_of(
    cluster: &str,
    hubs: usize,
    kind: IncidentKind,
    users: usize,
    capabilities: &BTreeSet<Capability>,
) -> String {
    let (hubs, users, what) = (hub_count(hubs), users_cannot(users), cannot(kind, capabilities));
    truncate(&format!("cluster {cluster}: {hubs}, {users} {what}"), SUMMARY_LIMIT - 4)
}

/// "1 hub", "3 hubs".
pub fn hub_count(hubs: usize) -> String {
    if hubs == 1 { "1 hub".to_string() } else { format!("{hubs} hubs") }
}

fn users_cannot(users: usize) -> String {
    if users == 1 { "1 user cannot".to_string() } else { format!("{users} users cannot") }
}

/// What users cannot do: "start their servers or execute code".
pub fn cannot(kind: IncidentKind, capabilities: &BTreeSet<Capability>) -> String {
    match kind {
        IncidentKind::DaskGateway => "create or use Dask Gateway clusters".to_string(),
        IncidentKind::Binder => "launch repositories through the hub's BinderHub".to_string(),
        IncidentKind::Monitor => "be watched (the hubwatch instance watching them is down)".to_string(),
        IncidentKind::HubAccess => {
            let phrases: Vec<&str> = capabilities
                .iter()
                .map(|c| match c {
                    Capability::Login => "log in",
                    Capability::Server => "start their servers",
                    Capability::Kernel => "execute code",
                    Capability::Home => "save to their home directories",
                    Capability::DaskGateway => "use Dask Gateway",
                    Capability::Binder => "launch through BinderHub",
                    Capability::FirstLogin => "log in for the first time",
                    Capability::Monitor => "be watched",
                })
                .collect();
            match phrases.as_slice() {
                [] => "use the hub".to_string(),
                [one] => one.to_string(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
            }
        }
    }
}

/// Who is affected in what: "server: probe-1, probe-2; kernel: ana".
pub fn who(symptoms: &Symptoms) -> String {
    symptoms
        .affected
        .iter()
        .filter(|(_, users)| !users.is_empty())
        .map(|(capability, users)| format!("{capability}: {}", users.keys().cloned().collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The impact start entry: who failed first, at what, and how.
pub fn earliest_failure(symptoms: &Symptoms) -> String {
    match symptoms.earliest_failure() {
        Some((capability, user, failure)) => format!(
            "the earliest failure among the affected users: {user} ({}, stage {}): {}",
            capability.as_str(),
            failure.stage.as_str(),
            failure.reason
        ),
        None => "the earliest failure among the affected users".to_string(),
    }
}

/// `text` cut to at most `limit` bytes (at a character boundary), marked with `…` when cut.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_of_one_profiles_users_names_the_profile() {
        use super::super::incident::UserFailure;
        use super::super::probe::Stage;
        let failure = |reason: &str| UserFailure {
            stage: Stage::Progress,
            reason: reason.into(),
            since: std::time::UNIX_EPOCH,
            last: std::time::UNIX_EPOCH,
        };
        let mut symptoms = Symptoms::default();
        let server = symptoms.affected.entry(Capability::Server).or_default();
        server.insert("gpu-1".into(), failure(&in_profile(Some("gpu"), "Spawn failed: no GPU node")));
        server.insert("gpu-2".into(), failure(&in_profile(Some("gpu"), "Spawn failed: no GPU node")));
        assert_eq!(
            summary("temple", IncidentKind::HubAccess, &symptoms),
            "temple: 2 users cannot start their servers (profile gpu)"
        );
        symptoms.affected.get_mut(&Capability::Server).unwrap().insert("ana".into(), failure("Spawn failed: quota"));
        assert_eq!(summary("temple", IncidentKind::HubAccess, &symptoms), "temple: 3 users cannot start their servers");
        assert_eq!(profile_in("profile gpu: Spawn failed"), Some("gpu"));
        assert_eq!(profile_in("Spawn failed: profile gpu: x"), None);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
