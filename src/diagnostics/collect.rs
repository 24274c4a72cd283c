//! Collecting diagnostics from the Kubernetes API: the calls run at once, each under its own deadline, so a
//! slow or broken API server makes sections say "not collected", never makes the page wait.

use super::kubectl;
use super::{Diagnostics, Keep, Section};
use crate::domain::{HubName, IncidentKind};
use crate::kubeapi::{
    DASK_CLUSTER_LABEL, USER_POD_SELECTOR, USERNAME_ANNOTATION, daskcluster_resource, event_last_seen, to_system_time,
};
use crate::kubeapi::{list, timed};
use crate::redact::Redactor;
use crate::tasks::off_runtime;
use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, PersistentVolumeClaim, Pod, ResourceQuota};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const GATEWAY_SELECTOR: &str = "app.kubernetes.io/name=dask-gateway";
const GATEWAY_LABEL: (&str, Option<&str>) = ("app.kubernetes.io/name", Some("dask-gateway"));

/// Pods whose logs one section shows, at most (a selector matching a hundred pods shows the first five).
const LOGGED_PODS: usize = 5;
/// Bytes of log read per container (`limitBytes`): `log_lines` lines of a sane log fit many times over; a
/// container that logs megabyte lines cannot make hubwatch read them.
const LOG_BYTES: usize = 128 * 1024;

/// The lines of a log read with `limitBytes`: a last line cut by the limit is left out (a cut line can hide
/// what makes a secret recognisable, and says little).
fn whole_lines(log: &str) -> impl Iterator<Item = &str> {
    let whole = if log.len() >= LOG_BYTES { log.rfind('\n').map_or("", |end| &log[..end]) } else { log };
    whole.lines()
}

/// User pods described in full, at most.
const DESCRIBED_PODS: usize = 5;
/// Events listed per section, newest last (as `--sort-by=.lastTimestamp` prints them).
const EVENTS_LISTED: usize = 40;

pub struct Request {
    pub namespace: String,
    pub kind: IncidentKind,
    /// Users affected now: their pods are described first.
    pub users: BTreeSet<String>,
    pub log_lines: i64,
    pub call_timeout: Duration,
    /// The cluster autoscaler's status ConfigMap (namespace, name), when it is read.
    pub autoscaler: Option<(String, String)>,
}

/// The container `kubectl logs` picks: the annotated default, else the first.
fn default_container(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned())
        .or_else(|| pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()))
}

fn restarted(pod: &Pod, container: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|c| c.name == container))
        .is_some_and(|c| c.restart_count > 0)
}

/// The raw output of one section: its command, what came back (or why nothing did), and which end to keep
/// if it is too long.
type Raw = (String, Result<String, String>, Keep);

/// Whose pods' logs a section shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whose {
    /// Every pod the selector matches (the hub, the proxy, the gateway).
    Everyone,
    /// The affected users' own servers (a probe user's server that fails because its home is full says so
    /// only in its own log).
    AffectedUsers,
}

/// `kubectl logs -l SELECTOR --tail=N --prefix` (and `--previous` for containers that restarted; nothing when
/// none did).
async fn logs_of(api: &Api<Pod>, request: &Request, label: &str, whose: Whose, previous: bool) -> Option<Raw> {
    let flag = if previous { " --previous" } else { "" };
    let command =
        format!("kubectl -n {} logs -l {label} --tail={} --prefix{flag}", request.namespace, request.log_lines);
    let pods = match list(api.clone(), ListParams::default().labels(label), request.call_timeout).await {
        Ok(pods) => pods,
        Err(why) => return Some((command, Err(why), Keep::Tail)),
    };
    let affected = |pod: &Pod| whose == Whose::Everyone || user_of(pod).is_some_and(|u| request.users.contains(u));
    let mut wanted: Vec<(String, String)> = pods
        .iter()
        .filter(|pod| affected(pod))
        .filter_map(|pod| Some((pod.metadata.name.clone()?, default_container(pod)?, pod)))
        .filter(|(_, container, pod)| !previous || restarted(pod, container))
        .map(|(name, container, _)| (name, container))
        .collect();
    wanted.sort();
    wanted.truncate(LOGGED_PODS);
    if wanted.is_empty() {
        return (!previous && whose == Whose::Everyone)
            .then(|| (command, Ok("No resources found.\n".into()), Keep::Head));
    }
    let logs = join_all(wanted.into_iter().map(|(name, container)| async move {
        let params = LogParams {
            container: Some(container.clone()),
            tail_lines: Some(request.log_lines),
            limit_bytes: Some(LOG_BYTES as i64),
            previous,
            ..LogParams::default()
        };
        let prefix = format!("[pod/{name}/{container}]");
        match timed(request.call_timeout, api.logs(&name, &params)).await {
            Ok(log) => whole_lines(&log).map(|line| format!("{prefix} {line}\n")).collect::<String>(),
            Err(why) => format!("{prefix} (logs not collected: {why})\n"),
        }
    }))
    .await;
    Some((command, Ok(logs.concat()), Keep::Tail))
}

