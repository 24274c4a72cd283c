//! Responses read back: with a REST token, the leader reads each open, paged incident's PagerDuty incident
//! every `pagerduty.read_back_every` (one request each; a 429 ends the pass and the next waits as long as
//! PagerDuty asks, a call that fails or hangs past its deadline ends it too) and records what responders did: "acknowledged by NAME", "assigned to NAME", the
//! hand-offs, and a resolve by a person while the outage goes on — after which nothing is sent for the
//! incident again (a trigger would open a new PagerDuty incident) until it recovers and a new one pages.

use crate::clock::Clock;
use crate::config::StatusUpdatesConfig;
use crate::domain::{Response, ResponseChange};
use crate::http::HttpClient;
use crate::notify::pagerduty::Answer;
use crate::notify::rest::{Lookup, RestClient};
use crate::store::{HeldPage, IncidentRecord, Store, StoreError, TimelineKind, millis};
use crate::tasks::off_runtime;
use crate::timefmt::rfc3339;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Each REST request's deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a reading means for the incident: its timeline entries (each at when it happened) and, once it was
/// resolved in PagerDuty, the hold that keeps anything more from being sent.
pub fn read_back(
    incident: &IncidentRecord,
    response: &Response,
    now: SystemTime,
) -> (Vec<(SystemTime, TimelineKind, String)>, Option<HeldPage>) {
    let mut entries = Vec::new();
    let mut hold = None;
    for change in response.changes_since(incident.response.as_ref()) {
        match change {
            ResponseChange::Acknowledged(act) => {
                entries.push((act.at, TimelineKind::Acknowledged, format!("acknowledged in PagerDuty by {}", act.by)));
            }
            ResponseChange::Assigned { to, first } => {
                let verb = if first { "assigned" } else { "reassigned" };
                // Dated when read: a reassignment's time is in PagerDuty's log entries, not on the incident.
                entries.push((now, TimelineKind::Assigned, format!("{verb} to {} in PagerDuty", to.join(", "))));
            }
            ResponseChange::Unacknowledged => entries.push((
                now,
                TimelineKind::Acknowledged,
                "triggered again in PagerDuty: the acknowledgement timed out or was undone".to_string(),
            )),
            ResponseChange::Resolved(act) => {
                entries.push((
                    act.at,
                    TimelineKind::ResolvedInPagerDuty,
                    format!(
                        "resolved in PagerDuty by {} while hubwatch still sees the outage: nothing more is sent for \
                         it (a trigger would open a new PagerDuty incident); a failure after the hub recovers pages anew",
                        act.by
                    ),
                ));
                hold = Some(HeldPage {
                    why: format!("its PagerDuty incident was resolved by {} at {}", act.by, rfc3339(act.at)),
                    silence: None,
                    until_ms: millis(act.at),
                    fold: None,
                    resolved_in_pagerduty: true,
                });
            }
        }
    }
    (entries, hold)
}

/// The reader: a task of the leader.
pub struct ResponseReader {
    pub store: Arc<Store>,
    pub http: HttpClient,
    pub settings: StatusUpdatesConfig,
    pub clock: Clock,
    /// Each REST request's deadline ([`CALL_TIMEOUT`]).
    pub call_timeout: Duration,
}

impl ResponseReader {
    /// Passes until `stop`, which also ends a pass whose call is still waiting (a hung API never holds up a
    /// shutdown or a hand-over).
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let pass = tokio::select! {
                _ = stop.cancelled() => return,
                pass = self.read_all() => pass,
            };
            let wait = match pass {
                Err(Some(after)) => after.max(self.settings.read_back_every),
                _ => self.settings.read_back_every,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over the open, paged incidents; `Err(retry_after)` when PagerDuty rate-limited it, `Err(None)`
    /// when a call failed or hung (the API is down for every incident, not one: the next pass tries again).
    pub async fn read_all(&self) -> Result<(), Option<Duration>> {
        let store = self.store.clone();
        let open = match off_runtime(move || store.open_incidents()).await {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open incidents to read their responses back; next pass");
                return Ok(());
            }
        };
        // Held or folded incidents have no PagerDuty incident of their own (or one resolved already).
        for incident in open.into_iter().filter(|i| i.hold.is_none() && i.part_of.is_none()) {
            let Some(response) = self.read(&incident).await? else { continue };
            if incident.response.as_ref() == Some(&response) {
                continue;
            }
            let (entries, hold) = read_back(&incident, &response, self.clock.now());
            let store = self.store.clone();
            let key = incident.key.clone();
            let stored = off_runtime(move || store.set_response(&key, &response, &entries, hold.as_ref())).await;
            match stored {
                Ok(()) => tracing::info!(key = %incident.key, "read back what responders did in PagerDuty"),
                Err(e) => {
                    tracing::warn!(key = %incident.key, error = %e, "cannot record a response read back; next pass")
                }
            }
        }
        Ok(())
    }

    /// The incident's PagerDuty response, finding (and remembering) its PagerDuty incident first; `None` when
    /// PagerDuty has none yet or cannot say now.
    async fn read(&self, incident: &IncidentRecord) -> Result<Option<Response>, Option<Duration>> {
        let rest = RestClient { http: &self.http, settings: &self.settings, timeout: self.call_timeout };
        let key = incident.key.clone();
        let known = {
            let store = self.store.clone();
            off_runtime(move || store.pagerduty_incident(&key)).await.map_err(|e: StoreError| {
                tracing::warn!(error = %e, "cannot read the PagerDuty incident's id");
                None
            })?
        };
        let id = match known {
            Some(id) => id,
            None => match rest.find_incident(&incident.key).await {
                Lookup::Found(id) => {
                    let (store, key, found) = (self.store.clone(), incident.key.clone(), id.clone());
                    if let Err(e) = off_runtime(move || store.set_pagerduty_incident(&key, &found)).await {
                        tracing::warn!(error = %e, "cannot remember the PagerDuty incident's id");
                    }
                    id
                }
                Lookup::NotFound => return Ok(None),
                Lookup::Failed(answer) => return skip(&incident.key, answer),
            },
        };
        match rest.response(&id).await {
            Ok(response) => Ok(Some(response)),
            Err(answer) => skip(&incident.key, answer),
        }
    }
}

/// A failed read: a 429 ends the pass (`Err`, with how long PagerDuty asked to wait), and so does a call
/// that failed or hung (5xx, unreachable, past its deadline); a refusal of this one incident is logged and
/// the next incident read.
fn skip(key: &str, answer: Answer) -> Result<Option<Response>, Option<Duration>> {
    match answer {
        Answer::RateLimited(after) => {
            tracing::warn!(%key, ?after, "PagerDuty's REST API rate-limits reading responses back: waiting");
            Err(Some(after.unwrap_or(Duration::from_secs(60))))
        }
        Answer::Failed(why) => {
            tracing::warn!(%key, %why, "PagerDuty's REST API did not answer reading responses back; next pass");
            Err(None)
        }
        other => {
            tracing::warn!(%key, answer = ?other, "cannot read the response back from PagerDuty; next pass");
            Ok(None)
        }
    }
}
