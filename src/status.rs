//! What the probes see now, for the status pages, `/api/v1/status` and the status notes: per hub and
//! capability, the latest result of each probe user, the last success, and the users affected (an incident
//! when it is open, a support ticket below the threshold). It observes; it never drives a decision.

use crate::config::HubConfig;
use crate::domain::Symptoms;
use crate::domain::{Capability, ProbeOutcome, ProbeResult};
use crate::sync::lock;
use crate::timefmt::rfc3339;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One probe user's latest attempt at one capability.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestProbe {
    pub at: SystemTime,
    pub duration: Duration,
    pub result: LatestResult,
    pub last_success: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LatestResult {
    Ok,
    Failed { stage: String, reason: String },
    Blocked { by: Capability },
}

impl LatestResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            LatestResult::Ok => "ok",
            LatestResult::Failed { .. } => "failed",
            LatestResult::Blocked { .. } => "blocked",
        }
    }

    /// "spawn: the server did not start within 600s", or "" when it worked.
    pub fn describe(&self) -> String {
        match self {
            LatestResult::Ok => String::new(),
            LatestResult::Failed { stage, reason } => format!("{stage}: {reason}"),
            LatestResult::Blocked { by } => format!("not tried: {} failed first", by.as_str()),
        }
    }
}

/// One capability of one hub.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapabilityStatus {
    /// Per probe user (every configured one, `None` until first probed).
    pub probes: BTreeMap<String, Option<LatestProbe>>,
    /// Users affected now (probe users and real users), with what failed.
    pub affected: BTreeMap<String, String>,
    /// The affected users make an incident (at or above the threshold, or still recovering).
    pub incident_open: bool,
}

/// What a capability's row says, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityState {
    /// Affected users make an open incident.
    Incident,
    /// Users affected, below the threshold.
    SupportTicket,
    /// Every latest attempt was blocked: an earlier step (login, the server) fails, so this was not tried.
    NotTried,
    NotProbedYet,
    Working,
}

impl CapabilityState {
    pub fn as_str(self) -> &'static str {
        match self {
            CapabilityState::Incident => "incident",
            CapabilityState::SupportTicket => "support_ticket",
            CapabilityState::NotTried => "not_tried",
            CapabilityState::NotProbedYet => "not_probed_yet",
            CapabilityState::Working => "ok",
        }
    }
}

impl CapabilityStatus {
    pub fn state(&self) -> CapabilityState {
        let latest: Vec<&LatestProbe> = self.probes.values().flatten().collect();
        if !self.affected.is_empty() {
            if self.incident_open { CapabilityState::Incident } else { CapabilityState::SupportTicket }
        } else if latest.is_empty() {
            CapabilityState::NotProbedYet
        } else if latest.iter().all(|p| matches!(p.result, LatestResult::Blocked { .. })) {
            CapabilityState::NotTried
        } else {
            CapabilityState::Working
        }
    }

