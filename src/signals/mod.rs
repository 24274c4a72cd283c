//! Real-user signals: users whose server pods are stuck or crashing are affected users too ([`pods`] says
//! when), and so are users the hub's own logs show failing ([`logs`], followed by [`follow`]). One watch per hub namespace on its user pods (`component=singleuser-server`, the user from the
//! `hub.jupyter.org/username` annotation) and, when the hub has a Dask Gateway, on the gateway's cluster pods
//! (label `gateway.dask.org/cluster`; their user is the DaskCluster's `spec.username`, because the gateway's
//! Kubernetes backend does not label pods with the user). The affected set per capability goes to the
//! detector whenever it changes; pods are re-evaluated every few seconds, since "Pending too long" becomes
//! true with time alone.

pub mod certificates;
pub mod changes;
pub mod follow;
pub mod logs;
pub mod losses;
pub mod peers;
pub mod pods;

use crate::domain::{Capability, HubName, RealUsers, SignalSource};
use crate::kubeapi::{
    DASK_CLUSTER_LABEL, USER_POD_SELECTOR, USERNAME_ANNOTATION, daskcluster_resource, event_last_seen,
};
use crate::redact::Redactor;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use losses::{Losses, StopRequests};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often pods are looked at again without a change.
const EVALUATE_EVERY: Duration = Duration::from_secs(10);

/// The pods a watch knows, kept from its events: a re-list replaces them whole once it is complete; until
/// the first is, nothing is said (an empty list is not "nobody is affected").
#[derive(Default)]
struct Pods {
    known: HashMap<String, Pod>,
    listing: HashMap<String, Pod>,
    synced: bool,
    failing: bool,
}

impl Pods {
    /// Takes one event; returns the pod it changed (and whether it was deleted), outside of a re-list.
    fn take(
        &mut self,
        event: Result<Event<Pod>, watcher::Error>,
        hub: &HubName,
        selector: &str,
    ) -> Option<(Pod, bool)> {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // The watcher retries with backoff; until then the last known pods stand.
                if !self.failing {
                    tracing::warn!(%hub, selector, error = %e, "cannot watch pods; retrying");
                    self.failing = true;
                }
                return None;
            }
        };
        if std::mem::take(&mut self.failing) {
            tracing::info!(%hub, selector, "watching pods again");
        }
        let name = |pod: &Pod| pod.metadata.name.clone().unwrap_or_default();
        match event {
            Event::Init => self.listing.clear(),
            Event::InitApply(pod) => {
                self.listing.insert(name(&pod), pod);
            }
            Event::InitDone => {
                self.known = std::mem::take(&mut self.listing);
                self.synced = true;
            }
            Event::Apply(pod) => {
                self.known.insert(name(&pod), pod.clone());
                return Some((pod, false));
            }
            Event::Delete(pod) => {
                self.known.remove(&name(&pod));
                return Some((pod, true));
            }
        }
        None
    }
}

/// A user's server pod gone or ended by the cluster: seen, to be judged (see [`losses`]).
fn saw_loss(pod: &Pod, deleted: bool, losses: &mut Losses, own_users: &dyn Fn(&str) -> bool) {
    let user = pod.metadata.annotations.as_ref().and_then(|a| a.get(USERNAME_ANNOTATION));
    if let (Some(user), Some(loss)) = (user.filter(|u| !own_users(u)), pods::loss(pod, deleted)) {
        losses.saw(user, loss, SystemTime::now());
    }
}

