//! One page per cause: hubs of one cluster that fail together are paged as one cluster incident.
//!
//! A clustered hub's new incident holds its page for `incidents.fold.within` ([`Hold::Fold`]). When
//! `min_hubs` such incidents of one kind, routed to one PagerDuty service, wait at once, one cluster incident
//! opens and pages for them all: they become its parts, recorded and shown as before and never paged on
//! their own. A hub that fails while it is open joins it with a follow-up; it resolves when its last part
//! recovers. A wait that ends without a fold pages the hub's incident as before (`review_holds`).

use super::{IncidentManager, incident_url};
use crate::config::{PageRoute, fingerprint};
use crate::domain::wording::{cluster_summary, summary, truncate, who};
use crate::domain::{Hold, HubName, IncidentKey, IncidentKind, Message, Page, PartNotice, Symptoms};
use crate::store::{FoldWrite, IncidentRecord, NewEvent, StoreError, TimelineKind};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The evidence a cluster incident's page carries, shared equally among its hubs so that the last hub's is
/// never the one cut: half of PagerDuty's event limit (512 KB), the rest for users and reasons.
const EVIDENCE_LIMIT: usize = 256 * 1024;

/// The hub incidents that may fold into one cluster incident: one cluster, one kind, one PagerDuty service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FoldGroup {
    cluster: String,
    kind: IncidentKind,
    /// The routing key's fingerprint (hubs paging different services never fold: each team keeps its page).
    service: Option<String>,
}

/// The cluster incident's symptoms: every failing part's, each user named `hub/user`.
pub fn cluster_symptoms(parts: &[IncidentRecord]) -> Symptoms {
    let mut symptoms = Symptoms::default();
    for part in parts.iter().filter(|p| p.open) {
        for (capability, users) in &part.symptoms.affected {
            let slot = symptoms.affected.entry(*capability).or_default();
            slot.extend(users.iter().map(|(user, failure)| (format!("{}/{user}", part.hub), failure.clone())));
        }
    }
    symptoms
}

impl IncidentManager {
    /// How a new incident of `kind` on `hub` is held when it may fold: until its cluster's other hubs have
    /// had `incidents.fold.within` to fail too.
    pub(super) fn fold_hold(&self, hub: &HubName, kind: IncidentKind, at: SystemTime) -> Option<Hold> {
        let fold = &self.settings.fold;
        if fold.min_hubs == 0 || kind == IncidentKind::Monitor {
            return None;
        }
        let cluster = self.config.hub(hub)?.cluster.clone()?;
        Some(Hold::Fold { cluster, until: at + fold.within })
    }

    fn fold_group(&self, hub: &HubName, cluster: &str, kind: IncidentKind) -> FoldGroup {
        let service = self.config.page_route(hub, Some(kind)).map(|r| fingerprint(r.routing_key));
        FoldGroup { cluster: cluster.to_string(), kind, service }
    }

    /// After every opening and every tick: the incidents waiting for their cluster join its open cluster
    /// incident, or make one when `min_hubs` of them wait at once; a cluster incident whose parts have all
    /// recovered (a restart between the two) resolves.
    pub fn review_folds(&self, now: SystemTime) -> Result<(), StoreError> {
        let open = self.store.open_incidents()?;
        let (mut clusters, mut adopted) = (BTreeMap::new(), BTreeMap::new());
        for incident in open.iter().filter(|i| i.cluster.is_some()) {
            let parts = self.store.parts(&incident.key)?;
            match (parts.iter().find(|p| p.open), &incident.cluster) {
                (Some(part), Some(cluster)) => {
                    clusters.insert(self.fold_group(&part.hub, cluster, incident.kind), (incident, parts));
                }
                (None, Some(cluster)) if parts.is_empty() && self.still_joinable(incident, now) => {
                    adopted.insert((cluster.clone(), incident.kind), (incident, parts));
                }
                _ => self.recover_cluster(incident, &parts, now)?,
            }
        }
        let mut waiting: BTreeMap<FoldGroup, Vec<IncidentRecord>> = BTreeMap::new();
        for incident in &open {
            if let Some(cluster) = incident.hold.as_ref().filter(|h| now < h.until()).and_then(|h| h.fold.as_ref()) {
                waiting
                    .entry(self.fold_group(&incident.hub, cluster, incident.kind))
                    .or_default()
                    .push(incident.clone());
            }
        }
        let min_hubs = self.settings.fold.min_hubs;
        for (group, joining) in waiting {
            match clusters.get(&group).or_else(|| adopted.get(&(group.cluster.clone(), group.kind))) {
                Some((cluster, parts)) => self.join(cluster, parts, &joining, now)?,
                None if min_hubs > 0 && joining.len() >= min_hubs => self.fold(&group, &joining, now)?,
                None => {}
            }
        }
        Ok(())
    }

