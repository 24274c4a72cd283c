//! Why a page is held back: an engineer's silence ("expected, don't page") or a hub Deployment mid-rollout
//! (a short grace). While held, an incident is detected, recorded and shown; nothing goes to PagerDuty.

use super::{HubName, IncidentKind};
use std::time::{Duration, SystemTime};

/// Where a silence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceSource {
    /// `POST /api/v1/silences` (or `hubwatch silence add`).
    Api,
    /// The `hubwatch.jupyter.org/silence-until` annotation on the hub's Deployment.
    Annotation,
}

impl SilenceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceSource::Api => "api",
            SilenceSource::Annotation => "annotation",
        }
    }

    pub fn parse(text: &str) -> Option<SilenceSource> {
        [SilenceSource::Api, SilenceSource::Annotation].into_iter().find(|s| s.as_str() == text)
    }
}

/// "Expected, don't page" for a hub (and one kind, or every kind) from `starts_at` until `ends_at` — planned
/// maintenance when that is ahead — and, with `every`, again every `every` after (a weekly upgrade slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: String,
    pub hub: HubName,
    /// `None`: every kind.
    pub kind: Option<IncidentKind>,
    /// The first window.
    pub starts_at: SystemTime,
    pub ends_at: SystemTime,
    /// Recurring: the window again every `every` from `starts_at`, until the silence is expired.
    pub every: Option<Duration>,
    pub reason: String,
    pub created_by: String,
    pub source: SilenceSource,
}

impl Silence {
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.window_at(now).is_some()
    }

    /// The window `now` falls in, if any.
    pub fn window_at(&self, now: SystemTime) -> Option<(SystemTime, SystemTime)> {
        let (start, end) = self.next_window(now)?;
        (start <= now).then_some((start, end))
    }

    /// The window `now` falls in, else the next one (`None`: none is left).
    pub fn next_window(&self, now: SystemTime) -> Option<(SystemTime, SystemTime)> {
        let length = self.ends_at.duration_since(self.starts_at).unwrap_or_default();
        let elapsed = now.duration_since(self.starts_at).unwrap_or_default();
        let start = match self.every.filter(|every| !every.is_zero()) {
            Some(every) if now > self.starts_at => {
                let periods = (elapsed.as_secs_f64() / every.as_secs_f64()).floor() as u32;
                let start = self.starts_at + every * periods;
                if now < start + length { start } else { start + every }
            }
            _ => self.starts_at,
        };
        (now < start + length).then_some((start, start + length))
    }

    /// This silence as its window at `now` (its one window when it does not recur): what holds a page.
    pub fn as_window(&self, now: SystemTime) -> Silence {
        let (starts_at, ends_at) = self.window_at(now).unwrap_or((self.starts_at, self.ends_at));
        Silence { starts_at, ends_at, ..self.clone() }
    }

    /// Whether it holds back pages of `kind` on `hub` at `now`.
    pub fn covers(&self, hub: &HubName, kind: IncidentKind, now: SystemTime) -> bool {
        self.hub == *hub && self.kind.is_none_or(|k| k == kind) && self.is_active(now)
    }

    /// What it says in a timeline: `silence ID (REASON, by WHO)`.
    pub fn describe(&self) -> String {
        format!("silence {} ({}, by {})", self.id, self.reason, self.created_by)
    }
}

/// A hub Deployment whose new pods are not yet available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub hub: HubName,
    pub deployment: String,
    pub generation: i64,
    /// When hubwatch first saw it mid-rollout.
    pub since: SystemTime,
}

/// What the hub Deployment watch sees whenever a hub Deployment is listed or changes: whether it is
/// mid-rollout (new pods not yet available) and what its silence annotations say (checked by the incident
/// side, like a silence from the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentState {
    pub hub: HubName,
    pub namespace: String,
    pub deployment: String,
    pub generation: i64,
    pub rolling_out: bool,
    /// `hubwatch.jupyter.org/silence-until`, as written.
    pub silence_until: Option<String>,
    /// `hubwatch.jupyter.org/silence-reason`, as written.
    pub silence_reason: Option<String>,
}

/// Why an incident's page is held back now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Silence(Silence),
    /// Until its grace ends (`until`), even if the rollout completes sooner.
    Rollout {
        rollout: Rollout,
        until: SystemTime,
    },
    /// A hub of `cluster` just failed: its page waits until `until` for other hubs of the cluster to fail
    /// too (`incidents.fold`), which would page one cluster incident for them all.
    Fold {
        cluster: String,
        until: SystemTime,
    },
}

impl Hold {
    /// The first hold of `kind` on `hub` at `now`: a silence (the one that ends last), else a rollout within
    /// its grace.
    pub fn of(
        hub: &HubName,
        kind: IncidentKind,
        silences: &[Silence],
        rollouts: &[Rollout],
        grace: std::time::Duration,
        now: SystemTime,
    ) -> Option<Hold> {
        let silence =
            silences.iter().filter(|s| s.covers(hub, kind, now)).map(|s| s.as_window(now)).max_by_key(|s| s.ends_at);
        if let Some(silence) = silence {
            return Some(Hold::Silence(silence));
        }
        rollouts
            .iter()
            .filter(|r| r.hub == *hub)
            .map(|r| Hold::Rollout { rollout: r.clone(), until: r.since + grace })
            .find(|h| matches!(h, Hold::Rollout { until, .. } if now < *until))
    }

