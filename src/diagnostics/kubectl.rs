//! kubectl's own layouts, reproduced from its printers (k8s.io/kubernetes pkg/printers/internalversion and
//! kubectl's describe), so a responder reads what they would have seen running the command: the same columns,
//! the same status words ("CrashLoopBackOff", "Init:0/1", "2 (5m ago)"), the same ages ("5m30s", "3d4h") and
//! the same alignment (Go's text/tabwriter, padding 3 for `get`, 2 for `describe`). Pure: `now` is an argument.

use crate::kubeapi::human_duration;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, Event, Node, PersistentVolumeClaim, Pod, ResourceQuota,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

fn millis(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Go truncates the duration to whole seconds towards zero.
fn age_of_millis(then: i64, now: SystemTime) -> String {
    human_duration((millis(now) - then) / 1000)
}

/// kubectl's `translateTimestampSince`.
pub fn since(at: Option<&Time>, now: SystemTime) -> String {
    match at {
        Some(Time(t)) => age_of_millis(t.as_millisecond(), now),
        None => "<unknown>".into(),
    }
}

fn since_micro(at: Option<&MicroTime>, now: SystemTime) -> String {
    match at {
        Some(MicroTime(t)) => age_of_millis(t.as_millisecond(), now),
        None => "<unknown>".into(),
    }
}

/// Go's text/tabwriter as kubectl configures it: a cell is terminated by a tab, the last cell of a line is
/// not, and a column's width is set per block of consecutive lines that have a terminated cell there.
pub fn tabwrite(lines: &[Vec<String>], padding: usize) -> String {
    let cells: Vec<Vec<(usize, &str)>> =
        lines.iter().map(|line| line.iter().map(|c| (c.chars().count(), c.as_str())).collect()).collect();
    let mut widths = Vec::new();
    let mut out = String::new();
    format_block(&cells, 0, cells.len(), &mut widths, padding, &mut out);
    out
}

fn format_block(
    lines: &[Vec<(usize, &str)>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].0 + padding);
            this += 1;
        }
        widths.push(width);
        format_block(lines, line0, this, widths, padding, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<(usize, &str)>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, (width, text)) in line.iter().enumerate() {
            out.push_str(text);
            if j + 1 < line.len() && j < widths.len() {
                out.extend(std::iter::repeat_n(' ', widths[j].saturating_sub(*width)));
            }
        }
        out.push('\n');
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    lines.extend(rows);
    tabwrite(&lines, 3)
}

fn or_none(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "<none>".into(),
    }
}

/// The STATUS, READY and RESTARTS of kubectl's `printPod`.
pub struct PodSummary {
    pub ready: String,
    pub status: String,
    pub restarts: String,
}

/// Restarts and readiness as kubectl's `printPod` counts them.
#[derive(Default)]
struct Tally {
    restarts: i64,
    sidecar_restarts: i64,
    ready: usize,
    last_restart: Option<Time>,
    last_sidecar_restart: Option<Time>,
}

fn later(current: &mut Option<Time>, candidate: Option<Time>) {
    if let Some(candidate) = candidate
        && current.as_ref().is_none_or(|c| *c < candidate)
    {
        *current = Some(candidate);
    }
}

fn finished(container: &ContainerStatus) -> Option<Time> {
    container.last_state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.finished_at.clone())
}

/// A terminated container's reason: its own, else its signal, else its exit code (each with `prefix`).
fn terminated_reason(terminated: &k8s_openapi::api::core::v1::ContainerStateTerminated, prefix: &str) -> String {
    match terminated.reason.as_deref() {
        Some(r) if !r.is_empty() => format!("{prefix}{r}"),
        _ => match terminated.signal {
            Some(s) if s != 0 => format!("{prefix}Signal:{s}"),
            _ => format!("{prefix}ExitCode:{}", terminated.exit_code),
        },
    }
}

