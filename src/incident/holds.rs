//! Held pages: silences (from the API, the CLI or a Deployment annotation) and rollouts within their
//! grace. A held incident is detected, recorded and shown like any other; its trigger waits until the hold
//! ends and goes out then, once, if the incident is still open. One that recovers while held sends nothing.

use super::IncidentManager;
use crate::domain::{DeploymentState, Hold, HubName, IncidentKind, Rollout, Silence, SilenceSource};
use crate::store::{HeldPage, Store, StoreError, TimelineKind, millis};
use crate::sync::lock;
use crate::timefmt::rfc3339;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A silence's reason and author are shown on every page and in the timeline: kept short.
const TEXT_LIMIT: usize = 500;
/// The longest silence: a forgotten one must not mute a hub for good.
pub const LONGEST_SILENCE: Duration = Duration::from_secs(90 * 24 * 3600);

/// `POST /api/v1/silences`, as sent (an unknown field is refused, as a config key is).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    pub hub: Option<String>,
    pub kind: Option<String>,
    /// How long from now (`2h`), or…
    pub duration: Option<String>,
    /// …until when (RFC 3339).
    pub ends_at: Option<String>,
    /// Planned: from when (RFC 3339; default now); `duration` then counts from here.
    pub starts_at: Option<String>,
    /// Recurring: the same window again every so often (`1w`, at least `1h`), until expired.
    pub every: Option<String>,
    pub reason: Option<String>,
    pub created_by: Option<String>,
}

/// Why a silence is refused (the API answers 400 with it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SilenceRefused {
    #[error("hub is required")]
    NoHub,
    #[error("unknown hub {0:?} (hubwatch watches: {1})")]
    UnknownHub(String, String),
    #[error("unknown kind {0:?} (expected hub_access, dask_gateway, binder or monitor, or no kind for every kind)")]
    UnknownKind(String),
    #[error("a reason is required: say why nobody should be paged (e.g. \"upgrading to z2jh 4\")")]
    NoReason,
    #[error("give either duration or ends_at, not both")]
    BothEnds,
    #[error("an end is required: duration (e.g. 2h) or ends_at (RFC 3339)")]
    NoEnd,
    #[error("duration {0:?} is not a duration like 90m or 2h")]
    BadDuration(String),
    #[error("ends_at {0:?} is not an RFC 3339 time like 2026-12-01T06:00:00Z")]
    BadTime(String),
    #[error("the end ({0}) is in the past")]
    EndInPast(String),
    #[error("the end is more than 90 days away; a silence that long is a decommission (see docs/operating.md)")]
    TooLong,
    #[error("{0} is longer than {TEXT_LIMIT} characters")]
    TooLongText(&'static str),
    #[error("starts_at {0:?} is not an RFC 3339 time like 2026-12-05T22:00:00Z")]
    BadStart(String),
    #[error("the end ({0}) is not after the start")]
    EndBeforeStart(String),
    #[error("every {0:?} is not a duration of at least 1h (and no shorter than the window), like 1w or 1d")]
    BadEvery(String),
}

/// Checks `request` against the hubs hubwatch knows, at `now`; the silence it makes (its id from `id`).
pub fn validate(
    request: &SilenceRequest,
    hubs: &[HubName],
    id: String,
    source: SilenceSource,
    now: SystemTime,
) -> Result<Silence, SilenceRefused> {
    let hub = request.hub.as_deref().map(str::trim).filter(|h| !h.is_empty()).ok_or(SilenceRefused::NoHub)?;
    let Some(hub) = hubs.iter().find(|h| *h == hub) else {
        let known: Vec<&str> = hubs.iter().map(HubName::as_str).collect();
        return Err(SilenceRefused::UnknownHub(hub.to_string(), known.join(", ")));
    };
    let kind = match request.kind.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => Some(IncidentKind::parse(k).ok_or_else(|| SilenceRefused::UnknownKind(k.to_string()))?),
    };
    let reason = text(request.reason.as_deref(), "reason")?.ok_or(SilenceRefused::NoReason)?;
    let created_by = text(request.created_by.as_deref(), "created_by")?.unwrap_or_else(|| "unknown".into());
    let starts_at = match request.starts_at.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => now,
        Some(t) => parse_time(t).map_err(|_| SilenceRefused::BadStart(t.to_string()))?.max(now),
    };
    let ends_at = window_end(request, starts_at, now)?;
    let every = match request.every.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        None => None,
        Some(e) => {
            let every = humantime::parse_duration(e).map_err(|_| SilenceRefused::BadEvery(e.to_string()))?;
            let window = ends_at.duration_since(starts_at).unwrap_or_default();
            if every < Duration::from_secs(3600) || every < window {
                return Err(SilenceRefused::BadEvery(e.to_string()));
            }
            Some(every)
        }
    };
    Ok(Silence { id, hub: hub.clone(), kind, starts_at, ends_at, every, reason, created_by, source })
}

