//! The probes against a real JupyterHub, proxy, single-user servers, kernels and Dask Gateway, with faults
//! switched on and off while they run. Each fault is reported against the right capability and stage,
//! later steps are blocked, every probe ends within its timeout, and afterwards nothing is left running
//! (checked through the hub's and the gateway's APIs).
//!
//! One test per group of faults, each on a lab of its own (its own ports: they run side by side, two at a
//! time like every test here). Healthy spawns get realistic timeouts: on a busy 2-core machine a spawn can
//! take 6 s.

use crate::support::disk::SmallDisk;
use crate::support::json_of;
use crate::support::lab::Lab;
use crate::support::tiers::{Needs, require};
use Capability::*;
use hubwatch::cli::run_all;
use hubwatch::config::Config;
use hubwatch::domain::{Capability, FailureCause, ProbeOutcome, ProbeResult, Stage};
use hubwatch::redact::Redactor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERYONE: [&str; 4] = ["probe-1", "probe-2", "probe-3", "probe-4"];

/// Probe timeouts in seconds: login, server, kernel, Dask Gateway.
struct Timeouts(u64, u64, u64, u64);

const USUAL: Timeouts = Timeouts(10, 40, 10, 30);

/// A lab of `name`'s own on `port` (each test has its own ports, so these tests run side by side as the
/// other modules' lab tests do), its spawner giving a silent server `http_timeout` seconds, and hubwatch's
/// config for it.
fn lab(name: &str, port: u16, http_timeout: u64, timeouts: Timeouts) -> (Lab, Config) {
    require(&[Needs::Lab]);
    hubwatch::http::install_crypto_provider();
    let http_timeout = http_timeout.to_string();
    let lab = Lab::start_with(name, port, &[("SPAWN_HTTP_TIMEOUT", &http_timeout), ("SPAWN_TIMEOUT", "90")]);
    let config = config(&lab, timeouts);
    (lab, config)
}

fn config(lab: &Lab, timeouts: Timeouts) -> Config {
    config_with(lab, timeouts, Extra::default())
}

/// More keys: for `probes.server` (`", stuck_after: 6s"`), for hub lab's `dask_gateway` (`", from_server:
/// true"`), and for hub lab itself (`"\n    binderhub: {…}"`).
#[derive(Default)]
struct Extra<'a> {
    server: &'a str,
    dask: &'a str,
    hub: &'a str,
}