    /// When it ends, if nothing changes.
    pub fn until(&self) -> SystemTime {
        match self {
            Hold::Silence(s) => s.ends_at,
            Hold::Rollout { until, .. } | Hold::Fold { until, .. } => *until,
        }
    }

    /// One line for the timeline and the pages.
    pub fn describe(&self) -> String {
        match self {
            Hold::Silence(s) => s.describe(),
            Hold::Rollout { rollout, .. } => format!(
                "the rollout of hub Deployment {} (generation {}), within its grace",
                rollout.deployment, rollout.generation
            ),
            Hold::Fold { cluster, .. } => {
                format!("a wait for other hubs of cluster {cluster} to fail too (incidents.fold)")
            }
        }
    }

    /// The silence's id, when it is one.
    pub fn silence_id(&self) -> Option<&str> {
        match self {
            Hold::Silence(s) => Some(&s.id),
            Hold::Rollout { .. } | Hold::Fold { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn silence(id: &str, kind: Option<IncidentKind>, ends: u64) -> Silence {
        Silence {
            id: id.into(),
            hub: "temple".into(),
            kind,
            starts_at: t(100),
            ends_at: t(ends),
            every: None,
            reason: "upgrading".into(),
            created_by: "yuvi".into(),
            source: SilenceSource::Api,
        }
    }

    #[test]
    fn a_silence_covers_its_hub_and_kind_while_active() {
        let s = silence("a", Some(IncidentKind::HubAccess), 200);
        assert!(s.covers(&"temple".into(), IncidentKind::HubAccess, t(150)));
        assert!(!s.covers(&"temple".into(), IncidentKind::DaskGateway, t(150)), "another kind");
        assert!(!s.covers(&"other".into(), IncidentKind::HubAccess, t(150)), "another hub");
        assert!(!s.covers(&"temple".into(), IncidentKind::HubAccess, t(200)), "ended");
        assert!(!s.covers(&"temple".into(), IncidentKind::HubAccess, t(99)), "not begun");
        assert!(silence("b", None, 200).covers(&"temple".into(), IncidentKind::DaskGateway, t(150)), "every kind");
    }

    #[test]
    fn a_weekly_window_holds_every_week_and_nothing_outside_it() {
        const HOUR: u64 = 3600;
        const WEEK: u64 = 7 * 24 * HOUR;
        // Saturdays 22:00 to Sundays 02:00, from a first Saturday at t(WEEK).
        let weekly = Silence {
            starts_at: t(WEEK),
            ends_at: t(WEEK + 4 * HOUR),
            every: Some(Duration::from_secs(WEEK)),
            ..silence("w", None, 0)
        };
        let held = |at: u64| weekly.covers(&"temple".into(), IncidentKind::HubAccess, t(at));
        assert!(!held(WEEK - 1), "planned: not before its first window");
        assert!(held(WEEK) && held(WEEK + 4 * HOUR - 1), "the first window");
        assert!(!held(WEEK + 4 * HOUR) && !held(2 * WEEK - 1), "between windows");
        assert!(held(2 * WEEK + HOUR) && held(9 * WEEK + 3 * HOUR), "every week after");
        assert!(!held(9 * WEEK + 4 * HOUR), "and nothing outside it");
        assert_eq!(weekly.next_window(t(WEEK + 5 * HOUR)), Some((t(2 * WEEK), t(2 * WEEK + 4 * HOUR))));
        let hold = Hold::of(
            &"temple".into(),
            IncidentKind::HubAccess,
            std::slice::from_ref(&weekly),
            &[],
            Duration::ZERO,
            t(3 * WEEK + HOUR),
        );
        assert_eq!(hold.map(|h| h.until()), Some(t(3 * WEEK + 4 * HOUR)), "held until this window's end");
        let once = Silence { every: None, ..weekly.clone() };
        assert!(
            !once.covers(&"temple".into(), IncidentKind::HubAccess, t(2 * WEEK + HOUR)),
            "a one-off window does not recur"
        );
        assert_eq!(once.next_window(t(WEEK + 5 * HOUR)), None);
    }

    #[test]
    fn a_silence_wins_over_a_rollout_and_a_rollout_holds_only_within_its_grace() {
        let rollout = Rollout { hub: "temple".into(), deployment: "hub".into(), generation: 4, since: t(100) };
        let grace = Duration::from_secs(300);
        let silences = [silence("short", None, 150), silence("long", None, 180)];
        let held = Hold::of(
            &"temple".into(),
            IncidentKind::HubAccess,
            &silences,
            std::slice::from_ref(&rollout),
            grace,
            t(120),
        );
        assert_eq!(held.as_ref().and_then(Hold::silence_id), Some("long"), "the silence that ends last");
        let held =
            Hold::of(&"temple".into(), IncidentKind::HubAccess, &[], std::slice::from_ref(&rollout), grace, t(399));
        assert_eq!(held.map(|h| h.until()), Some(t(400)));
        assert_eq!(
            Hold::of(&"temple".into(), IncidentKind::HubAccess, &[], &[rollout], grace, t(400)),
            None,
            "grace over"
        );
    }
}
