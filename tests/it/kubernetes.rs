//! Kubernetes awareness end to end: `hubwatch run` against the real lab, with the Kubernetes API played by
//! the local stand-in (KUBECONFIG) and PagerDuty by its stand-in.
//! - two real users whose pods are stuck (ImagePullBackOff) while every probe passes → one incident naming
//!   them, its trigger carrying kubectl-style diagnostics; their pods running again → the resolve;
//! - the Kubernetes API slow while spawning fails for both probe users → the page still goes out on time,
//!   saying the diagnostics are being collected, and the diagnostics (here: why they could not be had)
//!   follow in an update;
//! - no planted secret appears in any event or in the daemon's log;
//! - real users failing in the hub's own log (the lab's real log, followed through the stand-in) page while
//!   every probe passes, and resolve when their servers start.

use crate::support::apiserver::ApiServer;
use crate::support::daemon::{Daemon, free_port};
use crate::support::daemon::{sample, wait_for};
use crate::support::k8s_fixtures::{self, CANARY, NAMESPACE};
use crate::support::pagerduty::PagerDuty;
use crate::support::scenario::Scenario;
use hubwatch::signals::losses::StopRequests;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

const PORT: u16 = 18760;
const EVERY: Duration = Duration::from_secs(4);
const TIMEOUT: Duration = Duration::from_secs(30);
const MARGIN: Duration = Duration::from_secs(10);

fn triggers(pd: &PagerDuty) -> Vec<Value> {
    pd.accepted().into_iter().filter(|e| e["event_action"] == "trigger").collect()
}

