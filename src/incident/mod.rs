//! The incident manager: turns the detector's transitions into stored incidents, timeline entries and queued
//! PagerDuty events (trigger on open, a rate-limited follow-up trigger on a material change, resolve on
//! recovery), and after a restart hands the open incidents back to the detector.

pub mod availability;
pub mod backlog;
pub mod fold;
pub mod history;
pub mod holds;
pub mod notes;
pub mod reconcile;
pub mod recorder;
pub mod report;
pub mod responses;
pub mod sinks;

use crate::config::{Config, IncidentsConfig, PageRoute, StatusUpdatesConfig};
use crate::diagnostics::Diagnostics;
use crate::domain::wording::{earliest_failure, summary, who};
use crate::domain::{
    ChangeNotice, Hold, HubChange, HubName, IncidentKey, IncidentKind, Message, NoticeEvent, Page, Symptoms, Transition,
};
use crate::status::StatusBoard;
use crate::store::{DiagnosticsAttached, HeldPage, IncidentRecord, NewEvent, Store, StoreError, TimelineKind};
use crate::sync::lock;
use holds::Rollouts;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use url::Url;

pub struct IncidentManager {
    store: Arc<Store>,
    settings: IncidentsConfig,
    /// Routing, severity and priority per hub and kind (`Config::page_route`).
    config: Arc<Config>,
    /// Whether a webhook sink receives incidents and support tickets.
    webhook: bool,
    /// Hub Deployments mid-rollout (their pages wait out the grace).
    rollouts: Arc<Rollouts>,
    /// The latest template change per hub: an incident opened during the rollout that follows it shows it.
    recent_changes: std::sync::Mutex<HashMap<HubName, (SystemTime, String)>>,
    public_url: Url,
    hub_urls: HashMap<HubName, Url>,
    /// Per hub: why no diagnostics are collected, or `None` when they are.
    no_diagnostics: HashMap<HubName, Option<&'static str>>,
    /// How long a trigger waits for its diagnostics.
    diagnostics_wait: Duration,
    /// Wakes the notifier when an event is queued.
    wake: Arc<Notify>,
    /// Status notes on the PagerDuty incident, when configured.
    status_updates: Option<StatusUpdatesConfig>,
    /// What the probes see now (for the status notes).
    board: Arc<StatusBoard>,
}

/// What storing a transition did: the incident it touched (if any), and the diagnostics its trigger waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    pub key: Option<IncidentKey>,
    pub wanted: Option<DiagnosticsWanted>,
}

/// Diagnostics to collect for an incident whose trigger is waiting for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticsWanted {
    pub key: IncidentKey,
    pub hub: HubName,
    pub kind: IncidentKind,
    pub users: BTreeSet<String>,
}

/// hubwatch's page for the incident `key` (the link every event and note carries).
pub fn incident_url(public_url: &Url, key: &IncidentKey) -> Url {
    public_url.join(&format!("incidents/{key}")).unwrap_or_else(|_| public_url.clone())
}

impl IncidentManager {
    pub fn new(store: Arc<Store>, config: &Arc<Config>, wake: Arc<Notify>) -> Self {
        IncidentManager {
            store,
            settings: config.incidents.clone(),
            config: config.clone(),
            webhook: config.webhook.is_some(),
            rollouts: Arc::default(),
            recent_changes: Default::default(),
            public_url: config.public_url(),
            hub_urls: config.hubs.iter().map(|h| (h.name.clone(), h.url.clone())).collect(),
            no_diagnostics: config
                .hubs
                .iter()
                .map(|h| {
                    let why = match (config.kubernetes.enabled, &h.namespace) {
                        (false, _) => Some("not collected: Kubernetes awareness is off (kubernetes.enabled)"),
                        (true, None) => Some("not collected: the hub has no namespace in hubwatch's config"),
                        (true, Some(_)) => None,
                    };
                    (h.name.clone(), why)
                })
                .collect(),
            diagnostics_wait: config.kubernetes.diagnostics_wait,
            wake,
            status_updates: config.pagerduty.as_ref().and_then(|p| p.status_updates.clone()),
            board: Arc::new(StatusBoard::default()),
        }
    }

