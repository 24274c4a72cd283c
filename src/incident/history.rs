//! History at a glance: each hub's last 30 days, a day a cell (UTC days, today last), coloured by the
//! minutes of incident and of support tickets in it, as Gatus, Uptime Kuma and Statuspage draw them. Pure:
//! the store gives the spans, the pages draw the cells.

use super::availability::merged;
use crate::domain::{HubName, IncidentKind, TicketKind};
use crate::store::{IncidentRecord, Store, StoreError, Ticket};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days in a strip.
pub const DAYS: usize = 30;
const DAY: Duration = Duration::from_secs(86_400);
/// An incident this long in a day makes it a bad day, not a short blip.
const LONG_INCIDENT: Duration = Duration::from_secs(3600);

/// One day of a hub (or of one kind on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    pub start: SystemTime,
    /// Time covered by open incidents (impact start to impact end), overlaps counted once.
    pub incident: Duration,
    /// Time covered by open support tickets.
    pub ticket: Duration,
}

/// How a day is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayTone {
    Clear,
    Ticket,
    ShortIncident,
    LongIncident,
}

impl Day {
    pub fn tone(&self) -> DayTone {
        match (self.incident, self.ticket) {
            (i, _) if i >= LONG_INCIDENT => DayTone::LongIncident,
            (i, _) if !i.is_zero() => DayTone::ShortIncident,
            (_, t) if !t.is_zero() => DayTone::Ticket,
            _ => DayTone::Clear,
        }
    }
}

/// A span of trouble: from when to when (`None`: still going).
pub type Span = (SystemTime, Option<SystemTime>);

/// The last [`DAYS`] UTC days up to `now` (today last, counted until `now`).
pub fn days(incidents: &[Span], tickets: &[Span], now: SystemTime) -> Vec<Day> {
    let today =
        UNIX_EPOCH + DAY * (now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / DAY.as_secs()) as u32;
    (0..DAYS as u32)
        .rev()
        .map(|back| {
            let start = today - DAY * back;
            let end = (start + DAY).min(now);
            Day {
                start,
                incident: merged(incidents.iter().copied(), start, end),
                ticket: merged(tickets.iter().copied(), start, end),
            }
        })
        .collect()
}

/// The strip's words, for people who do not read colours: "no incidents or support tickets", or "incidents
/// on 2 days (1h 35m), support tickets on 1 day".
pub fn words(days: &[Day]) -> String {
    let incident_days: Vec<&Day> = days.iter().filter(|d| !d.incident.is_zero()).collect();
    let ticket_days = days.iter().filter(|d| d.incident.is_zero() && !d.ticket.is_zero()).count();
    let total: Duration = incident_days.iter().map(|d| d.incident).sum();
    let plural = |n: usize| if n == 1 { "day" } else { "days" };
    let mut parts = Vec::new();
    if !incident_days.is_empty() {
        let minutes = Duration::from_secs(total.as_secs() / 60 * 60);
        let length = if minutes.is_zero() {
            "under a minute".to_string()
        } else {
            humantime::format_duration(minutes).to_string()
        };
        parts.push(format!("incidents on {} {} ({length})", incident_days.len(), plural(incident_days.len())));
    }
    if ticket_days > 0 {
        parts.push(format!("support tickets on {ticket_days} more {}", plural(ticket_days)));
    }
    match parts.is_empty() {
        true => format!("last {DAYS} days: no incidents or support tickets"),
        false => format!("last {DAYS} days: {}", parts.join(", ")),
    }
}

/// What the strips are drawn from: every hub incident and support ticket of the last [`DAYS`] days, per hub
/// and per hub and kind (a cluster incident counts through its hubs' own).
#[derive(Debug, Default)]
pub struct Spans {
    pub hub: BTreeMap<HubName, (Vec<Span>, Vec<Span>)>,
    pub kind: BTreeMap<(HubName, IncidentKind), (Vec<Span>, Vec<Span>)>,
}

impl Spans {
    pub fn of(incidents: &[IncidentRecord], tickets: &[(Ticket, Option<SystemTime>)]) -> Spans {
        let mut spans = Spans::default();
        for incident in incidents.iter().filter(|i| i.cluster.is_none()) {
            let span = (incident.impact_start, incident.recovered_at);
            spans.hub.entry(incident.hub.clone()).or_default().0.push(span);
            spans.kind.entry((incident.hub.clone(), incident.kind)).or_default().0.push(span);
        }
        for (ticket, closed) in tickets {
            let span = (ticket.opened_at, *closed);
            spans.hub.entry(ticket.hub.clone()).or_default().1.push(span);
            let kind = IncidentKind::ALL.into_iter().find(|k| TicketKind::of(*k) == ticket.kind);
            if let Some(kind) = kind {
                spans.kind.entry((ticket.hub.clone(), kind)).or_default().1.push(span);
            }
        }
        spans
    }

    /// From the store, as of `now`.
    pub fn from_store(store: &Store, now: SystemTime) -> Result<Spans, StoreError> {
        let since = now.checked_sub(DAY * DAYS as u32 + DAY).unwrap_or(UNIX_EPOCH);
        Ok(Spans::of(&store.incidents_since(since)?, &store.tickets_since(since)?))
    }

    /// The days of `hub`.
    pub fn hub_days(&self, hub: &HubName, now: SystemTime) -> Vec<Day> {
        let (incidents, tickets) = self.hub.get(hub).map(|(i, t)| (i.as_slice(), t.as_slice())).unwrap_or_default();
        days(incidents, tickets, now)
    }

    /// The days of `kind` on `hub`.
    pub fn kind_days(&self, hub: &HubName, kind: IncidentKind, now: SystemTime) -> Vec<Day> {
        let key = (hub.clone(), kind);
        let (incidents, tickets) = self.kind.get(&key).map(|(i, t)| (i.as_slice(), t.as_slice())).unwrap_or_default();
        days(incidents, tickets, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn t(s: u64) -> SystemTime {
        // A midnight (UTC), then s seconds.
        UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + s)
    }

    #[test]
    fn each_day_counts_the_trouble_in_it_once_and_today_until_now() {
        let now = t(10 * H);
        let incidents = [(t(2 * H), Some(t(2 * H + 600))), (t(2 * H + 300), Some(t(2 * H + 900))), (t(9 * H), None)];
        let yesterday = (t(0) - Duration::from_secs(2 * H), Some(t(H)));
        let tickets = [yesterday];
        let strip = days(&[incidents[0], incidents[1], incidents[2], yesterday], &[], now);
        assert_eq!(strip.len(), DAYS);
        assert_eq!(strip[DAYS - 1].start, t(0), "today last");
        assert_eq!(strip[DAYS - 1].incident, Duration::from_secs(H + 900 + H), "overlaps once, the open one until now");
        assert_eq!(strip[DAYS - 2].incident, Duration::from_secs(2 * H), "a span across midnight splits");
        assert_eq!(strip[DAYS - 1].tone(), DayTone::LongIncident);
        let quiet = days(&[incidents[0]], &tickets, now);
        assert_eq!(
            (quiet[DAYS - 1].tone(), quiet[DAYS - 2].tone(), quiet[0].tone()),
            (DayTone::ShortIncident, DayTone::Ticket, DayTone::Clear)
        );
        assert_eq!(words(&quiet), "last 30 days: incidents on 1 day (10m), support tickets on 1 more day");
        assert_eq!(words(&days(&[], &[], now)), "last 30 days: no incidents or support tickets");
    }
}
