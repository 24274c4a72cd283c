//! `hubwatch run` against the real lab: it removes what a crashed earlier run left, becomes ready, probes
//! on schedule, exposes the metrics (without user names), and on SIGTERM during a spawn lets the round clean
//! up and exits 0 with nothing left running.

use crate::support::daemon::{Daemon, free_port, fresh_state, get, sample, wait_for};
use crate::support::lab::Lab;
use crate::support::tiers::{Needs, require};
use std::time::Duration;

const PORT: u16 = 18600;

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_cleans_up_probes_and_shuts_down_cleanly() {
    require(&[Needs::Lab]);
    hubwatch::http::install_crypto_provider();
    let lab = Lab::start_for_daemon("daemon", PORT, &[]);
    let token = lab.token();
    let service = format!("token {token}");
    let http = reqwest::Client::new();

    // What a crashed earlier run would leave: a running probe server and a probe cluster.
    let spawned = http
        .post(format!("{}/hub/api/users/probe-1/server", lab.url))
        .header("Authorization", &service)
        .send()
        .await
        .unwrap();
    assert!(spawned.status().is_success(), "{}", spawned.status());
    let gateway_auth = format!("jupyterhub {}", lab.mint_user_token("probe-2").await);
    let created = http
        .post(format!("{}/services/dask-gateway/api/v1/clusters/", lab.url))
        .header("Authorization", &gateway_auth)
        .json(&serde_json::json!({"cluster_options": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);

    let listen = free_port();
    let config_path = lab.dir.join("hubwatch.yaml");
    std::fs::write(
        &config_path,
        format!(
            "listen: {listen}\nscheduler: {{shutdown_grace: 60s, cleanup_timeout: 40s}}\ndefaults:\n  probes:\n    login: {{every: 2s, timeout: 5s}}\n    server: {{every: 15s, timeout: 30s}}\n    kernel: {{every: 15s, timeout: 20s}}\n    dask_gateway: {{every: 1h, timeout: 30s}}\nhubs:\n  - name: lab\n    url: {}\n    token: {{env: HUBWATCH_TOKEN}}\n    users: [probe-1, probe-2]\n    dask_gateway: {{url: {}/services/dask-gateway}}\n",
            lab.url, lab.url
        ),
    )
    .unwrap();
    fresh_state(&lab.dir, "hubwatch-state.db");
    let log_path = lab.dir.join("hubwatch.log");
    let _ = std::fs::remove_file(&log_path);
    let daemon = Daemon::start(&config_path, listen, &[("HUBWATCH_TOKEN", &token)], log_path);
    let base = daemon.base.clone();
    daemon.wait_ready().await;
    assert_eq!(get(&format!("{base}/healthz"), None).await.0, 200);
    let log = daemon.log();
    assert!(log.contains("removed what an earlier run left behind") && log.contains("\"server\""), "{log}");
    assert!(log.contains("\"dask clusters\""), "{log}");
    let clusters =
        get(&format!("{}/services/dask-gateway/api/v1/clusters/?status=running,pending", lab.url), Some(&gateway_auth))
            .await
            .1;
    assert_eq!(clusters.trim(), "{}", "the leftover cluster is deleted");

    wait_for("a successful login and server round in the metrics", Duration::from_secs(90), async || {
        let metrics = get(&format!("{base}/metrics"), None).await.1;
        let ok = |capability: &str| {
            sample(&metrics, "hubwatch_probe_runs_total", &[&format!("capability=\"{capability}\""), "result=\"ok\""])
                .unwrap_or(0.0)
        };
        ok("login") >= 2.0 && ok("server") >= 1.0 && ok("kernel") >= 1.0
    })
    .await;
    let metrics = get(&format!("{base}/metrics"), None).await.1;
    assert!(!metrics.contains("probe-1") && !metrics.contains("probe-2"), "no user names in metrics");
    assert!(!metrics.contains(&token), "no secrets in metrics");
    assert!(metrics.contains("hubwatch_build_info{version="), "{metrics}");
    assert!(
        metrics.contains("hubwatch_probe_last_success_timestamp_seconds{capability=\"server\",hub=\"lab\"}"),
        "{metrics}"
    );

    // Make the next spawn slow, and stop the daemon while it is pending.
    lab.set_flag("spawn-slow", None, "6");
    wait_for("a pending spawn", Duration::from_secs(60), async || {
        for user in ["probe-1", "probe-2"] {
            let model = get(&format!("{}/hub/api/users/{user}", lab.url), Some(&service)).await.1;
            if model.contains("\"pending\": \"spawn\"") || model.contains("\"pending\":\"spawn\"") {
                return true;
            }
        }
        false
    })
    .await;
    let log_path = daemon.log.clone();
    assert_eq!(daemon.stop(Duration::from_secs(70)).await, Some(0), "exit 0 within the grace period");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("shutting down: letting running rounds clean up"), "{log}");
    assert!(!log.contains(&token), "the token must never be logged");
    for user in ["probe-1", "probe-2"] {
        let servers = lab.servers_of(user).await;
        let left = servers.as_object().unwrap_or_else(|| panic!("the user model of {user} has servers: {servers}"));
        assert!(left.is_empty(), "{user} has a server left: {servers}");
    }
}