pub fn pod_summary(pod: &Pod, now: SystemTime) -> PodSummary {
    let spec = pod.spec.as_ref();
    let status = pod.status.clone().unwrap_or_default();
    let init_specs = spec.map(|s| s.init_containers.clone().unwrap_or_default()).unwrap_or_default();
    let sidecars: Vec<&str> =
        init_specs.iter().filter(|c| c.restart_policy.as_deref() == Some("Always")).map(|c| c.name.as_str()).collect();
    let total = spec.map_or(0, |s| s.containers.len()) + sidecars.len();
    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = status.reason.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| phase.clone());
    let conditions = status.conditions.clone().unwrap_or_default();
    if conditions.iter().any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated")) {
        reason = "SchedulingGated".into();
    }
    let mut tally = Tally::default();
    let init_statuses = status.init_container_statuses.clone().unwrap_or_default();
    let initializing = init_containers(&init_statuses, init_specs.len(), &sidecars, &mut tally, &mut reason);
    let initialized = conditions.iter().any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        let containers = status.container_statuses.clone().unwrap_or_default();
        let pod_ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        main_containers(&containers, pod_ready, &mut tally, &mut reason);
    }
    let terminal = phase == "Succeeded" || phase == "Failed";
    if pod.metadata.deletion_timestamp.is_some() && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if pod.metadata.deletion_timestamp.is_some() && !terminal {
        reason = "Terminating".into();
    }
    let restarts = match (&tally.last_restart, tally.restarts) {
        (Some(at), n) if n != 0 => format!("{n} ({} ago)", since(Some(at), now)),
        (_, n) => n.to_string(),
    };
    PodSummary { ready: format!("{}/{total}", tally.ready), status: reason, restarts }
}

/// The init containers, as kubectl walks them; true while the pod is still initializing (the reason then
/// says where: `Init:1/2`, `Init:CrashLoopBackOff`, ...).
fn init_containers(
    statuses: &[ContainerStatus],
    specified: usize,
    sidecars: &[&str],
    tally: &mut Tally,
    reason: &mut String,
) -> bool {
    for (i, container) in statuses.iter().enumerate() {
        tally.restarts += i64::from(container.restart_count);
        later(&mut tally.last_restart, finished(container));
        let is_sidecar = sidecars.contains(&container.name.as_str());
        if is_sidecar {
            tally.sidecar_restarts += i64::from(container.restart_count);
            later(&mut tally.last_sidecar_restart, finished(container));
        }
        let state = container.state.clone().unwrap_or_default();
        if state.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if is_sidecar && container.started == Some(true) {
            tally.ready += usize::from(container.ready);
            continue;
        }
        let waiting = state.waiting.as_ref().and_then(|w| w.reason.clone());
        *reason = match (&state.terminated, waiting.filter(|r| !r.is_empty() && r != "PodInitializing")) {
            (Some(terminated), _) => terminated_reason(terminated, "Init:"),
            (None, Some(waiting)) => format!("Init:{waiting}"),
            (None, None) => format!("Init:{i}/{specified}"),
        };
        return true;
    }
    false
}

/// The main containers (last first, as kubectl does): restarts, readiness, and the reason of a waiting or
/// terminated one.
fn main_containers(statuses: &[ContainerStatus], pod_ready: bool, tally: &mut Tally, reason: &mut String) {
    tally.restarts = tally.sidecar_restarts;
    tally.last_restart = tally.last_sidecar_restart.clone();
    let mut has_running = false;
    for container in statuses.iter().rev() {
        tally.restarts += i64::from(container.restart_count);
        later(&mut tally.last_restart, finished(container));
        let state: ContainerState = container.state.clone().unwrap_or_default();
        if let Some(r) = state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty()) {
            *reason = r;
        } else if let Some(terminated) = &state.terminated {
            *reason = terminated_reason(terminated, "");
        } else if container.ready && state.running.is_some() {
            has_running = true;
            tally.ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        *reason = if pod_ready { "Running".into() } else { "NotReady".into() };
    }
}

