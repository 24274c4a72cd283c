//! When a pod means its user cannot work: pure, from the pod as the API server returns it.
//!
//! - Pending longer than `pending_after` (the scheduler's reason, e.g. FailedScheduling's "0/3 nodes are
//!   available: 3 Insufficient memory.", is on the pod's PodScheduled condition).
//! - A container waiting in ImagePullBackOff, ErrImagePull, CrashLoopBackOff or CreateContainerConfigError.
//! - A container OOMKilled again and again (its last termination OOMKilled after at least two restarts).
//!
//! A pod being deleted is on its way out and says nothing; a Running, ready pod is fine.
//!
//! A running server that goes away is another matter: [`loss`] says when a user's server was taken from them
//! (evicted, preempted, its node drained or gone) rather than stopped at the hub's request, and how.

use crate::kubeapi::{human_duration, to_system_time};
use k8s_openapi::api::core::v1::Pod;
use std::time::{Duration, SystemTime};

const STUCK_WAITING: [&str; 4] = ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError"];
/// Restarts after which an OOMKilled container counts as repeatedly killed.
const OOM_RESTARTS: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    /// The evidence, in kubectl's words: "pod jupyter-alice: container notebook ImagePullBackOff: ...".
    pub reason: String,
    /// Since when (the pod's creation: when the user asked for it).
    pub since: SystemTime,
}

/// Pod phases' reasons the kubelet gives a server it ended on its own account.
const ENDED_BY_NODE: [&str; 5] = ["Evicted", "NodeLost", "NodeShutdown", "Shutdown", "Terminated"];

/// How a running server pod that ended or is being deleted was lost, when the cluster says it took it (a
/// `DisruptionTarget` condition: an eviction, a drain, a preemption, a taint, a node gone; or the kubelet's
/// own `Evicted`): `Marked`. A deletion the pod says nothing about (`kubectl delete`, a node pool scaled
/// away, or the hub's own stop) is `Unmarked`: lost only if the hub did not ask for it. `None` for a pod
/// that was not serving, or that ended by itself (its server exited).
pub fn loss(pod: &Pod, deleted: bool) -> Option<Loss> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref()?;
    let node =
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).map(|n| format!(" on node {n}")).unwrap_or_default();
    let disruption = status.conditions.iter().flatten().find(|c| c.type_ == "DisruptionTarget" && c.status == "True");
    if let Some(condition) = disruption {
        let reason = condition.reason.as_deref().unwrap_or("DisruptionTarget");
        let message = condition.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        return Some(Loss::Marked(format!("server lost: pod {name}{node}: {reason}{message}")));
    }
    if status.phase.as_deref() == Some("Failed")
        && let Some(reason) = status.reason.as_deref().filter(|r| ENDED_BY_NODE.contains(r))
    {
        let message = status.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        return Some(Loss::Marked(format!("server lost: pod {name}{node}: {reason}{message}")));
    }
    let serving = status.phase.as_deref() == Some("Running");
    (deleted && serving).then(|| Loss::Unmarked(format!("server lost: pod {name}{node} was deleted")))
}

/// A running server gone, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// The cluster says it took the server.
    Marked(String),
    /// Deleted without a word: by the hub (a stop), or from outside.
    Unmarked(String),
}

impl Loss {
    pub fn reason(&self) -> &str {
        match self {
            Loss::Marked(reason) | Loss::Unmarked(reason) => reason,
        }
    }
}

