//! The incident manager: turns the detector's transitions into stored incidents, timeline entries and queued
//! PagerDuty events (trigger on open, a rate-limited follow-up trigger on a material change, resolve on
//! recovery), and after a restart hands the open incidents back to the detector.

pub mod list;
pub mod store;

use crate::config::{Config, IncidentsConfig};
use crate::detector::{Detector, IncidentKind, Symptoms, Transition};
use crate::notify::pagerduty::{self, EventContext};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use store::{EventAction, IncidentRecord, NewEvent, Store, StoreError};
use tokio::sync::Notify;
use url::Url;

pub struct IncidentManager {
    store: Arc<Store>,
    settings: IncidentsConfig,
    severity: &'static str,
    public_url: Url,
    hub_urls: HashMap<String, Url>,
    /// Wakes the notifier when an event is queued.
    wake: Arc<Notify>,
}

/// A stable key, also PagerDuty's dedup key: the hub, the kind and when it opened.
pub fn incident_key(hub: &str, kind: IncidentKind, opened: SystemTime) -> String {
    let seconds = opened.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{hub}-{}-{seconds}", kind.as_str())
}

fn who(symptoms: &Symptoms) -> String {
    symptoms
        .affected
        .iter()
        .filter(|(_, users)| !users.is_empty())
        .map(|(capability, users)| format!("{capability}: {}", users.keys().cloned().collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl IncidentManager {
    pub fn new(store: Arc<Store>, config: &Config, wake: Arc<Notify>) -> Self {
        IncidentManager {
            store,
            settings: config.incidents.clone(),
            severity: config.pagerduty.as_ref().map_or("critical", |p| p.severity.as_str()),
            public_url: config.public_url.clone(),
            hub_urls: config.hubs.iter().map(|h| (h.name.clone(), h.url.clone())).collect(),
            wake,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Hands the incidents still open in the store to the detector, so they are not opened (paged) again
    /// and are resolved when service is back.
    pub fn resume(&self, detector: &mut Detector, now: SystemTime) -> Result<usize, StoreError> {
        let open = self.store.open_incidents()?;
        for incident in &open {
            detector.resume(&incident.hub, incident.kind, incident.symptoms.clone(), now);
            tracing::info!(key = %incident.key, hub = %incident.hub, kind = incident.kind.as_str(), "resumed an open incident");
        }
        Ok(open.len())
    }

    fn open_key(&self, hub: &str, kind: IncidentKind) -> Result<Option<IncidentRecord>, StoreError> {
        Ok(self.store.open_incidents()?.into_iter().find(|i| i.hub == hub && i.kind == kind))
    }

    fn trigger(
        &self,
        key: &str,
        hub: &str,
        kind: IncidentKind,
        symptoms: &Symptoms,
        impact_start: SystemTime,
        now: SystemTime,
    ) -> NewEvent {
        let hub_url = self.hub_urls.get(hub).cloned().unwrap_or_else(|| self.public_url.clone());
        let incident_url =
            self.public_url.join(&format!("incidents/{key}")).unwrap_or_else(|_| self.public_url.clone());
        let context = EventContext {
            key,
            hub,
            hub_url: &hub_url,
            kind,
            symptoms,
            impact_start,
            threshold: self.settings.min_affected_users,
            window: self.settings.window,
            severity: self.severity,
            incident_url,
            diagnostics: None,
        };
        NewEvent { action: EventAction::Trigger, body: pagerduty::trigger(&context, now) }
    }

    pub fn handle(&self, transition: &Transition) -> Result<(), StoreError> {
        match transition {
            Transition::Opened { hub, kind, symptoms, at } => {
                let key = incident_key(hub, *kind, *at);
                let impact_start = symptoms.impact_start().unwrap_or(*at);
                let summary = pagerduty::summary(hub, *kind, symptoms);
                let record = IncidentRecord {
                    key: key.clone(),
                    hub: hub.clone(),
                    kind: *kind,
                    open: true,
                    impact_start,
                    opened_at: *at,
                    recovered_at: None,
                    symptoms: symptoms.clone(),
                    affected_ever: {
                        let mut ever = Default::default();
                        symptoms.merge_into(&mut ever);
                        ever
                    },
                    last_trigger_at: Some(*at),
                    pending_update: false,
                };
                let entry = format!(
                    "detected: {summary} (threshold {} users within {}); {}",
                    self.settings.min_affected_users,
                    humantime::format_duration(self.settings.window),
                    who(symptoms)
                );
                let trigger = self.trigger(&key, hub, *kind, symptoms, impact_start, *at);
                self.store.open_incident(&record, &entry, trigger)?;
                tracing::warn!(%key, %summary, "incident opened");
                self.wake.notify_one();
            }
            Transition::Updated { hub, kind, symptoms, material, at } => {
                let Some(incident) = self.open_key(hub, *kind)? else { return Ok(()) };
                let entry =
                    format!("affected users changed: {}; {}", pagerduty::summary(hub, *kind, symptoms), who(symptoms));
                let interval_passed = incident
                    .last_trigger_at
                    .is_none_or(|last| at.duration_since(last).is_ok_and(|d| d >= self.settings.update_interval));
                let trigger = (*material && interval_passed).then(|| {
                    self.trigger(
                        &incident.key,
                        hub,
                        *kind,
                        symptoms,
                        incident.impact_start.min(symptoms.impact_start().unwrap_or(incident.impact_start)),
                        *at,
                    )
                });
                let sends = trigger.is_some();
                self.store.update_incident(&incident.key, symptoms, *at, &entry, trigger, *material)?;
                tracing::info!(key = %incident.key, material, follow_up_sent = sends, "incident changed");
                if sends {
                    self.wake.notify_one();
                }
            }
            Transition::Recovered { hub, kind, at } => {
                let Some(incident) = self.open_key(hub, *kind)? else { return Ok(()) };
                let entry = format!(
                    "recovered: every probe user's last {} attempts succeeded; impact end",
                    self.settings.recovery_successes
                );
                self.store.recover_incident(
                    &incident.key,
                    *at,
                    &entry,
                    NewEvent { action: EventAction::Resolve, body: pagerduty::resolve(&incident.key) },
                )?;
                tracing::warn!(key = %incident.key, "incident recovered");
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Sends the follow-up triggers held back by the update interval once it has passed.
    pub fn flush_pending_updates(&self, now: SystemTime) -> Result<(), StoreError> {
        for incident in self.store.open_incidents()? {
            let due = incident
                .last_trigger_at
                .is_none_or(|last| now.duration_since(last).is_ok_and(|d| d >= self.settings.update_interval));
            if incident.pending_update && due {
                let trigger = self.trigger(
                    &incident.key,
                    &incident.hub,
                    incident.kind,
                    &incident.symptoms,
                    incident.impact_start,
                    now,
                );
                self.store.send_pending_update(&incident.key, now, trigger)?;
                self.wake.notify_one();
            }
        }
        Ok(())
    }
}
