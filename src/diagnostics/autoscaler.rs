//! The cluster autoscaler's status ConfigMap, read for what it says about adding nodes: a node group backing off
//! after a failed scale-up (a quota, a stockout, a bad template — the cloud's own error since 1.30) or one
//! already at its maximum size. It writes the structured form (`autoscalerStatus:`, `nodeGroups:`) from 1.30 and
//! a text form (`Cluster-autoscaler status at …`) before; both are read.

use super::Section;
use serde_json::Value;

/// One node group, as far as adding nodes goes.
#[derive(Debug, Default, PartialEq)]
struct NodeGroup {
    name: String,
    /// `NoActivity`, `InProgress`, `Backoff`, `Unhealthy`…
    scale_up: String,
    /// The cloud's error behind a backoff (1.30 and later), `CODE: message`.
    error: Option<String>,
    target: Option<u64>,
    max_size: Option<u64>,
}

/// What says the autoscaler cannot add nodes, in `section`'s status: a group backing off (or unhealthy for
/// scale-up), else a group at its maximum size. `None` for anything that is not an autoscaler's status.
pub fn blocked(section: &Section) -> Option<String> {
    let text = section.output.as_ref().ok()?;
    let groups = if text.lines().any(|l| l.starts_with("autoscalerStatus:")) {
        structured(text)
    } else if text.trim_start().starts_with("Cluster-autoscaler status at") {
        legacy(text)
    } else {
        return None;
    };
    let backing_off = groups.iter().find(|g| matches!(g.scale_up.as_str(), "Backoff" | "Unhealthy")).map(|g| {
        let why = g.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
        let now = if g.scale_up == "Backoff" { "backing off before trying again" } else { "unhealthy for scale-up" };
        format!("node group {}: adding nodes failed{why}; {now}", g.name)
    });
    backing_off.or_else(|| {
        let full = groups.iter().find(|g| g.max_size.is_some_and(|max| g.target.is_some_and(|t| t >= max)))?;
        Some(format!("node group {}: at its maximum size ({} nodes)", full.name, full.max_size.unwrap_or_default()))
    })
}

/// The 1.30+ document: `nodeGroups[].{name, health.{cloudProviderTarget, maxSize}, scaleUp.{status,
/// backoffInfo.{errorCode, errorMessage}}}`.
fn structured(text: &str) -> Vec<NodeGroup> {
    let Ok(status) = serde_saphyr::from_str::<Value>(text) else { return Vec::new() };
    let groups = status.get("nodeGroups").and_then(Value::as_array).cloned().unwrap_or_default();
    groups
        .iter()
        .map(|group| {
            let text = |path: &[&str]| path.iter().try_fold(group, |v, key| v.get(key)).and_then(Value::as_str);
            let number = |path: &[&str]| path.iter().try_fold(group, |v, key| v.get(key)).and_then(Value::as_u64);
            let error = match (
                text(&["scaleUp", "backoffInfo", "errorCode"]),
                text(&["scaleUp", "backoffInfo", "errorMessage"]),
            ) {
                (Some(code), Some(message)) => Some(format!("{code}: {message}")),
                (code, message) => code.or(message).map(String::from),
            };
            NodeGroup {
                name: text(&["name"]).unwrap_or("?").to_string(),
                scale_up: text(&["scaleUp", "status"]).unwrap_or_default().to_string(),
                error,
                target: number(&["health", "cloudProviderTarget"]),
                max_size: number(&["health", "maxSize"]),
            }
        })
        .collect()
}

/// The text form: after `NodeGroups:`, a `Name:` line starts each group, `Health:` carries
/// `cloudProviderTarget=N (minSize=N, maxSize=N)`, `ScaleUp:` starts with the status.
fn legacy(text: &str) -> Vec<NodeGroup> {
    let mut groups: Vec<NodeGroup> = Vec::new();
    let lines = text.lines().skip_while(|line| !line.starts_with("NodeGroups:")).skip(1);
    for line in lines {
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        let value = value.trim();
        match (key, groups.last_mut()) {
            ("Name", _) => groups.push(NodeGroup { name: value.to_string(), ..NodeGroup::default() }),
            ("Health", Some(group)) => {
                group.target = field(value, "cloudProviderTarget=");
                group.max_size = field(value, "maxSize=");
            }
            ("ScaleUp", Some(group)) => group.scale_up = value.split_whitespace().next().unwrap_or("").to_string(),
            _ => {}
        }
    }
    groups
}

/// The number after `name` in `… name=3 …` or `(…, name=3)`.
fn field(text: &str, name: &str) -> Option<u64> {
    let rest = &text[text.find(name)? + name.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Keep;

    fn section(status: &str) -> Section {
        let command = "kubectl -n kube-system get configmap cluster-autoscaler-status -o jsonpath={.data.status}";
        Section::ok(command, status.to_string(), Keep::Head)
    }

    /// As cluster-autoscaler 1.30 writes it (fields it has and hubwatch does not read left in): the GPU pool
    /// backing off on the cloud's quota.
    const STRUCTURED: &str = include_str!("../../tests/fixtures/autoscaler-status.yaml");

    const LEGACY: &str = "Cluster-autoscaler status at 2026-12-07 01:20:11.407416 +0000 UTC:
Cluster-wide:
  Health:      Healthy (ready=3 unready=0 notStarted=0 longNotStarted=0 registered=3 longUnregistered=0)
               LastProbeTime:      2026-12-07 01:20:11 +0000 UTC
  ScaleUp:     NoActivity (ready=3 registered=3)
  ScaleDown:   NoCandidates (candidates=0)

NodeGroups:
  Name:        user-pool
  Health:      Healthy (ready=3 unready=0 notStarted=0 longNotStarted=0 registered=3 longUnregistered=0 cloudProviderTarget=3 (minSize=1, maxSize=3))
               LastProbeTime:      2026-12-07 01:20:11 +0000 UTC
  ScaleUp:     NoActivity (ready=3 cloudProviderTarget=3)
  ScaleDown:   NoCandidates (candidates=0)
";

    #[test]
    fn a_node_group_backing_off_is_named_with_the_clouds_error() {
        assert_eq!(
            blocked(&section(STRUCTURED)).unwrap(),
            "node group gpu-pool: adding nodes failed (QUOTA_EXCEEDED: Quota 'NVIDIA_T4_GPUS' exceeded. Limit: 0.0 \
             in region us-central1.); backing off before trying again"
        );
    }

    #[test]
    fn a_node_group_at_its_maximum_is_named_in_either_form() {
        assert_eq!(blocked(&section(LEGACY)).unwrap(), "node group user-pool: at its maximum size (3 nodes)");
        let full = STRUCTURED
            .replace("status: Backoff", "status: NoActivity")
            .replace("cloudProviderTarget: 3", "cloudProviderTarget: 10");
        assert_eq!(blocked(&section(&full)).unwrap(), "node group user-pool: at its maximum size (10 nodes)");
    }

    #[test]
    fn room_to_grow_or_another_text_says_nothing() {
        let growing = STRUCTURED.replace("status: Backoff", "status: InProgress");
        assert_eq!(blocked(&section(&growing)), None);
        assert_eq!(blocked(&section(&LEGACY.replace("maxSize=3", "maxSize=5"))), None);
        assert_eq!(blocked(&section("NAME READY STATUS\n")), None);
        assert_eq!(blocked(&Section::failed("kubectl", "forbidden")), None);
    }
}
