//! The app with discovery: which hubs each generation probes (the configured ones, and those discovery found
//! or remembers, see [`crate::discovery::memory`]), when the set changes (the generation ends gracefully and
//! the next starts), and the "hub gone" signal of remembered hubs that vanished.

use super::App;
use crate::config::{Config, DiscoveryConfig, HubConfig};
use crate::discovery::{self, memory::Change};
use crate::domain::{Capability, HubName, RealUsers, SignalSource};
use crate::sync::lock;
use crate::tasks::off_runtime;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::discovery::memory::Memory;

/// How often the remembered hubs' state is told to the recorder (it is a state, sent again and again).
const GONE_EVERY: Duration = Duration::from_secs(15);

impl App {
    /// Probes until `stop`. With discovery, the hubs probed are the configured ones plus those discovery found
    /// or remembers; when that set changes, this generation stops gracefully (rounds clean up) and the next
    /// starts with the new set.
    pub(super) async fn probe(&self, stop: &CancellationToken) {
        let discovery = self.config.kubernetes.discovery.clone().zip(self.kube.clone());
        let memory = match &discovery {
            Some((settings, client)) => {
                let store = self.pipeline.store.clone();
                let remembered = off_runtime(move || store.discovered_hubs()).await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read the discovered hubs remembered; starting without them");
                    Vec::new()
                });
                let memory = Arc::new(Mutex::new(Memory::new(remembered)));
                self.look(client, settings, &memory).await;
                Some(memory)
            }
            None => None,
        };
        loop {
            let found = memory.as_ref().map(|m| lock(m).probed()).unwrap_or_default();
            // The generation's configuration shares every hub's settings (an `Arc` each) with the
            // configuration, the discovery memory and the probers: a copy of the list, never of the hubs.
            let generation = match found.is_empty() {
                true => self.config.clone(),
                false => {
                    let mut generation = (*self.config).clone();
                    generation.hubs.extend(found.iter().cloned());
                    Arc::new(generation)
                }
            };
            let (ended, changed) = (stop.child_token(), Arc::new(AtomicBool::new(false)));
            if let (Some((settings, client)), Some(memory)) = (discovery.clone(), &memory) {
                self.rediscover(client, settings, memory.clone(), found, changed.clone(), ended.clone());
            }
            self.generation(&generation, &ended, memory.as_ref()).await;
            ended.cancel();
            if !changed.load(Ordering::Relaxed) || stop.is_cancelled() {
                return;
            }
            let names: Vec<HubName> = memory
                .as_ref()
                .map(|m| lock(m).probed())
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.name.clone())
                .collect();
            tracing::info!(hubs = ?names, "the cluster's hubs changed: probing the new set");
        }
    }

    /// Looks again every `settings.every`; when the hubs to probe differ from `found`, says so in `changed`
    /// and ends the generation.
    fn rediscover(
        &self,
        client: kube::Client,
        settings: DiscoveryConfig,
        memory: Arc<Mutex<Memory>>,
        found: Vec<Arc<HubConfig>>,
        changed: Arc<AtomicBool>,
        ended: CancellationToken,
    ) {
        let app = self.looker();
        self.pipeline.tasks.supervise("discovery", move || {
            let (app, client, settings, memory, found, changed, ended) = (
                app.clone(),
                client.clone(),
                settings.clone(),
                memory.clone(),
                found.clone(),
                changed.clone(),
                ended.clone(),
            );
            async move {
                loop {
                    tokio::select! {
                        _ = ended.cancelled() => return,
                        _ = tokio::time::sleep(settings.every) => {}
                    }
                    app.look(&client, &settings, &memory).await;
                    if !discovery::same_hubs(&found, &lock(&memory).probed()) {
                        changed.store(true, Ordering::Relaxed);
                        ended.cancel();
                        return;
                    }
                }
            }
        });
    }

    fn looker(&self) -> Looker {
        Looker { config: self.config.clone(), store: self.pipeline.store.clone() }
    }

    async fn look(&self, client: &kube::Client, settings: &DiscoveryConfig, memory: &Arc<Mutex<Memory>>) {
        self.looker().look(client, settings, memory).await;
    }

    /// Tells the recorder, again and again, which remembered hubs are gone: their probe users cannot log in
    /// ("hub gone: …"), which pages like any outage; and which are there (nobody affected).
    pub(super) fn report_gone_hubs(
        &self,
        memory: Arc<Mutex<Memory>>,
        real_users: mpsc::Sender<RealUsers>,
        stop: CancellationToken,
    ) {
        self.pipeline.tasks.supervise("gone_hubs", move || {
            let (memory, real_users, stop) = (memory.clone(), real_users.clone(), stop.clone());
            async move {
                loop {
                    let updates = gone_signals(&lock(&memory));
                    for update in updates {
                        if real_users.send(update).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(GONE_EVERY) => {}
                    }
                }
            }
        });
    }
}