    /// The rollouts the hub Deployment watches report (shared: they outlive a restarted recorder).
    pub fn with_rollouts(mut self, rollouts: Arc<Rollouts>) -> Self {
        self.rollouts = rollouts;
        self
    }

    /// The status board the status notes quote ("what the probes see now").
    pub fn with_status_board(mut self, board: Arc<StatusBoard>) -> Self {
        self.board = board;
        self
    }

    fn incident_url(&self, key: &IncidentKey) -> Url {
        incident_url(&self.public_url, key)
    }

    /// No diagnostics for any hub (the Kubernetes client could not be set up), saying why on every page.
    pub fn without_diagnostics(mut self, why: &'static str) -> Self {
        for reason in self.no_diagnostics.values_mut() {
            *reason = Some(why);
        }
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The hub whose routing an incident's events follow: its own, or a cluster incident's first part's.
    fn route_hub(&self, incident: &IncidentRecord) -> Result<HubName, StoreError> {
        Ok(match incident.cluster {
            Some(_) => self.cluster_route(incident, self.store.parts(&incident.key)?.first()).clone(),
            None => incident.hub.clone(),
        })
    }

    /// Whether `incident`'s next follow-up trigger may go at `at`: `update_interval` after its last trigger.
    fn follow_up_due(&self, incident: &IncidentRecord, at: SystemTime) -> bool {
        incident
            .last_trigger_at
            .is_none_or(|last| at.duration_since(last).is_ok_and(|d| d >= self.settings.update_interval))
    }

    fn open_key(&self, hub: &HubName, kind: IncidentKind) -> Result<Option<IncidentRecord>, StoreError> {
        Ok(self.store.open_incidents()?.into_iter().find(|i| i.hub == hub && i.kind == kind))
    }

    /// A trigger for the incident. Where diagnostics are collected it carries the latest ones (if any) and
    /// waits up to `diagnostics_wait` for fresh ones; the caller asks for them with the returned request.
    fn trigger(
        &self,
        key: &IncidentKey,
        hub: &HubName,
        kind: IncidentKind,
        symptoms: &Symptoms,
        impact_start: SystemTime,
        now: SystemTime,
    ) -> Result<(NewEvent, Option<DiagnosticsWanted>), StoreError> {
        // Where diagnostics are collected: the earlier ones (if any) and a note that fresh ones are coming.
        let (diagnostics, wanted) = match self.no_diagnostics.get(hub).copied().flatten() {
            Some(why) => (why.to_string(), None),
            None => {
                let pending = format!(
                    "being collected: not ready within {}; they follow in an update of this alert and on hubwatch's page",
                    humantime::format_duration(self.diagnostics_wait)
                );
                let text = match self.store.diagnostics(key)? {
                    Some((_, earlier)) => format!("{pending}\n\nEarlier ones:\n{earlier}"),
                    None => pending,
                };
                (text, self.diagnostics_wanted(key, hub, kind, symptoms))
            }
        };
        let hub_url = self.hub_urls.get(hub).cloned().unwrap_or_else(|| self.public_url.clone());
        let route = self.config.page_route(hub, Some(kind));
        let page = Page {
            hub: hub.clone(),
            hub_url,
            kind,
            summary: summary(hub, kind, symptoms),
            severity: PageRoute::severity_of(route.as_ref()),
            symptoms: symptoms.clone(),
            impact_start,
            threshold: self.settings.min_affected_users,
            window: self.settings.window,
            incident_url: self.incident_url(key),
            diagnostics,
            routing: route.as_ref().map(PageRoute::notice),
            parts: Vec::new(),
            at: now,
        };
        let hold_until = wanted.is_some().then(|| now + self.diagnostics_wait);
        let event = NewEvent::now(Message::Trigger(Box::new(page))).held(hold_until).routed(hub, Some(kind));
        Ok((event, wanted))
    }

    /// The diagnostics to collect for the incident `key`, where they are collected.
    fn diagnostics_wanted(
        &self,
        key: &IncidentKey,
        hub: &HubName,
        kind: IncidentKind,
        symptoms: &Symptoms,
    ) -> Option<DiagnosticsWanted> {
        self.no_diagnostics.get(hub).copied().flatten().is_none().then(|| DiagnosticsWanted {
            key: key.clone(),
            hub: hub.clone(),
            kind,
            users: symptoms.users().into_iter().map(String::from).collect(),
        })
    }

    /// Everything that pages `incident` now: its trigger and [`Self::opening_extras`]; with the diagnostics the
    /// trigger waits for.
    fn page_events(
        &self,
        incident: &IncidentRecord,
        now: SystemTime,
    ) -> Result<(Vec<NewEvent>, Option<DiagnosticsWanted>), StoreError> {
        let (trigger, wanted) =
            self.trigger(&incident.key, &incident.hub, incident.kind, &incident.symptoms, incident.impact_start, now)?;
        let mut events = vec![trigger];
        events.extend(self.opening_extras(incident, &incident.hub, now));
        Ok((events, wanted))
    }

    /// What goes with an incident's first trigger: the priority to set on it (when a rule gives one) and the
    /// webhook; routed as `route_hub`'s pages are.
    fn opening_extras(&self, incident: &IncidentRecord, route_hub: &HubName, now: SystemTime) -> Vec<NewEvent> {
        let kind = incident.kind;
        let route = self.config.page_route(route_hub, Some(kind));
        let mut events = Vec::new();
        if let Some((priority, rule)) = route.as_ref().and_then(|r| r.priority.clone()) {
            events.push(NewEvent::now(Message::Priority { name: priority, rule }).routed(route_hub, Some(kind)));
        }
        let severity = PageRoute::severity_of(route.as_ref());
        let url = self.incident_url(&incident.key);
        let opened = sinks::incident_notice(NoticeEvent::IncidentOpened, incident, &url, severity, now);
        events.extend(self.webhook(opened).map(|e| e.routed(route_hub, Some(kind))));
        events
    }

    /// Puts collected diagnostics where they belong: the incident's record and timeline, and PagerDuty (the
    /// waiting trigger, or a follow-up when it went out without them).
    pub fn attach_diagnostics(
        &self,
        key: &IncidentKey,
        diagnostics: &Diagnostics,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let text = diagnostics.render();
        let failed = diagnostics.sections.len() - diagnostics.commands().len();
        let mut entry = diagnostics.commands().join("; ");
        if failed > 0 {
            let sections = if failed == 1 { "section" } else { "sections" };
            entry.push_str(&format!(" ({failed} {sections} not collected)"));
        }
        if let Some(cause) = diagnostics.likely_cause() {
            entry.push_str(&format!("; likely cause: {cause}"));
        }
        let attached = self.store.attach_diagnostics(key, &text, now, &entry)?;
        tracing::info!(%key, sections = diagnostics.sections.len(), failed, ?attached, "diagnostics attached");
        if attached != DiagnosticsAttached::Stored {
            self.wake.notify_one();
        }
        self.part_diagnostics(key, now)
    }

    /// Stores the transition and queues its PagerDuty event.
    pub fn handle(&self, transition: &Transition) -> Result<Handled, StoreError> {
        match transition {
            Transition::Opened { hub, kind, symptoms, at } => self.open(hub, *kind, symptoms, *at),
            Transition::Updated { hub, kind, symptoms, material, relapse, at } => {
                self.update(hub, *kind, symptoms, *material, *relapse, *at)
            }
            Transition::Recovered { hub, kind, at } => self.recover(hub, *kind, *at),
        }
    }

    /// A new incident with its first timeline entries and its trigger.
    fn open(
        &self,
        hub: &HubName,
        kind: IncidentKind,
        symptoms: &Symptoms,
        at: SystemTime,
    ) -> Result<Handled, StoreError> {
        let key = IncidentKey::from(self.store.unused_key(&IncidentKey::for_hub(hub, kind, at))?);
        let impact_start = symptoms.impact_start().unwrap_or(at);
        let summary = summary(hub, kind, symptoms);
        let mut affected_ever = Default::default();
        symptoms.merge_into(&mut affected_ever);
        let record = IncidentRecord {
            symptoms: symptoms.clone(),
            affected_ever,
            failures_ever: symptoms.clone(),
            last_trigger_at: Some(at),
            ..IncidentRecord::opened(&key, hub, kind, impact_start, at)
        };
        let detected = format!(
            "{summary} (threshold {} users within {}); {}",
            self.settings.min_affected_users,
            humantime::format_duration(self.settings.window),
            who(symptoms)
        );
        let mut entries = vec![(TimelineKind::Detected, detected)];
        let hold = match self.hold(hub, kind, at)? {
            Some(hold) => Some(hold),
            None => self.fold_hold(hub, kind, at),
        };
        let folding = matches!(hold, Some(Hold::Fold { .. }));
        let (record, events, wanted) = match hold {
            None => {
                let (events, wanted) = self.page_events(&record, at)?;
                (record, events, wanted)
            }
            Some(hold) => {
                entries.extend(self.held_entries(hub, &hold));
                tracing::warn!(%key, %summary, held_by = %hold.describe(), "incident opened, its page held");
                // Diagnostics are still collected: the incident's page shows them while it is held.
                let wanted = self.diagnostics_wanted(&key, hub, kind, symptoms);
                let record = IncidentRecord { hold: Some(HeldPage::of(&hold)), last_trigger_at: None, ..record };
                (record, Vec::new(), wanted)
            }
        };
        let entries: Vec<(TimelineKind, &str)> = entries.iter().map(|(k, e)| (*k, e.as_str())).collect();
        self.store.open_incident(&record, &earliest_failure(symptoms), &entries, &events)?;
        if !events.is_empty() {
            tracing::warn!(%key, %summary, "incident opened");
            self.wake.notify_one();
        }
        // Folded at once when it is the hub that makes the cluster's count; a failure here is retried every tick.
        if folding && let Err(e) = self.review_folds(at) {
            tracing::error!(%key, error = %e, "cannot fold the cluster's incidents yet; retrying");
        }
        Ok(Handled { key: Some(key), wanted })
    }

    /// New symptoms of the open incident; a follow-up trigger when users or capabilities were added and the
    /// update interval has passed (else it is held back until then). A relapse says so in its entry.
    fn update(
        &self,
        hub: &HubName,
        kind: IncidentKind,
        symptoms: &Symptoms,
        material: bool,
        relapse: Option<std::time::Duration>,
        at: SystemTime,
    ) -> Result<Handled, StoreError> {
        let Some(incident) = self.open_key(hub, kind)? else { return Ok(Handled::default()) };
        let mut entry = format!("{}; {}", summary(hub, kind, symptoms), who(symptoms));
        if let Some(healthy) = relapse {
            entry = format!(
                "failing again after {} healthy (within incidents.keep_open_for, {}): the same incident goes on, \
                 no new page; {entry}",
                humantime::format_duration(std::time::Duration::from_secs(healthy.as_secs())),
                humantime::format_duration(self.settings.keep_open_for)
            );
        }
        if let Some(cluster_key) = &incident.part_of {
            let earlier = symptoms.impact_start().filter(|start| *start < incident.impact_start);
            let impact_text = earliest_failure(symptoms);
            let impact = earlier.map(|start| (start, impact_text.as_str()));
            self.store.update_incident(&incident.key, symptoms, at, &entry, impact, None, false)?;
            self.part_changed(cluster_key, &format!("hub {hub}: {entry}"), material, at)?;
            return Ok(Handled { key: Some(incident.key), wanted: None });
        }
        let interval_passed = self.follow_up_due(&incident, at);
        let held = incident.hold.is_some() || self.hold(hub, kind, at)?.is_some();
        let (trigger, wanted) = if material && interval_passed && !held {
            let impact_start = incident.impact_start.min(symptoms.impact_start().unwrap_or(incident.impact_start));
            let (trigger, wanted) = self.trigger(&incident.key, hub, kind, symptoms, impact_start, at)?;
            (Some(trigger), wanted)
        } else {
            (None, None)
        };
        let sends = trigger.is_some();
        let earlier_impact = symptoms
            .impact_start()
            .filter(|start| *start < incident.impact_start)
            .map(|start| (start, earliest_failure(symptoms)));
        let impact = earlier_impact.as_ref().map(|(start, text)| (*start, text.as_str()));
        self.store.update_incident(&incident.key, symptoms, at, &entry, impact, trigger, material)?;
        tracing::info!(key = %incident.key, material, follow_up_sent = sends, "incident changed");
        if sends {
            self.wake.notify_one();
        }
        Ok(Handled { key: Some(incident.key), wanted })
    }

    /// The incident is over: recorded with its resolve (and its last status note) in one transaction.
    fn recover(&self, hub: &HubName, kind: IncidentKind, at: SystemTime) -> Result<Handled, StoreError> {
        let Some(incident) = self.open_key(hub, kind)? else { return Ok(Handled::default()) };
        let mut entry = format!(
            "nobody is affected any more: every probe user's last {} attempts succeeded",
            self.settings.recovery_successes
        );
        if !self.settings.keep_open_for.is_zero() {
            entry.push_str(&format!(
                ", and it stayed so for {} (incidents.keep_open_for) before the resolve",
                humantime::format_duration(self.settings.keep_open_for)
            ));
        }
        let recovered = IncidentRecord { open: false, recovered_at: Some(at), ..incident.clone() };
        let events = match (&incident.hold, &incident.part_of) {
            (Some(held), _) => {
                entry.push_str(&format!("; it recovered while held by {}: nothing was sent to PagerDuty", held.why));
                Vec::new()
            }
            (None, Some(cluster_key)) => {
                entry.push_str(&format!("; its cluster incident {cluster_key} resolves with the last of its hubs"));
                Vec::new()
            }
            (None, None) => self.resolve_events(&recovered, hub, at)?,
        };
        self.store.recover_incident(&incident.key, at, &entry, &events)?;
        if let Some(cluster_key) = &incident.part_of {
            self.part_recovered(cluster_key, hub, at)?;
        }
        tracing::warn!(key = %incident.key, paged = incident.hold.is_none(), "incident recovered");
        self.wake.notify_one();
        Ok(Handled { key: Some(incident.key), wanted: None })
    }

    /// What a paged incident's recovery sends: the resolve, the last status note (it quotes the incident as
    /// recovered), and the webhook; routed as `hub`'s pages are.
    fn resolve_events(
        &self,
        recovered: &IncidentRecord,
        hub: &HubName,
        at: SystemTime,
    ) -> Result<Vec<NewEvent>, StoreError> {
        let kind = recovered.kind;
        let mut events = vec![NewEvent::now(Message::Resolve).routed(hub, Some(kind))];
        if self.status_updates.is_some() {
            events.push(self.status_note(recovered, hub, at)?);
        }
        let severity = self.config.severity(hub, kind);
        let url = self.incident_url(&recovered.key);
        let resolved = sinks::incident_notice(NoticeEvent::IncidentResolved, recovered, &url, severity, at);
        events.extend(self.webhook(resolved).map(|e| e.routed(hub, Some(kind))));
        Ok(events)
    }

    /// Queues a Change Event for a hub Deployment's new pod template (once per Deployment generation).
    pub fn record_change(&self, change: &HubChange, now: SystemTime) -> Result<(), StoreError> {
        let HubChange { hub, namespace, deployment, generation, changes } = change;
        let hub_url = self.hub_urls.get(hub).cloned().unwrap_or_else(|| self.public_url.clone());
        let more = if changes.len() > 1 { format!(" (and {} more)", changes.len() - 1) } else { String::new() };
        let summary =
            format!("hub Deployment {deployment} changed: {}{more}", changes.first().map_or("", String::as_str));
        let key = format!("change-{hub}-{deployment}-{generation}");
        let text = format!(
            "hub Deployment {deployment} changed (namespace {namespace}, generation {generation}): {}",
            changes.join("; ")
        );
        lock(&self.recent_changes).insert(hub.clone(), (now, text.clone()));
        let notice = ChangeNotice {
            hub: hub.clone(),
            hub_url,
            summary,
            namespace: namespace.clone(),
            deployment: deployment.clone(),
            generation: *generation,
            changes: changes.clone(),
            at: now,
        };
        let event = NewEvent::now(Message::Change(notice));
        if self.store.queue_change(&key, now, event.routed(hub, None))? {
            tracing::info!(%hub, %deployment, generation, ?changes, "the hub changed: change event queued");
            // A change during an incident is part of its story (a fix rolled out, or the cause).
            for incident in self.store.open_incidents()?.iter().filter(|i| i.hub == *hub) {
                self.store.add_timeline(&incident.key, now, TimelineKind::HubChanged, &text)?;
            }
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Says in the incident's timeline that a decision about it was stored late, and why.
    pub fn note_late(
        &self,
        key: &IncidentKey,
        decided: SystemTime,
        now: SystemTime,
        error: &str,
    ) -> Result<(), StoreError> {
        let late = now.duration_since(decided).unwrap_or_default();
        let entry = format!(
            "decided at {} but stored {} later: hubwatch could not write its state database ({error}); nothing \
             was paged for it until then",
            crate::timefmt::rfc3339(decided),
            humantime::format_duration(std::time::Duration::from_secs(late.as_secs()))
        );
        self.store.add_timeline(key, now, TimelineKind::StateDelayed, &entry)
    }

    /// A status note for `incident` as of `now`: what changed since the last one (or since detection); routed
    /// as `route_hub`'s pages are.
    fn status_note(
        &self,
        incident: &IncidentRecord,
        route_hub: &HubName,
        now: SystemTime,
    ) -> Result<NewEvent, StoreError> {
        let since = self.store.last_status_update(&incident.key)?.unwrap_or(incident.opened_at);
        let since_last: Vec<_> = self.store.timeline(&incident.key)?.into_iter().filter(|e| e.at > since).collect();
        let hub = self.board.hub(&incident.hub);
        let text = notes::status_note(&notes::NoteInput {
            incident,
            probes: hub.as_ref(),
            since_last: &since_last,
            incident_url: &self.incident_url(&incident.key),
            now,
        });
        let note = NewEvent::now(Message::Note { content: text });
        Ok(note.routed(route_hub, Some(incident.kind)))
    }

    /// Queues a status note for every open incident whose last one (or whose detection) is
    /// `status_update_every` ago. Without `pagerduty.api_token` there are none.
    pub fn queue_status_updates(&self, now: SystemTime) -> Result<usize, StoreError> {
        let Some(settings) = &self.status_updates else { return Ok(0) };
        let mut queued = 0;
        // A held incident, or one folded into a cluster's, has no PagerDuty incident of its own to note on.
        for incident in self.store.open_incidents()?.into_iter().filter(|i| i.hold.is_none() && i.part_of.is_none()) {
            let last = self.store.last_status_update(&incident.key)?.unwrap_or(incident.opened_at);
            if now.duration_since(last).is_ok_and(|d| d >= settings.every) {
                let route_hub = self.route_hub(&incident)?;
                let note = self.status_note(&incident, &route_hub, now)?;
                self.store.queue_status_note(&incident.key, now, note)?;
                tracing::info!(key = %incident.key, "status note queued");
                queued += 1;
            }
        }
        if queued > 0 {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Sends the follow-up triggers held back by the update interval once it has passed; returns the
    /// diagnostics they wait for.
    pub fn flush_pending_updates(&self, now: SystemTime) -> Result<Vec<DiagnosticsWanted>, StoreError> {
        let mut wanted = Vec::new();
        for incident in self.store.open_incidents()? {
            let due = self.follow_up_due(&incident, now);
            if incident.pending_update && due && incident.cluster.is_some() {
                let parts = self.store.parts(&incident.key)?;
                let trigger = self.cluster_trigger(&incident, &parts, now)?;
                self.store.send_pending_update(&incident.key, now, trigger)?;
                self.wake.notify_one();
            } else if incident.pending_update
                && due
                && incident.hold.is_none()
                && self.hold(&incident.hub, incident.kind, now)?.is_none()
            {
                let (trigger, wants) = self.trigger(
                    &incident.key,
                    &incident.hub,
                    incident.kind,
                    &incident.symptoms,
                    incident.impact_start,
                    now,
                )?;
                self.store.send_pending_update(&incident.key, now, trigger)?;
                self.wake.notify_one();
                wanted.extend(wants);
            }
        }
        Ok(wanted)
    }
}