fn sorted_events(mut events: Vec<Event>) -> Vec<Event> {
    // `--sort-by=.lastTimestamp`: oldest first, events without a time first.
    events.sort_by_key(event_last_seen);
    events
}

fn last(events: &[Event], count: usize) -> &[Event] {
    &events[events.len().saturating_sub(count)..]
}

/// `-l key=value`, or `-l key` when `value` is `None`.
fn has_label(pod: &Pod, key: &str, value: Option<&str>) -> bool {
    let found = pod.metadata.labels.as_ref().and_then(|labels| labels.get(key));
    match value {
        Some(value) => found.map(String::as_str) == Some(value),
        None => found.is_some(),
    }
}

/// Waiting for a node (Pending and not scheduled): what the cluster autoscaler's status speaks to.
fn waiting_for_a_node(pod: &Pod) -> bool {
    let unscheduled = pod.spec.as_ref().is_none_or(|spec| spec.node_name.is_none());
    unscheduled && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
}

fn user_of(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(USERNAME_ANNOTATION).map(String::as_str)
}

/// A container restarted within this long counts as unhealthy (a crash loop between probes).
const RECENT_RESTART: Duration = Duration::from_secs(3600);

fn healthy(pod: &Pod, now: SystemTime) -> bool {
    let summary = kubectl::pod_summary(pod, now);
    let (ready, total) = summary.ready.split_once('/').unwrap_or(("0", "0"));
    let recently_restarted =
        pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).any(|c| {
            c.last_state.as_ref().and_then(|l| l.terminated.as_ref()).and_then(|t| t.finished_at.as_ref()).is_some_and(
                |finished| now.duration_since(to_system_time(finished)).is_ok_and(|age| age < RECENT_RESTART),
            )
        });
    summary.status == "Running" && ready == total && !recently_restarted
}

/// Pods worth describing, at most [`DESCRIBED_PODS`]: unhealthy hub-side pods (hub, proxy, gateway) first,
/// then the pods of affected users, then other unhealthy user pods.
fn pods_to_describe<'p>(pods: &'p [Pod], users: &BTreeSet<String>, now: SystemTime) -> Vec<&'p Pod> {
    let is_user_pod = |pod: &Pod| has_label(pod, "component", Some("singleuser-server"));
    let (user_pods, hub_side): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|pod| is_user_pod(pod));
    let mut chosen: Vec<&Pod> = hub_side.into_iter().filter(|pod| !healthy(pod, now)).collect();
    let (affected, others): (Vec<&Pod>, Vec<&Pod>) =
        user_pods.into_iter().partition(|pod| user_of(pod).is_some_and(|u| users.contains(u)));
    chosen.extend(affected);
    chosen.extend(others.into_iter().filter(|pod| !healthy(pod, now)));
    chosen.truncate(DESCRIBED_PODS);
    chosen
}