fn config_with(lab: &Lab, Timeouts(login, server, kernel, dask): Timeouts, extra: Extra) -> Config {
    let Extra { server: server_keys, dask: dask_keys, hub: hub_keys } = extra;
    let url = &lab.url;
    let yaml = format!(
        r#"
scheduler: {{cleanup_timeout: 60s}}
defaults:
  probes:
    login: {{timeout: {login}s}}
    server: {{timeout: {server}s{server_keys}}}
    kernel: {{timeout: {kernel}s}}
    dask_gateway: {{timeout: {dask}s}}
hubs:
  - name: lab
    url: {url}
    token: {{env: HUBWATCH_TOKEN}}
    users: [probe-1, probe-2]
    dask_gateway: {{url: {url}/services/dask-gateway{dask_keys}}}{hub_keys}
  - name: lab-form
    url: {url}
    token: {{env: HUBWATCH_TOKEN}}
    users: [probe-3, probe-4]
    login: {{method: form, password: {{env: PROBE_PASSWORD}}}}
    kernel_cells:
      - {{code: "import labpackage"}}
      - {{code: "labpackage.VERSION", expect_regex: "^'1\\."}}
"#
    );
    let (token, first_login_token) = (lab.token(), lab.first_login_token());
    Config::parse(&yaml, Path::new("real-lab.yaml"), &|name| match name {
        "HUBWATCH_TOKEN" => Some(token.clone()),
        "FIRST_LOGIN_TOKEN" => Some(first_login_token.clone()),
        "PROBE_PASSWORD" => Some("probe-password".into()),
        "BINDER_TOKEN" => Some(crate::support::binderhub::TOKEN.into()),
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
    let redactor = std::sync::Arc::new(Redactor::knowing(config.secrets()));
    let outcomes = run_all(config, Some(hub), None, &CancellationToken::new(), &redactor).await.unwrap();
    for o in &outcomes {
        eprintln!("    {} {} {} {:?} {:.2}s", o.hub, o.capability, o.user, o.result, o.duration.as_secs_f64());
    }
    Run { outcomes }
}

/// Clears every fault flag and asserts that the probes left nothing behind them.
async fn healed(lab: &Lab) {
    lab.clear_flags();
    assert_nothing_left(lab, &EVERYONE).await;
}

/// Asserts through the hub and gateway APIs that no probe server, kernel or cluster is left.
async fn assert_nothing_left(lab: &Lab, users: &[&str]) {
    let http = reqwest::Client::new();
    for user in users {
        assert!(lab.has_no_server(user).await, "{user} still has a server: {}", lab.servers_of(user).await);
        let user_token = lab.mint_user_token(user).await;
        let clusters = json_of(
            http.get(format!("{}/services/dask-gateway/api/v1/clusters/?status=running,pending", lab.url))
                .header("Authorization", format!("jupyterhub {user_token}")),
        )
        .await;
        let clusters = clusters.as_object().unwrap_or_else(|| panic!("the gateway lists clusters: {clusters}"));
        assert!(clusters.is_empty(), "{user} still has clusters: {clusters:?}");
    }
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_round_passes_for_every_user_with_both_login_methods() {
    let (lab, config) = lab("probes-healthy", 18400, 30, USUAL);
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        for capability in [Login, Server, Kernel, Home, DaskGateway] {
            run.assert_ok(capability, user);
        }
    }
    let run = check(&config, "lab-form").await;
    for user in ["probe-3", "probe-4"] {
        for capability in [Login, Server, Kernel, Home] {
            run.assert_ok(capability, user);
        }
    }
    assert_nothing_left(&lab, &EVERYONE).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refused_erroring_or_too_slow_fails_login_and_blocks_the_rest() {
    let (lab, config) = lab("probes-login", 18410, 30, Timeouts(3, 40, 10, 30));
    eprintln!("login refused (403) for one user of the form hub");
    lab.set_flag("login-403", Some("probe-3"), "");
    let run = check(&config, "lab-form").await;
    run.assert_failed(Login, "probe-3", Stage::LoginSubmit, "HTTP 403 Forbidden: Invalid username or password");
    run.assert_blocked(Server, "probe-3", Login);
    run.assert_blocked(Kernel, "probe-3", Login);
    run.assert_ok(Login, "probe-4");
    run.assert_ok(Kernel, "probe-4");
    lab.clear_flags();

    eprintln!("login erroring (500): the authenticator for one user, the login page for everyone");
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

    eprintln!("login too slow");
    lab.set_flag("login-slow", Some("probe-3"), "10");
    let run = check(&config, "lab-form").await;
    run.assert_failed(Login, "probe-3", Stage::LoginSubmit, "no answer within the 3s timeout");
    run.assert_within(&config);
    healed(&lab).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_failing_for_everyone_or_one_user_fail_at_progress_with_the_hubs_reason() {
    let (lab, config) = lab("probes-spawn", 18420, 30, USUAL);
    lab.set_flag("spawn-fail", None, "");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_ok(Login, user);
        run.assert_failed(Server, user, Stage::Progress, "Spawn failed: injected spawn failure (flag spawn-fail)");
        run.assert_blocked(Kernel, user, Server);
        run.assert_ok(DaskGateway, user);
    }
    healed(&lab).await;

    eprintln!("spawn failing for one user only");
    lab.set_flag("spawn-fail", Some("probe-1"), "");
    let run = check(&config, "lab").await;
    run.assert_failed(Server, "probe-1", Stage::Progress, "injected spawn failure");
    run.assert_ok(Server, "probe-2");
    run.assert_ok(Kernel, "probe-2");
    healed(&lab).await;

    eprintln!("the hub's spawn throttle: a real user's start pending, one start at a time");
    the_hubs_spawn_throttle_fails_the_request_in_its_words_and_logs_each_user(&lab, &config).await;

    eprintln!("one profile broken: its users' spawns fail, the hub's own users' work");
    let profile = "\n    profiles: [{name: gpu, user_options: {profile: gpu}, users: [probe-3, probe-4]}]";
    let with_profile = config_with(&lab, USUAL, Extra { hub: profile, ..Extra::default() });
    lab.set_flag("profile-fail", None, "gpu");
    let run = check(&with_profile, "lab").await;
    for user in ["probe-3", "probe-4"] {
        let reason = "profile gpu: Spawn failed: injected failure of profile gpu (flag profile-fail)";
        run.assert_failed(Server, user, Stage::Progress, reason);
        run.assert_blocked(Kernel, user, Server);
        assert!(
            !run.outcomes.iter().any(|o| o.user == user && o.capability == Login),
            "a profile's users only start servers"
        );
    }
    for user in ["probe-1", "probe-2"] {
        run.assert_ok(Server, user);
    }
    lab.clear_flags();
    let run = check(&with_profile, "lab").await;
    run.assert_ok(Server, "probe-3");
    run.assert_ok(Kernel, "probe-4");
    assert_nothing_left(&lab, &EVERYONE).await;
}

/// JupyterHub's `concurrent_spawn_limit` (the lab's `spawn-limit` flag) with probe-4's start hanging: every
/// other start is answered 429, which the probe reports in the hub's words at `request_spawn`, and which the
/// hub's own log records per user in the form hubwatch's log signal counts for real users.
async fn the_hubs_spawn_throttle_fails_the_request_in_its_words_and_logs_each_user(lab: &Lab, config: &Config) {
    use hubwatch::signals::logs::{LogNews, news_in};
    lab.set_flag("spawn-limit", None, "1");
    lab.set_flag("spawn-hang", Some("probe-4"), "");
    assert_eq!(lab.ask_server(reqwest::Method::POST, "probe-4").await, 202, "probe-4's start is pending");
    let run = check(config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(Server, user, Stage::RequestSpawn, "the hub is throttling spawns");
        run.assert_failed(Server, user, Stage::RequestSpawn, "Too many users trying to log in right now");
        run.assert_blocked(Kernel, user, Server);
    }
    let log = std::fs::read_to_string(lab.dir.join("hub.log")).unwrap();
    let throttled: Vec<String> = log
        .lines()
        .filter_map(|line| match news_in(line, "/") {
            Some(LogNews::Failed { who, capability: Server, reason }) => {
                reason.starts_with("the hub is refusing new servers: too many starting at once").then_some(who)
            }
            _ => None,
        })
        .collect();
    for user in ["probe-1", "probe-2"] {
        assert!(throttled.iter().any(|who| who == user), "the hub's log turned {user} away: {throttled:?}");
    }
    assert!(lab.ask_server(reqwest::Method::DELETE, "probe-4").await < 300, "the pending start is stopped");
    lab.clear_flags();
    assert_nothing_left(lab, &EVERYONE).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_too_slow_or_a_server_that_crashes_fails_within_the_probes_timeout() {
    // The spawner gives a silent server 15 s (a crash is seen then); the probe allows 25 s.
    let (lab, config) = lab("probes-slow", 18430, 15, Timeouts(10, 25, 10, 30));
    eprintln!("spawn timing out (the spawner takes 35 s, the probe allows 25 s)");
    lab.set_flag("spawn-slow", None, "35");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(Server, user, Stage::Progress, "not ready within the 25s timeout; last progress:");
        run.assert_blocked(Kernel, user, Server);
    }
    run.assert_within(&config);
    healed(&lab).await;

    eprintln!("the single-user process crashes at start");
    lab.set_flag("spawn-crash", Some("probe-1"), "");
    let run = check(&config, "lab").await;
    run.assert_failed(Server, "probe-1", Stage::Progress, "Spawn failed");
    run.assert_ok(Server, "probe-2");
    run.assert_within(&config);
    healed(&lab).await;

    eprintln!("a stuck spawner: no progress after `Spawning server...`; given up after stuck_after, not the 25 s");
    let stuck = config_with(&lab, Timeouts(10, 25, 10, 30), Extra { server: ", stuck_after: 6s", ..Extra::default() });
    lab.set_flag("spawn-hang", Some("probe-1"), "");
    let run = check(&stuck, "lab").await;
    run.assert_failed(Server, "probe-1", Stage::Progress, "no progress for 6s; last: Spawning server...");
    let given_up = run.get(Server, "probe-1").stages.iter().find(|s| s.stage == Stage::Progress).unwrap().seconds;
    assert!(given_up < 20.0, "the stuck start was given up after {given_up} s of progress, not at the timeout");
    run.assert_ok(Server, "probe-2");
    lab.clear_flags();
    // The hub (JupyterHub 6) interrupts a pending start on DELETE: the stuck request is stopped, not left.
    assert_nothing_left(&lab, &EVERYONE).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_crashes_or_hangs_fails_at_connect_and_is_deleted() {
    let (lab, config) = lab("probes-kernel", 18440, 30, USUAL);
    lab.set_flag("kernel-crash", Some("probe-1"), "");
    let run = check(&config, "lab").await;
    run.assert_ok(Server, "probe-1");
    run.assert_failed(Kernel, "probe-1", Stage::Connect, "did not complete within the 10s timeout");
    run.assert_ok(Kernel, "probe-2");
    run.assert_within(&config);
    healed(&lab).await;

    eprintln!("the kernel hangs");
    lab.set_flag("kernel-hang", None, "");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_ok(Server, user);
        run.assert_failed(Kernel, user, Stage::Connect, "did not complete within the 10s timeout");
    }
    run.assert_within(&config);
    healed(&lab).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dask_clusters_failing_or_the_gateway_frozen_fail_the_dask_probe_only() {
    let (lab, config) = lab("probes-dask", 18450, 30, Timeouts(10, 40, 10, 15));
    lab.set_flag("dask-fail", None, "");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(DaskGateway, user, Stage::WaitRunning, "FAILED");
        run.assert_ok(Kernel, user);
    }
    healed(&lab).await;

    eprintln!("the gateway is down (frozen: every call hangs)");
    lab.signal("GATEWAY_PID", "STOP");
    let run = check(&config, "lab").await;
    lab.signal("GATEWAY_PID", "CONT");
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(DaskGateway, user, Stage::DeleteLeftoverClusters, "no answer within the 15s timeout");
        run.assert_ok(Kernel, user);
    }
    run.assert_within(&config);
    assert_nothing_left(&lab, &EVERYONE).await;

    eprintln!("Dask from inside the servers; probe-1's server has no route to the scheduler proxy");
    let inside = config_with(&lab, Timeouts(10, 40, 10, 60), Extra { dask: ", from_server: true", ..Extra::default() });
    lab.set_flag("dask-no-route", Some("probe-1"), "");
    let run = check(&inside, "lab").await;
    let from_server = |user: &str| {
        let inside = |o: &&ProbeOutcome| o.stages.iter().any(|s| s.stage == Stage::ConnectFromServer);
        let found = run.outcomes.iter().filter(|o| o.capability == DaskGateway && o.user == user).find(inside);
        found.unwrap_or_else(|| panic!("no Dask outcome from {user}'s server: {:#?}", run.outcomes)).clone()
    };
    assert_eq!(from_server("probe-2").result, ProbeResult::Ok, "{:#?}", from_server("probe-2"));
    match from_server("probe-1").result {
        ProbeResult::Failed(f) => {
            assert_eq!(f.stage, Stage::ConnectFromServer, "{f:#?}");
            assert!(f.reason.contains("the code raised"), "Dask's own words: {f:#?}");
        }
        other => panic!("probe-1's Dask from inside: {other:?}"),
    }
    let from_pod = |o: &&ProbeOutcome| {
        o.capability == DaskGateway && !o.stages.iter().any(|s| s.stage == Stage::ConnectFromServer)
    };
    assert!(run.outcomes.iter().filter(from_pod).all(|o| o.result == ProbeResult::Ok), "the gateway answers hubwatch");
    run.assert_within(&inside);
    healed(&lab).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binder_launch_reaches_the_launched_server_and_shuts_it_down() {
    use crate::support::binderhub::{BinderHub, Script};
    let (lab, _) = lab("probes-binder", 18460, 30, USUAL);
    let binder = BinderHub::default();
    let binder_url = binder.clone().start().await;
    // The stand-in launches on the lab as probe-3 and probe-4: users the probed hub's rounds never start.
    binder.launching_on(&lab.url, &lab.token(), &["probe-3", "probe-4"]);
    let keys = format!(
        "\n    binderhub: {{url: \"{binder_url}\", repo: gh/binder-examples/requirements, ref: 0123abc, token: {{env: BINDER_TOKEN}}}}"
    );
    let config = config_with(&lab, USUAL, Extra { hub: &keys, ..Extra::default() });
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_ok(Binder, user);
        let stages: Vec<Stage> = run.get(Binder, user).stages.iter().map(|s| s.stage).collect();
        let expected = [Stage::BinderHealth, Stage::Resolve, Stage::Launch, Stage::Ready, Stage::StopBinder];
        assert_eq!(stages, expected, "{user}: the request until the first event is resolving");
    }
    assert_eq!(binder.requested(), ["gh/binder-examples/requirements/0123abc"; 2], "the pinned ref, once per user");
    assert_nothing_left(&lab, &EVERYONE).await;
    // Users who waited through BinderHub's retries got their server: it worked, slowly, at the launch.
    binder.set_script(Script::LaunchRetried);
    let retried = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        let row = retried.get(Binder, user).to_json();
        assert_eq!((row["result"].as_str(), row["stage"].as_str()), (Some("slow"), Some("launch")), "{row}");
        let reason =
            "BinderHub launched the server after 1 failed launch attempt (Launch attempt 1 failed, retrying...)";
        assert_eq!(row["reason"], reason);
    }
    // The launched servers shut themselves down; the hub forgets them at its next poll.
    assert_nothing_left(&lab, &EVERYONE).await;
}

/// The lab's users whose names start with `prefix`, through the first-login check's token.
async fn users_named(lab: &Lab, prefix: &str) -> Vec<String> {
    let users = json_of(
        reqwest::Client::new()
            .get(format!("{}/hub/api/users?name_filter={prefix}", lab.url))
            .header("Authorization", format!("token {}", lab.first_login_token())),
    )
    .await;
    users.as_array().unwrap().iter().filter_map(|u| u["name"].as_str().map(String::from)).collect()
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brand_new_user_gets_started_or_the_stage_that_stops_them_is_named() {
    let (lab, _) = lab("probes-first-login", 18470, 30, USUAL);
    let keys = "\n    first_login: {token: {env: FIRST_LOGIN_TOKEN}}";
    let config = config_with(&lab, USUAL, Extra { hub: keys, ..Extra::default() });
    eprintln!("a user an earlier (crashed) run left is deleted at start-up");
    let leftover = reqwest::Client::new()
        .post(format!("{}/hub/api/users/hubwatch-first-0badc0de", lab.url))
        .header("Authorization", format!("token {}", lab.first_login_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(leftover.status().as_u16(), 201);
    let redactor = Arc::new(Redactor::knowing(config.secrets()));
    let probers = hubwatch::probe::probers(&config, &hubwatch::http::HttpClient::new().unwrap(), &redactor);
    let cleaned = probers[0].clean_up_leftovers("probe-1").await.unwrap();
    assert_eq!(cleaned, ["first-login users"]);
    assert!(users_named(&lab, "hubwatch-first-").await.is_empty());

    eprintln!("a fresh user: created, a token, a server, a file saved, stopped, deleted");
    let run = check(&config, "lab").await;
    run.assert_ok(FirstLogin, "probe-1");
    let stages: Vec<&str> = run.get(FirstLogin, "probe-1").stages.iter().map(|s| s.stage.as_str()).collect();
    let expected = ["create_user", "mint_token", "whoami", "stop_leftover", "request_spawn", "progress"];
    assert_eq!(stages[..6], expected);
    assert_eq!(stages[6..], ["write_file", "read_file", "stop_server", "delete_user"]);
    assert!(!run.outcomes.iter().any(|o| o.capability == FirstLogin && o.user == "probe-2"), "once per hub");
    assert!(users_named(&lab, "hubwatch-first-").await.is_empty(), "the fresh user is deleted");

    eprintln!("a brand-new user's home cannot be made; the probe users' homes exist");
    lab.set_flag("new-home-fail", None, "");
    let run = check(&config, "lab").await;
    run.assert_failed(FirstLogin, "probe-1", Stage::Progress, "Permission denied");
    run.assert_ok(Server, "probe-1");
    run.assert_ok(Home, "probe-2");
    lab.clear_flags();
    assert!(users_named(&lab, "hubwatch-first-").await.is_empty(), "deleted after a failure too");

    eprintln!("the authenticator cannot create a user (the add_user every first login runs)");
    lab.set_flag("add-user-fail", None, "useradd: cannot lock /etc/passwd; try again later.");
    let run = check(&config, "lab").await;
    run.assert_failed(FirstLogin, "probe-1", Stage::CreateUser, "Failed to create user: hubwatch-first-");
    run.assert_ok(Login, "probe-2");
    lab.clear_flags();
    let log = std::fs::read_to_string(lab.dir.join("hub.log")).unwrap();
    assert!(log.contains("useradd: cannot lock /etc/passwd"), "the hub logged the authenticator's error");
    assert!(users_named(&lab, "hubwatch-first-").await.is_empty(), "a user the hub could not create is not left");
    assert_nothing_left(&lab, &EVERYONE).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_proxy_fails_login_and_a_revoked_token_is_a_monitor_fault() {
    let (lab, config) = lab("probes-proxy", 18480, 30, Timeouts(3, 40, 10, 30));
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
    assert_nothing_left(&lab, &EVERYONE).await;

    eprintln!("a revoked service token is a monitor fault, not an outage");
    let mut broken = config.clone();
    broken.hubs[0] = Arc::new(hubwatch::config::HubConfig {
        token: hubwatch::config::SecretRef::holding(hubwatch::domain::Secret::new("revoked-token")),
        ..(*broken.hubs[0]).clone()
    });
    let run = check(&broken, "lab").await;
    for user in ["probe-1", "probe-2"] {
        let outcome = run.get(Login, user);
        let ProbeResult::Failed(f) = &outcome.result else { panic!("{outcome:?}") };
        assert_eq!((f.stage, f.cause), (Stage::MintToken, FailureCause::Monitor), "{f:?}");
        assert!(f.reason.contains("refused hubwatch's service token"), "{}", f.reason);
        assert!(!outcome.result.is_user_affecting());
    }
}

#[ignore = "needs the lab and root for a tmpfs (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_home_fails_saving_only_in_the_servers_words() {
    require(&[Needs::Mount]);
    let (lab, config) = lab("probes-home", 18490, 30, USUAL);
    eprintln!("home full for one user (the server's writes fail with ENOSPC)");
    lab.set_flag("home-full", Some("probe-1"), "");
    let run = check(&config, "lab").await;
    run.assert_ok(Server, "probe-1");
    run.assert_ok(Kernel, "probe-1");
    run.assert_failed(Home, "probe-1", Stage::WriteFile, "[Errno 28] No space left on device");
    run.assert_ok(Home, "probe-2");
    lab.clear_flags();

    eprintln!("homes read-only for everyone");
    lab.set_flag("home-readonly", None, "");
    let run = check(&config, "lab").await;
    for user in ["probe-1", "probe-2"] {
        run.assert_failed(Home, user, Stage::WriteFile, "[Errno 30] Read-only file system");
    }
    lab.clear_flags();

    // probe-2's home on a tmpfs that is really full.
    eprintln!("probe-2's home on a small tmpfs, filled up");
    let disk = SmallDisk::mount(lab.dir.join("home").join("probe-2")).expect("a tmpfs mounts");
    disk.fill();
    let run = check(&config, "lab").await;
    run.assert_ok(Server, "probe-2");
    run.assert_failed(Home, "probe-2", Stage::WriteFile, "No space left on device");
    run.assert_ok(Home, "probe-1");
    disk.free();
    check(&config, "lab").await.assert_ok(Home, "probe-2");
    assert_nothing_left(&lab, &EVERYONE).await;
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_package_fails_the_kernel_at_the_cell_that_imports_it() {
    let (lab, config) = lab("probes-cells", 18500, 30, USUAL);
    lab.set_flag("package-broken", Some("probe-3"), "");
    let run = check(&config, "lab-form").await;
    run.assert_ok(Server, "probe-3");
    run.assert_failed(
        Kernel,
        "probe-3",
        Stage::Execute,
        "cell 1 of 2 (import labpackage): the code raised ImportError: libopenblas.so.0: cannot open shared object file",
    );
    run.assert_ok(Kernel, "probe-4");
    healed(&lab).await;
}
