//! When a pod means its user cannot work: pure, from the pod as the API server returns it.
//!
//! - Pending longer than `pending_after` (the scheduler's reason, e.g. FailedScheduling's "0/3 nodes are
//!   available: 3 Insufficient memory.", is on the pod's PodScheduled condition).
//! - A container waiting in ImagePullBackOff, ErrImagePull, CrashLoopBackOff or CreateContainerConfigError.
//! - A container OOMKilled again and again (its last termination OOMKilled after at least two restarts).
//!
//! A pod being deleted is on its way out and says nothing; a Running, ready pod is fine.

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
    fn running_and_terminating_pods_are_fine() {
        let running = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "notebook", "image": "i", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}));
        assert_eq!(trouble(&running, at(10_000), PENDING_AFTER), None);
        let mut leaving = pod(waiting("CrashLoopBackOff", 9));
        leaving.metadata.deletion_timestamp = leaving.metadata.creation_timestamp.clone();
        assert_eq!(trouble(&leaving, at(10), PENDING_AFTER), None);
    }
}
