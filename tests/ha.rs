//! High availability against the Kubernetes stand-in (Lease and Secret with resourceVersion conflicts, a
//! client that can be cut off) and the PagerDuty stand-in, asserting the promise on what PagerDuty received:
//! - the election itself: one leader of two; a held lease is not taken; an expired one is, with a new term;
//!   a released one at once;
//! - the mirror: a deposed leader's late write never overwrites its successor's state;
//! - a leader killed with an incident open, its clock an hour ahead: the standby takes over within a lease
//!   duration (not an hour), restores the state, does not page again, and resolves when the hub heals;
//! - a leader whose clock is an hour behind keeps its lease while it renews (no split brain); cut off from the
//!   API server (its calls hang while the standby's are answered), it stops before its renew deadline ends,
//!   sends nothing after it, exits, and the standby takes over and resolves.

mod support;

use hubwatch::ha::Fence;
use hubwatch::ha::lease::{Attempt, Elector};
use hubwatch::ha::mirror::{self, Mirror, Saved};
use hubwatch::store::Version;
use serde_json::json;
use std::time::{Duration, SystemTime};
use support::apiserver::ApiServer;
use support::daemon::{Daemon, clock_off, free_port, fresh_state, lab_hub_yaml, metric, sample, wait_for};
use support::invariants::{assert_promise, from};
use support::lab::Lab;
use support::pagerduty::{PagerDuty, ROUTING_KEY};

const LEASE: Duration = Duration::from_secs(4);
const RENEW_DEADLINE: Duration = Duration::from_secs(3);