/// What one watch needs.
#[derive(Clone)]
pub struct Watch {
    pub client: kube::Client,
    pub hub: HubName,
    pub namespace: String,
    pub pending_after: Duration,
    pub call_timeout: Duration,
    /// Pod and event messages are the cluster's words: redacted before they become evidence.
    pub redactor: Arc<Redactor>,
    /// How long a user whose server was lost stays affected (`incidents.window`).
    pub lost_for: Duration,
    /// The hub's stop requests, from its log: what tells a stop from a loss.
    pub stops: Arc<StopRequests>,
    /// How long after a server went it is judged ([`losses::GRACE`]).
    pub loss_grace: Duration,
    /// Users whose servers hubwatch stops itself (round probe users, first-login users): never lost.
    pub own_users: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Watch {
    /// Watches the hub's user pods (and Dask cluster pods when `dask`) until `shutdown`.
    pub async fn run(self, dask: bool, updates: mpsc::Sender<RealUsers>, shutdown: CancellationToken) {
        let users = self.clone().watch(USER_POD_SELECTOR, Capability::Server, updates.clone(), shutdown.clone());
        if dask {
            let clusters = self.clone().watch(DASK_CLUSTER_LABEL, Capability::DaskGateway, updates, shutdown);
            tokio::join!(users, clusters);
        } else {
            users.await;
        }
    }

    async fn watch(
        self,
        selector: &str,
        capability: Capability,
        updates: mpsc::Sender<RealUsers>,
        shutdown: CancellationToken,
    ) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let stream = watcher::watcher(api, watcher::Config::default().labels(selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut pods = Pods::default();
        let mut losses = Losses::default();
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut sent: Option<BTreeMap<String, SystemTime>> = None;
        let mut evaluate = tokio::time::interval(EVALUATE_EVERY);
        loop {
            let judgement = losses.due_in(SystemTime::now(), self.loss_grace).unwrap_or(EVALUATE_EVERY);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = evaluate.tick() => {}
                _ = tokio::time::sleep(judgement) => {}
                event = stream.next() => match event {
                    None => return,
                    Some(event) => {
                        if let Some((pod, deleted)) = pods.take(event, &self.hub, selector)
                            && capability == Capability::Server
                        {
                            saw_loss(&pod, deleted, &mut losses, self.own_users.as_ref());
                        }
                    }
                },
            }
            if !pods.synced {
                continue;
            }
            let (mut users, pending) = self.affected(&pods.known, capability, &mut owners).await;
            let now = SystemTime::now();
            losses.judge(now, self.loss_grace, &self.stops);
            for (user, lost) in losses.current(now, self.lost_for) {
                users.entry(user).or_insert(lost);
            }
            let changed: BTreeMap<String, SystemTime> =
                users.iter().map(|(u, (_, since))| (u.clone(), *since)).collect();
            if sent.as_ref() != Some(&changed) {
                sent = Some(changed);
                self.add_scheduling_events(&mut users, &pending).await;
                for (reason, _) in users.values_mut() {
                    *reason = self.redactor.redact(reason);
                }
                let update = RealUsers { hub: self.hub.clone(), source: SignalSource::Pods, capability, users };
                if updates.send(update).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The users whose pods are in trouble now, with the evidence of their first troubled pod; and, for
    /// users whose pod is Pending too long, that pod's name.
    async fn affected(
        &self,
        pods: &HashMap<String, Pod>,
        capability: Capability,
        owners: &mut HashMap<String, String>,
    ) -> (BTreeMap<String, (String, SystemTime)>, BTreeMap<String, String>) {
        let now = SystemTime::now();
        let mut users = BTreeMap::new();
        let mut pending = BTreeMap::new();
        let mut troubled: Vec<(&Pod, pods::Trouble)> =
            pods.values().filter_map(|pod| Some((pod, pods::trouble(pod, now, self.pending_after)?))).collect();
        troubled.sort_by_key(|(pod, _)| pod.metadata.name.clone());
        for (pod, trouble) in troubled {
            let user = match capability {
                Capability::DaskGateway => self.cluster_owner(pod, owners).await,
                _ => pod.metadata.annotations.as_ref().and_then(|a| a.get(USERNAME_ANNOTATION)).cloned(),
            };
            if let Some(user) = user
                && !users.contains_key(&user)
            {
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending") {
                    pending.insert(user.clone(), pod.metadata.name.clone().unwrap_or_default());
                }
                users.insert(user, (trouble.reason, trouble.since));
            }
        }
        (users, pending)
    }

    /// Adds the cluster autoscaler's word to Pending pods' evidence: the latest NotTriggerScaleUp (why no
    /// node is coming) and, when the pod's condition had no message, the latest FailedScheduling. One list
    /// of the namespace's events, only when the affected users changed.
    async fn add_scheduling_events(
        &self,
        users: &mut BTreeMap<String, (String, SystemTime)>,
        pending: &BTreeMap<String, String>,
    ) {
        if pending.is_empty() {
            return;
        }
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &self.namespace);
        let Ok(events) = crate::kubeapi::list(api, ListParams::default(), self.call_timeout).await else {
            return; // the pod's own condition is evidence enough
        };
        for (user, pod) in pending {
            let Some((reason, _)) = users.get_mut(user) else { continue };
            let latest = |wanted: &str| {
                events
                    .iter()
                    .filter(|e| e.involved_object.name.as_deref() == Some(pod.as_str()))
                    .filter(|e| e.reason.as_deref() == Some(wanted))
                    .max_by_key(|e| event_last_seen(e))
                    .and_then(|e| e.message.clone())
            };
            if !reason.contains("Unschedulable:")
                && let Some(message) = latest("FailedScheduling")
            {
                reason.push_str(&format!("; FailedScheduling: {message}"));
            }
            if let Some(message) = latest("NotTriggerScaleUp") {
                reason.push_str(&format!("; NotTriggerScaleUp: {message}"));
            }
        }
    }

    /// The user of a Dask cluster pod, from its DaskCluster (looked up again when a cluster is new).
    async fn cluster_owner(&self, pod: &Pod, owners: &mut HashMap<String, String>) -> Option<String> {
        let cluster = pod.metadata.labels.as_ref()?.get(DASK_CLUSTER_LABEL)?.clone();
        if !owners.contains_key(&cluster) {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.namespace, &daskcluster_resource());
            match crate::kubeapi::list(api, ListParams::default(), self.call_timeout).await {
                Ok(clusters) => {
                    owners.clear();
                    for object in clusters {
                        let user = object.data["spec"]["username"].as_str().map(String::from);
                        if let (Some(name), Some(user)) = (object.metadata.name, user) {
                            owners.insert(name, user);
                        }
                    }
                }
                Err(e) => tracing::warn!(hub = %self.hub, error = %e, "cannot list DaskClusters to find their users"),
            }
        }
        owners.get(&cluster).cloned()
    }
}