pub fn trouble(pod: &Pod, now: SystemTime, pending_after: Duration) -> Option<Trouble> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let created = pod.metadata.creation_timestamp.as_ref().map(to_system_time).unwrap_or(now);
    let status = pod.status.as_ref()?;
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for container in containers {
        let waiting = container.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(reason) = waiting.and_then(|w| w.reason.as_deref()).filter(|r| STUCK_WAITING.contains(r)) {
            let message = waiting.and_then(|w| w.message.as_deref()).map(|m| format!(": {m}")).unwrap_or_default();
            let restarts = if container.restart_count > 0 {
                format!(" (restarted {} times)", container.restart_count)
            } else {
                String::new()
            };
            return Some(Trouble {
                reason: format!("pod {name}: container {} {reason}{restarts}{message}", container.name),
                since: created,
            });
        }
        let last_terminated = container.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        if last_terminated.and_then(|t| t.reason.as_deref()) == Some("OOMKilled")
            && container.restart_count >= OOM_RESTARTS
        {
            return Some(Trouble {
                reason: format!(
                    "pod {name}: container {} OOMKilled, restarted {} times",
                    container.name, container.restart_count
                ),
                since: created,
            });
        }
    }
    if status.phase.as_deref() == Some("Pending") {
        let age = now.duration_since(created).unwrap_or_default();
        if age > pending_after {
            let scheduling = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .map(|c| {
                    let reason = c.reason.as_deref().unwrap_or("not scheduled");
                    match c.message.as_deref() {
                        Some(message) => format!(": {reason}: {message}"),
                        None => format!(": {reason}"),
                    }
                })
                .unwrap_or_default();
            return Some(Trouble {
                reason: format!("pod {name} Pending for {}{scheduling}", human_duration(age.as_secs() as i64)),
                since: created,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    const PENDING_AFTER: Duration = Duration::from_secs(300);

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_514_400 + seconds)
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "jupyter-alice", "creationTimestamp": "2026-11-24T10:00:00Z",
                         "annotations": {"hub.jupyter.org/username": "alice"}},
            "spec": {"containers": [{"name": "notebook"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(reason: &str, restarts: i32) -> serde_json::Value {
        json!({"phase": "Running", "containerStatuses": [{
            "name": "notebook", "image": "i", "imageID": "", "ready": false, "restartCount": restarts,
            "state": {"waiting": {"reason": reason, "message": "details"}}}]})
    }

    #[test]
    fn pending_counts_only_after_the_grace_period_with_the_schedulers_reason() {
        let pending = pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}));
        assert_eq!(trouble(&pending, at(299), PENDING_AFTER), None);
        assert_eq!(
            trouble(&pending, at(420), PENDING_AFTER),
            Some(Trouble {
                reason:
                    "pod jupyter-alice Pending for 7m: Unschedulable: 0/3 nodes are available: 3 Insufficient memory."
                        .into(),
                since: at(0),
            })
        );
    }

    #[test]
    fn stuck_containers_count_at_once_and_ordinary_waits_do_not() {
        for reason in STUCK_WAITING {
            let found = trouble(&pod(waiting(reason, 0)), at(10), PENDING_AFTER).expect(reason);
            assert_eq!(found.reason, format!("pod jupyter-alice: container notebook {reason}: details"));
        }
        assert_eq!(trouble(&pod(waiting("ContainerCreating", 0)), at(10), PENDING_AFTER), None);
        let crash = trouble(&pod(waiting("CrashLoopBackOff", 4)), at(10), PENDING_AFTER).unwrap();
        assert!(crash.reason.contains("(restarted 4 times)"), "{}", crash.reason);
    }

    #[test]
    fn repeated_oom_kills_count_a_single_one_does_not() {
        let oom = |restarts: i32| {
            pod(json!({"phase": "Running", "containerStatuses": [{
                "name": "notebook", "image": "i", "imageID": "", "ready": true, "restartCount": restarts,
                "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}))
        };
        assert_eq!(trouble(&oom(1), at(10), PENDING_AFTER), None);
        assert_eq!(
            trouble(&oom(3), at(10), PENDING_AFTER).unwrap().reason,
            "pod jupyter-alice: container notebook OOMKilled, restarted 3 times"
        );
    }

    #[test]
    fn a_server_taken_by_the_cluster_is_a_marked_loss_a_bare_deletion_unmarked() {
        let running = |extra: serde_json::Value| {
            let mut status = json!({"phase": "Running", "containerStatuses": [{"name": "notebook", "image": "i",
                "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
            for (key, value) in extra.as_object().unwrap() {
                status[key] = value.clone();
            }
            let mut pod = pod(status);
            pod.spec.as_mut().unwrap().node_name = Some("user-pool-7f2c".into());
            pod
        };
        let drained = running(json!({"conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]}));
        assert_eq!(
            loss(&drained, true),
            Some(Loss::Marked(
                "server lost: pod jupyter-alice on node user-pool-7f2c: EvictionByEvictionAPI: Eviction API: evicting"
                    .into()
            ))
        );
        let evicted = running(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        assert_eq!(
            loss(&evicted, false).unwrap().reason(),
            "server lost: pod jupyter-alice on node user-pool-7f2c: Evicted: The node was low on resource: memory."
        );
        assert_eq!(
            loss(&running(json!({})), true),
            Some(Loss::Unmarked("server lost: pod jupyter-alice on node user-pool-7f2c was deleted".into()))
        );
        assert_eq!(loss(&running(json!({})), false), None, "a running pod is not lost");
        assert_eq!(loss(&pod(json!({"phase": "Pending"})), true), None, "a start cancelled is not a loss");
        assert_eq!(loss(&running(json!({"phase": "Succeeded"})), true), None, "a server that exited by itself");
    }

    #[test]
    fn running_and_terminating_pods_are_fine() {
        let running = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "notebook", "image": "i", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}));
        assert_eq!(trouble(&running, at(10_000), PENDING_AFTER), None);
        let mut leaving = pod(waiting("CrashLoopBackOff", 9));
        leaving.metadata.deletion_timestamp = leaving.metadata.creation_timestamp.clone();
        assert_eq!(trouble(&leaving, at(10), PENDING_AFTER), None);
    }
}
