//! The probes against a real JupyterHub, proxy, single-user servers, kernels and Dask Gateway, with faults
//! switched on and off while they run. Each fault is reported against the right capability and stage,
//! later steps are blocked, every probe ends within its timeout, and afterwards nothing is left running
//! (checked through the hub's and the gateway's APIs).
//!
//! One lab, scenarios in sequence (the lab is shared and the machine is small).

mod support;

use hubwatch::cli::run_all;
use hubwatch::config::Config;
use hubwatch::domain::{Capability, FailureCause, ProbeOutcome, ProbeResult, Stage};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::lab::Lab;
use tokio_util::sync::CancellationToken;

const PORT: u16 = 18500;

fn config(lab: &Lab) -> Config {
    let url = &lab.url;
    let yaml = format!(
        r#"
scheduler: {{cleanup_timeout: 40s}}
defaults:
  probes:
    login: {{timeout: 3s}}
    server: {{timeout: 8s}}
    kernel: {{timeout: 6s}}
    dask_gateway: {{timeout: 15s}}
hubs:
  - name: lab
    url: {url}
    token: {{env: HUBWATCH_TOKEN}}
    users: [probe-1, probe-2]
    dask_gateway: {{url: {url}/services/dask-gateway}}
  - name: lab-form
    url: {url}
    token: {{env: HUBWATCH_TOKEN}}
    users: [probe-3, probe-4]
    login: {{method: form, password: {{env: PROBE_PASSWORD}}}}
"#
    );
    let token = lab.token();
    Config::parse(&yaml, Path::new("real-lab.yaml"), &|name| match name {
        "HUBWATCH_TOKEN" => Some(token.clone()),
        "PROBE_PASSWORD" => Some("probe-password".into()),
        _ => None,
    })
    .unwrap()
}

struct Run {
    outcomes: Vec<ProbeOutcome>,
}

impl Run {
    fn get(&self, capability: Capability, user: &str) -> &ProbeOutcome {
        self.outcomes
            .iter()
            .find(|o| o.capability == capability && o.user == user)
            .unwrap_or_else(|| panic!("no {capability} outcome for {user}: {:#?}", self.outcomes))
    }

    fn assert_ok(&self, capability: Capability, user: &str) {
        let outcome = self.get(capability, user);
        assert_eq!(outcome.result, ProbeResult::Ok, "{capability} for {user}: {outcome:#?}");
    }

    /// Asserts a hub-caused failure at `stage` whose reason contains `reason`.
    fn assert_failed(&self, capability: Capability, user: &str, stage: Stage, reason: &str) {
        let outcome = self.get(capability, user);
        match &outcome.result {
            ProbeResult::Failed(f) => {
                assert_eq!(f.stage, stage, "{capability} for {user}: {f:#?}");
                assert!(f.reason.contains(reason), "{capability} for {user}: reason {:?} lacks {reason:?}", f.reason);
                assert_eq!(f.cause, FailureCause::Hub);
            }
            other => panic!("{capability} for {user}: expected a failure at {stage}, got {other:?}"),
        }
    }

    fn assert_blocked(&self, capability: Capability, user: &str, by: Capability) {
        assert_eq!(self.get(capability, user).result, ProbeResult::Blocked { by }, "{capability} for {user}");
    }

    /// No probe took longer than its timeout plus a small margin.
    fn assert_within(&self, config: &Config) {
        for o in &self.outcomes {
            let hub = config.hub(&o.hub).unwrap();
            let limit = hub.probes.schedule(o.capability).timeout + Duration::from_secs(2);
            assert!(o.duration <= limit, "{} for {} took {:?} (limit {limit:?})", o.capability, o.user, o.duration);
        }
    }
}

async fn check(config: &Config, hub: &str) -> Run {
    let outcomes = run_all(config, Some(hub), None, &CancellationToken::new()).await.unwrap();
    for o in &outcomes {
        eprintln!("    {} {} {} {:?} {:.2}s", o.hub, o.capability, o.user, o.result, o.duration.as_secs_f64());
    }
    Run { outcomes }
}

