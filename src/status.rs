//! What the probes see now, for the status pages, `/api/v1/status` and the status notes: per hub and
//! capability, the latest result of each probe user, the last success, and the users affected (an incident
//! when it is open, a support ticket below the threshold). It observes; it never drives a decision.

use crate::config::HubConfig;
use crate::domain::lookup::NameMap;
use crate::domain::{Capability, HubName, IncidentKey, ProbeOutcome, ProbeResult, SERVER_START_BUCKETS, Symptoms};
use crate::sync::lock;
use crate::timefmt::rfc3339;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
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
    /// Started, slowly: "the server took 2m 31s to start (slow after 2m)".
    Slow {
        reason: String,
    },
    Failed {
        stage: String,
        reason: String,
    },
    Blocked {
        by: Capability,
    },
}

impl LatestResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            LatestResult::Ok => "ok",
            LatestResult::Slow { .. } => "slow",
            LatestResult::Failed { .. } => "failed",
            LatestResult::Blocked { .. } => "blocked",
        }
    }

    /// "spawn: the server did not start within 600s", or "" when it worked.
    pub fn describe(&self) -> String {
        match self {
            LatestResult::Ok => String::new(),
            LatestResult::Slow { reason } => reason.clone(),
            LatestResult::Failed { stage, reason } => format!("{stage}: {reason}"),
            LatestResult::Blocked { by } => format!("not tried: {} failed first", by.as_str()),
        }
    }
}

/// One capability of one hub.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapabilityStatus {
    /// Per probe user (every configured one, `None` until first probed).
    pub probes: ProbeSlots,
    /// Users affected now (probe users and real users), with what failed.
    pub affected: BTreeMap<String, String>,
    /// The affected users make an incident (at or above the threshold, or still recovering).
    pub incident_open: bool,
}

/// Each probe user's latest probe (`None` until first probed), by user: a small sorted vector, as a hub has
/// a few probe users (a map's node costs 1.5 KB however few it holds: 34 MB at 5,000 hubs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeSlots(Vec<(String, Option<LatestProbe>)>);

impl ProbeSlots {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Option<LatestProbe>)> {
        self.0.iter().map(|(user, latest)| (user, latest))
    }

    pub fn values(&self) -> impl Iterator<Item = &Option<LatestProbe>> {
        self.0.iter().map(|(_, latest)| latest)
    }

    pub fn get_mut(&mut self, user: &str) -> Option<&mut Option<LatestProbe>> {
        let at = self.0.binary_search_by(|(u, _)| u.as_str().cmp(user)).ok()?;
        Some(&mut self.0[at].1)
    }

    /// Sets `user`'s latest probe, adding the user if new.
    pub fn insert(&mut self, user: &str, latest: Option<LatestProbe>) {
        match self.0.binary_search_by(|(u, _)| u.as_str().cmp(user)) {
            Ok(at) => self.0[at].1 = latest,
            Err(at) => self.0.insert(at, (user.to_string(), latest)),
        }
    }

    /// Keeps exactly `users` (new ones not probed yet, known ones as they were).
    fn keep(&mut self, users: impl Iterator<Item = String>) {
        let mut kept: Vec<(String, Option<LatestProbe>)> = users
            .map(|user| {
                let latest = self.get_mut(&user).and_then(Option::take);
                (user, latest)
            })
            .collect();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        kept.dedup_by(|a, b| a.0 == b.0);
        kept.shrink_to_fit();
        self.0 = kept;
    }
}

/// What a capability's row says, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityState {
    /// Affected users make an open incident.
    Incident,
    /// Users affected, below the threshold.
    SupportTicket,
    /// Nobody affected, but a probe user's latest start was slow.
    Slow,
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
            CapabilityState::Slow => "slow",
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
        } else if latest.iter().any(|p| matches!(p.result, LatestResult::Slow { .. })) {
            CapabilityState::Slow
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
    /// How long servers took to start over the last day: probe users' and real users' (the hub's log).
    pub starts: StartTimes,
}

/// Hours of server starts kept.
const START_HOURS: u64 = 24;

/// Server start times over the last day, as hourly counts in [`SERVER_START_BUCKETS`] (and one more for
/// longer): about 800 bytes a hub however many start, and quantiles computed as Prometheus'
/// `histogram_quantile` does (linear within a bucket), so the page and the chart's rules agree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartTimes {
    /// (hour since the epoch, counts per bucket), oldest first.
    hours: VecDeque<(u64, [u16; SERVER_START_BUCKETS.len() + 1])>,
}

