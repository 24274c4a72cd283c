//! Availability per hub and incident kind over a period, from the incident history: the share of the period
//! without an open incident, the incidents, the minutes of impact (from the first user's failure to the
//! recovery), the mean time from impact start to the page PagerDuty accepted, and the mean time from impact
//! start to recovery. What a team reports once a month. Pure: the history and the period in, rows out.

use crate::domain::{HubName, IncidentKind};
use crate::store::IncidentRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq)]
pub struct Availability {
    pub hub: HubName,
    pub kind: IncidentKind,
    pub since: SystemTime,
    /// 0..1: the share of the period without an open incident.
    pub availability: f64,
    pub incidents: usize,
    pub impact_minutes: f64,
    /// Over the incidents whose first page PagerDuty accepted (retention may have pruned older pages).
    pub mean_time_to_page: Option<Duration>,
    /// Over the incidents that recovered.
    pub mean_time_to_resolve: Option<Duration>,
}

/// One row per hub in `hubs` (and per hub an incident names) and kind: `hub_access` always, `dask_gateway`
/// for hubs in `with_gateway` or with such an incident. `first_pages` maps an incident key to when its first
/// trigger was accepted.
pub fn availability(
    hubs: &[(HubName, bool)],
    incidents: &[IncidentRecord],
    first_pages: &HashMap<String, SystemTime>,
    since: SystemTime,
    now: SystemTime,
) -> Vec<Availability> {
    let mut keys: BTreeSet<(HubName, IncidentKind)> = BTreeSet::new();
    for (hub, with_gateway) in hubs {
        keys.insert((hub.clone(), IncidentKind::HubAccess));
        if *with_gateway {
            keys.insert((hub.clone(), IncidentKind::DaskGateway));
        }
    }
    let mut by_key: BTreeMap<(HubName, IncidentKind), Vec<&IncidentRecord>> = BTreeMap::new();
    // A cluster incident counts through its hubs' own incidents (each hub's once), not as a hub of its own.
    let counted = incidents.iter().filter(|i| i.cluster.is_none());
    for incident in counted.filter(|i| i.recovered_at.is_none_or(|end| end > since) && i.opened_at < now) {
        keys.insert((incident.hub.clone(), incident.kind));
        by_key.entry((incident.hub.clone(), incident.kind)).or_default().push(incident);
    }
    keys.into_iter()
        .map(|(hub, kind)| {
            let of_key = by_key.remove(&(hub.clone(), kind)).unwrap_or_default();
            row(hub, kind, &of_key, first_pages, since, now)
        })
        .collect()
}

/// From the store: every hub in `hubs` (name, has a gateway) over `[since, now]`.
pub fn from_store(
    store: &crate::store::Store,
    hubs: &[(HubName, bool)],
    since: SystemTime,
    now: SystemTime,
) -> Result<Vec<Availability>, crate::store::StoreError> {
    Ok(availability(hubs, &store.all_incidents()?, &store.first_pages()?, since, now))
}

impl Availability {
    /// The row as `hubwatch availability --output json` and `/api/v1/availability` give it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "hub": self.hub,
            "kind": self.kind.as_str(),
            "since": crate::timefmt::rfc3339(self.since),
            "availability": self.availability,
            "incidents": self.incidents,
            "impact_minutes": self.impact_minutes,
            "mean_time_to_page_seconds": self.mean_time_to_page.map(|d| d.as_secs_f64()),
            "mean_time_to_resolve_seconds": self.mean_time_to_resolve.map(|d| d.as_secs_f64()),
        })
    }

    /// "99.583%".
    pub fn percent(&self) -> String {
        format!("{:.3}%", self.availability * 100.0)
    }
}

