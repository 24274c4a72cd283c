//! Change Events: when a hub's Deployment (label `component=hub`) gets a new pod template — a new image, a
//! new config checksum — PagerDuty hears of it as a Change Event, so a responder sees "the hub was upgraded
//! 4 minutes before the outage". The first listing only records what is there; changes after it are sent.
//! The same watch reports each Deployment's state — mid-rollout or not, and its silence annotations — when
//! listed and whenever it changes: a rollout holds pages for a short grace, and the annotations silence the
//! hub (for teams that work through Git).

use crate::domain::{DeploymentState, HubChange, HubName, HubNews};
use crate::redact::Redactor;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What of a hub Deployment's pod template matters: its containers' images and its annotations (z2jh puts
/// the config and secret checksums there).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pub generation: i64,
    pub images: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// "Expected, don't page" until this time (RFC 3339) on a hub's Deployment.
pub const SILENCE_UNTIL_ANNOTATION: &str = "hubwatch.jupyter.org/silence-until";
/// Why (required with `silence-until`).
pub const SILENCE_REASON_ANNOTATION: &str = "hubwatch.jupyter.org/silence-reason";

/// Whether the Deployment is mid-rollout: its controller has not seen the new spec yet, not every replica
/// runs the new template, or the rollout is still progressing (z2jh's hub uses the Recreate strategy: the
/// new pod is updated at once but not yet available).
pub fn rolling_out(deployment: &Deployment) -> bool {
    // No status yet (just created): not known to be rolling out, and a page is never held on a guess.
    let Some(status) = &deployment.status else { return false };
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let observed = status.observed_generation.unwrap_or_default() < deployment.metadata.generation.unwrap_or_default();
    let progressing = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("True")
            && matches!(c.reason.as_deref(), Some("ReplicaSetUpdated" | "NewReplicaSetCreated" | "FoundNewReplicaSet"))
    });
    observed || status.updated_replicas.unwrap_or_default() < wanted || progressing
}

pub fn state_of(hub: &HubName, namespace: &str, deployment: &Deployment) -> DeploymentState {
    let annotation = |name: &str| deployment.metadata.annotations.as_ref().and_then(|a| a.get(name)).cloned();
    DeploymentState {
        hub: hub.clone(),
        namespace: namespace.to_string(),
        deployment: deployment.metadata.name.clone().unwrap_or_default(),
        generation: deployment.metadata.generation.unwrap_or_default(),
        rolling_out: rolling_out(deployment),
        silence_until: annotation(SILENCE_UNTIL_ANNOTATION),
        silence_reason: annotation(SILENCE_REASON_ANNOTATION),
    }
}

pub fn template_of(deployment: &Deployment) -> Template {
    let template = &deployment.spec.template;
    let images = template
        .spec
        .as_ref()
        .map(|spec| spec.containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .map(|a| a.into_iter().collect())
        .unwrap_or_default();
    Template { generation: deployment.metadata.generation.unwrap_or_default(), images, annotations }
}

/// What changed, one line each, images first; values redacted (annotations may hold anything) and cut short.
pub fn differences(before: &Template, after: &Template, redactor: &Redactor) -> Vec<String> {
    let short = |value: &str| redactor.redact_bounded(value, 100);
    let mut lines = Vec::new();
    let pairs = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        let keys: std::collections::BTreeSet<String> = a.keys().chain(b.keys()).cloned().collect();
        keys.into_iter()
            .filter_map(|k| {
                let (old, new) = (a.get(&k), b.get(&k));
                (old != new)
                    .then(|| (k, old.cloned().unwrap_or("(none)".into()), new.cloned().unwrap_or("(none)".into())))
            })
            .collect::<Vec<_>>()
    };
    for (container, old, new) in pairs(&before.images, &after.images) {
        lines.push(format!("image of container {container}: {} -> {}", short(&old), short(&new)));
    }
    for (annotation, old, new) in pairs(&before.annotations, &after.annotations) {
        lines.push(format!("pod template annotation {annotation}: {} -> {}", short(&old), short(&new)));
    }
    lines
}