    /// A cluster incident adopted from PagerDuty (it has no parts) waits `incidents.window` from its adoption
    /// for the hubs of it that still fail: their incidents need that long at most to open again.
    fn still_joinable(&self, cluster: &IncidentRecord, now: SystemTime) -> bool {
        cluster.last_trigger_at.is_some_and(|adopted| now < adopted + self.settings.window)
    }

    /// Opens the cluster incident of `parts` and pages it: one transaction with their folding.
    fn fold(&self, group: &FoldGroup, parts: &[IncidentRecord], now: SystemTime) -> Result<(), StoreError> {
        let key =
            IncidentKey::from(self.store.unused_key(&IncidentKey::for_cluster(&group.cluster, group.kind, now))?);
        let symptoms = cluster_symptoms(parts);
        let impact_start = parts.iter().map(|p| p.impact_start).min().unwrap_or(now);
        let (mut affected_ever, mut failures_ever) = (Default::default(), Symptoms::default());
        symptoms.merge_into(&mut affected_ever);
        symptoms.merge_failures_into(&mut failures_ever);
        let record = IncidentRecord {
            symptoms: symptoms.clone(),
            affected_ever,
            failures_ever,
            last_trigger_at: Some(now),
            cluster: Some(group.cluster.clone()),
            ..IncidentRecord::opened(&key, &HubName::cluster(&group.cluster), group.kind, impact_start, now)
        };
        let names: Vec<&str> = parts.iter().map(|p| p.hub.as_str()).collect();
        let fold = &self.settings.fold;
        let detected = format!(
            "{}: hubs {} of cluster {} failed within {} (incidents.fold: {} or more hubs page once); {}",
            cluster_summary(&group.cluster, parts.len(), group.kind, &symptoms),
            names.join(", "),
            group.cluster,
            humantime::format_duration(fold.within),
            fold.min_hubs,
            who(&symptoms)
        );
        let part_entry = format!(
            "folded into cluster incident {key} ({} hubs of cluster {} failing at once): paged there, not on its own",
            parts.len(),
            group.cluster
        );
        let mut events = vec![self.cluster_trigger(&record, parts, now)?];
        events.extend(self.opening_extras(&record, &parts[0].hub, now));
        let impact_entry = crate::domain::wording::earliest_failure(&symptoms);
        self.store.fold(&FoldWrite {
            cluster: &record,
            new: Some(&impact_entry),
            entries: &[(TimelineKind::Detected, detected)],
            parts: &parts.iter().map(|p| (p.key.clone(), part_entry.clone())).collect::<Vec<_>>(),
            events: &events,
            at: now,
        })?;
        tracing::warn!(%key, hubs = ?names, "hubs of one cluster failed together: one cluster incident paged for them");
        self.wake.notify_one();
        Ok(())
    }