/// `kubectl get pods -o wide`.
pub fn get_pods_wide(pods: &[Pod], now: SystemTime) -> String {
    if pods.is_empty() {
        return "No resources found.\n".into();
    }
    let header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"];
    let rows = pods
        .iter()
        .map(|pod| {
            let summary = pod_summary(pod, now);
            let status = pod.status.as_ref();
            let spec = pod.spec.as_ref();
            let ip = status.and_then(|s| s.pod_ips.as_ref()).and_then(|ips| ips.first()).map(|ip| ip.ip.as_str());
            let gates = spec.and_then(|s| s.readiness_gates.as_ref()).filter(|g| !g.is_empty()).map(|gates| {
                let conditions = status.and_then(|s| s.conditions.clone()).unwrap_or_default();
                let true_count = gates
                    .iter()
                    .filter(|g| {
                        conditions.iter().find(|c| c.type_ == g.condition_type).is_some_and(|c| c.status == "True")
                    })
                    .count();
                format!("{true_count}/{}", gates.len())
            });
            vec![
                pod.metadata.name.clone().unwrap_or_default(),
                summary.ready,
                summary.status,
                summary.restarts,
                since(pod.metadata.creation_timestamp.as_ref(), now),
                or_none(ip),
                or_none(spec.and_then(|s| s.node_name.as_deref())),
                or_none(status.and_then(|s| s.nominated_node_name.as_deref())),
                gates.unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect();
    table(&header, rows)
}

fn event_last_seen_text(event: &Event, now: SystemTime) -> String {
    let first = match &event.first_timestamp {
        Some(t) => since(Some(t), now),
        None => since_micro(event.event_time.as_ref(), now),
    };
    if let Some(series) = &event.series {
        return since_micro(series.last_observed_time.as_ref(), now);
    }
    match &event.last_timestamp {
        Some(t) => since(Some(t), now),
        None => first,
    }
}

fn event_target(event: &Event) -> String {
    let kind = event.involved_object.kind.clone().unwrap_or_default().to_lowercase();
    match event.involved_object.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{kind}/{name}"),
        _ => kind,
    }
}

/// `kubectl get events`, in the order given (the caller sorts as `--sort-by=.lastTimestamp` does).
pub fn get_events(events: &[Event], now: SystemTime) -> String {
    if events.is_empty() {
        return "No resources found.\n".into();
    }
    let rows = events
        .iter()
        .map(|e| {
            vec![
                event_last_seen_text(e, now),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                event_target(e),
                e.message.clone().unwrap_or_default().trim_end().to_string(),
            ]
        })
        .collect();
    table(&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows)
}

/// kubectl's node STATUS: Ready / NotReady / Unknown, plus SchedulingDisabled when cordoned.
pub fn node_status(node: &Node) -> String {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut status = match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => vec!["Ready".to_string()],
        Some(_) => vec!["NotReady".to_string()],
        None => vec!["Unknown".to_string()],
    };
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    status.join(",")
}

fn node_roles(node: &Node) -> String {
    let mut roles = BTreeSet::new();
    for (key, value) in node.metadata.labels.iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if key == "kubernetes.io/role" && !value.is_empty() {
            roles.insert(value.clone());
        }
    }
    if roles.is_empty() { "<none>".into() } else { roles.into_iter().collect::<Vec<_>>().join(",") }
}