/// What the API server answered for one incident, call by call.
struct Fetched {
    pods: Result<Vec<Pod>, String>,
    /// Sorted as `--sort-by=.lastTimestamp` sorts them.
    events: Result<Vec<Event>, String>,
    nodes: Result<Vec<Node>, String>,
    claims: Result<Vec<PersistentVolumeClaim>, String>,
    quotas: Result<Vec<ResourceQuota>, String>,
    logs: Vec<Raw>,
    /// Only for `dask_gateway` incidents.
    clusters: Option<Result<Vec<DynamicObject>, String>>,
    /// The autoscaler's status text; `Ok(None)`: it writes none there. `None`: not read.
    autoscaler: Option<Result<Option<String>, String>>,
}

/// Collects the sections for `request`: every call at once, then the text a responder would see, redacted
/// before it is cut to size (a cut could hide what marks a secret).
/// Redacting and laying out a few hundred kilobytes is CPU work: it runs off the runtime.
pub async fn collect(client: &Client, request: Request, redactor: Arc<Redactor>, now: SystemTime) -> Diagnostics {
    let fetched = fetch(client, &request).await;
    let sections = off_runtime(move || render(fetched, &request, &redactor, now)).await;
    Diagnostics { collected_at: now, sections }
}

/// Every call at once: the whole takes about two call deadlines at worst (a list, then the logs).
async fn fetch(client: &Client, request: &Request) -> Fetched {
    let (ns, timeout) = (request.namespace.as_str(), request.call_timeout);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let all = ListParams::default;
    let log_selectors: &[&str] = match request.kind {
        IncidentKind::HubAccess => &["component=hub", "component=proxy"],
        IncidentKind::DaskGateway => &["app.kubernetes.io/component=gateway", "app.kubernetes.io/component=controller"],
        // BinderHub's chart: the binder pod and its build pods.
        IncidentKind::Binder => &["component=binder", "component=binderhub-build"],
        IncidentKind::Monitor => &[],
    };
    let mut selectors: Vec<(&str, Whose)> = log_selectors.iter().map(|label| (*label, Whose::Everyone)).collect();
    if request.kind == IncidentKind::HubAccess {
        selectors.push((USER_POD_SELECTOR, Whose::AffectedUsers));
    }
    let logs =
        join_all(selectors.iter().flat_map(|(label, whose)| {
            [false, true].map(|previous| logs_of(&pods_api, request, label, *whose, previous))
        }));
    let clusters = async {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &daskcluster_resource());
        match request.kind {
            IncidentKind::DaskGateway => Some(list(api, all(), timeout).await),
            IncidentKind::HubAccess | IncidentKind::Binder | IncidentKind::Monitor => None,
        }
    };
    let autoscaler = async {
        let (namespace, name) = request.autoscaler.as_ref()?;
        let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
        let status = timed(timeout, api.get_opt(name)).await;
        Some(status.map(|map| map.and_then(|m| m.data?.remove("status"))))
    };
    let ((pods, events, nodes, claims, quotas), logs, clusters, autoscaler) = tokio::join!(
        async {
            tokio::join!(
                list(pods_api.clone(), all(), timeout),
                list(Api::<Event>::namespaced(client.clone(), ns), all(), timeout),
                list(Api::<Node>::all(client.clone()), all(), timeout),
                list(Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns), all(), timeout),
                list(Api::<ResourceQuota>::namespaced(client.clone(), ns), all(), timeout),
            )
        },
        logs,
        clusters,
        autoscaler
    );
    let events = events.map(sorted_events);
    let logs = logs.into_iter().flatten().collect();
    Fetched { pods, events, nodes, claims, quotas, logs, clusters, autoscaler }
}

/// The names of the pods and Dask clusters fetched: what the sections are about, kept by redaction.
fn object_names(fetched: &Fetched) -> Vec<String> {
    let pods = fetched.pods.iter().flatten().filter_map(|pod| pod.metadata.name.clone());
    let clusters = fetched.clusters.iter().flatten().flatten().filter_map(|cluster| cluster.metadata.name.clone());
    pods.chain(clusters).collect()
}