/// An RFC 3339 time, with `Z` or an offset.
fn parse_time(text: &str) -> Result<SystemTime, ()> {
    humantime::parse_rfc3339_weak(text).or_else(|_| chrono_like(text))
}

/// The (first) window's end: `duration` after its start, or `ends_at`; never past, never over 90 days away.
fn window_end(request: &SilenceRequest, starts_at: SystemTime, now: SystemTime) -> Result<SystemTime, SilenceRefused> {
    let ends_at = match (request.duration.as_deref(), request.ends_at.as_deref()) {
        (Some(_), Some(_)) => return Err(SilenceRefused::BothEnds),
        (None, None) => return Err(SilenceRefused::NoEnd),
        (Some(d), None) => {
            let duration =
                humantime::parse_duration(d.trim()).map_err(|_| SilenceRefused::BadDuration(d.to_string()))?;
            // Checked before the sum: an absurd duration is too long, never an overflow.
            if duration > LONGEST_SILENCE {
                return Err(SilenceRefused::TooLong);
            }
            starts_at + duration
        }
        (None, Some(t)) => parse_time(t.trim()).map_err(|_| SilenceRefused::BadTime(t.to_string()))?,
    };
    if ends_at <= now {
        return Err(SilenceRefused::EndInPast(rfc3339(ends_at)));
    }
    if ends_at <= starts_at {
        return Err(SilenceRefused::EndBeforeStart(rfc3339(ends_at)));
    }
    if ends_at.duration_since(now).unwrap_or_default() > LONGEST_SILENCE {
        return Err(SilenceRefused::TooLong);
    }
    Ok(ends_at)
}

/// RFC 3339 with an offset (`+02:00`), which humantime does not read: the offset applied by hand.
fn chrono_like(text: &str) -> Result<SystemTime, ()> {
    let (local, sign, offset) = match text.rfind(['+', '-']) {
        Some(i) if i > 10 => (&text[..i], &text[i..i + 1], &text[i + 1..]),
        _ => return Err(()),
    };
    let (hours, minutes) = offset.split_once(':').ok_or(())?;
    let seconds = hours.parse::<u64>().map_err(|_| ())? * 3600 + minutes.parse::<u64>().map_err(|_| ())? * 60;
    let local = humantime::parse_rfc3339_weak(local).map_err(|_| ())?;
    let shift = Duration::from_secs(seconds);
    let shifted = if sign == "+" { local.checked_sub(shift) } else { local.checked_add(shift) };
    shifted.ok_or(())
}

fn text(value: Option<&str>, what: &'static str) -> Result<Option<String>, SilenceRefused> {
    match value.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() > TEXT_LIMIT => Err(SilenceRefused::TooLongText(what)),
        Some(t) => Ok(Some(t.chars().filter(|c| !c.is_control()).collect())),
        None => Ok(None),
    }
}

/// A new silence's id: random, so two replicas (or a restored state) never reuse one.
pub fn new_silence_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is keyed from the OS's randomness: a fresh one per id is a random number.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("s-{:016x}", hasher.finish())
}

/// The id of the silence a hub's annotation makes (one per hub: the annotation changes it in place).
pub fn annotation_silence_id(hub: &HubName) -> String {
    format!("annotation-{hub}")
}

/// Stores `silence` and tells the open incidents it covers, in their timelines, that their pages are held.
pub fn start_silence(store: &Store, silence: &Silence, now: SystemTime) -> Result<(), StoreError> {
    store.put_silence(silence)?;
    for incident in store.open_incidents()?.iter().filter(|i| silence.covers(&i.hub, i.kind, now)) {
        let entry = format!(
            "{} started, until {}: no trigger goes to PagerDuty while it lasts",
            silence.describe(),
            rfc3339(silence.ends_at)
        );
        store.add_timeline(&incident.key, now, TimelineKind::Held, &entry)?;
    }
    Ok(())
}

