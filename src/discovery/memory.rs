//! What discovery remembers between looks (and, through the store, across restarts): a hub once found that
//! is no longer found — its Deployment deleted, its namespace gone, its token Secret gone — is an outage, not a
//! removal. It keeps being probed from its last known settings (while hubwatch still holds its token) and its
//! probe users count as affected ("hub gone: …"), so it pages like any outage. It leaves the memory only when
//! it is decommissioned (`hubwatch.jupyter.org/decommissioned: "true"` on its Deployment, before deleting it)
//! or an operator forgets it (`DELETE /api/v1/discovered-hubs/NAME`). Pure: time is an argument.

use super::Look;
use crate::config::HubConfig;
use crate::domain::HubName;
use crate::store::DiscoveredHub;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

/// What one look changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Found(HubName),
    /// Found, at a URL inside the cluster: no annotation or Ingress gives its public one.
    FoundInside(HubName),
    Gone {
        hub: HubName,
        why: String,
    },
    Back(HubName),
    Decommissioned(HubName),
}

#[derive(Debug, Default)]
pub struct Memory {
    hubs: BTreeMap<HubName, DiscoveredHub>,
    /// The settings (with the token) of each hub as last found by this process.
    configs: BTreeMap<HubName, Arc<HubConfig>>,
    /// The hubs that left the memory while this process ran (decommissioned or forgotten), unless found again:
    /// an incident of theirs that a new generation's recorder resumed is told they are over.
    left: BTreeSet<HubName>,
}

impl Memory {
    /// From what the store remembers (no settings yet: a hub gone before this process started is not probed,
    /// only reported gone).
    pub fn new(remembered: Vec<DiscoveredHub>) -> Self {
        Memory { hubs: remembered.into_iter().map(|h| (h.name.clone(), h)).collect(), ..Memory::default() }
    }

    /// Drops hubs an operator forgot (no longer in `stored`) unless they are found again.
    pub fn forget_missing(&mut self, stored: &[DiscoveredHub]) {
        let forgotten: Vec<HubName> =
            self.hubs.keys().filter(|name| !stored.iter().any(|s| s.name == **name)).cloned().collect();
        for name in forgotten {
            self.drop_hub(name);
        }
    }

    /// Drops `name`, noting that it left; whether it was remembered.
    fn drop_hub(&mut self, name: HubName) -> bool {
        self.configs.remove(&name);
        let dropped = self.hubs.remove(&name).is_some();
        if dropped {
            self.left.insert(name);
        }
        dropped
    }

    /// Takes in one look at `now`.
    pub fn take(&mut self, look: Look, now: SystemTime) -> Vec<Change> {
        let mut changes = Vec::new();
        for name in look.decommissioned {
            if self.drop_hub(name.clone()) {
                changes.push(Change::Decommissioned(name));
            }
        }
        for hub in look.hubs {
            self.left.remove(&hub.name);
            let previous = self.hubs.insert(hub.name.clone(), remembered(&hub, now));
            match previous {
                None if look.fallbacks.contains(&hub.name) => changes.push(Change::FoundInside(hub.name.clone())),
                None => changes.push(Change::Found(hub.name.clone())),
                Some(p) if p.gone.is_some() => changes.push(Change::Back(hub.name.clone())),
                Some(_) => {}
            }
            self.configs.insert(hub.name.clone(), Arc::new(hub));
        }
        for (name, hub) in self.hubs.iter_mut() {
            if hub.last_seen == now || hub.gone.is_some() {
                continue;
            }
            let why = look.unwatchable.get(name).cloned().unwrap_or_else(|| {
                format!("its Deployment (component=hub) is no longer in namespace {}", hub.namespace)
            });
            hub.gone = Some((now, why.clone()));
            changes.push(Change::Gone { hub: name.clone(), why });
        }
        changes
    }

    /// The hubs to probe: every one found, and every gone one whose settings this process still holds.
    pub fn probed(&self) -> Vec<Arc<HubConfig>> {
        self.configs.values().cloned().collect()
    }

    /// What to store.
    pub fn remembered(&self) -> Vec<DiscoveredHub> {
        self.hubs.values().cloned().collect()
    }

    /// Each remembered hub, and since when and why it is gone (`None`: it is there).
    pub fn states(&self) -> impl Iterator<Item = &DiscoveredHub> {
        self.hubs.values()
    }