/// Asserts through the hub and gateway APIs that no probe server, kernel or cluster is left.
async fn assert_nothing_left(lab: &Lab, users: &[&str]) {
    let http = reqwest::Client::new();
    for user in users {
        assert!(lab.has_no_server(user).await, "{user} still has a server: {}", lab.servers_of(user).await);

        let user_token = lab.mint_user_token(user).await;
        let clusters: Value = http
            .get(format!("{}/services/dask-gateway/api/v1/clusters/?status=running,pending", lab.url))
            .header("Authorization", format!("jupyterhub {user_token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(clusters.as_object().is_some_and(|c| c.is_empty()), "{user} still has clusters: {clusters}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_lab_scenarios() {
    hubwatch::http::install_crypto_provider();
    let lab = Lab::start("probes", PORT);
    let config = config(&lab);
    let all = ["probe-1", "probe-2", "probe-3", "probe-4"];
    use Capability::*;

    eprintln!("scenario: a healthy round passes for every user, both login methods");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        for capability in [Login, Server, Kernel, DaskGateway] {
            run.assert_ok(capability, user);
        }
    }
    let run = check(&config, "lab-form").await;
    for user in ["probe-3", "probe-4"] {
        for capability in [Login, Server, Kernel] {
            run.assert_ok(capability, user);
        }
    }
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: login refused (403) for one user of the form hub");
    lab.set_flag("login-403", Some("probe-3"), "");
    let run = check(&config, "lab-form").await;
    run.assert_failed(Login, "probe-3", Stage::LoginSubmit, "HTTP 403 Forbidden: Invalid username or password");
    run.assert_blocked(Server, "probe-3", Login);
    run.assert_blocked(Kernel, "probe-3", Login);
    run.assert_ok(Login, "probe-4");
    run.assert_ok(Kernel, "probe-4");
    lab.clear_flags();

    eprintln!("scenario: login erroring (500): the authenticator for one user, the login page for everyone");
    lab.set_flag("login-500", Some("probe-3"), "");
    let run = check(&config, "lab-form").await;
    run.assert_failed(Login, "probe-3", Stage::LoginSubmit, "HTTP 500");
    run.assert_ok(Login, "probe-4");
    lab.clear_flags();
    lab.set_flag("login-500", None, "");
    let run = check(&config, "lab").await;
    run.assert_failed(Login, "probe-1", Stage::LoginPage, "HTTP 500");
    run.assert_failed(Login, "probe-2", Stage::LoginPage, "HTTP 500");
    run.assert_blocked(DaskGateway, "probe-1", Login);
    lab.clear_flags();

    eprintln!("scenario: login too slow");
    lab.set_flag("login-slow", Some("probe-3"), "10");
    let run = check(&config, "lab-form").await;
    run.assert_failed(Login, "probe-3", Stage::LoginSubmit, "no answer within the 3s timeout");
    run.assert_within(&config);
    lab.clear_flags();
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: spawn failing; the reason comes from the progress stream");
    lab.set_flag("spawn-fail", None, "");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_ok(Login, user);
        run.assert_failed(Server, user, Stage::Progress, "Spawn failed: injected spawn failure (flag spawn-fail)");
        run.assert_blocked(Kernel, user, Server);
        run.assert_ok(DaskGateway, user);
    }
    lab.clear_flags();
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: spawn failing for one user only");
    lab.set_flag("spawn-fail", Some("probe-1"), "");
    let run = check(&config, "lab").await;
    run.assert_failed(Server, "probe-1", Stage::Progress, "injected spawn failure");
    run.assert_ok(Server, "probe-2");
    run.assert_ok(Kernel, "probe-2");
    lab.clear_flags();

    eprintln!("scenario: spawn timing out (the spawner takes 12 s, the probe allows 8 s)");
    lab.set_flag("spawn-slow", None, "12");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(Server, user, Stage::Progress, "not ready within the 8s timeout; last progress:");
        run.assert_blocked(Kernel, user, Server);
    }
    run.assert_within(&config);
    lab.clear_flags();
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: the single-user process crashes at start");
    lab.set_flag("spawn-crash", Some("probe-1"), "");
    let run = check(&config, "lab").await;
    run.assert_failed(Server, "probe-1", Stage::Progress, "Spawn failed");
    run.assert_ok(Server, "probe-2");
    run.assert_within(&config);
    lab.clear_flags();
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: the kernel crashes at start (one user)");
    lab.set_flag("kernel-crash", Some("probe-1"), "");
    let run = check(&config, "lab").await;
    run.assert_ok(Server, "probe-1");
    run.assert_failed(Kernel, "probe-1", Stage::Connect, "did not complete within the 6s timeout");
    run.assert_ok(Kernel, "probe-2");
    run.assert_within(&config);
    lab.clear_flags();
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: the kernel hangs");
    lab.set_flag("kernel-hang", None, "");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_ok(Server, user);
        run.assert_failed(Kernel, user, Stage::Connect, "did not complete within the 6s timeout");
    }
    run.assert_within(&config);
    lab.clear_flags();
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: Dask clusters FAILED");
    lab.set_flag("dask-fail", None, "");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(DaskGateway, user, Stage::WaitRunning, "FAILED");
        run.assert_ok(Kernel, user);
    }
    lab.clear_flags();
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: the gateway is down (frozen: every call hangs)");
    lab.signal("GATEWAY_PID", "STOP");
    let run = check(&config, "lab").await;
    lab.signal("GATEWAY_PID", "CONT");
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(DaskGateway, user, Stage::DeleteLeftoverClusters, "no answer within the 15s timeout");
        run.assert_ok(Kernel, user);
    }
    run.assert_within(&config);
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: the proxy is frozen (every request hangs)");
    lab.signal("PROXY_PID", "STOP");
    let run = check(&config, "lab").await;
    lab.signal("PROXY_PID", "CONT");
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(Login, user, Stage::MintToken, "no answer within the 3s timeout");
        run.assert_blocked(Server, user, Login);
        run.assert_blocked(Kernel, user, Login);
        run.assert_blocked(DaskGateway, user, Login);
    }
    run.assert_within(&config);
    assert_nothing_left(&lab, &all).await;

    eprintln!("scenario: a revoked service token is a monitor fault, not an outage");
    let mut broken = config.clone();
    broken.hubs[0] =
        hubwatch::config::HubConfig { token: hubwatch::domain::Secret::new("revoked-token"), ..broken.hubs[0].clone() };
    let run = check(&broken, "lab").await;
    for user in ["probe-1", "probe-2"] {
        let outcome = run.get(Login, user);
        let ProbeResult::Failed(f) = &outcome.result else { panic!("{outcome:?}") };
        assert_eq!((f.stage, f.cause), (Stage::MintToken, FailureCause::Monitor), "{f:?}");
        assert!(f.reason.contains("refused hubwatch's service token"), "{}", f.reason);
        assert!(!outcome.result.is_user_affecting());
    }
}