/// The latest rollout of each hub: shared by every recorder (it outlives a restarted one). A rollout holds
/// its hub's pages for the whole grace from when it began, even when it completes sooner: the users'
/// servers and the probes need a round or two to come back, and a hub that does recovers without a page.
#[derive(Debug, Default)]
pub struct Rollouts(Mutex<HashMap<HubName, Rollout>>);

impl Rollouts {
    /// Takes in what the watch saw; the rollout when one begins (a new generation mid-rollout).
    pub fn update(&self, state: &DeploymentState, now: SystemTime) -> Option<Rollout> {
        if !state.rolling_out {
            return None;
        }
        let mut rollouts = lock(&self.0);
        let same = rollouts.get(&state.hub).is_some_and(|r| r.generation == state.generation);
        if same {
            return None;
        }
        let rollout = Rollout {
            hub: state.hub.clone(),
            deployment: state.deployment.clone(),
            generation: state.generation,
            since: now,
        };
        rollouts.insert(state.hub.clone(), rollout.clone());
        Some(rollout)
    }

    pub fn all(&self) -> Vec<Rollout> {
        lock(&self.0).values().cloned().collect()
    }
}

impl HeldPage {
    pub fn of(hold: &Hold) -> HeldPage {
        let fold = match hold {
            Hold::Fold { cluster, .. } => Some(cluster.clone()),
            _ => None,
        };
        HeldPage {
            why: hold.describe(),
            silence: hold.silence_id().map(String::from),
            until_ms: millis(hold.until()),
            fold,
            resolved_in_pagerduty: false,
        }
    }
}

impl IncidentManager {
    /// What holds pages of `kind` on `hub` at `now`, if anything.
    pub(super) fn hold(&self, hub: &HubName, kind: IncidentKind, now: SystemTime) -> Result<Option<Hold>, StoreError> {
        let silences = self.store.silences(now)?;
        Ok(Hold::of(hub, kind, &silences, &self.rollouts.all(), self.settings.rollout_grace, now))
    }

    /// The timeline entries of an incident opened under `hold`: why it is not paged, and for a rollout the
    /// template change that started it.
    pub(super) fn held_entries(&self, hub: &HubName, hold: &Hold) -> Vec<(TimelineKind, String)> {
        let page = HeldPage::of(hold);
        let held = format!(
            "not paged: held by {} until {}; it pages then if the incident is still open",
            page.why,
            rfc3339(page.until())
        );
        let mut entries = vec![(TimelineKind::Held, held)];
        if let Hold::Rollout { .. } = hold
            && let Some((at, change)) = lock(&self.recent_changes).get(hub)
        {
            entries.push((TimelineKind::HubChanged, format!("{change} (at {})", rfc3339(*at))));
        }
        entries
    }

    /// Every tick: tells timelines of silences that ended, and sends the pages whose hold is over (once:
    /// the trigger is queued in the same transaction that clears the hold). Returns the diagnostics the
    /// released triggers wait for.
    pub fn review_holds(&self, now: SystemTime) -> Result<Vec<super::DiagnosticsWanted>, StoreError> {
        self.review_folds(now)?;
        let open = self.store.open_incidents()?;
        for silence in self.store.take_ended_silences(now)? {
            let covered = open.iter().filter(|i| {
                i.hub == silence.hub
                    && silence.kind.is_none_or(|k| k == i.kind)
                    && i.hold.as_ref().and_then(|h| h.silence.as_deref()) != Some(silence.id.as_str())
            });
            for incident in covered {
                let entry = format!("{} ended at {}", silence.describe(), rfc3339(silence.ends_at));
                self.store.add_timeline(&incident.key, now, TimelineKind::Held, &entry)?;
            }
        }
        let mut wanted = Vec::new();
        // Resolved in PagerDuty: nothing is sent for it again, whatever else holds or ends.
        let held = open.iter().filter_map(|i| i.hold.as_ref().filter(|h| !h.resolved_in_pagerduty).map(|h| (i, h)));
        for (incident, held) in held {
            match self.hold(&incident.hub, incident.kind, now)?.map(|hold| HeldPage::of(&hold)) {
                // Still waiting for the cluster's other hubs (a fold would have taken it just before).
                None if held.fold.is_some() && now < held.until() => {}
                Some(page) if page.why == held.why => {}
                Some(page) => {
                    let entry = format!("page now held by {} until {}", page.why, rfc3339(page.until()));
                    self.store.set_hold(&incident.key, now, Some(&page), &entry, &[])?;
                }
                None => {
                    let (events, wants) = self.page_events(incident, now)?;
                    let entry = format!("{} is over with the incident still open: paged now", held.why);
                    self.store.set_hold(&incident.key, now, None, &entry, &events)?;
                    tracing::warn!(key = %incident.key, held_by = %held.why, "the hold ended: paging the open incident");
                    self.wake.notify_one();
                    wanted.extend(wants);
                }
            }
        }
        Ok(wanted)
    }

