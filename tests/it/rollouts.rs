//! Rollouts and Deployment annotations end to end: `hubwatch run` against the real lab, the hub's Deployment
//! in the Kubernetes stand-in (KUBECONFIG), PagerDuty played by its stand-in.
//! - the hub is upgraded and its new pod is not yet available while spawning fails for both probe users: the
//!   incident is recorded and shown as held by the rollout, nothing is sent within the grace; the rollout
//!   stays broken past it → exactly one trigger, the change already in the incident's timeline;
//! - `hubwatch.jupyter.org/silence-until` and `-reason` on the Deployment silence the hub: an outage is held;
//!   removing the annotation pages it, once.

use crate::support::daemon::{get, more_probe_runs, wait_for};
use crate::support::k8s_fixtures;
use crate::support::pagerduty::PagerDuty;
use crate::support::scenario::Scenario;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

const PORT: u16 = 18970;
/// Detection: a server round (every 4 s) failing within its timeout, with a margin for a busy machine.
const DETECTION: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(30);

fn triggers(pd: &PagerDuty) -> Vec<Value> {
    pd.accepted().into_iter().filter(|e| e["event_action"] == "trigger").collect()
}

async fn lab_incidents(base: &str) -> Vec<Value> {
    let (_, body) = get(&format!("{base}/api/v1/status"), None).await;
    let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let hubs = status["hubs"].as_array().cloned().unwrap_or_default();
    hubs.iter().find(|h| h["name"] == "lab").and_then(|h| h["incidents"].as_array().cloned()).unwrap_or_default()
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_holds_pages_for_its_grace_and_the_deployments_annotation_silences_the_hub() {
    let s = Scenario::on_lab("rollouts", PORT)
        .await
        .with_api(|api| {
            k8s_fixtures::load_control_pods(api, SystemTime::now());
            api.put("deployments", k8s_fixtures::hub_deployment("quay.io/jupyterhub/k8s-hub:4.1.0", "5e2c", 7));
        })
        .await
        .hub(json!({"namespace": k8s_fixtures::NAMESPACE}))
        .config(json!({
            "kubernetes": {"pending_after": "1m"},
            "incidents": {"rollout_grace": format!("{}s", GRACE.as_secs())},
        }));
    let (pd, lab, api) = (&s.pd, &s.lab, s.api());
    let daemon = s.start().await;
    let base = daemon.base.clone();
    // The Deployment watch must have its first view (generation 7) before the upgrade, or it takes the
    // upgraded Deployment for where it started (a busy machine starts it late).
    wait_for("the Deployment watch", Duration::from_secs(30), async || {
        api.requests().iter().any(|r| r.contains("/deployments") && r.contains("watch=true"))
    })
    .await;

    eprintln!("phase: the hub is upgraded; its new pod is not available yet and spawning fails");
    let mut upgrading = k8s_fixtures::hub_deployment("quay.io/jupyterhub/k8s-hub:4.2.0", "5e2c", 8);
    upgrading["status"] = k8s_fixtures::rolling_out(8);
    api.put("deployments", upgrading);
    wait_for("the change event", Duration::from_secs(20), async || !pd.changes().is_empty()).await;
    let rollout_seen = std::time::Instant::now();
    lab.set_flag("spawn-fail", None, "");
    wait_for("the held incident", DETECTION, async || !lab_incidents(&base).await.is_empty()).await;
    let incident = lab_incidents(&base).await[0].clone();
    let key = incident["key"].as_str().unwrap().to_string();
    let held_by = incident["held_by"].as_str().unwrap_or_default();
    if rollout_seen.elapsed() < GRACE {
        assert!(held_by.contains("the rollout of hub Deployment hub (generation 8)"), "{incident}");
        assert_eq!(incident["silenced"], false, "a rollout is not a silence: {incident}");
        assert!(triggers(pd).is_empty(), "held within the grace");
    }
    eprintln!("phase: the rollout stays broken past the grace: it pages");
    let latency = wait_for("the trigger", GRACE + Duration::from_secs(30), async || !triggers(pd).is_empty()).await;
    eprintln!("    trigger {:?} after the rollout was seen", rollout_seen.elapsed());
    let _ = latency;
    more_probe_runs(async || daemon.metrics().await, "server", "failed", 2.0).await;
    assert_eq!(triggers(pd).len(), 1, "exactly one trigger");
    assert_eq!(triggers(pd)[0]["dedup_key"], key.as_str());
    let (_, report) = get(&format!("{base}/incidents/{key}/report.md"), None).await;
    assert!(report.contains("** Hub changed: hub Deployment hub changed (namespace temple, generation 8)"), "{report}");
    assert!(report.contains("** Page held (silence, rollout or cluster wait): "), "{report}");

    eprintln!("phase: healed, the rollout done");
    let mut done = k8s_fixtures::hub_deployment("quay.io/jupyterhub/k8s-hub:4.2.0", "5e2c", 8);
    done["status"] = k8s_fixtures::rolled_out(8);
    api.put("deployments", done.clone());
    lab.clear_flags();
    wait_for("the resolve", DETECTION, async || pd.accepted_actions().contains(&"resolve".to_string())).await;

    eprintln!("phase: the Deployment is annotated: silenced until tomorrow");
    let until = hubwatch::timefmt::rfc3339(SystemTime::now() + Duration::from_secs(86_400));
    let mut annotated = done.clone();
    annotated["metadata"]["annotations"] = serde_json::json!({
        "hubwatch.jupyter.org/silence-until": until, "hubwatch.jupyter.org/silence-reason": "moving to the new cluster"});
    api.put("deployments", annotated);
    wait_for("the annotation's silence", Duration::from_secs(20), async || {
        let (_, body) = get(&format!("{base}/api/v1/silences"), None).await;
        body.contains("annotation-lab") && body.contains("moving to the new cluster")
    })
    .await;
    lab.set_flag("spawn-fail", None, "");
    wait_for("the silenced incident", DETECTION, async || !lab_incidents(&base).await.is_empty()).await;
    let incident = lab_incidents(&base).await[0].clone();
    assert_eq!(incident["silenced"], true, "{incident}");
    assert_eq!(incident["silence"]["id"], "annotation-lab", "{incident}");
    more_probe_runs(async || daemon.metrics().await, "server", "failed", 2.0).await;
    assert_eq!(triggers(pd).len(), 1, "the annotation holds the page");

    eprintln!("phase: the annotation is removed: the page goes out, once");
    api.put("deployments", done);
    wait_for("the trigger", Duration::from_secs(30), async || triggers(pd).len() >= 2).await;
    more_probe_runs(async || daemon.metrics().await, "server", "failed", 2.0).await;
    assert_eq!(triggers(pd).len(), 2, "one trigger for the second incident");
    lab.clear_flags();
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}