impl StartTimes {
    pub fn record(&mut self, at: SystemTime, took: Duration) {
        let hour = hour_of(at);
        let seconds = took.as_secs_f64();
        let bucket = SERVER_START_BUCKETS.iter().position(|le| seconds <= *le).unwrap_or(SERVER_START_BUCKETS.len());
        if self.hours.back().is_none_or(|(h, _)| *h < hour) {
            self.hours.push_back((hour, [0; SERVER_START_BUCKETS.len() + 1]));
        }
        // A start logged late (an earlier hour) counts in the latest hour: close enough for a day's figure.
        let (_, counts) = self.hours.back_mut().expect("pushed above");
        counts[bucket] = counts[bucket].saturating_add(1);
        while self.hours.front().is_some_and(|(h, _)| *h + START_HOURS <= hour) {
            self.hours.pop_front();
        }
    }

    /// The counts per bucket over the day before `now`.
    fn day(&self, now: SystemTime) -> [u32; SERVER_START_BUCKETS.len() + 1] {
        let hour = hour_of(now);
        let mut total = [0u32; SERVER_START_BUCKETS.len() + 1];
        for (_, counts) in self.hours.iter().filter(|(h, _)| h + START_HOURS > hour) {
            total.iter_mut().zip(counts).for_each(|(t, c)| *t += u32::from(*c));
        }
        total
    }

    /// Starts over the last day, and their p50 and p90 in seconds (`None` without a start).
    pub fn figures(&self, now: SystemTime) -> (u32, Option<(f64, f64)>) {
        let counts = self.day(now);
        let total: u32 = counts.iter().sum();
        let quantiles = (total > 0).then(|| (quantile(&counts, 0.5), quantile(&counts, 0.9)));
        (total, quantiles)
    }
}

fn hour_of(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 3600)
}

/// The `q` quantile of bucketed counts, linear within the bucket it falls in; in the overflow bucket, its
/// lower bound (as `histogram_quantile` answers for `+Inf`).
fn quantile(counts: &[u32], q: f64) -> f64 {
    let total: u32 = counts.iter().sum();
    let rank = q * f64::from(total);
    let mut below = 0.0;
    for (i, count) in counts.iter().enumerate() {
        let count = f64::from(*count);
        if below + count >= rank && count > 0.0 {
            let Some(upper) = SERVER_START_BUCKETS.get(i) else { break };
            let lower = if i == 0 { 0.0 } else { SERVER_START_BUCKETS[i - 1] };
            return lower + (upper - lower) * (rank - below) / count;
        }
        below += count;
    }
    SERVER_START_BUCKETS[SERVER_START_BUCKETS.len() - 1]
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    /// Looked up on every outcome (thousands a second), sorted only for a page.
    hubs: Mutex<NameMap<HubName, HubStatus>>,
}

impl StatusBoard {
    fn hubs(&self) -> std::sync::MutexGuard<'_, NameMap<HubName, HubStatus>> {
        lock(&self.hubs)
    }

    /// The hubs watched now: new ones are added (every capability and probe user, not yet probed); hubs no
    /// longer watched are dropped; what is known of the others is kept.
    pub fn set_hubs(&self, hubs: &[std::sync::Arc<HubConfig>]) {
        let mut board = self.hubs();
        board.retain(|name, _| hubs.iter().any(|h| h.name == name));
        for hub in hubs {
            let status = board.entry(hub.name.clone()).or_insert_with(|| HubStatus {
                url: hub.url.to_string(),
                capabilities: BTreeMap::new(),
                starts: StartTimes::default(),
            });
            status.url = hub.url.to_string();
            let capabilities = hub.capabilities();
            status.capabilities.retain(|c, _| capabilities.contains(c));
            for capability in capabilities {
                let users = hub.probe_users().filter(|user| hub.user_probes(user, capability)).map(String::from);
                status.capabilities.entry(capability).or_default().probes.keep(users);
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
            slow @ ProbeResult::Slow(_) => LatestResult::Slow { reason: slow.slowness().unwrap_or_default() },
            ProbeResult::Failed(f) => LatestResult::Failed { stage: f.stage.as_str().into(), reason: f.reason.clone() },
            ProbeResult::Blocked { by } => LatestResult::Blocked { by: *by },
        };
        if outcome.capability == Capability::FirstLogin {
            // One check, not users: its failure is its own support ticket (the detector's), shown here.
            match &outcome.result {
                ProbeResult::Failed(f) if outcome.result.is_user_affecting() => {
                    capability.affected =
                        BTreeMap::from([(outcome.user.clone(), format!("{}: {}", f.stage, f.reason))]);
                }
                result if result.is_success() => capability.affected.clear(),
                _ => {}
            }
        }
        let last_success = if outcome.result.is_success() { Some(finished) } else { earlier_success };
        *slot = Some(LatestProbe { at: finished, duration: outcome.duration, result, last_success });
        if let Some(took) = outcome.start_time() {
            hub.starts.record(finished, took);
        }
    }

    /// A real user's server start, from the hub's log.
    pub fn record_start(&self, hub: &HubName, at: SystemTime, took: Duration) {
        if let Some(hub) = self.hubs().get_mut(hub) {
            hub.starts.record(at, took);
        }
    }

    /// The users affected now for the capabilities of one incident kind, as the detector sees them.
    pub fn set_affected(&self, hub: &HubName, capabilities: &[Capability], symptoms: &Symptoms, incident_open: bool) {
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

    /// Every hub's status, by name.
    pub fn snapshot(&self) -> BTreeMap<HubName, HubStatus> {
        self.hubs().iter().map(|(name, status)| (name.clone(), status.clone())).collect()
    }

    pub fn hub(&self, name: &str) -> Option<HubStatus> {
        self.hubs().get(name).cloned()
    }
}

/// An open incident as `/api/v1/status` shows it: held pages say by what and until when.
#[derive(Debug, Clone)]
pub struct OpenIncident {
    pub hub: HubName,
    pub key: IncidentKey,
    pub kind: &'static str,
    /// What holds its page (a silence or a rollout), and until when.
    pub held: Option<(String, SystemTime)>,
    /// The active silence over it (its id and end), if any.
    pub silence: Option<(String, SystemTime)>,
    /// Who has it in PagerDuty, as last read back ("acknowledged by Ana").
    pub responder: Option<String>,
    /// The cluster incident it is folded into, which pages for it.
    pub part_of: Option<IncidentKey>,
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
            "responder": self.responder,
            "part_of": self.part_of,
        })
    }
}