/// A mean duration as people read it: "4m 12s", "—" when there is none.
pub fn shown(duration: Option<Duration>) -> String {
    match duration {
        Some(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
        None => "—".to_string(),
    }
}

fn row(
    hub: HubName,
    kind: IncidentKind,
    incidents: &[&IncidentRecord],
    first_pages: &HashMap<String, SystemTime>,
    since: SystemTime,
    now: SystemTime,
) -> Availability {
    let period = now.duration_since(since).unwrap_or_default();
    let open: Duration = merged(incidents.iter().map(|i| (i.opened_at, i.recovered_at)), since, now);
    let impact: Duration = merged(incidents.iter().map(|i| (i.impact_start, i.recovered_at)), since, now);
    let to_page = incidents
        .iter()
        // A hub's incident folded into a cluster incident was paged by that one.
        .filter_map(|i| {
            Some(
                first_pages
                    .get(i.part_of.as_ref().unwrap_or(&i.key).as_str())?
                    .duration_since(i.impact_start)
                    .unwrap_or_default(),
            )
        });
    let to_resolve = incidents
        .iter()
        .filter_map(|i| i.recovered_at.map(|end| end.duration_since(i.impact_start).unwrap_or_default()));
    Availability {
        hub,
        kind,
        since,
        availability: if period.is_zero() { 1.0 } else { 1.0 - open.as_secs_f64() / period.as_secs_f64() },
        incidents: incidents.len(),
        impact_minutes: impact.as_secs_f64() / 60.0,
        mean_time_to_page: mean(to_page),
        mean_time_to_resolve: mean(to_resolve),
    }
}

/// The time the intervals cover within `[since, now]`, counting an overlap once (an open interval ends now).
pub(super) fn merged(
    intervals: impl Iterator<Item = (SystemTime, Option<SystemTime>)>,
    since: SystemTime,
    now: SystemTime,
) -> Duration {
    let mut spans: Vec<(SystemTime, SystemTime)> = intervals
        .map(|(start, end)| (start.max(since), end.unwrap_or(now).min(now)))
        .filter(|(start, end)| start < end)
        .collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(SystemTime, SystemTime)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e.duration_since(s).unwrap_or_default();
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e.duration_since(s).unwrap_or_default();
    }
    total
}

fn mean(durations: impl Iterator<Item = Duration>) -> Option<Duration> {
    let (sum, count) = durations.fold((Duration::ZERO, 0u32), |(sum, n), d| (sum + d, n + 1));
    (count > 0).then(|| sum / count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IncidentKey;

    const HOUR: u64 = 3600;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn incident(
        key: &str,
        hub: &str,
        kind: IncidentKind,
        impact: u64,
        opened: u64,
        end: Option<u64>,
    ) -> IncidentRecord {
        IncidentRecord {
            open: end.is_none(),
            recovered_at: end.map(at),
            ..IncidentRecord::opened(&IncidentKey::from(key), &HubName::new(hub), kind, at(impact), at(opened))
        }
    }

    #[test]
    fn a_month_with_two_outages_and_one_still_open() {
        // 30 days; temple: a 1-hour outage (impact from 10 minutes before it opened) and one still open for the
        // last 2 hours; chapel: nothing; a gateway outage that started before the period counts from its start.
        let since = at(0);
        let now = at(30 * 24 * HOUR);
        let incidents = [
            incident("t1", "temple", IncidentKind::HubAccess, 10 * HOUR - 600, 10 * HOUR, Some(11 * HOUR)),
            incident(
                "t2",
                "temple",
                IncidentKind::HubAccess,
                30 * 24 * HOUR - 2 * HOUR,
                30 * 24 * HOUR - 2 * HOUR,
                None,
            ),
            incident("old", "temple", IncidentKind::HubAccess, 0, 0, Some(0)),
            incident("g1", "temple", IncidentKind::DaskGateway, 0, 0, Some(HOUR)),
        ];
        let pages = HashMap::from([
            ("t1".to_string(), at(10 * HOUR + 30)),
            ("t2".to_string(), at(30 * 24 * HOUR - 2 * HOUR + 90)),
        ]);
        let hubs = [("temple".into(), false), ("chapel".into(), false)];
        let rows = availability(&hubs, &incidents, &pages, since, now);
        let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.hub.as_str(), r.kind.as_str())).collect();
        assert_eq!(names, [("chapel", "hub_access"), ("temple", "hub_access"), ("temple", "dask_gateway")]);

        let chapel = &rows[0];
        assert_eq!((chapel.availability, chapel.incidents, chapel.impact_minutes), (1.0, 0, 0.0));
        assert_eq!((chapel.mean_time_to_page, chapel.mean_time_to_resolve), (None, None));

        let temple = &rows[1];
        assert_eq!(temple.incidents, 2, "the one that ended before the period is not counted");
        let open_hours = 3.0;
        assert!((temple.availability - (1.0 - open_hours / (30.0 * 24.0))).abs() < 1e-9, "{}", temple.availability);
        assert!((temple.impact_minutes - (70.0 + 120.0)).abs() < 1e-9, "{}", temple.impact_minutes);
        assert_eq!(temple.mean_time_to_page, Some(Duration::from_secs((630 + 90) / 2)));
        assert_eq!(temple.mean_time_to_resolve, Some(Duration::from_secs(70 * 60)), "only the recovered one");

        let gateway = &rows[2];
        assert_eq!((gateway.incidents, gateway.impact_minutes), (1, 60.0));
        assert_eq!(gateway.mean_time_to_page, None, "no page on record");
    }

    #[test]
    fn overlapping_intervals_count_once() {
        let covered =
            merged([(at(0), Some(at(100))), (at(50), Some(at(150))), (at(200), None)].into_iter(), at(0), at(300));
        assert_eq!(covered, Duration::from_secs(150 + 100));
    }
}