/// The page as PagerDuty received it, for docs/sample-page.md: the event (without its routing key) and its
/// diagnostics as the responder reads them.
fn write_sample_page(trigger: &Value) {
    let mut event = trigger.clone();
    event.as_object_mut().unwrap().remove("routing_key");
    let diagnostics = event["payload"]["custom_details"]["diagnostics"].as_str().unwrap().to_string();
    event["payload"]["custom_details"]["diagnostics"] = "(shown below)".into();
    let page = format!(
        "# A sample page\n\nWritten by `tests/it/kubernetes.rs` from the trigger the local PagerDuty received: two real users' \
         pods stuck in ImagePullBackOff on the lab hub, every probe passing.\n\n```json\n{}\n```\n\n\
         `custom_details.diagnostics`:\n\n```\n{}```\n",
        serde_json::to_string_pretty(&event).unwrap(),
        diagnostics
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sample-page.md");
    std::fs::write(path, page).unwrap();
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_users_stuck_pods_page_with_diagnostics_and_a_slow_api_never_delays_a_page() {
    let s = Scenario::on_lab("kubernetes", PORT)
        .await
        .with_api(|api| {
            k8s_fixtures::load(api, k8s_fixtures::Trouble::BrokenImage, SystemTime::now());
            api.put("deployments", k8s_fixtures::hub_deployment("quay.io/jupyterhub/k8s-hub:4.1.0", "5e2c", 7));
        })
        .await
        .hub(json!({"namespace": k8s_fixtures::NAMESPACE}))
        .config(json!({"kubernetes": {"pending_after": "1m"}}))
        .hub(json!({"users": ["probe-3", "probe-4"]}));
    let (pd, lab, api, token) = (&s.pd, &s.lab, s.api(), s.token.clone());
    let daemon = s.start().await;

    eprintln!("phase: two real users' pods stuck in ImagePullBackOff, every probe passing");
    let latency = wait_for("the trigger", Duration::from_secs(30), async || !triggers(pd).is_empty()).await;
    eprintln!("    trigger after {latency:?}");
    let trigger = &triggers(pd)[0];
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["server"], serde_json::json!(["carol", "erin"]), "{trigger:#}");
    assert_eq!(trigger["payload"]["summary"], "lab: 2 users cannot start their servers");
    let reasons = details["last_errors"].to_string();
    assert!(reasons.contains("pod jupyter-carol: container notebook ImagePullBackOff"), "{reasons}");
    assert!(reasons.contains("user_pod"), "{reasons}");
    let diagnostics = details["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("$ kubectl -n temple get pods -o wide"), "{diagnostics}");
    assert!(diagnostics.contains("$ kubectl -n temple describe pod jupyter-carol"), "{diagnostics}");
    assert!(diagnostics.contains("ImagePullBackOff"), "{diagnostics}");
    let key = trigger["dedup_key"].as_str().unwrap().to_string();
    write_sample_page(trigger);
    // The event links to hubwatch's page for the incident, which shows the diagnostics whole.
    let page_url = trigger["client_url"].as_str().unwrap();
    let (status, page) = crate::support::daemon::get(page_url, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("$ kubectl -n temple describe pod jupyter-carol"), "{page}");
    assert!(page.contains("Back-off pulling image &quot;quay.io/temple/notebook:2026.11&quot;"), "escaped: {page}");
    assert!(page.contains("diagnostics</span>: kubectl -n temple get pods -o wide;"), "in the timeline: {page}");

    eprintln!("phase: the hub is upgraded");
    api.put("deployments", k8s_fixtures::hub_deployment("quay.io/jupyterhub/k8s-hub:4.2.0", "5e2c", 8));
    wait_for("the change event", Duration::from_secs(20), async || !pd.changes().is_empty()).await;
    let change = &pd.changes()[0];
    assert_eq!(
        change["payload"]["summary"],
        "lab: hub Deployment hub changed: image of container hub: quay.io/jupyterhub/k8s-hub:4.1.0 -> quay.io/jupyterhub/k8s-hub:4.2.0"
    );
    assert_eq!(change["payload"]["custom_details"]["generation"], 8);
    assert_eq!(pd.changes().len(), 1, "one change, one event; the initial listing sends nothing");

    eprintln!("phase: their pods run again");
    for user in ["carol", "erin"] {
        api.put("pods", k8s_fixtures::running_user_pod(user, SystemTime::now()));
    }
    let latency = wait_for("the resolve", Duration::from_secs(30), async || {
        pd.accepted().iter().any(|e| e["event_action"] == "resolve" && e["dedup_key"] == key.as_str())
    })
    .await;
    eprintln!("    resolve after {latency:?}");
    assert_eq!(triggers(pd).len(), 1, "paged once");
    let (status, report) =
        crate::support::daemon::get(&format!("{}/incidents/{key}/report.md", daemon.base), None).await;
    assert_eq!(status, 200, "{report}");
    crate::support::golden::assert_contains_all(
        &report,
        &[
            "| Users affected | 2: carol, erin |",
            "** Diagnostics collected: kubectl -n temple get pods -o wide;",
            "  - `kubectl -n temple get pods -o wide` showed:",
            "** Hub changed: hub Deployment hub changed (namespace temple, generation 8): image of container hub",
            "** Impact end: ",
            "- server failed for carol at stage `user_pod`",
            "- Pod `jupyter-carol`: ImagePullBackOff, 0/1 ready",
        ],
    );
    assert!(!report.contains(CANARY), "a planted secret leaked into the report");

    eprintln!("phase: the Kubernetes API answers after 30 s while spawning fails for both probe users");
    api.set_delay(Some(Duration::from_secs(30)));
    lab.set_flag("spawn-fail", None, "");
    let latency = wait_for("the second trigger", EVERY + TIMEOUT + MARGIN, async || triggers(pd).len() >= 2).await;
    eprintln!("    trigger after {latency:?}");
    let trigger = triggers(pd)[1].clone();
    assert_eq!(
        trigger["payload"]["custom_details"]["affected_users"]["server"],
        serde_json::json!(["probe-3", "probe-4"])
    );
    let diagnostics = trigger["payload"]["custom_details"]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.starts_with("being collected: not ready within 2s"), "{diagnostics}");
    wait_for("the diagnostics to follow", Duration::from_secs(30), async || triggers(pd).len() >= 3).await;
    let follow_up = triggers(pd)[2].clone();
    assert_eq!(follow_up["dedup_key"], trigger["dedup_key"]);
    let diagnostics = follow_up["payload"]["custom_details"]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("(not collected: the Kubernetes API did not answer within 5s)"), "{diagnostics}");

    lab.clear_flags();
    api.set_delay(None);
    let everything = format!("{:?}{}", pd.accepted(), daemon.log());
    assert!(!everything.contains(CANARY), "a planted secret leaked");
    assert!(!everything.contains("canary-kube-token"), "the Kubernetes token leaked");
    assert!(!everything.contains(&token), "the hub token leaked");
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}

