//! High availability against the Kubernetes stand-in (Lease and ConfigMap with resourceVersion conflicts):
//! two replicas, one leads and pages; killed with an incident open, the standby takes over, restores the
//! mirrored state, does not page again, and sends the resolve when the hub heals.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::apiserver::ApiServer;
use support::daemon::{Daemon, free_port, fresh_state, lab_hub_yaml, metric, wait_for};
use support::lab::Lab;
use support::pagerduty::{PagerDuty, ROUTING_KEY};

const PORT: u16 = 18780;

fn actions(pd: &PagerDuty) -> Vec<(String, String)> {
    pd.accepted()
        .iter()
        .map(|e: &Value| {
            (e["event_action"].as_str().unwrap().to_string(), e["dedup_key"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_without_paging_again_and_sends_the_resolve() {
    hubwatch::http::install_crypto_provider();
    let pd = PagerDuty::default();
    let events_url = pd.clone().start().await;
    let api = ApiServer::default();
    let api_url = api.start().await;
    let lab = Lab::start_for_daemon("ha", PORT);
    let kubeconfig = ApiServer::kubeconfig(&api_url, &lab.dir).display().to_string();
    let token = lab.token();
    let start = |replica: &str| {
        let listen = free_port();
        let state = fresh_state(&lab.dir, &format!("ha-{replica}.db"));
        let config = lab.dir.join(format!("ha-{replica}.yaml"));
        std::fs::write(
            &config,
            format!(
                r#"listen: {listen}
state_path: {state}
incidents: {{min_affected_users: 2, window: 1m, recovery_successes: 2}}
pagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: "{events_url}", retry_delay: 1s}}
kubernetes: {{enabled: true}}
high_availability: {{lease_duration: 3s}}
{hub}"#,
                state = state.display(),
                hub = lab_hub_yaml(lab.url.as_str(), ["probe-1", "probe-2"], ""),
            ),
        )
        .unwrap();
        let log = lab.dir.join(format!("ha-{replica}.log"));
        let _ = std::fs::remove_file(&log);
        let env = [
            ("HUBWATCH_TOKEN", token.as_str()),
            ("ROUTING_KEY", ROUTING_KEY),
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAMESPACE", "monitoring"),
            ("HOSTNAME", replica),
        ];
        Daemon::start(&config, listen, &env, log)
    };

    let a = start("replica-a");
    a.wait_ready().await;
    wait_for("replica-a to lead", Duration::from_secs(20), async || lease_holder(&api) == "replica-a").await;
    let b = start("replica-b");
    b.wait_ready().await;
    wait_for("replica-b to stand by", Duration::from_secs(10), async || b.log().contains("standing by")).await;

    eprintln!("phase: spawning fails for both users; replica-a pages");
    lab.set_flag("spawn-fail", None, "");
    wait_for("the trigger", Duration::from_secs(60), async || !pd.accepted().is_empty()).await;
    let key = actions(&pd)[0].1.clone();
    // Let the leader mirror the sent trigger, then kill it with the incident open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(metric(&b.metrics().await, "hubwatch_probe_runs_total", &[]), 0.0, "the standby never probes");
    assert!(metric(&a.metrics().await, "hubwatch_probe_runs_total", &[]) > 0.0, "the leader does");
    // The standby's page for the incident (behind the same Service) shows the leader's state.
    let (status, page) = support::daemon::get(&format!("{}/incidents/{key}", b.base), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("probe-1"), "{page}");
    a.kill();

    eprintln!("phase: replica-a killed; replica-b takes over");
    wait_for("replica-b to lead", Duration::from_secs(20), async || lease_holder(&api) == "replica-b").await;
    wait_for("replica-b to restore", Duration::from_secs(10), async || b.log().contains("restored the state")).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(actions(&pd), [("trigger".to_string(), key.clone())], "no second page after the takeover");

    eprintln!("phase: healed; replica-b resolves");
    lab.clear_flags();
    wait_for("the resolve", Duration::from_secs(90), async || pd.accepted().len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(actions(&pd), [("trigger".to_string(), key.clone()), ("resolve".to_string(), key)]);

    // A graceful stop gives the lease up at once.
    assert_eq!(b.stop(Duration::from_secs(60)).await, Some(0));
    assert_eq!(lease_holder(&api), "", "released");
}

#[tokio::test]
async fn one_lease_one_leader_and_an_expired_lease_changes_hands() {
    hubwatch::http::install_crypto_provider();
    let api = ApiServer::default();
    let client = kube::Client::try_from(kube::Config::new(api.start().await.parse().unwrap())).unwrap();
    let replica = |identity: &str| {
        hubwatch::ha::Leadership::new(
            client.clone(),
            hubwatch::config::HaConfig {
                namespace: "monitoring".into(),
                lease: "hubwatch-leader".into(),
                state_configmap: "hubwatch-state".into(),
                lease_duration: Duration::from_secs(2),
                identity: identity.into(),
            },
        )
    };
    let (a, b) = (replica("a"), replica("b"));
    // Both try at once: exactly one wins (the other's create or replace conflicts).
    let (won_a, won_b) = tokio::join!(a.try_lead(), b.try_lead());
    assert!(won_a.unwrap() ^ won_b.unwrap(), "exactly one leader");
    let (leader, standby) = if lease_holder(&api) == "a" { (&a, &b) } else { (&b, &a) };
    assert!(leader.try_lead().await.unwrap(), "the leader renews");
    assert!(!standby.try_lead().await.unwrap(), "a held lease is not taken");
    // The leader stops renewing: after the lease duration the standby takes it, and transitions count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(standby.try_lead().await.unwrap(), "an expired lease changes hands");
    assert_eq!(lease_holder(&api), standby.identity());
    assert!(!leader.try_lead().await.unwrap(), "the old leader does not get it back");
    let transitions = api.inner.lock().unwrap().objects["leases"][0]["spec"]["leaseTransitions"].clone();
    assert_eq!(transitions, 1);
    // Released: the other takes it at once.
    standby.release().await;
    assert!(leader.try_lead().await.unwrap());
}

fn lease_holder(api: &ApiServer) -> String {
    api.inner
        .lock()
        .unwrap()
        .objects
        .get("leases")
        .and_then(|l| l.first().cloned())
        .map_or(String::new(), |l| l["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
}