    /// A hub Deployment as the watch saw it: its rollout (held within the grace) and its annotation silence.
    pub fn on_deployment(&self, state: &DeploymentState, now: SystemTime) -> Result<(), StoreError> {
        if let Some(rollout) = self.rollouts.update(state, now) {
            tracing::info!(hub = %state.hub, deployment = %state.deployment, generation = state.generation,
                grace = %humantime::format_duration(self.settings.rollout_grace), "a hub Deployment is rolling out: its pages wait out the grace");
            let entry = format!(
                "hub Deployment {} is rolling out (generation {}): pages held up to {} while its new pods start",
                rollout.deployment,
                rollout.generation,
                humantime::format_duration(self.settings.rollout_grace)
            );
            for incident in self.store.open_incidents()?.iter().filter(|i| i.hub == state.hub) {
                self.store.add_timeline(&incident.key, now, TimelineKind::Held, &entry)?;
            }
        }
        self.annotation_silence(state, now)
    }

    /// The annotations make, change or end the hub's annotation silence; a bad one is refused in the log.
    fn annotation_silence(&self, state: &DeploymentState, now: SystemTime) -> Result<(), StoreError> {
        let id = annotation_silence_id(&state.hub);
        let existing = self.store.silence(&id)?.filter(|s| s.is_active(now));
        let Some(until) = &state.silence_until else {
            if existing.is_some() {
                self.store.expire_silence(&id, now)?;
                tracing::info!(hub = %state.hub, "the silence annotation was removed: the silence ended");
            }
            return Ok(());
        };
        let request = SilenceRequest {
            hub: Some(state.hub.to_string()),
            ends_at: Some(until.clone()),
            reason: state.silence_reason.clone(),
            created_by: Some(format!("annotation on Deployment {}/{}", state.namespace, state.deployment)),
            ..SilenceRequest::default()
        };
        let hubs = [state.hub.clone()];
        match validate(&request, &hubs, id.clone(), SilenceSource::Annotation, now) {
            Ok(silence) => {
                let unchanged =
                    existing.as_ref().is_some_and(|e| e.ends_at == silence.ends_at && e.reason == silence.reason);
                if !unchanged {
                    let silence = Silence { starts_at: existing.map_or(now, |e| e.starts_at), ..silence };
                    start_silence(&self.store, &silence, now)?;
                    tracing::info!(hub = %state.hub, until = %rfc3339(silence.ends_at), "silenced by the Deployment's annotation");
                }
            }
            Err(refused) => {
                tracing::error!(hub = %state.hub, deployment = %state.deployment, %refused, "the Deployment's silence annotation is refused: nothing is silenced");
                if existing.is_some() {
                    self.store.expire_silence(&id, now)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn request(json: serde_json::Value) -> SilenceRequest {
        serde_json::from_value(json).unwrap()
    }

    fn check(json: serde_json::Value) -> Result<Silence, SilenceRefused> {
        validate(&request(json), &["temple".into(), "lab".into()], "s-1".into(), SilenceSource::Api, t(1_800_000_000))
    }

    #[test]
    fn a_good_silence_is_made_with_its_end() {
        let s = check(serde_json::json!({"hub": "temple", "kind": "hub_access", "duration": "2h", "reason": "upgrading", "created_by": "yuvi"})).unwrap();
        assert_eq!((s.hub.as_str(), s.kind, s.ends_at), ("temple", Some(IncidentKind::HubAccess), t(1_800_007_200)));
        let s =
            check(serde_json::json!({"hub": "lab", "ends_at": "2027-02-15T08:00:00+02:00", "reason": "move"})).unwrap();
        assert_eq!(rfc3339(s.ends_at), "2027-02-15T06:00:00Z");
        assert_eq!((s.kind, s.created_by.as_str()), (None, "unknown"));
        // Planned, weekly: 4 hours from a Saturday 22:00 (1_800_000_000 is a Friday), every week.
        let s = check(serde_json::json!({"hub": "lab", "starts_at": "2027-01-16T22:00:00Z", "duration": "4h",
            "every": "1w", "reason": "weekly upgrade slot"}))
        .unwrap();
        assert_eq!(
            (rfc3339(s.starts_at), rfc3339(s.ends_at)),
            ("2027-01-16T22:00:00Z".into(), "2027-01-17T02:00:00Z".into())
        );
        assert_eq!(s.every, Some(Duration::from_secs(7 * 24 * 3600)));
        assert!(!s.is_active(t(1_800_000_000)), "planned, not active yet");
    }

    #[test]
    fn bad_silences_are_refused_with_what_is_wrong() {
        use serde_json::json;
        let cases = [
            (
                json!({"hub": "nowhere", "duration": "2h", "reason": "x"}),
                "unknown hub \"nowhere\" (hubwatch watches: temple, lab)",
            ),
            (json!({"hub": "temple", "kind": "dask", "duration": "2h", "reason": "x"}), "unknown kind \"dask\""),
            (json!({"hub": "temple", "duration": "2h"}), "a reason is required"),
            (json!({"hub": "temple", "duration": "2h", "reason": "  "}), "a reason is required"),
            (
                json!({"hub": "temple", "ends_at": "2020-01-01T00:00:00Z", "reason": "x"}),
                "the end (2020-01-01T00:00:00Z) is in the past",
            ),
            (json!({"hub": "temple", "reason": "x"}), "an end is required"),
            (json!({"hub": "temple", "duration": "soon", "reason": "x"}), "duration \"soon\" is not a duration"),
            (json!({"hub": "temple", "duration": "2h", "ends_at": "2027-01-01T00:00:00Z", "reason": "x"}), "not both"),
            (json!({"hub": "temple", "duration": "200d", "reason": "x"}), "more than 90 days"),
            (json!({"duration": "2h", "reason": "x"}), "hub is required"),
            (
                json!({"hub": "temple", "starts_at": "saturday", "duration": "2h", "reason": "x"}),
                "starts_at \"saturday\"",
            ),
            (
                json!({"hub": "temple", "starts_at": "2027-01-16T22:00:00Z", "ends_at": "2027-01-16T21:00:00Z", "reason": "x"}),
                "the end (2027-01-16T21:00:00Z) is not after the start",
            ),
            (
                json!({"hub": "temple", "duration": "2h", "every": "30m", "reason": "x"}),
                "every \"30m\" is not a duration of at least 1h",
            ),
            (json!({"hub": "temple", "duration": "2d", "every": "1d", "reason": "x"}), "no shorter than the window"),
        ];
        for (json, expected) in cases {
            let refused = check(json.clone()).expect_err(&json.to_string()).to_string();
            assert!(refused.contains(expected), "{json}: {refused}");
        }
    }

    #[test]
    fn a_rollout_is_taken_once_per_generation_and_kept_for_its_grace_when_done() {
        let rollouts = Rollouts::default();
        let mut state = DeploymentState {
            hub: "temple".into(),
            namespace: "temple".into(),
            deployment: "hub".into(),
            generation: 3,
            rolling_out: true,
            silence_until: None,
            silence_reason: None,
        };
        assert_eq!(rollouts.update(&state, t(10)).map(|r| r.since), Some(t(10)));
        assert_eq!(rollouts.update(&state, t(20)), None, "the same rollout, seen again");
        assert_eq!(rollouts.all()[0].since, t(10), "its grace counts from when it was first seen");
        state.generation = 4;
        assert_eq!(rollouts.update(&state, t(30)).map(|r| r.since), Some(t(30)), "a new generation starts anew");
        state.rolling_out = false;
        assert_eq!(rollouts.update(&state, t(40)), None);
        assert_eq!(rollouts.all()[0].since, t(30), "done, and still within its grace (Hold::of ends it)");
    }
}