/// `kubectl get nodes`.
pub fn get_nodes(nodes: &[Node], now: SystemTime) -> String {
    if nodes.is_empty() {
        return "No resources found\n".into();
    }
    let rows = nodes
        .iter()
        .map(|node| {
            vec![
                node.metadata.name.clone().unwrap_or_default(),
                node_status(node),
                node_roles(node),
                since(node.metadata.creation_timestamp.as_ref(), now),
                node.status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|i| i.kubelet_version.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "ROLES", "AGE", "VERSION"], rows)
}

/// A node condition that means trouble: Ready not True, or a pressure / network condition True.
pub fn unhealthy_conditions(node: &Node) -> Vec<String> {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions
        .iter()
        .filter(|c| if c.type_ == "Ready" { c.status != "True" } else { c.status == "True" })
        .map(|c| {
            let detail = [c.reason.as_deref(), c.message.as_deref()].into_iter().flatten().collect::<Vec<_>>();
            format!("{}={} {}", c.type_, c.status, detail.join(": ")).trim_end().to_string()
        })
        .collect()
}

fn access_modes(modes: &[String]) -> String {
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(mode, _)| modes.iter().any(|m| m == mode))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// `kubectl get pvc`.
pub fn get_pvc(claims: &[PersistentVolumeClaim], now: SystemTime) -> String {
    if claims.is_empty() {
        return "No resources found.\n".into();
    }
    let rows = claims
        .iter()
        .map(|claim| {
            let spec = claim.spec.clone().unwrap_or_default();
            let status = claim.status.clone().unwrap_or_default();
            let volume = spec.volume_name.clone().unwrap_or_default();
            let (capacity, modes) = if volume.is_empty() {
                (String::new(), String::new())
            } else {
                (
                    status.capacity.as_ref().and_then(|c| c.get("storage")).map(|q| q.0.clone()).unwrap_or_default(),
                    access_modes(&status.access_modes.clone().unwrap_or_default()),
                )
            };
            let class = spec
                .storage_class_name
                .clone()
                .or_else(|| {
                    claim
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class").cloned())
                })
                .unwrap_or_default();
            vec![
                claim.metadata.name.clone().unwrap_or_default(),
                status.phase.clone().unwrap_or_default(),
                volume,
                capacity,
                modes,
                class,
                spec.volume_attributes_class_name.clone().unwrap_or_else(|| "<unset>".into()),
                since(claim.metadata.creation_timestamp.as_ref(), now),
            ]
        })
        .collect();
    table(
        &["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"],
        rows,
    )
}

/// `kubectl describe resourcequota`, one block per quota.
pub fn describe_quotas(quotas: &[ResourceQuota]) -> String {
    if quotas.is_empty() {
        return "No resources found.\n".into();
    }
    let mut blocks = Vec::new();
    for quota in quotas {
        let status = quota.status.clone().unwrap_or_default();
        let hard = status.hard.unwrap_or_default();
        let used = status.used.unwrap_or_default();
        let mut lines = vec![
            vec!["Name:".into(), quota.metadata.name.clone().unwrap_or_default()],
            vec!["Namespace:".into(), quota.metadata.namespace.clone().unwrap_or_default()],
            vec!["Resource".into(), "Used".into(), "Hard".into()],
            vec!["--------".into(), "----".into(), "----".into()],
        ];
        for (resource, limit) in &hard {
            let used = used.get(resource).map(|q| q.0.clone()).unwrap_or_else(|| "0".into());
            lines.push(vec![resource.clone(), used, limit.0.clone()]);
        }
        blocks.push(tabwrite(&lines, 2));
    }
    blocks.join("\n\n")
}

/// kubectl describe's time format (Go's RFC1123Z): `Mon, 24 Nov 2026 09:51:40 +0000`.
fn rfc1123z(at: &Time) -> String {
    at.0.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn state_lines(label: &str, state: &ContainerState, lines: &mut Vec<Vec<String>>) {
    let indent = |text: &str| format!("      {text}");
    if let Some(w) = &state.waiting {
        lines.push(vec![format!("    {label}:"), "Waiting".into()]);
        if let Some(reason) = &w.reason {
            lines.push(vec![indent("Reason:"), reason.clone()]);
        }
        if let Some(message) = &w.message {
            lines.push(vec![indent("Message:"), message.clone()]);
        }
    } else if let Some(r) = &state.running {
        lines.push(vec![format!("    {label}:"), "Running".into()]);
        if let Some(started) = &r.started_at {
            lines.push(vec![indent("Started:"), rfc1123z(started)]);
        }
    } else if let Some(t) = &state.terminated {
        lines.push(vec![format!("    {label}:"), "Terminated".into()]);
        if let Some(reason) = &t.reason {
            lines.push(vec![indent("Reason:"), reason.clone()]);
        }
        if let Some(message) = &t.message {
            lines.push(vec![indent("Message:"), message.clone()]);
        }
        lines.push(vec![indent("Exit Code:"), t.exit_code.to_string()]);
        if let Some(started) = &t.started_at {
            lines.push(vec![indent("Started:"), rfc1123z(started)]);
        }
        if let Some(finished) = &t.finished_at {
            lines.push(vec![indent("Finished:"), rfc1123z(finished)]);
        }
    } else {
        lines.push(vec![format!("    {label}:"), "Waiting".into()]);
    }
}

/// A condensed `kubectl describe pod`: status, conditions, container states with the last termination, and
/// the pod's events (kubectl's describe layout, without volumes, mounts, tolerations and environment — the
/// environment holds secrets).
pub fn describe_pod(pod: &Pod, events: &[Event], now: SystemTime) -> String {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut lines: Vec<Vec<String>> = vec![
        vec!["Name:".into(), meta.name.clone().unwrap_or_default()],
        vec!["Namespace:".into(), meta.namespace.clone().unwrap_or_default()],
        vec!["Node:".into(), or_none(spec.node_name.as_deref())],
        vec!["Start Time:".into(), status.start_time.as_ref().map_or("<unset>".into(), rfc1123z)],
        vec!["Status:".into(), status.phase.clone().unwrap_or_default()],
    ];
    if let Some(reason) = &status.reason {
        lines.push(vec!["Reason:".into(), reason.clone()]);
    }
    if let Some(message) = &status.message {
        lines.push(vec!["Message:".into(), message.clone()]);
    }
    lines.push(vec!["IP:".into(), status.pod_ip.clone().unwrap_or_default()]);
    lines.push(vec!["Containers:".into()]);
    let statuses = status.container_statuses.clone().unwrap_or_default();
    for container in &spec.containers {
        lines.push(vec![format!("  {}:", container.name)]);
        lines.push(vec!["    Image:".into(), container.image.clone().unwrap_or_default()]);
        if let Some(s) = statuses.iter().find(|s| s.name == container.name) {
            state_lines("State", &s.state.clone().unwrap_or_default(), &mut lines);
            if let Some(last) = s.last_state.as_ref().filter(|l| l.terminated.is_some() || l.waiting.is_some()) {
                state_lines("Last State", last, &mut lines);
            }
            lines.push(vec!["    Ready:".into(), if s.ready { "True" } else { "False" }.into()]);
            lines.push(vec!["    Restart Count:".into(), s.restart_count.to_string()]);
        }
        let resources = container.resources.clone().unwrap_or_default();
        for (label, values) in [("Limits", resources.limits), ("Requests", resources.requests)] {
            if let Some(values) = values.filter(|v| !v.is_empty()) {
                lines.push(vec![format!("    {label}:")]);
                for (name, quantity) in values {
                    lines.push(vec![format!("      {name}:"), quantity.0]);
                }
            }
        }
    }
    let conditions = status.conditions.clone().unwrap_or_default();
    if !conditions.is_empty() {
        lines.push(vec!["Conditions:".into()]);
        lines.push(vec!["  Type".into(), "Status".into()]);
        for c in &conditions {
            lines.push(vec![format!("  {}", c.type_), c.status.clone()]);
        }
    }
    let mut out = tabwrite(&lines, 2);
    out.push_str(&describe_events(events, now));
    out
}

/// The `Events:` block of `kubectl describe`.
pub fn describe_events(events: &[Event], now: SystemTime) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let mut lines = vec![
        vec!["Events:".to_string()],
        ["  Type", "Reason", "Age", "From", "Message"].iter().map(|s| s.to_string()).collect(),
        ["  ----", "------", "----", "----", "-------"].iter().map(|s| s.to_string()).collect(),
    ];
    for e in events {
        let count = e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1);
        let last = event_last_seen_text(e, now);
        let age = if count > 1 {
            let first = match &e.first_timestamp {
                Some(t) => since(Some(t), now),
                None => since_micro(e.event_time.as_ref(), now),
            };
            format!("{last} (x{count} over {first})")
        } else {
            last
        };
        let from = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .or_else(|| e.reporting_component.clone())
            .unwrap_or_default();
        lines.push(vec![
            format!("  {}", e.type_.clone().unwrap_or_default()),
            e.reason.clone().unwrap_or_default(),
            age,
            from,
            e.message.clone().unwrap_or_default().trim().to_string(),
        ]);
    }
    tabwrite(&lines, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (47 * 3600, "47h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400 + 5 * 86400, "3y5d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds}s");
        }
    }

    #[test]
    fn tabwriter_pads_columns_per_block_and_leaves_the_last_cell_alone() {
        let lines = vec![
            vec!["Name:".to_string(), "q".into()],
            vec!["Resource".into(), "Used".into(), "Hard".into()],
            vec!["requests.memory".into(), "600Mi".into(), "1Gi".into()],
            vec!["Events:".into()],
            vec!["  Type".into(), "Reason".into()],
        ];
        assert_eq!(
            tabwrite(&lines, 2),
            "Name:            q\nResource         Used   Hard\nrequests.memory  600Mi  1Gi\nEvents:\n  Type  Reason\n"
        );
    }
}