    /// The hubs that left the memory while this process ran (decommissioned or forgotten) and were not found
    /// again.
    pub fn left(&self) -> impl Iterator<Item = &HubName> {
        self.left.iter()
    }
}

fn remembered(hub: &HubConfig, now: SystemTime) -> DiscoveredHub {
    DiscoveredHub {
        name: hub.name.clone(),
        namespace: hub.namespace.clone().unwrap_or_else(|| hub.name.to_string()),
        url: hub.url.to_string(),
        users: hub.users.clone(),
        last_seen: now,
        gone: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeSettings;
    use crate::domain::Secret;
    use std::collections::BTreeSet;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn hub(name: &str) -> HubConfig {
        let url = format!("https://{name}.example.org/").parse().unwrap();
        let users = vec!["probe-1".into(), "probe-2".into()];
        let hub = HubConfig::found(name, url, Secret::new("t"), users, ProbeSettings::default());
        HubConfig { namespace: Some(name.into()), ..hub }
    }

    fn look(hubs: &[&str], unwatchable: &[(&str, &str)], decommissioned: &[&str]) -> Look {
        Look {
            hubs: hubs.iter().map(|h| hub(h)).collect(),
            unwatchable: unwatchable.iter().map(|(h, why)| (HubName::new(h), why.to_string())).collect(),
            decommissioned: decommissioned.iter().map(|h| HubName::new(h)).collect::<BTreeSet<_>>(),
            fallbacks: BTreeSet::new(),
        }
    }

    #[test]
    fn a_hub_that_vanishes_is_gone_keeps_being_probed_and_comes_back() {
        let mut memory = Memory::default();
        assert_eq!(
            memory.take(look(&["lake", "sea"], &[], &[]), t(0)),
            [Change::Found("lake".into()), Change::Found("sea".into())]
        );
        let changes = memory.take(look(&["sea"], &[], &[]), t(60));
        assert_eq!(
            changes,
            [Change::Gone {
                hub: "lake".into(),
                why: "its Deployment (component=hub) is no longer in namespace lake".into()
            }]
        );
        assert_eq!(memory.probed().len(), 2, "still probed from its last settings");
        assert_eq!(memory.take(look(&["sea"], &[], &[]), t(120)), [], "said once");
        let lake = memory.states().find(|h| h.name == "lake").unwrap();
        assert_eq!(lake.gone.as_ref().map(|(since, _)| *since), Some(t(60)), "gone since the first look without it");
        assert_eq!(memory.take(look(&["lake", "sea"], &[], &[]), t(180)), [Change::Back("lake".into())]);
        assert!(memory.states().all(|h| h.gone.is_none()));
    }

    #[test]
    fn a_lost_token_secret_is_gone_with_its_reason_and_decommissioning_forgets() {
        let mut memory = Memory::default();
        memory.take(look(&["lake"], &[], &[]), t(0));
        let why = "Secret \"hubwatch\" has no key \"token\" (hubwatch's token)";
        assert_eq!(
            memory.take(look(&[], &[("lake", why)], &[]), t(60)),
            [Change::Gone { hub: "lake".into(), why: why.into() }]
        );
        assert_eq!(memory.take(look(&[], &[], &["lake"]), t(120)), [Change::Decommissioned("lake".into())]);
        assert!(memory.probed().is_empty() && memory.remembered().is_empty());
        assert_eq!(memory.left().collect::<Vec<_>>(), ["lake"], "it left the memory");
        memory.take(look(&["lake"], &[], &[]), t(180));
        assert_eq!(memory.left().count(), 0, "found again, it is remembered, not left");
    }

    #[test]
    fn after_a_restart_a_remembered_hub_not_found_is_gone_but_not_probed_and_an_operator_can_forget_it() {
        let mut before = Memory::default();
        before.take(look(&["lake"], &[], &[]), t(0));
        let mut after = Memory::new(before.remembered());
        let changes = after.take(look(&[], &[], &[]), t(600));
        assert!(matches!(&changes[..], [Change::Gone { hub, .. }] if hub == "lake"));
        assert!(after.probed().is_empty(), "no token held for it: reported gone, not probed");
        after.forget_missing(&[]);
        assert!(after.remembered().is_empty());
        assert_eq!(after.left().collect::<Vec<_>>(), ["lake"], "forgotten, it left the memory");
    }
}