/// The sections, in kubectl's layout, from what was fetched (pure).
fn render(fetched: Fetched, request: &Request, redactor: &Redactor, now: SystemTime) -> Vec<Section> {
    let ns = &request.namespace;
    let names = object_names(&fetched);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let section = |command: String, output: Result<String, String>, keep: Keep| match output {
        Ok(text) => Section::ok(command, redactor.redact_keeping(&text, &names), keep),
        Err(why) => Section::failed(command, redactor.redact(&why)),
    };
    let Fetched { pods, events, nodes, claims, quotas, logs, clusters, autoscaler } = fetched;
    let mut sections = vec![section(
        format!("kubectl -n {ns} get pods -o wide"),
        pods.as_ref().map(|pods| kubectl::get_pods_wide(pods, now)).map_err(Clone::clone),
        Keep::Head,
    )];
    let warnings = |events: &Vec<Event>| -> Vec<Event> {
        events.iter().filter(|e| e.type_.as_deref() == Some("Warning")).cloned().collect()
    };
    sections.push(section(
        format!("kubectl -n {ns} get events --field-selector type=Warning --sort-by=.lastTimestamp"),
        events.as_ref().map(|e| kubectl::get_events(last(&warnings(e), EVENTS_LISTED), now)).map_err(Clone::clone),
        Keep::Tail,
    ));
    sections.push(section(
        format!("kubectl -n {ns} get events --sort-by=.lastTimestamp"),
        events.as_ref().map(|e| kubectl::get_events(last(e, EVENTS_LISTED), now)).map_err(Clone::clone),
        Keep::Tail,
    ));
    sections.extend(logs.into_iter().map(|(command, output, keep)| section(command, output, keep)));
    if let Ok(pods) = &pods {
        let events = events.as_deref().unwrap_or_default();
        for pod in pods_to_describe(pods, &request.users, now) {
            let (command, text) = describe(ns, pod, events, now);
            sections.push(section(command, Ok(text), Keep::Head));
        }
    }
    if let Some(clusters) = clusters {
        sections.extend(dask_sections(ns, &pods, clusters, now).into_iter().map(|(c, o)| section(c, o, Keep::Head)));
    }
    sections.push(section("kubectl get nodes".into(), nodes.map(|nodes| get_nodes(&nodes, now)), Keep::Head));
    if let (Some((namespace, name)), Some(status)) = (&request.autoscaler, autoscaler)
        && pods.as_ref().is_ok_and(|pods| pods.iter().any(waiting_for_a_node))
        && let Some(status) = status.transpose()
    {
        let command = format!("kubectl -n {namespace} get configmap {name} -o jsonpath={{.data.status}}");
        sections.push(section(command, status, Keep::Head));
    }
    sections.push(section(format!("kubectl -n {ns} get pvc"), claims.map(|c| kubectl::get_pvc(&c, now)), Keep::Head));
    let quotas = quotas.map(|q| kubectl::describe_quotas(&q));
    sections.push(section(format!("kubectl -n {ns} describe resourcequota"), quotas, Keep::Head));
    sections
}

/// `kubectl describe pod` with the pod's own events.
fn describe(ns: &str, pod: &Pod, events: &[Event], now: SystemTime) -> (String, String) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let own: Vec<Event> = events
        .iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Pod") && e.involved_object.name.as_deref() == Some(name.as_str())
        })
        .cloned()
        .collect();
    (format!("kubectl -n {ns} describe pod {name}"), kubectl::describe_pod(pod, last(&own, EVENTS_LISTED), now))
}