    /// Adds `joining` to the open cluster incident (whose parts so far are `parts`), with a follow-up.
    fn join(
        &self,
        cluster: &IncidentRecord,
        parts: &[IncidentRecord],
        joining: &[IncidentRecord],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let all: Vec<IncidentRecord> = parts.iter().chain(joining).cloned().collect();
        let record = IncidentRecord { symptoms: cluster_symptoms(&all), ..cluster.clone() };
        let joined: Vec<String> = joining
            .iter()
            .map(|p| format!("{} ({})", summary(&p.hub, p.kind, &p.symptoms), who(&p.symptoms)))
            .collect();
        let entry = format!("joined by {}: a follow-up, not a new page", joined.join("; "));
        let part_entry = format!(
            "folded into cluster incident {}, open since {}: paged there as a follow-up, not on its own",
            cluster.key,
            crate::timefmt::rfc3339(cluster.opened_at)
        );
        let trigger = self.cluster_trigger(&record, &all, now)?;
        self.store.fold(&FoldWrite {
            cluster: &record,
            new: None,
            entries: &[(TimelineKind::Changed, entry)],
            parts: &joining.iter().map(|p| (p.key.clone(), part_entry.clone())).collect::<Vec<_>>(),
            events: &[trigger],
            at: now,
        })?;
        tracing::warn!(key = %cluster.key, joined = joining.len(), "hubs joined an open cluster incident");
        self.wake.notify_one();
        Ok(())
    }

    /// A part's symptoms changed (`entry` says how): the cluster incident's follow the failing parts', and a
    /// material change sends a follow-up once the update interval allows (else it is held back until then).
    pub(super) fn part_changed(
        &self,
        cluster_key: &IncidentKey,
        entry: &str,
        material: bool,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let Some(cluster) = self.store.incident(cluster_key)?.filter(|c| c.open) else { return Ok(()) };
        let parts = self.store.parts(cluster_key)?;
        let due = self.follow_up_due(&cluster, at);
        let symptoms = cluster_symptoms(&parts);
        let trigger = match material && due {
            true => Some(self.cluster_trigger(
                &IncidentRecord { symptoms: symptoms.clone(), ..cluster.clone() },
                &parts,
                at,
            )?),
            false => None,
        };
        let sends = trigger.is_some();
        self.store.update_incident(cluster_key, &symptoms, at, entry, None, trigger, material)?;
        if sends {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A part recovered: the cluster incident resolves with its last failing part, else says who still fails.
    pub(super) fn part_recovered(
        &self,
        cluster_key: &IncidentKey,
        hub: &HubName,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let Some(cluster) = self.store.incident(cluster_key)?.filter(|c| c.open) else { return Ok(()) };
        let parts = self.store.parts(cluster_key)?;
        let failing: Vec<&str> = parts.iter().filter(|p| p.open).map(|p| p.hub.as_str()).collect();
        if failing.is_empty() {
            return self.recover_cluster(&cluster, &parts, at);
        }
        let entry = format!("hub {hub} recovered; still failing: {}", failing.join(", "));
        self.store.update_incident(cluster_key, &cluster_symptoms(&parts), at, &entry, None, None, false)
    }

    /// The cluster incident is over (its last part recovered): its resolve, last status note and webhook.
    fn recover_cluster(
        &self,
        cluster: &IncidentRecord,
        parts: &[IncidentRecord],
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let hubs: Vec<&str> = parts.iter().map(|p| p.hub.as_str()).collect();
        let entry = match hubs.is_empty() {
            true => format!(
                "adopted from PagerDuty and no hub of it failed within {} (incidents.window): it ended while this \
                 state was away",
                humantime::format_duration(self.settings.window)
            ),
            false => format!("every hub of it recovered ({})", hubs.join(", ")),
        };
        let recovered = IncidentRecord { open: false, recovered_at: Some(at), ..cluster.clone() };
        let route_hub = self.cluster_route(cluster, parts.first());
        let events = self.resolve_events(&recovered, route_hub, at)?;
        self.store.recover_incident(&cluster.key, at, &entry, &events)?;
        tracing::warn!(key = %cluster.key, "cluster incident recovered");
        self.wake.notify_one();
        Ok(())
    }

    /// A part's diagnostics arrived: the cluster incident's next trigger carries them at once.
    pub(super) fn part_diagnostics(&self, part_key: &IncidentKey, at: SystemTime) -> Result<(), StoreError> {
        let Some(cluster_key) = self.store.incident(part_key)?.and_then(|p| p.part_of) else { return Ok(()) };
        let Some(cluster) = self.store.incident(&cluster_key)?.filter(|c| c.open) else { return Ok(()) };
        let parts = self.store.parts(&cluster_key)?;
        let trigger = self.cluster_trigger(&cluster, &parts, at)?;
        self.store.send_pending_update(&cluster_key, at, trigger)?;
        self.wake.notify_one();
        Ok(())
    }

    /// The hub a cluster incident's events are routed as: `part`'s, or (adopted, with no parts yet) the
    /// cluster's first configured hub's.
    pub(super) fn cluster_route<'a>(
        &'a self,
        cluster: &'a IncidentRecord,
        part: Option<&'a IncidentRecord>,
    ) -> &'a HubName {
        let first_configured = || self.config.hubs.iter().find(|h| h.cluster.is_some() && h.cluster == cluster.cluster);
        match part {
            Some(part) => &part.hub,
            None => first_configured().map_or(&cluster.hub, |h| &h.name),
        }
    }