/// `/api/v1/status`: the board, with the open incidents per hub (`open_incidents`: their keys, as before;
/// `incidents`: each with whether its page is held, by which silence, until when) and the hub's silences.
pub fn to_json(
    hubs: &BTreeMap<HubName, HubStatus>,
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
            let (starts, quantiles) = hub.starts.figures(now);
            let server_starts = json!({"last_day": starts, "p50_seconds": quantiles.map(|q| q.0),
                "p90_seconds": quantiles.map(|q| q.1)});
            json!({"name": name, "url": hub.url, "capabilities": capabilities, "open_incidents": keys,
                "incidents": incidents, "silences": silences, "server_starts": server_starts})
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
    fn start_times_over_the_last_day_give_the_quantiles_prometheus_would() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let mut starts = StartTimes::default();
        assert_eq!(starts.figures(at(0)), (0, None));
        // Nine starts within 5 s and one of 100 s (the bucket 90..120 s).
        for i in 0..9 {
            starts.record(at(i * 60), Duration::from_secs(4));
        }
        starts.record(at(600), Duration::from_secs(100));
        let (count, Some((p50, p90))) = starts.figures(at(700)) else { panic!("figures") };
        assert_eq!(count, 10);
        assert!((p50 - 5.0 * 5.0 / 9.0).abs() < 1e-9, "p50 {p50}");
        assert!((p90 - 5.0).abs() < 1e-9, "p90 at the ninth of ten is the top of the first bucket: {p90}");
        starts.record(at(3_600 * 30), Duration::from_secs(1_000));
        assert_eq!(starts.figures(at(3_600 * 30)), (1, Some((900.0, 900.0))), "the day before is gone; over 900 s");
    }

    #[test]
    fn a_capability_says_incident_ticket_not_tried_or_working() {
        let blocked = LatestResult::Blocked { by: Capability::Server };
        let mut status = CapabilityStatus::default();
        status.probes.insert("probe-1", None);
        assert_eq!(status.state(), CapabilityState::NotProbedYet);
        status.probes.insert("probe-1", latest(blocked.clone()));
        status.probes.insert("probe-2", latest(blocked));
        assert_eq!(status.state(), CapabilityState::NotTried, "blocked everywhere is not 'working'");
        status.probes.insert("probe-2", latest(LatestResult::Ok));
        assert_eq!(status.state(), CapabilityState::Working);
        status.probes.insert("probe-1", latest(LatestResult::Slow { reason: "took 3m".into() }));
        assert_eq!(status.state(), CapabilityState::Slow);
        status.affected.insert("carol".into(), "user_pod: ImagePullBackOff".into());
        assert_eq!(status.state(), CapabilityState::SupportTicket);
        status.incident_open = true;
        assert_eq!(status.state(), CapabilityState::Incident);
        status.affected.clear();
        status.probes.insert("probe-1", latest(LatestResult::Ok));
        assert_eq!(status.state(), CapabilityState::Working, "an incident open on the hub, this capability fine");
    }
}