#[tokio::test]
async fn the_watch_names_real_users_from_pod_annotations_and_from_dask_clusters() {
    hubwatch::http::install_crypto_provider();
    let api = ApiServer::default();
    let t = SystemTime::now();
    k8s_fixtures::load(&api, k8s_fixtures::Trouble::NodePoolFull, t);
    k8s_fixtures::load_dask(&api, t);
    for user in ["carol", "erin", "frank"] {
        api.put("pods", k8s_fixtures::running_user_pod(user, t));
    }
    let client = kube::Client::try_from(kube::Config::new(api.start().await.parse().unwrap())).unwrap();
    let stops = std::sync::Arc::new(StopRequests::default());
    let watch = hubwatch::signals::Watch {
        client,
        hub: "temple".into(),
        namespace: NAMESPACE.into(),
        pending_after: Duration::from_secs(60),
        call_timeout: Duration::from_secs(5),
        redactor: std::sync::Arc::new(hubwatch::redact::Redactor::new()),
        lost_for: Duration::from_secs(900),
        stops: stops.clone(),
        loss_grace: Duration::from_millis(500),
        own_users: std::sync::Arc::new(|user: &str| user.starts_with("probe-")),
    };
    let (updates, mut received) = tokio::sync::mpsc::channel(16);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watching = tokio::spawn(watch.run(true, updates, shutdown.clone()));
    let mut latest = std::collections::HashMap::new();
    while latest.len() < 2 {
        let update = tokio::time::timeout(Duration::from_secs(20), received.recv()).await.unwrap().unwrap();
        latest.insert(update.capability, update.users);
    }
    let server = &latest[&hubwatch::domain::Capability::Server];
    assert_eq!(server.keys().collect::<Vec<_>>(), ["alice", "bob"], "dave's pod runs");
    // Pending for 7m (7m1s on a busy machine): the age is measured when the watch looks.
    let alice = &server["alice"].0;
    assert!(
        alice.starts_with("pod jupyter-alice Pending for 7m") && alice.contains(": Unschedulable: 0/3 nodes"),
        "{server:?}"
    );
    assert!(
        server["alice"].0.ends_with("; NotTriggerScaleUp: pod didn't trigger scale-up: 1 max node group size reached"),
        "the autoscaler's word is evidence too: {server:?}"
    );
    let dask = &latest[&hubwatch::domain::Capability::DaskGateway];
    assert_eq!(dask.keys().collect::<Vec<_>>(), ["alice", "bob"], "users from the DaskClusters' spec.username");

    // A stuck pod deleted clears its user.
    api.delete("pods", NAMESPACE, "jupyter-bob");
    let update = tokio::time::timeout(Duration::from_secs(20), received.recv()).await.unwrap().unwrap();
    assert_eq!(update.capability, hubwatch::domain::Capability::Server);
    assert_eq!(update.users.keys().collect::<Vec<_>>(), ["alice"]);

    // Running servers taken: carol's node drained (the eviction marks the pod, then it goes), erin's evicted
    // by the kubelet; frank's deleted after a stop the hub's log showed (the culler's): not a loss.
    stops.set_following(true);
    let mut drained = k8s_fixtures::running_user_pod("carol", t);
    drained["status"]["conditions"] = serde_json::json!([{"type": "DisruptionTarget", "status": "True",
        "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]);
    api.put("pods", drained);
    api.delete("pods", NAMESPACE, "jupyter-carol");
    let mut evicted = k8s_fixtures::running_user_pod("erin", t);
    evicted["status"] = serde_json::json!({"phase": "Failed", "reason": "Evicted",
        "message": "The node was low on resource: memory."});
    api.put("pods", evicted);
    stops.asked("frank", SystemTime::now());
    api.delete("pods", NAMESPACE, "jupyter-frank");
    let lost = loop {
        let update = tokio::time::timeout(Duration::from_secs(20), received.recv()).await.unwrap().unwrap();
        if update.capability == hubwatch::domain::Capability::Server && update.users.len() >= 3 {
            break update.users;
        }
    };
    assert_eq!(lost.keys().collect::<Vec<_>>(), ["alice", "carol", "erin"], "frank's server was stopped, not lost");
    assert_eq!(
        lost["carol"].0,
        "server lost: pod jupyter-carol on node user-pool-7f2c: EvictionByEvictionAPI: Eviction API: evicting"
    );
    assert!(lost["erin"].0.ends_with(": Evicted: The node was low on resource: memory."), "{lost:?}");
    shutdown.cancel();
    watching.await.unwrap();
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_hubs_are_probed_and_a_new_one_is_watched_without_a_config_change() {
    let s = Scenario::on_lab("discovery", 18770).await;
    let (token, url) = (s.token.clone(), s.lab.url.to_string());
    let s = s
        .with_api(|api| {
            k8s_fixtures::load_discoverable_hub(api, "temple", &url, "probe-1,probe-2", Some(&token));
            // No token for this one: found, but not watchable; it is logged and skipped.
            k8s_fixtures::load_discoverable_hub(api, "lake", &url, "probe-3,probe-4", None);
            // This one's annotation would send the token to a host none of its Ingresses serve: refused.
            let elsewhere = "https://collector.example.com/";
            k8s_fixtures::load_discoverable_hub(api, "marsh", elsewhere, "probe-3,probe-4", Some(&token));
        })
        .await
        .config(json!({
            "kubernetes": {"discovery": {"users": ["nobody-1", "nobody-2"], "every": "2s"}},
            "defaults": {"probes": {"server": {"every": "1h"}, "kernel": {"every": "1h"}}},
            // Discovered hubs share a cluster, so a vanished one's page would wait for others (tests/it/folds.rs).
            "incidents": {"fold": {"min_hubs": 0}},
            "hubs": [],
        }));
    let (pd, lab, api, listen) = (&s.pd, &s.lab, s.api(), s.listen);
    let daemon = s.start().await;
    let login_ok = |metrics: &str, hub: &str| {
        crate::support::daemon::sample(
            metrics,
            "hubwatch_probe_runs_total",
            &[&format!("hub=\"{hub}\""), "capability=\"login\"", "result=\"ok\""],
        )
        .unwrap_or(0.0)
    };
    wait_for("logins on the discovered hub", Duration::from_secs(30), async || {
        login_ok(&daemon.metrics().await, "temple") >= 2.0
    })
    .await;
    let log = daemon.log();
    assert!(
        log.contains("namespace=\"lake\"")
            && log.contains("there is no Secret \"hubwatch\" (hubwatch's token) in namespace lake"),
        "{log}"
    );
    assert!(log.contains("namespace=\"marsh\"") && log.contains("names collector.example.com"), "{log}");

    eprintln!("phase: a new hub appears");
    k8s_fixtures::load_discoverable_hub(api, "river", lab.url.as_str(), "probe-3,probe-4", Some(&token));
    wait_for("logins on the new hub", Duration::from_secs(40), async || {
        login_ok(&daemon.metrics().await, "river") >= 2.0
    })
    .await;
    assert!(daemon.log().contains("the cluster's hubs changed"));
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("/apis/apps/v1/deployments?labelSelector=component")),
        "{requests:?}"
    );
    assert!(requests.iter().any(|r| r == "/api/v1/namespaces/river/secrets/hubwatch"), "its own Secret, by name");
    assert!(!requests.iter().any(|r| r.contains("/secrets/hub?") || r.ends_with("/secrets/hub")), "never z2jh's");
    assert!(!requests.iter().any(|r| r.ends_with("/secrets") || r.contains("/secrets?")), "Secrets never listed");
    assert!(requests.iter().any(|r| r.starts_with("/apis/networking.k8s.io/v1/namespaces/marsh/ingresses")));
    hubs_that_vanish_page_unless_decommissioned_or_forgotten(api, pd, listen, (lab.url.as_str(), &token)).await;
    assert!(!daemon.log().contains(&token) && !daemon.log().contains(CANARY), "no secret in the log");
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
    let sent = pd.accepted().into_iter().map(|e| e.to_string()).collect::<String>();
    assert!(!sent.contains(&token) && !sent.contains(CANARY), "no secret in a page");
}

/// The events of one incident as PagerDuty received them: "trigger" and "resolve" actions in order.
fn actions_of(pd: &PagerDuty, dedup_key: &str) -> Vec<String> {
    pd.accepted()
        .into_iter()
        .filter(|e| e["dedup_key"] == dedup_key)
        .map(|e| e["event_action"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn discovered(listen: std::net::SocketAddr) -> Value {
    let (status, body) = crate::support::daemon::get(&format!("http://{listen}/api/v1/discovered-hubs"), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `river` loses its token Secret (paged "hub gone", resolved when it is back), then its Deployment (paged
/// again, resolved when an operator forgets it); `temple` is decommissioned first and never pages.
async fn hubs_that_vanish_page_unless_decommissioned_or_forgotten(
    api: &ApiServer,
    pd: &PagerDuty,
    listen: std::net::SocketAddr,
    (lab_url, token): (&str, &str),
) {
    let river_triggers = || {
        triggers(pd)
            .into_iter()
            .filter(|t| t["payload"]["summary"].as_str().unwrap_or_default().starts_with("river:"))
            .collect::<Vec<_>>()
    };
    assert!(triggers(pd).is_empty(), "nothing paged while every hub is there");

    eprintln!("phase: a hub's token Secret disappears");
    api.delete("secrets", "river", "hubwatch");
    wait_for("the hub-gone page", Duration::from_secs(60), async || !river_triggers().is_empty()).await;
    let trigger = &river_triggers()[0];
    assert_eq!(trigger["payload"]["summary"], "river: 2 users cannot log in", "{trigger:#}");
    let reasons = trigger["payload"]["custom_details"]["last_errors"].to_string();
    assert!(reasons.contains("hub gone: there is no Secret \\\"hubwatch\\\""), "{reasons}");
    assert!(reasons.contains("(last seen "), "{reasons}");
    let gone = discovered(listen).await;
    let river = gone.as_array().unwrap().iter().find(|h| h["name"] == "river").unwrap().clone();
    assert!(river["gone_since"].is_string(), "{river}");
    assert_eq!(river["users"], serde_json::json!(["probe-3", "probe-4"]));
    let first = trigger["dedup_key"].as_str().unwrap().to_string();

    eprintln!("phase: it is back");
    k8s_fixtures::load_discoverable_hub(api, "river", lab_url, "probe-3,probe-4", Some(token));
    wait_for("the resolve", Duration::from_secs(60), async || actions_of(pd, &first).len() == 2).await;
    assert_eq!(actions_of(pd, &first), ["trigger", "resolve"]);

    eprintln!("phase: a hub is decommissioned, then deleted");
    let mut temple = api.get("deployments", "temple", "hub").unwrap();
    temple["metadata"]["annotations"]["hubwatch.jupyter.org/decommissioned"] = "true".into();
    api.put("deployments", temple);
    wait_for("temple forgotten", Duration::from_secs(30), async || {
        discovered(listen).await.as_array().unwrap().iter().all(|h| h["name"] != "temple")
    })
    .await;
    api.delete("deployments", "temple", "hub");

    eprintln!("phase: a hub's Deployment is deleted, then an operator forgets it");
    api.delete("deployments", "river", "hub");
    wait_for("the second hub-gone page", Duration::from_secs(60), async || river_triggers().len() == 2).await;
    let second = river_triggers()[1]["dedup_key"].as_str().unwrap().to_string();
    assert_ne!(first, second, "a new outage, a new incident");
    let reasons = river_triggers()[1]["payload"]["custom_details"]["last_errors"].to_string();
    assert!(reasons.contains("its Deployment (component=hub) is no longer in namespace river"), "{reasons}");
    let forget =
        |name: &str| reqwest::Client::new().delete(format!("http://{listen}/api/v1/discovered-hubs/{name}")).send();
    assert_eq!(forget("river").await.unwrap().status(), 204);
    assert_eq!(forget("river").await.unwrap().status(), 404);
    // At once, not a window (1 m) later: the set of hubs changed, and the next generation's recorder, which
    // resumed the incident, is told the hub left.
    wait_for("the resolve after forgetting", Duration::from_secs(30), async || actions_of(pd, &second).len() == 2)
        .await;
    assert_eq!(actions_of(pd, &second), ["trigger", "resolve"]);
    // Two more discovery passes: the decommissioned hub had its chances to page.
    let passes = || api.requests().iter().filter(|r| r.starts_with("/apis/apps/v1/deployments?labelSelector")).count();
    let before = passes();
    wait_for("two more discovery passes", Duration::from_secs(30), async || passes() >= before + 2).await;
    assert!(
        triggers(pd).iter().all(|t| !t["payload"]["summary"].as_str().unwrap_or_default().starts_with("temple:")),
        "a decommissioned hub never pages"
    );
    assert_eq!(river_triggers().len(), 2, "a forgotten hub pages no more");
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_users_failing_in_the_hubs_own_log_page_while_every_probe_passes() {
    let s = Scenario::on_lab("hub-logs", 18930)
        .await
        .with_api(|api| k8s_fixtures::load_control_pods(api, SystemTime::now()))
        .await
        .hub(json!({"namespace": k8s_fixtures::NAMESPACE}))
        .config(json!({"incidents": {"window": "5m"}}));
    let (pd, lab, api, token) = (&s.pd, &s.lab, s.api(), s.token.clone());
    let stop_mirror = tokio_util::sync::CancellationToken::new();
    let mirror = tokio::spawn(k8s_fixtures::mirror_lab_log(lab.dir.join("hub.log"), api.clone(), stop_mirror.clone()));
    let daemon = s.start().await;
    let follows =
        |api: &ApiServer| api.requests().iter().filter(|r| r.contains("/log?") && r.contains("follow=true")).count();
    wait_for("both logs followed", Duration::from_secs(30), async || follows(api) >= 2).await;
    api.end_log_streams();
    wait_for("the logs reopened", Duration::from_secs(30), async || follows(api) >= 4).await;

    eprintln!("phase: two real users' spawns fail; every probe passes");
    for user in ["probe-3", "probe-4"] {
        lab.set_flag("spawn-fail", Some(user), "");
        lab.ask_server(reqwest::Method::POST, user).await;
    }
    let latency = wait_for("the trigger", Duration::from_secs(60), async || !triggers(pd).is_empty()).await;
    eprintln!("    trigger {latency:?} after the spawns failed");
    let trigger = triggers(pd)[0].clone();
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["server"], serde_json::json!(["probe-3", "probe-4"]), "{trigger:#}");
    let reasons = details["last_errors"].to_string();
    assert!(
        reasons.contains("the hub could not start the server: injected spawn failure (flag spawn-fail)")
            || reasons.contains("HTTP 500 on POST /hub/api/users/probe-3/server"),
        "{reasons}"
    );

    eprintln!("phase: their servers start");
    lab.clear_flags();
    for user in ["probe-3", "probe-4"] {
        wait_for("the failed spawn to end", Duration::from_secs(60), async || !lab.has_server(user).await).await;
        lab.ask_server(reqwest::Method::POST, user).await;
    }
    let key = trigger["dedup_key"].as_str().unwrap().to_string();
    wait_for("the resolve", Duration::from_secs(90), async || {
        pd.accepted().iter().any(|e| e["event_action"] == "resolve" && e["dedup_key"] == key.as_str())
    })
    .await;
    assert_eq!(triggers(pd).len(), 1, "paged once");
    for user in ["probe-3", "probe-4"] {
        lab.ask_server(reqwest::Method::DELETE, user).await;
    }
    throttled_users_page_and_their_starts_are_counted(&daemon, api, pd).await;
    servers_taken_from_their_users_page_and_stops_do_not(api, pd).await;
    let (status, body) =
        crate::support::daemon::get(&format!("{}/api/v1/availability?since=1d", daemon.base), None).await;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
    let lab_row = rows.iter().find(|r| r["hub"] == "lab" && r["kind"] == "hub_access").unwrap();
    assert_eq!(lab_row["incidents"], 3, "spawns failing, throttled, servers lost: {lab_row}");
    assert!(lab_row["availability"].as_f64().unwrap() < 1.0, "{lab_row}");
    assert!(lab_row["mean_time_to_page_seconds"].as_f64().is_some_and(|s| s < 60.0), "{lab_row}");
    assert!(lab_row["impact_minutes"].as_f64().is_some_and(|m| m > 0.0), "{lab_row}");
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
    stop_mirror.cancel();
    mirror.await.unwrap();
    let everything = format!("{:?}", pd.accepted());
    assert!(!everything.contains(&token), "the hub token leaked");
}

/// Two real users turned away by the hub's spawn throttle (`429`, as JupyterHub logs it) page, in the hub's
/// terms; their later starts ("took … seconds to start") clear them and feed the start-time histogram.
async fn throttled_users_page_and_their_starts_are_counted(daemon: &Daemon, api: &ApiServer, pd: &PagerDuty) {
    eprintln!("phase: two real users throttled by concurrent_spawn_limit");
    let hub_log = |line: &str| api.write_log(k8s_fixtures::HUB_POD, "hub", line);
    for user in ["frank", "gina"] {
        hub_log(&format!(
            "[W 2026-12-06 03:10:01.118 JupyterHub log:192] 429 POST /hub/api/users/{user}/server ({user}@10.0.3.8) 4.02ms"
        ));
    }
    wait_for("the throttling trigger", Duration::from_secs(60), async || triggers(pd).len() == 2).await;
    let trigger = triggers(pd)[1].clone();
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["server"], json!(["frank", "gina"]), "{trigger:#}");
    assert!(details["last_errors"].to_string().contains("the hub is refusing new servers: too many starting at once"));
    for (user, seconds) in [("frank", "131.502"), ("gina", "4.210")] {
        hub_log(&format!(
            "[I 2026-12-06 03:12:13.000 JupyterHub base:1192] User {user} took {seconds} seconds to start"
        ));
    }
    let key = trigger["dedup_key"].as_str().unwrap().to_string();
    wait_for("the throttling resolve", Duration::from_secs(60), async || {
        pd.accepted().iter().any(|e| e["event_action"] == "resolve" && e["dedup_key"] == key.as_str())
    })
    .await;
    let metrics = daemon.metrics().await;
    let real = |labels: &[&str]| sample(&metrics, "hubwatch_server_start_seconds_bucket", labels).unwrap_or(0.0);
    assert!(real(&["source=\"users\"", "le=\"+Inf\""]) >= 2.0, "real users' starts are counted");
    assert!(
        real(&["source=\"users\"", "le=\"120\""]) < real(&["source=\"users\"", "le=\"+Inf\""]),
        "frank's 131 s start is past 120 s"
    );
}

/// Running servers taken from their users page ("server lost"): harry's node drained (the eviction marks the
/// pod), ivy's pod deleted from outside while the hub's log is followed; jack's deleted after the culler's
/// stop request in the hub's log is a stop, not a loss.
async fn servers_taken_from_their_users_page_and_stops_do_not(api: &ApiServer, pd: &PagerDuty) {
    eprintln!("phase: servers taken from running users");
    for user in ["harry", "ivy", "jack"] {
        api.put("pods", k8s_fixtures::running_user_pod(user, SystemTime::now()));
    }
    let mut drained = k8s_fixtures::running_user_pod("harry", SystemTime::now());
    drained["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
        "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]);
    api.put("pods", drained);
    api.delete("pods", NAMESPACE, "jupyter-harry");
    api.delete("pods", NAMESPACE, "jupyter-ivy");
    api.delete("pods", NAMESPACE, "jupyter-jack");
    // The request line is written when the stop has ended: after the pod went.
    api.write_log(
        k8s_fixtures::HUB_POD,
        "hub",
        "[I 2026-12-06 03:20:11.000 JupyterHub log:192] 204 DELETE /hub/api/users/jack/server (cull-idle@127.0.0.1) 10012.00ms",
    );
    wait_for("the lost-servers trigger", Duration::from_secs(90), async || triggers(pd).len() == 3).await;
    let trigger = triggers(pd)[2].clone();
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["server"], json!(["harry", "ivy"]), "jack was stopped: {trigger:#}");
    let reasons = details["last_errors"].to_string();
    assert!(reasons.contains("EvictionByEvictionAPI: Eviction API: evicting"), "{reasons}");
    assert!(reasons.contains("server lost: pod jupyter-ivy on node user-pool-7f2c was deleted"), "{reasons}");
}

/// A tenant of a cluster-wide discovery with a held token: its Deployment labelled `component=hub`, a plain
/// http Ingress to a host of its own and a `proxy-public` Service of its own. The held token works on every
/// hub, so none of that may steer it: the tenant's hub is refused (logged, never probed) while a hub at an
/// allowed place (loopback here) is probed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_ingress_never_receives_the_held_token() {
    hubwatch::http::install_crypto_provider();
    let stub = crate::support::stub_hub::Stub::default();
    let stub_url = stub.clone().start().await;
    let api = ApiServer::default();
    let api_url = api.start().await;
    k8s_fixtures::load_discoverable_hub(&api, "temple", &stub_url, "probe-1,probe-2", None);
    k8s_fixtures::load_discoverable_hub(&api, "tenant", &stub_url, "probe-3,probe-4", None);
    let mut tenant = api.get("deployments", "tenant", "hub").unwrap();
    tenant["metadata"]["annotations"].as_object_mut().unwrap().remove("hubwatch.jupyter.org/url");
    api.put("deployments", tenant);
    let to_proxy = serde_json::json!({"paths": [{"path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": "proxy-public", "port": {"name": "http"}}}}]});
    api.put(
        "ingresses",
        serde_json::json!({"metadata": {"name": "jupyterhub", "namespace": "tenant"},
        "spec": {"rules": [{"host": "evil.example", "http": to_proxy}]}}),
    );

    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = dir.path().join("held.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {listen}\nstate_path: {}\nkubernetes:\n  enabled: true\n  discovery: {{token: {{env: HELD_TOKEN}}, \
             users: [probe-1, probe-2], every: 2s}}\ndefaults:\n  probes:\n    login: {{every: 2s, timeout: 5s}}\n    \
             server: {{every: 1h}}\n    kernel: {{every: 1h}}\n    home: {{every: 1h}}\n",
            dir.path().join("state.db").display()
        ),
    )
    .unwrap();
    let kubeconfig = ApiServer::kubeconfig(&api_url, dir.path()).display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str()), ("HELD_TOKEN", crate::support::stub_hub::SERVICE_TOKEN)];
    let daemon = Daemon::start(&config, listen, &env, dir.path().join("held.log"));
    daemon.wait_ready().await;
    let logins = |metrics: &str, hub: &str| {
        crate::support::daemon::sample(
            metrics,
            "hubwatch_probe_runs_total",
            &[&format!("hub=\"{hub}\""), "capability=\"login\""],
        )
    };
    wait_for("logins with the held token on the allowed hub", Duration::from_secs(40), async || {
        logins(&daemon.metrics().await, "temple").unwrap_or(0.0) >= 2.0
    })
    .await;
    wait_for("the tenant's hub refused", Duration::from_secs(20), async || {
        let log = daemon.log();
        log.contains("namespace=\"tenant\"") && log.contains("is plain http to evil.example")
    })
    .await;
    let log = daemon.log();
    assert_eq!(logins(&daemon.metrics().await, "tenant"), None, "the tenant's hub is never probed");
    assert!(!log.contains(crate::support::stub_hub::SERVICE_TOKEN), "the token is never logged");
    assert_eq!(daemon.stop(Duration::from_secs(30)).await, Some(0));
}