/// Every remembered hub's state as a signal on `login`: its probe users, each with why the hub is gone; and
/// nobody for each hub that left the memory (decommissioned or forgotten), so its signal clears — also in a
/// recorder that resumed the hub's incident after the set of hubs changed, which would otherwise keep it open
/// for a whole window.
fn gone_signals(memory: &Memory) -> Vec<RealUsers> {
    let signal = |hub: &HubName, users| RealUsers {
        hub: hub.clone(),
        source: SignalSource::HubGone,
        capability: Capability::Login,
        users,
    };
    let remembered = memory.states().map(|hub| {
        let users: BTreeMap<String, (String, SystemTime)> = match &hub.gone {
            Some((since, why)) => {
                let reason =
                    format!("hub gone: {why} (last seen {})", humantime::format_rfc3339_seconds(hub.last_seen));
                hub.users.iter().map(|u| (u.clone(), (reason.clone(), *since))).collect()
            }
            None => BTreeMap::new(),
        };
        signal(&hub.name, users)
    });
    let left = memory.left().map(|hub| signal(hub, BTreeMap::new()));
    remembered.chain(left).collect()
}

/// What a look needs, owned (the discovery task outlives a borrow of the app).
#[derive(Clone)]
struct Looker {
    config: Arc<Config>,
    store: Arc<crate::store::Store>,
}

impl Looker {
    /// One look: discover, take it into the memory (after dropping hubs an operator forgot), remember it.
    async fn look(&self, client: &kube::Client, settings: &DiscoveryConfig, memory: &Arc<Mutex<Memory>>) {
        let look =
            match discovery::discover(client, settings, &self.config.hubs, self.config.kubernetes.call_timeout).await {
                Ok(look) => look,
                Err(e) => {
                    tracing::warn!(error = %e, "hub discovery failed; the hubs known so far stay watched");
                    return;
                }
            };
        let store = self.store.clone();
        let stored = off_runtime(move || store.discovered_hubs()).await;
        let remembered = {
            let mut memory = lock(memory);
            if let Ok(stored) = &stored {
                memory.forget_missing(stored);
            }
            for change in memory.take(look, SystemTime::now()) {
                log(&change);
            }
            memory.remembered()
        };
        let store = self.store.clone();
        if let Err(e) = off_runtime(move || store.remember_discovered_hubs(&remembered)).await {
            tracing::error!(error = %e, "cannot remember the discovered hubs; retrying at the next look");
        }
    }
}

fn log(change: &Change) {
    match change {
        Change::Found(hub) => tracing::info!(%hub, "a hub was discovered"),
        Change::FoundInside(hub) => {
            tracing::warn!(%hub, "a hub was discovered with no public URL (no hubwatch.jupyter.org/url annotation, no Ingress to proxy-public): probing proxy-public inside the cluster, which skips DNS, the ingress and TLS")
        }
        Change::Gone { hub, why } => {
            tracing::error!(%hub, %why, "a discovered hub is gone: still probed and reported until it is back, decommissioned or forgotten")
        }
        Change::Back(hub) => tracing::info!(%hub, "a discovered hub that was gone is back"),
        Change::Decommissioned(hub) => tracing::info!(%hub, "a discovered hub was decommissioned: no longer watched"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DiscoveredHub;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_gone_hub_makes_its_probe_users_affected_until_it_leaves_the_memory_then_clears_at_every_pass() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let hub = |name: &str, gone: Option<(SystemTime, String)>| DiscoveredHub {
            name: name.into(),
            namespace: name.into(),
            url: format!("https://{name}.example.org/"),
            users: vec!["probe-1".into(), "probe-2".into()],
            last_seen: at(0),
            gone,
        };
        let temple = hub("temple", None);
        let chapel = hub("chapel", Some((at(60), "its namespace chapel is gone".into())));
        let mut memory = Memory::new(vec![temple.clone(), chapel]);

        let updates = gone_signals(&memory);
        let by_hub: BTreeMap<&str, &RealUsers> = updates.iter().map(|u| (u.hub.as_str(), u)).collect();
        assert!(by_hub["temple"].users.is_empty(), "a hub that is there affects nobody");
        let (reason, since) = &by_hub["chapel"].users["probe-2"];
        assert_eq!(reason, "hub gone: its namespace chapel is gone (last seen 2027-01-15T08:00:00Z)");
        assert_eq!((*since, by_hub["chapel"].users.len(), by_hub["chapel"].capability), (at(60), 2, Capability::Login));

        memory.forget_missing(&[temple]);
        // At every pass: the recorder of a generation started since may have resumed chapel's incident.
        for _ in 0..2 {
            let updates = gone_signals(&memory);
            let chapel: Vec<&RealUsers> = updates.iter().filter(|u| u.hub == "chapel").collect();
            assert!(chapel.len() == 1 && chapel[0].users.is_empty(), "a forgotten hub's signal clears: {updates:?}");
        }
    }
}