fn lease_holder(api: &ApiServer) -> String {
    api.inner
        .lock()
        .unwrap()
        .objects
        .get("leases")
        .and_then(|l| l.first().cloned())
        .map_or(String::new(), |l| l["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
}

async fn client(api: &ApiServer) -> kube::Client {
    kube::Client::try_from(kube::Config::new(api.start().await.parse().unwrap())).unwrap()
}

#[tokio::test]
async fn one_lease_one_leader_and_an_expired_lease_changes_hands_with_a_new_term() {
    hubwatch::http::install_crypto_provider();
    let api = ApiServer::default();
    let client = client(&api).await;
    let elector = |identity: &str| {
        Elector::new(
            kube::Api::namespaced(client.clone(), "monitoring"),
            "hubwatch-leader",
            identity,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
    };
    let (mut a, mut b) = (elector("a"), elector("b"));
    let budget = Duration::from_secs(5);
    // Both try at once: exactly one wins (the other's create or replace conflicts).
    let (won_a, won_b) = tokio::join!(a.try_acquire_or_renew(budget), b.try_acquire_or_renew(budget));
    let leading = |attempt: &Attempt| matches!(attempt, Attempt::Leading { .. });
    assert!(leading(&won_a.unwrap()) ^ leading(&won_b.unwrap()), "exactly one leader");
    let (leader, standby) = if lease_holder(&api) == "a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert_eq!(leader.try_acquire_or_renew(budget).await.unwrap(), Attempt::Leading { term: 0 }, "renewed");
    assert!(matches!(standby.try_acquire_or_renew(budget).await.unwrap(), Attempt::Held { .. }), "held");
    // The leader stops renewing: once the standby has seen no change for the lease duration, it takes over.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(matches!(standby.try_acquire_or_renew(budget).await.unwrap(), Attempt::Held { .. }), "not yet");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(standby.try_acquire_or_renew(budget).await.unwrap(), Attempt::Leading { term: 1 }, "a new term");
    assert_eq!(lease_holder(&api), standby.identity());
    assert!(matches!(leader.try_acquire_or_renew(budget).await.unwrap(), Attempt::Held { .. }), "not back");
    // Released: the other takes it at once, in the next term.
    standby.release().await.unwrap();
    assert_eq!(leader.try_acquire_or_renew(budget).await.unwrap(), Attempt::Leading { term: 2 });
}

#[tokio::test]
async fn a_deposed_leaders_late_mirror_write_never_overwrites_its_successors_state() {
    hubwatch::http::install_crypto_provider();
    let api = ApiServer::default();
    let client = client(&api).await;
    let mirror = |identity: &str| {
        Mirror::new(client.clone(), "monitoring", "hubwatch-state", "hubwatch-state", identity, Duration::from_secs(2))
    };
    let packed = |term: i64, sequence: i64| {
        mirror::pack(
            json!({"schema_version": 4, "term": term, "sequence": sequence, "tables": {"incidents": []}}),
            1 << 20,
        )
    };
    let fence = Fence::lease();
    fence.extend_to(tokio::time::Instant::now() + Duration::from_secs(60));
    let (old, new) = (mirror("a"), mirror("b"));
    assert_eq!(old.save(&packed(1, 10), &fence).await.unwrap(), Saved::Written);
    assert_eq!(new.save(&packed(2, 3), &fence).await.unwrap(), Saved::Written, "a newer term wins at any sequence");
    assert_eq!(
        old.save(&packed(1, 12), &fence).await.unwrap(),
        Saved::Superseded(Version { term: 2, sequence: 3 }),
        "the late write of term 1 is refused"
    );
    assert_eq!(Version::of(&new.load().await.unwrap().unwrap()), Version { term: 2, sequence: 3 });
    let secret = api.inner.lock().unwrap().objects["secrets"][0].clone();
    assert_eq!(secret["metadata"]["annotations"]["hubwatch.jupyter.org/leader"], "b");
    assert!(secret["data"]["state.json.gz"].is_string(), "kept in a Secret, compressed");
    // Not leading: nothing is even read.
    let requests = api.requests().len();
    assert_eq!(new.save(&packed(2, 4), &Fence::lease()).await.unwrap(), Saved::NotLeading);
    assert_eq!(api.requests().len(), requests);
}

/// Two replicas of `hubwatch run` against one lab, one PagerDuty and one API server.
struct Pair {
    lab: Lab,
    pd: PagerDuty,
    api: ApiServer,
    api_url: String,
    events_url: String,
}

impl Pair {
    async fn start(name: &str, port: u16) -> Pair {
        hubwatch::http::install_crypto_provider();
        let pd = PagerDuty::default();
        let events_url = pd.clone().start().await;
        let api = ApiServer::default();
        let api_url = api.start().await;
        let lab = Lab::start_for_daemon(name, port);
        Pair { lab, pd, api, api_url, events_url }
    }

    fn replica(&self, replica: &str, extra_env: &[(&str, String)]) -> Daemon {
        let lab = &self.lab;
        let listen = free_port();
        let state = fresh_state(&lab.dir, &format!("{replica}.db"));
        let config = lab.dir.join(format!("{replica}.yaml"));
        std::fs::write(
            &config,
            format!(
                r#"listen: {listen}
state_path: {state}
incidents: {{min_affected_users: 2, window: 1m, recovery_successes: 2, keep_open_for: 0s}}
pagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: "{events_url}", retry_delay: 1s}}
kubernetes: {{enabled: true, call_timeout: 2s}}
high_availability: {{lease_duration: 4s, renew_deadline: 3s, retry_period: 1s}}
scheduler: {{shutdown_grace: 20s, cleanup_timeout: 20s}}
{hub}"#,
                state = state.display(),
                events_url = self.events_url,
                hub = lab_hub_yaml(lab.url.as_str(), ["probe-1", "probe-2"], ""),
            ),
        )
        .unwrap();
        let log = lab.dir.join(format!("{replica}.log"));
        let _ = std::fs::remove_file(&log);
        let kubeconfig = ApiServer::kubeconfig_for(&self.api_url, &lab.dir, replica, &token_of(replica));
        let token = lab.token();
        let mut env: Vec<(&str, String)> = vec![
            ("HUBWATCH_TOKEN", token),
            ("ROUTING_KEY", ROUTING_KEY.into()),
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("POD_NAMESPACE", "monitoring".into()),
            ("HOSTNAME", replica.into()),
        ];
        env.extend(extra_env.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Daemon::start(&config, listen, &env, log)
    }

    async fn wait_leader(&self, replica: &str, limit: Duration) -> Duration {
        wait_for(&format!("{replica} to lead"), limit, async || lease_holder(&self.api) == replica).await
    }
}

fn token_of(replica: &str) -> String {
    format!("token-of-{replica}")
}

fn trigger_key(pd: &PagerDuty) -> String {
    pd.accepted()[0]["dedup_key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_whose_clock_is_an_hour_ahead_is_replaced_within_a_lease_duration() {
    if !support::tiers::can_run(
        "a_killed_leader_whose_clock_is_an_hour_ahead_is_replaced_within_a_lease_duration",
        &[support::tiers::Needs::Lab, support::tiers::Needs::Faketime],
    ) {
        return;
    }
    let pair = Pair::start("ha-ahead", 18780).await;
    let ahead = clock_off("+1h");
    let a = pair.replica("replica-a", &ahead);
    a.wait_ready().await;
    pair.wait_leader("replica-a", Duration::from_secs(30)).await;
    let b = pair.replica("replica-b", &[]);
    b.wait_ready().await;
    wait_for("replica-b to stand by", Duration::from_secs(10), async || b.log().contains("standing by")).await;

    eprintln!("phase: spawning fails for both users; replica-a pages");
    pair.lab.set_flag("spawn-fail", None, "");
    wait_for("the trigger", Duration::from_secs(60), async || !pair.pd.accepted().is_empty()).await;
    let key = trigger_key(&pair.pd);
    // Let the leader mirror the sent trigger, then kill it with the incident open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sample(&b.metrics().await, "hubwatch_probe_runs_total", &[]), None, "the standby never probes");
    // The standby's page for the incident (behind the same Service) shows the leader's state.
    let (status, page) = support::daemon::get(&format!("{}/incidents/{key}", b.base), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("probe-1"), "{page}");
    // A standby takes no silence: its state is the leader's copy, replaced at every mirror.
    let refused = reqwest::Client::new()
        .post(format!("{}/api/v1/silences", b.base))
        .json(&serde_json::json!({"hub": "lab", "duration": "1h", "reason": "upgrading"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body = refused.text().await.unwrap();
    assert!(body.contains("this replica stands by"), "{body}");
    a.kill();

    eprintln!("phase: replica-a killed; replica-b takes over although a's renewTime is an hour ahead");
    let took = pair.wait_leader("replica-b", LEASE + Duration::from_secs(15)).await;
    eprintln!("    took over after {took:?}");
    wait_for("replica-b to take the state over", Duration::from_secs(10), async || {
        b.log().contains("taking over with the state")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(pair.pd.accepted_actions(), ["trigger"], "no second page after the takeover");

    eprintln!("phase: healed; replica-b resolves");
    pair.lab.clear_flags();
    wait_for("the resolve", Duration::from_secs(90), async || pair.pd.accepted().len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_promise(&pair.pd.received(), 1, true);
    assert!(from(&pair.pd.received(), "replica-b").iter().all(|r| r.event["event_action"] == "resolve"));

    // A graceful stop gives the lease up at once.
    assert_eq!(b.stop(Duration::from_secs(60)).await, Some(0));
    assert_eq!(lease_holder(&pair.api), "", "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_its_standby_takes_over_and_sends_nothing_after() {
    if !support::tiers::can_run(
        "a_leader_cut_off_from_the_api_server_stops_before_its_standby_takes_over_and_sends_nothing_after",
        &[support::tiers::Needs::Lab, support::tiers::Needs::Faketime],
    ) {
        return;
    }
    let pair = Pair::start("ha-partition", 18790).await;
    let behind = clock_off("-1h");
    let mut a = pair.replica("replica-a", &behind);
    a.wait_ready().await;
    pair.wait_leader("replica-a", Duration::from_secs(30)).await;
    let b = pair.replica("replica-b", &[]);
    b.wait_ready().await;

    eprintln!("phase: replica-a's clock is an hour behind; it keeps its lease while it renews");
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(lease_holder(&pair.api), "replica-a", "no split brain");
    assert!(!b.log().contains("this replica leads now"), "{}", b.log());
    assert_eq!(metric(&b.metrics().await, "hubwatch_ha_leader", &[]), 0.0);

    eprintln!("phase: spawning fails; replica-a pages");
    pair.lab.set_flag("spawn-fail", None, "");
    wait_for("the trigger", Duration::from_secs(60), async || !pair.pd.accepted().is_empty()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    eprintln!("phase: replica-a's API calls hang; replica-b can still reach the API server");
    let cut_at = SystemTime::now();
    pair.api.hang_client(&token_of("replica-a"), true);
    let took = pair.wait_leader("replica-b", LEASE + Duration::from_secs(15)).await;
    eprintln!("    replica-b leads after {took:?}");
    assert!(took >= LEASE - Duration::from_secs(1), "not before the lease could have expired: {took:?}");
    assert_eq!(a.wait_exit(Duration::from_secs(60)).await, Some(1), "the deposed leader exits to restart as a standby");
    assert!(a.log().contains("lost the leader lease"), "{}", a.log());

    eprintln!("phase: healed; replica-b resolves");
    pair.lab.clear_flags();
    wait_for("the resolve", Duration::from_secs(90), async || pair.pd.accepted_actions().contains(&"resolve".into()))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let received = pair.pd.received();
    assert_promise(&received, 1, true);
    let deadline = cut_at + RENEW_DEADLINE + Duration::from_millis(500);
    let late: Vec<_> = from(&received, "replica-a").into_iter().filter(|r| r.at > deadline).collect();
    assert!(late.is_empty(), "replica-a sent after its renew deadline: {late:#?}");
    assert_eq!(from(&received, "replica-b").len(), 1, "replica-b sent only the resolve: {received:#?}");
    drop(b);
}