    /// The cluster incident's trigger: its failing hubs' users and reasons, each hub's incident and evidence.
    pub(super) fn cluster_trigger(
        &self,
        cluster: &IncidentRecord,
        parts: &[IncidentRecord],
        now: SystemTime,
    ) -> Result<NewEvent, StoreError> {
        let failing: Vec<&IncidentRecord> = parts.iter().filter(|p| p.open).collect();
        let route_hub = self.cluster_route(cluster, failing.first().copied().or(parts.first()));
        let route = self.config.page_route(route_hub, Some(cluster.kind));
        // Each hub's evidence gets an equal share of the event, so the last hub's is never the one cut.
        let share = EVIDENCE_LIMIT / failing.len().max(1);
        let mut diagnostics = String::new();
        let mut listed = Vec::new();
        for part in &failing {
            let evidence = match self.store.diagnostics(&part.key)? {
                Some((_, text)) => text,
                None => self
                    .no_diagnostics
                    .get(&part.hub)
                    .copied()
                    .flatten()
                    .unwrap_or("being collected: on hubwatch's page of its incident")
                    .to_string(),
            };
            diagnostics.push_str(&format!(
                "=== hub {} (incident {}) ===\n{}\n\n",
                part.hub,
                part.key,
                truncate(&evidence, share)
            ));
            listed.push(PartNotice {
                hub: part.hub.clone(),
                incident: part.key.clone(),
                url: incident_url(&self.public_url, &part.key),
                summary: summary(&part.hub, part.kind, &part.symptoms),
                affected: who(&part.symptoms),
            });
        }
        let cluster_name = cluster.cluster.as_deref().unwrap_or(&cluster.hub);
        let page = Page {
            hub: cluster.hub.clone(),
            hub_url: self.public_url.clone(),
            kind: cluster.kind,
            summary: cluster_summary(cluster_name, failing.len(), cluster.kind, &cluster.symptoms),
            severity: PageRoute::severity_of(route.as_ref()),
            symptoms: cluster.symptoms.clone(),
            impact_start: cluster.impact_start,
            threshold: self.settings.min_affected_users,
            window: self.settings.window,
            incident_url: self.incident_url(&cluster.key),
            diagnostics,
            routing: route.as_ref().map(PageRoute::notice),
            parts: listed,
            at: now,
        };
        Ok(NewEvent::now(Message::Trigger(Box::new(page))).routed(route_hub, Some(cluster.kind)))
    }
}
