//! The kept server (`sentinel`; named so that libtest, which starts tests in name order, starts this long one
//! among the first rather than the last) against the real lab, through `hubwatch run` with PagerDuty played by its
//! stand-in: the last probe user's server is started and kept; a route the proxy loses is seen at the next
//! look ("route lost", one user: no page) and healed when the route is back; the proxy losing the routes of the
//! kept server and of a real user working in theirs pages, the real user found in the hub's own log (the
//! lab's real log, followed through the Kubernetes stand-in); a kernel that crashes is seen by
//! the kept server within one interval and corroborated by the other probe users' rounds at once (a page,
//! then its resolve); a kept server whose process is killed from outside is lost ("server lost", one user:
//! no page) and started again at the next look; on shutdown it is stopped.

use crate::support::daemon::{get, wait_for};
use crate::support::k8s_fixtures;
use crate::support::lab::Lab;
use crate::support::pagerduty::PagerDuty;
use crate::support::scenario::Scenario;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PORT: u16 = 18920;
const KEPT: &str = "probe-3";

async fn status(base: &str) -> Value {
    let (code, body) = get(&format!("{base}/api/v1/status"), None).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The latest result of `capability` for `user` on the lab hub, and its reason.
async fn latest(base: &str, capability: &str, user: &str) -> (String, String) {
    let status = status(base).await;
    let probe = &status["hubs"][0]["capabilities"][capability]["probes"][user];
    (probe["result"].as_str().unwrap_or_default().to_string(), probe["reason"].as_str().unwrap_or_default().to_string())
}

fn actions(pd: &PagerDuty) -> Vec<String> {
    pd.accepted().iter().map(|e| e["event_action"].as_str().unwrap_or_default().to_string()).collect()
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_server_sees_lost_routes_and_crashing_kernels_within_an_interval() {
    let s = Scenario::on_lab("sentinel", PORT)
        .await
        .with_api(|api| k8s_fixtures::load_control_pods(api, std::time::SystemTime::now()))
        .await
        // A real user's failure from the hub's log holds for the window after it was logged (the route-lost
        // phase's resolve waits on it): half the usual minute.
        .config(json!({"incidents": {"window": "30s"}, "defaults": {"probes": {
            "login": {"every": "5s", "timeout": "10s"},
            "server": {"every": "30s", "timeout": "60s"},
            "kernel": {"every": "30s", "timeout": "10s"},
            "home": {"every": "1h", "timeout": "20s"},
        }}}))
        .hub(json!({"namespace": k8s_fixtures::NAMESPACE}))
        .hub(json!({"users": ["probe-1", "probe-2", KEPT], "sentinel": {"every": "5s", "timeout": "10s"}}));
    let (pd, lab, api) = (&s.pd, &s.lab, s.api());
    let stop_mirror = tokio_util::sync::CancellationToken::new();
    let mirror = tokio::spawn(k8s_fixtures::mirror_lab_log(lab.dir.join("hub.log"), api.clone(), stop_mirror.clone()));
    let daemon = s.start().await;
    let base = daemon.base.clone();

    eprintln!("phase: the kept server starts, and the kernel and home probes run on it");
    wait_for("the kept server's first looks", Duration::from_secs(90), async || {
        latest(&base, "kernel", KEPT).await.0 == "ok" && latest(&base, "home", KEPT).await.0 == "ok"
    })
    .await;
    assert!(lab.has_server(KEPT).await, "kept between looks");
    wait_for("the kept server reached through the proxy", Duration::from_secs(60), async || {
        latest(&base, "server", KEPT).await.0 == "ok"
    })
    .await;
    assert!(daemon.log().matches("the kept server is not running: starting it").count() == 1, "started once");

    eprintln!("phase: the proxy loses the kept server's route");
    let target = lab.delete_route(&format!("/user/{KEPT}")).await;
    wait_for("route lost", Duration::from_secs(30), async || {
        latest(&base, "server", KEPT).await.1.contains("route lost")
    })
    .await;
    let (_, reason) = latest(&base, "server", KEPT).await;
    assert!(reason.contains(&format!("redirects to /hub/user/{KEPT}/api/status")), "{reason}");
    assert_eq!(latest(&base, "kernel", KEPT).await.0, "blocked");
    assert!(lab.has_server(KEPT).await, "a lost route is not repaired by restarting the server");
    lab.add_route(&format!("/user/{KEPT}"), &target).await;
    wait_for("the route back", Duration::from_secs(30), async || latest(&base, "server", KEPT).await.0 == "ok").await;
    assert!(pd.accepted().is_empty(), "one user's lost route is a support ticket, not a page: {:?}", actions(pd));
    routes_lost_for_a_real_user_too(lab, pd).await;

    eprintln!("phase: kernels crash");
    let crashed = Instant::now();
    lab.set_flag("kernel-crash", None, "");
    let triggers =
        |pd: &PagerDuty| pd.accepted().into_iter().filter(|e| e["event_action"] == "trigger").collect::<Vec<_>>();
    wait_for("the page", Duration::from_secs(90), async || triggers(pd).len() == 2).await;
    // A crashed kernel shows as a websocket that never opens: seen at the kernel probe's timeout (10 s).
    eprintln!("    paged {:?} after the kernels started crashing (kept server every 5 s)", crashed.elapsed());
    let trigger = triggers(pd)[1].clone();
    let affected = &trigger["payload"]["custom_details"]["affected_users"]["kernel"];
    assert!(affected.as_array().is_some_and(|users| users.len() >= 2), "{trigger:#}");
    // The kept server sees it too, at its next look — before or after the rounds' users made the page.
    wait_for("the kept server's kernel look failing", Duration::from_secs(60), async || {
        latest(&base, "kernel", KEPT).await.0 == "failed"
    })
    .await;
    lab.clear_flags();
    wait_for("the resolve", Duration::from_secs(120), async || actions(pd).len() == 4).await;

    eprintln!("phase: the kept server's process is killed (its pod deleted from outside, its node gone)");
    assert!(lab.kill_server(KEPT) >= 1, "the kept server's process was found");
    wait_for("the kept server lost", Duration::from_secs(60), async || {
        let (result, reason) = latest(&base, "server", KEPT).await;
        result == "failed"
            && reason.starts_with("kept_server: server lost: the kept server was running at the last look")
    })
    .await;
    assert_eq!(actions(pd), ["trigger", "resolve", "trigger", "resolve"], "one user's lost server pages nobody");
    wait_for("started again", Duration::from_secs(60), async || {
        daemon.log().matches("the kept server is not running: starting it").count() == 2
            && latest(&base, "server", KEPT).await.0 == "ok"
    })
    .await;

    eprintln!("phase: shutdown stops the kept server");
    assert_eq!(daemon.stop(Duration::from_secs(90)).await, Some(0));
    assert!(!lab.has_server(KEPT).await, "the kept server is stopped on shutdown");
    assert_eq!(actions(pd), ["trigger", "resolve", "trigger", "resolve"], "one page per outage, each resolved");
    stop_mirror.cancel();
    mirror.await.unwrap();
}

/// probe-4, a real user, works in their server when the proxy loses its routes and the kept server's: their
/// browser goes round the login loop, which the hub ends with `500 … ?redirects=4` in its log. Two users:
/// a page, naming both, each with what they met; the routes back, the resolve.
async fn routes_lost_for_a_real_user_too(lab: &Lab, pd: &PagerDuty) {
    eprintln!("phase: the proxy loses the routes of the kept server and of a real user working");
    let service = format!("token {}", lab.token());
    let client = reqwest::Client::new();
    let started = client.post(format!("{}/hub/api/users/probe-4/server", lab.url)).header("Authorization", &service);
    assert!(started.send().await.unwrap().status().is_success());
    wait_for("probe-4's server", Duration::from_secs(60), async || lab.routes().await.get("/user/probe-4").is_some())
        .await;
    let real_user = format!("token {}", lab.mint_user_token("probe-4").await);
    let mut lost = Vec::new();
    for user in [KEPT, "probe-4"] {
        let path = format!("/user/{user}");
        lost.push((path.clone(), lab.delete_route(&path).await));
    }
    wait_for("the page", Duration::from_secs(60), async || {
        let _ =
            client.get(format!("{}/user/probe-4/api/status", lab.url)).header("Authorization", &real_user).send().await;
        pd.accepted().iter().any(|e| e["event_action"] == "trigger")
    })
    .await;
    let trigger = pd.accepted().into_iter().find(|e| e["event_action"] == "trigger").unwrap();
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["server"], serde_json::json!(["probe-3", "probe-4"]), "{trigger:#}");
    let reasons = details["last_errors"].to_string();
    assert!(reasons.contains("route lost"), "the kept server's words: {reasons}");
    assert!(reasons.contains("HTTP 500 on GET /hub/user/probe-4/api/status"), "the hub's log: {reasons}");
    for (path, target) in lost {
        lab.add_route(&path, &target).await;
    }
    wait_for("the resolve", Duration::from_secs(150), async || actions(pd).len() == 2).await;
    let stopped = client.delete(format!("{}/hub/api/users/probe-4/server", lab.url)).header("Authorization", &service);
    assert!(stopped.send().await.unwrap().status().is_success());
}