/// Watches `namespace`'s hub Deployments until `shutdown`, sending each template change to `changes`.
pub async fn watch(
    client: kube::Client,
    hub: HubName,
    namespace: String,
    changes: mpsc::Sender<HubNews>,
    shutdown: CancellationToken,
    redactor: Arc<Redactor>,
) {
    let api: Api<Deployment> = Api::namespaced(client, &namespace);
    let stream = watcher::watcher(api, watcher::Config::default().labels("component=hub")).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut known: HashMap<String, Template> = HashMap::new();
    let mut states: HashMap<String, DeploymentState> = HashMap::new();
    let mut failing = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        let deployment = match event {
            None => return,
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(%hub, error = %e, "cannot watch the hub's Deployment; retrying");
                    failing = true;
                }
                continue;
            }
            Some(Ok(Event::InitApply(d))) => {
                known.insert(d.metadata.name.clone().unwrap_or_default(), template_of(&d));
                if !send_state(&changes, &mut states, state_of(&hub, &namespace, &d)).await {
                    return;
                }
                continue;
            }
            Some(Ok(Event::Apply(d))) => d,
            Some(Ok(_)) => continue,
        };
        failing = false;
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let after = template_of(&deployment);
        let state = state_of(&hub, &namespace, &deployment);
        let Some(before) = known.insert(name.clone(), after.clone()) else {
            if !send_state(&changes, &mut states, state).await {
                return;
            }
            continue;
        };
        let lines = differences(&before, &after, &redactor);
        if !lines.is_empty() {
            let change = HubChange {
                hub: hub.clone(),
                namespace: namespace.clone(),
                deployment: name,
                generation: after.generation,
                changes: lines,
            };
            if changes.send(HubNews::Changed(change)).await.is_err() {
                return; // the recorder is gone: shutting down
            }
        }
        // After the change: a rollout's timeline entry follows the change it rolls out.
        if !send_state(&changes, &mut states, state).await {
            return;
        }
    }
}

/// Sends `state` when it differs from what was last sent for its Deployment; false when the recorder is gone.
async fn send_state(
    changes: &mpsc::Sender<HubNews>,
    states: &mut HashMap<String, DeploymentState>,
    state: DeploymentState,
) -> bool {
    if states.get(&state.deployment) == Some(&state) {
        return true;
    }
    states.insert(state.deployment.clone(), state.clone());
    changes.send(HubNews::Deployment(state)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str, checksum: &str) -> Template {
        Template {
            generation: 3,
            images: BTreeMap::from([("hub".into(), image.into())]),
            annotations: BTreeMap::from([("checksum/config-map".into(), checksum.into())]),
        }
    }

    fn deployment(status: serde_json::Value, annotations: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hub", "namespace": "temple", "generation": 8, "annotations": annotations},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_rolling_out_until_its_new_pods_are_available() {
        let progressing =
            |reason: &str| serde_json::json!([{"type": "Progressing", "status": "True", "reason": reason}]);
        let cases = [
            (
                serde_json::json!({"observedGeneration": 7, "updatedReplicas": 1, "conditions": progressing("NewReplicaSetAvailable")}),
                true,
                "spec not yet seen",
            ),
            (
                serde_json::json!({"observedGeneration": 8, "conditions": progressing("ReplicaSetUpdated")}),
                true,
                "no updated replica yet",
            ),
            (
                serde_json::json!({"observedGeneration": 8, "updatedReplicas": 1, "unavailableReplicas": 1, "conditions": progressing("ReplicaSetUpdated")}),
                true,
                "Recreate: the new pod is not available",
            ),
            (
                serde_json::json!({"observedGeneration": 8, "updatedReplicas": 1, "availableReplicas": 1, "conditions": progressing("NewReplicaSetAvailable")}),
                false,
                "done",
            ),
            (
                serde_json::json!({"observedGeneration": 8, "updatedReplicas": 1, "unavailableReplicas": 1, "conditions": progressing("NewReplicaSetAvailable")}),
                false,
                "crashing later: not a rollout",
            ),
        ];
        for (status, expected, why) in cases {
            assert_eq!(rolling_out(&deployment(status, serde_json::json!({}))), expected, "{why}");
        }
    }

    #[test]
    fn the_state_carries_the_silence_annotations_as_written() {
        let annotations = serde_json::json!({SILENCE_UNTIL_ANNOTATION: "2026-12-01T06:00:00Z", SILENCE_REASON_ANNOTATION: "upgrading"});
        let state = state_of(
            &"temple".into(),
            "temple",
            &deployment(serde_json::json!({"observedGeneration": 8}), annotations),
        );
        assert_eq!(state.silence_until.as_deref(), Some("2026-12-01T06:00:00Z"));
        assert_eq!(state.silence_reason.as_deref(), Some("upgrading"));
        assert_eq!((state.deployment.as_str(), state.generation), ("hub", 8));
    }

    #[test]
    fn an_upgrade_and_a_config_change_are_named_and_nothing_else() {
        let before = template("quay.io/jupyterhub/k8s-hub:4.1.0", "5e2c");
        let redactor = Redactor::new();
        assert!(differences(&before, &before, &redactor).is_empty());
        assert_eq!(
            differences(&before, &template("quay.io/jupyterhub/k8s-hub:4.2.0", "9a1f"), &redactor),
            [
                "image of container hub: quay.io/jupyterhub/k8s-hub:4.1.0 -> quay.io/jupyterhub/k8s-hub:4.2.0",
                "pod template annotation checksum/config-map: 5e2c -> 9a1f",
            ]
        );
    }
}