    pub fn last_success(&self) -> Option<SystemTime> {
        self.probes.values().flatten().filter_map(|p| p.last_success).max()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HubStatus {
    pub url: String,
    pub capabilities: BTreeMap<Capability, CapabilityStatus>,
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    hubs: Mutex<BTreeMap<String, HubStatus>>,
}

impl StatusBoard {
    fn hubs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HubStatus>> {
        lock(&self.hubs)
    }

    /// The hubs watched now: new ones are added (every capability and probe user, not yet probed); hubs no
    /// longer watched are dropped; what is known of the others is kept.
    pub fn set_hubs(&self, hubs: &[HubConfig]) {
        let mut board = self.hubs();
        board.retain(|name, _| hubs.iter().any(|h| &h.name == name));
        for hub in hubs {
            let status = board
                .entry(hub.name.clone())
                .or_insert_with(|| HubStatus { url: hub.url.to_string(), capabilities: BTreeMap::new() });
            status.url = hub.url.to_string();
            let capabilities = hub.capabilities();
            status.capabilities.retain(|c, _| capabilities.contains(c));
            for capability in capabilities {
                let entry = status.capabilities.entry(capability).or_default();
                entry.probes.retain(|user, _| hub.users.contains(user));
                for user in &hub.users {
                    entry.probes.entry(user.clone()).or_insert(None);
                }
            }
        }
    }

    pub fn record(&self, outcome: &ProbeOutcome) {
        let mut board = self.hubs();
        let Some(hub) = board.get_mut(&outcome.hub) else { return };
        let capability = hub.capabilities.entry(outcome.capability).or_default();
        // Every probe user has a slot from set_hubs: no allocation on this path (thousands of outcomes a second).
        let Some(slot) = capability.probes.get_mut(&outcome.user) else { return };
        let finished = outcome.started_at + outcome.duration;
        let earlier_success = slot.as_ref().and_then(|p| p.last_success);
        let result = match &outcome.result {
            ProbeResult::Ok => LatestResult::Ok,
            ProbeResult::Failed(f) => LatestResult::Failed { stage: f.stage.as_str().into(), reason: f.reason.clone() },
            ProbeResult::Blocked { by } => LatestResult::Blocked { by: *by },
        };
        let last_success = if result == LatestResult::Ok { Some(finished) } else { earlier_success };
        *slot = Some(LatestProbe { at: finished, duration: outcome.duration, result, last_success });
    }

    /// The users affected now for the capabilities of one incident kind, as the detector sees them.
    pub fn set_affected(&self, hub: &str, capabilities: &[Capability], symptoms: &Symptoms, incident_open: bool) {
        let mut board = self.hubs();
        let Some(hub) = board.get_mut(hub) else { return };
        for capability in capabilities {
            let Some(status) = hub.capabilities.get_mut(capability) else { continue };
            status.affected = symptoms
                .affected
                .get(capability)
                .map(|users| {
                    users
                        .iter()
                        .map(|(user, f)| (user.clone(), format!("{}: {}", f.stage.as_str(), f.reason)))
                        .collect()
                })
                .unwrap_or_default();
            status.incident_open = incident_open;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, HubStatus> {
        self.hubs().clone()
    }

    pub fn hub(&self, name: &str) -> Option<HubStatus> {
        self.hubs().get(name).cloned()
    }
}

/// An open incident as `/api/v1/status` shows it: held pages say by what and until when.
#[derive(Debug, Clone)]
pub struct OpenIncident {
    pub hub: String,
    pub key: String,
    pub kind: &'static str,
    /// What holds its page (a silence or a rollout), and until when.
    pub held: Option<(String, SystemTime)>,
    /// The active silence over it (its id and end), if any.
    pub silence: Option<(String, SystemTime)>,
}

impl OpenIncident {
    fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "kind": self.kind,
            "silenced": self.silence.is_some(),
            "silence": self.silence.as_ref().map(|(id, ends)| json!({"id": id, "ends_at": rfc3339(*ends)})),
            "held_by": self.held.as_ref().map(|(why, _)| why),
            "held_until": self.held.as_ref().map(|(_, until)| rfc3339(*until)),
        })
    }
}

/// `/api/v1/status`: the board, with the open incidents per hub (`open_incidents`: their keys, as before;
/// `incidents`: each with whether its page is held, by which silence, until when) and the hub's silences.
pub fn to_json(
    hubs: &BTreeMap<String, HubStatus>,
    open_incidents: &[OpenIncident],
    silences: &[Value],
    now: SystemTime,
) -> Value {
    let hubs: Vec<Value> = hubs
        .iter()
        .map(|(name, hub)| {
            let capabilities: serde_json::Map<String, Value> = hub
                .capabilities
                .iter()
                .map(|(capability, status)| {
                    let probes: serde_json::Map<String, Value> = status
                        .probes
                        .iter()
                        .map(|(user, latest)| {
                            let value = match latest {
                                None => json!({"result": "not_probed_yet"}),
                                Some(p) => json!({
                                    "result": p.result.as_str(),
                                    "reason": (p.result != LatestResult::Ok).then(|| p.result.describe()),
                                    "at": rfc3339(p.at),
                                    "seconds": p.duration.as_secs_f64(),
                                    "last_success": p.last_success.map(rfc3339),
                                }),
                            };
                            (user.clone(), value)
                        })
                        .collect();
                    let value = json!({
                        "state": status.state().as_str(),
                        "probes": probes,
                        "last_success": status.last_success().map(rfc3339),
                        "affected_users": status.affected,
                    });
                    (capability.as_str().to_string(), value)
                })
                .collect();
            let open: Vec<&OpenIncident> = open_incidents.iter().filter(|i| i.hub == *name).collect();
            let keys: Vec<&str> = open.iter().map(|i| i.key.as_str()).collect();
            let incidents: Vec<Value> = open.iter().map(|i| i.to_json()).collect();
            let silences: Vec<&Value> = silences.iter().filter(|s| s["hub"] == name.as_str()).collect();
            json!({"name": name, "url": hub.url, "capabilities": capabilities, "open_incidents": keys,
                "incidents": incidents, "silences": silences})
        })
        .collect();
    json!({"generated_at": rfc3339(now), "hubs": hubs})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(result: LatestResult) -> Option<LatestProbe> {
        Some(LatestProbe { at: SystemTime::UNIX_EPOCH, duration: Duration::ZERO, result, last_success: None })
    }

    #[test]
    fn a_capability_says_incident_ticket_not_tried_or_working() {
        let blocked = LatestResult::Blocked { by: Capability::Server };
        let mut status = CapabilityStatus::default();
        status.probes.insert("probe-1".into(), None);
        assert_eq!(status.state(), CapabilityState::NotProbedYet);
        status.probes.insert("probe-1".into(), latest(blocked.clone()));
        status.probes.insert("probe-2".into(), latest(blocked));
        assert_eq!(status.state(), CapabilityState::NotTried, "blocked everywhere is not 'working'");
        status.probes.insert("probe-2".into(), latest(LatestResult::Ok));
        assert_eq!(status.state(), CapabilityState::Working);
        status.affected.insert("carol".into(), "user_pod: ImagePullBackOff".into());
        assert_eq!(status.state(), CapabilityState::SupportTicket);
        status.incident_open = true;
        assert_eq!(status.state(), CapabilityState::Incident);
        status.affected.clear();
        assert_eq!(status.state(), CapabilityState::Working, "an incident open on the hub, this capability fine");
    }
}