/// The gateway's pods, the clusters' pods (both from the namespace's pods, filtered as `-l` would) and the
/// DaskClusters with their users.
fn dask_sections(
    ns: &str,
    pods: &Result<Vec<Pod>, String>,
    clusters: Result<Vec<DynamicObject>, String>,
    now: SystemTime,
) -> Vec<(String, Result<String, String>)> {
    let gateway_command = format!("kubectl -n {ns} get pods -o wide -l {GATEWAY_SELECTOR}");
    let cluster_command = format!("kubectl -n {ns} get pods -o wide -l {DASK_CLUSTER_LABEL}");
    let mut sections: Vec<(String, Result<String, String>)> =
        [(gateway_command, GATEWAY_LABEL), (cluster_command, (DASK_CLUSTER_LABEL, None))]
            .into_iter()
            .map(|(command, (key, value))| {
                let output = pods.as_ref().map_err(Clone::clone).map(|pods| {
                    let chosen: Vec<Pod> = pods.iter().filter(|pod| has_label(pod, key, value)).cloned().collect();
                    kubectl::get_pods_wide(&chosen, now)
                });
                (command, output)
            })
            .collect();
    let clusters_command = format!(
        "kubectl -n {ns} get daskclusters.gateway.dask.org \
         -o custom-columns=NAME:.metadata.name,USER:.spec.username,PHASE:.status.phase"
    );
    sections.push((clusters_command, clusters.map(|c| dask_clusters(&c))));
    sections
}

/// `kubectl get nodes`, and a comment line per unhealthy condition.
fn get_nodes(nodes: &[Node], now: SystemTime) -> String {
    let mut text = kubectl::get_nodes(nodes, now);
    for node in nodes {
        for condition in kubectl::unhealthy_conditions(node) {
            text.push_str(&format!("# node/{}: {condition}\n", node.metadata.name.as_deref().unwrap_or_default()));
        }
    }
    text
}

/// `-o custom-columns=NAME:.metadata.name,USER:.spec.username,PHASE:.status.phase`.
pub fn dask_clusters(clusters: &[DynamicObject]) -> String {
    if clusters.is_empty() {
        return "No resources found.\n".into();
    }
    let field = |object: &DynamicObject, path: &[&str]| {
        path.iter()
            .try_fold(&object.data, |value, key| value.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let mut lines = vec![vec!["NAME".to_string(), "USER".into(), "PHASE".into()]];
    for cluster in clusters {
        lines.push(vec![
            cluster.metadata.name.clone().unwrap_or_default(),
            field(cluster, &["spec", "username"]),
            field(cluster, &["status", "phase"]),
        ]);
    }
    kubectl::tabwrite(&lines, 3)
}

/// What the daemon holds to collect diagnostics: the client, the redactor and, per hub, its namespace.
pub struct Collector {
    client: Client,
    redactor: Arc<Redactor>,
    namespaces: std::collections::HashMap<HubName, String>,
    log_lines: i64,
    call_timeout: Duration,
    autoscaler: Option<(String, String)>,
}

impl Collector {
    pub fn new(client: Client, config: &crate::config::Config, redactor: Arc<Redactor>) -> Self {
        Collector {
            client,
            redactor,
            namespaces: config.hubs.iter().filter_map(|h| Some((h.name.clone(), h.namespace.clone()?))).collect(),
            log_lines: i64::from(config.kubernetes.log_lines),
            call_timeout: config.kubernetes.call_timeout,
            autoscaler: config.kubernetes.autoscaler_status.place(),
        }
    }

    /// Diagnostics for `hub`'s incident of `kind`; every call bounded by the call deadline, the whole by three
    /// of them (a list, then the logs of the pods it found, then slack).
    pub async fn collect(&self, hub: &HubName, kind: IncidentKind, users: BTreeSet<String>) -> Diagnostics {
        let now = SystemTime::now();
        let Some(namespace) = self.namespaces.get(hub) else {
            return Diagnostics {
                collected_at: now,
                sections: vec![Section::failed("kubectl", "the hub has no namespace in hubwatch's config")],
            };
        };
        let request = Request {
            namespace: namespace.clone(),
            kind,
            users,
            log_lines: self.log_lines,
            call_timeout: self.call_timeout,
            autoscaler: self.autoscaler.clone(),
        };
        let overall = self.call_timeout * 3;
        match tokio::time::timeout(overall, collect(&self.client, request, self.redactor.clone(), now)).await {
            Ok(diagnostics) => diagnostics,
            Err(_) => Diagnostics {
                collected_at: now,
                sections: vec![Section::failed(
                    format!("kubectl -n {namespace} get pods,events -o wide"),
                    format!("the Kubernetes API did not answer within {}", humantime::format_duration(overall)),
                )],
            },
        }
    }
}
