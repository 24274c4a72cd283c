//! High availability against the Kubernetes stand-in (Lease and Secret with resourceVersion conflicts, a
//! client that can be cut off) and the PagerDuty stand-in, asserting the promise on what PagerDuty received:
//! - the election itself: one leader of two; a held lease is not taken; an expired one is, with a new term;
//!   a released one at once;
//! - the mirror: a deposed leader's late write never overwrites its successor's state;
//! - a leader killed with an incident open, its clock an hour ahead: the standby takes over within a lease
//!   duration (not an hour), restores the state, does not page again, and resolves when the hub heals;
//! - a leader whose clock is an hour behind keeps its lease while it renews (no split brain); cut off from the
//!   API server (its calls hang while the standby's are answered) with a trigger queued, it stops before its
//!   renew deadline ends, sends nothing after it, exits, and the standby sends that trigger and resolves;
//! - at the seams (the stub hub, probed every second): a leader killed within 100 ms of PagerDuty's 202 (for
//!   a trigger, and for a trigger sent with its resolve), many times with seeded random delays, never pages
//!   twice, nor does one killed while three hubs' pages wait to fold into one cluster incident or right after
//!   that incident's page; a deleted Lease or mirror Secret costs no step-down; a takeover that cannot read the mirror gives
//!   the lease up rather than page again from an empty state; an API server answering every call after 4 s
//!   during a takeover leaves the new leader its lease; and the promise check itself rejects what it must.

use crate::support::apiserver::ApiServer;
use crate::support::daemon::StubHubs;
use crate::support::daemon::{Daemon, clock_off, metric, more_probe_runs, sample, wait_for};
use crate::support::invariants::{assert_promise, from};
use crate::support::pagerduty::{Fault, PagerDuty};
use crate::support::scenario::{FAST_HA, Scenario, StubReplicas, lease_holder, token_of};
use crate::support::tiers::{Needs, require};
use hubwatch::ha::Fence;
use hubwatch::ha::lease::{Attempt, Elector};
use hubwatch::ha::mirror::{self, Mirror, Saved};
use hubwatch::store::Version;
use serde_json::json;
use std::time::{Duration, SystemTime};

const LEASE: Duration = Duration::from_secs(4);
const RENEW_DEADLINE: Duration = Duration::from_secs(3);

/// The Kubernetes stand-in and a client of it.
async fn stand_in() -> (ApiServer, kube::Client) {
    hubwatch::http::install_crypto_provider();
    let api = ApiServer::default();
    let client = client(&api).await;
    (api, client)
}

async fn client(api: &ApiServer) -> kube::Client {
    kube::Client::try_from(kube::Config::new(api.start().await.parse().unwrap())).unwrap()
}

#[tokio::test]
async fn one_lease_one_leader_and_an_expired_lease_changes_hands_with_a_new_term() {
    let (api, client) = stand_in().await;
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
    let (api, client) = stand_in().await;
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
    world: Scenario,
}

impl Pair {
    async fn start(name: &str, port: u16) -> Pair {
        let world = Scenario::on_lab(name, port).await.with_api(|_| {}).await.config(json!({
            "kubernetes": {"call_timeout": "2s"},
            "high_availability": {"lease_duration": "4s", "renew_deadline": "3s", "retry_period": "1s"},
            "scheduler": {"shutdown_grace": "20s", "cleanup_timeout": "20s"},
        }));
        Pair { world }
    }

    /// Replica `replica`, with its own Kubernetes identity (its token in its kubeconfig).
    fn replica(&self, replica: &str, extra_env: &[(&str, String)]) -> Daemon {
        let (world, token) = (&self.world, token_of(replica));
        let kubeconfig = ApiServer::kubeconfig_for(world.api_url(), &world.lab.dir, replica, &token);
        let mut env: Vec<(&str, String)> = vec![
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("POD_NAMESPACE", "monitoring".into()),
            ("HOSTNAME", replica.into()),
        ];
        env.extend(extra_env.iter().cloned());
        world.replica(replica, &env)
    }

    async fn wait_leader(&self, replica: &str, limit: Duration) -> Duration {
        wait_for(&format!("{replica} to lead"), limit, async || lease_holder(self.world.api()) == replica).await
    }

    /// replica-a (with `a_env`), leading, then replica-b, ready.
    async fn leader_and_standby(&self, a_env: &[(&str, String)]) -> (Daemon, Daemon) {
        let a = self.replica("replica-a", a_env);
        a.wait_ready().await;
        self.wait_leader("replica-a", Duration::from_secs(30)).await;
        let b = self.replica("replica-b", &[]);
        b.wait_ready().await;
        (a, b)
    }
}

fn trigger_key(pd: &PagerDuty) -> String {
    pd.accepted()[0]["dedup_key"].as_str().unwrap().to_string()
}

#[ignore = "needs the lab and libfaketime (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_whose_clock_is_an_hour_ahead_is_replaced_within_a_lease_duration() {
    require(&[Needs::Lab, Needs::Faketime]);
    let pair = Pair::start("ha-ahead", 18780).await;
    let (a, b) = pair.leader_and_standby(&clock_off("+1h")).await;
    wait_for("replica-b to stand by", Duration::from_secs(10), async || b.log().contains("standing by")).await;

    eprintln!("phase: spawning fails for both users; replica-a pages");
    pair.world.lab.set_flag("spawn-fail", None, "");
    wait_for("the trigger", Duration::from_secs(60), async || !pair.world.pd.accepted().is_empty()).await;
    let key = trigger_key(&pair.world.pd);
    // Once the mirror holds the trigger as sent, kill the leader with the incident open.
    wait_for("the mirror to hold the trigger as sent", Duration::from_secs(20), async || {
        mirror_holds_sent(pair.world.api(), &key)
    })
    .await;
    assert!(metric(&a.metrics().await, "hubwatch_probe_runs_total", &[]) > 0.0, "the leader probes");
    assert_eq!(sample(&b.metrics().await, "hubwatch_probe_runs_total", &[]), None, "the standby never probes");
    assert_eq!(metric(&b.metrics().await, "hubwatch_probes_in_flight", &[]), 0.0);
    // The standby's page for the incident (behind the same Service) shows the leader's state, once it has
    // copied the mirror (it looks every retry period).
    let page_url = format!("{}/incidents/{key}", b.base);
    wait_for("the standby to copy the leader's incident", Duration::from_secs(10), async || {
        crate::support::daemon::get(&page_url, None).await.0 == 200
    })
    .await;
    let (_, page) = crate::support::daemon::get(&page_url, None).await;
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
    let forget = reqwest::Client::new().delete(format!("{}/api/v1/discovered-hubs/lab", b.base)).send().await.unwrap();
    assert_eq!(forget.status(), 503, "no write of any kind on a standby");
    a.kill();

    eprintln!("phase: replica-a killed; replica-b takes over although a's renewTime is an hour ahead");
    let took = pair.wait_leader("replica-b", LEASE + Duration::from_secs(15)).await;
    eprintln!("    took over after {took:?}");
    wait_for("replica-b to take the state over", Duration::from_secs(10), async || {
        b.log().contains("taking over with the state")
    })
    .await;
    more_probe_runs(async || b.metrics().await, "server", "failed", 2.0).await;
    assert_eq!(pair.world.pd.accepted_actions(), ["trigger"], "no second page after the takeover");

    eprintln!("phase: healed; replica-b resolves");
    pair.world.lab.clear_flags();
    wait_for("the resolve", Duration::from_secs(90), async || pair.world.pd.accepted().len() >= 2).await;
    more_probe_runs(async || b.metrics().await, "server", "ok", 2.0).await;
    assert_promise(&pair.world.pd.received(), 1, true);
    assert!(from(&pair.world.pd.received(), "replica-b").iter().all(|r| r.event["event_action"] == "resolve"));

    // A graceful stop gives the lease up at once.
    assert_eq!(b.stop(Duration::from_secs(60)).await, Some(0));
    assert_eq!(lease_holder(pair.world.api()), "", "released");
}

#[ignore = "needs the lab and libfaketime (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_its_standby_takes_over_and_sends_nothing_after() {
    require(&[Needs::Lab, Needs::Faketime]);
    let pair = Pair::start("ha-partition", 18790).await;
    let (mut a, b) = pair.leader_and_standby(&clock_off("-1h")).await;

    eprintln!("phase: replica-a's clock is an hour behind; it keeps its lease while it renews");
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(lease_holder(pair.world.api()), "replica-a", "no split brain");
    assert!(!b.log().contains("this replica leads now"), "{}", b.log());
    assert_eq!(metric(&b.metrics().await, "hubwatch_ha_leader", &[]), 0.0);

    eprintln!("phase: spawning fails while PagerDuty is down: replica-a's trigger waits, queued");
    pair.world.pd.set_outage(Some(Fault::Status(503)));
    pair.world.lab.set_flag("spawn-fail", None, "");
    wait_for("the trigger attempted", Duration::from_secs(60), async || pair.world.pd.requests() > 0).await;

    eprintln!("phase: replica-a's API calls hang (replica-b still reaches the API server); PagerDuty is back");
    let cut_at = SystemTime::now();
    pair.world.api().hang_client(&token_of("replica-a"), true);
    pair.world.pd.set_outage(None);
    let took = pair.wait_leader("replica-b", LEASE + Duration::from_secs(15)).await;
    eprintln!("    replica-b leads after {took:?}");
    assert!(took >= LEASE - Duration::from_secs(1), "not before the lease could have expired: {took:?}");
    assert_eq!(a.wait_exit(Duration::from_secs(60)).await, Some(1), "the deposed leader exits to restart as a standby");
    assert!(a.log().contains("lost the leader lease"), "{}", a.log());

    eprintln!("phase: healed; replica-b resolves");
    pair.world.lab.clear_flags();
    wait_for("the resolve", Duration::from_secs(90), async || {
        pair.world.pd.accepted_actions().contains(&"resolve".into())
    })
    .await;
    more_probe_runs(async || b.metrics().await, "server", "ok", 2.0).await;
    let received = pair.world.pd.received();
    assert_promise(&received, 1, true);
    let deadline = cut_at + RENEW_DEADLINE + Duration::from_millis(500);
    let late: Vec<_> = from(&received, "replica-a").into_iter().filter(|r| r.at > deadline).collect();
    assert!(late.is_empty(), "replica-a, with a trigger queued, sent after its renew deadline: {late:#?}");
    let actions: Vec<String> =
        from(&received, "replica-b").iter().map(|r| r.event["event_action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions, ["trigger", "resolve"], "replica-b sent the trigger replica-a could not, then the resolve");
    drop(b);
}

/// The one replica of `replicas` named `name`, taken out.
fn take(replicas: &mut Vec<(String, Daemon)>, name: &str) -> Daemon {
    let i = replicas.iter().position(|(n, _)| n == name).unwrap_or_else(|| panic!("no replica {name}"));
    replicas.remove(i).1
}

/// Kills the leader `leader` with kill -9, starts replica `r{round + 2}` in its place, and waits until another
/// replica leads and says so.
async fn kill_and_replace(s: &StubReplicas, replicas: &mut Vec<(String, Daemon)>, leader: &str, round: usize) {
    take(replicas, leader).kill();
    let fresh = format!("r{}", round + 2);
    replicas.push((fresh.clone(), s.replica(&fresh, FAST_HA)));
    let next = s.wait_leader(|h| !h.is_empty() && h != leader, LEASE + Duration::from_secs(20)).await;
    let daemon = &replicas.iter().find(|(n, _)| *n == next).unwrap().1;
    wait_for("the takeover", Duration::from_secs(20), async || daemon.log().contains("this replica leads now")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_right_after_a_page_never_pages_twice() {
    let seed = std::env::var("HA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("HA_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let s = StubReplicas::start().await;
    let mut replicas = vec![("r0".to_string(), s.replica("r0", FAST_HA))];
    s.wait_leader(|h| h == "r0", Duration::from_secs(30)).await;
    replicas.push(("r1".to_string(), s.replica("r1", FAST_HA)));
    for round in 0..4 {
        let leader = lease_holder(&s.api);
        let seen = s.pd.accepted().len();
        if round % 2 == 0 {
            eprintln!("round {round}: {leader} pages and is killed within 100 ms of PagerDuty's 202");
            s.outage(true);
            s.wait_accepted(seen, "trigger", Duration::from_secs(30)).await;
        } else {
            eprintln!(
                "round {round}: {leader} sends a trigger and its resolve together, killed right after the resolve"
            );
            let asked = s.pd.requests();
            s.pd.set_outage(Some(Fault::Status(503)));
            s.outage(true);
            wait_for("a trigger attempted", Duration::from_secs(30), async || s.pd.requests() > asked).await;
            s.outage(false);
            let daemon = &replicas.iter().find(|(n, _)| *n == leader).unwrap().1;
            wait_for("the resolve queued behind it", Duration::from_secs(30), async || {
                sample(&daemon.metrics().await, "hubwatch_outbox_unsent_events", &["channel=\"events\""]) == Some(2.0)
            })
            .await;
            s.pd.set_outage(None);
            s.wait_accepted(seen, "resolve", Duration::from_secs(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..100))).await;
        kill_and_replace(&s, &mut replicas, &leader, round).await;
        s.outage(false);
        wait_for("every outage resolved", Duration::from_secs(60), async || {
            let by_key = crate::support::invariants::actions_by_key(&s.pd.received());
            by_key.len() > round && by_key.iter().all(|(_, actions)| actions.last().is_some_and(|a| a == "resolve"))
        })
        .await;
        assert_promise(&s.pd.received(), round + 1, true);
    }
    // Nothing trails in after the last resolve but, at most, a repeat of it: the last leader was killed right
    // after its resolve's 202 and before it could mark it sent, so its successor sends it again (PagerDuty
    // ignores a resolve of a resolved incident). Counted once the leader's outbox is empty, then proved by a
    // further round of probes on the healed hub.
    let leader = lease_holder(&s.api);
    let daemon = &replicas.iter().find(|(n, _)| *n == leader).unwrap().1;
    let probed = |m: &str| sample(m, "hubwatch_probe_runs_total", &["capability=\"server\"", "result=\"ok\""]);
    wait_for("the leader's outbox empty", Duration::from_secs(20), async || {
        metric(&daemon.metrics().await, "hubwatch_outbox_unsent_events", &["channel=\"events\""]) == 0.0
    })
    .await;
    let settled = s.pd.accepted().len();
    let runs = probed(&daemon.metrics().await).unwrap_or(0.0);
    wait_for("two more rounds of probes on the leader", Duration::from_secs(30), async || {
        probed(&daemon.metrics().await).unwrap_or(0.0) >= runs + 2.0
    })
    .await;
    let trailing = s.pd.accepted()[settled..].to_vec();
    assert!(trailing.iter().all(|e| e["event_action"] == "resolve"), "{:#?}", s.pd.received());
    assert_promise(&s.pd.received(), 4, true);
}

/// Three hubs of cluster east on the stub page one cluster incident: a leader killed while their pages wait
/// for each other (its successor folds them from the mirrored state, or from its own probes if the mirror
/// missed them), and one killed within 100 ms of the cluster page's 202, never make a second page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_incident_pages_once_across_a_leader_killed_before_or_right_after_its_page() {
    let mut s = StubReplicas::start().await;
    s.hubs = StubHubs::Cluster(&["north", "south", "west"]);
    let mut replicas = vec![("r0".to_string(), s.replica("r0", FAST_HA))];
    s.wait_leader(|h| h == "r0", Duration::from_secs(30)).await;
    replicas.push(("r1".to_string(), s.replica("r1", FAST_HA)));
    for round in 0..2 {
        let leader = lease_holder(&s.api);
        let seen = s.pd.accepted().len();
        s.outage(true);
        if round == 0 {
            eprintln!("round 0: {leader} is killed once a hub's incident is open, before the cluster's page");
            let daemon = &replicas.iter().find(|(n, _)| *n == leader).unwrap().1;
            wait_for("an incident open", Duration::from_secs(30), async || {
                sample(&daemon.metrics().await, "hubwatch_incidents_open", &[]).unwrap_or(0.0) >= 1.0
            })
            .await;
        } else {
            eprintln!("round 1: {leader} pages the cluster and is killed within 100 ms of PagerDuty's 202");
            s.wait_accepted(seen, "trigger", Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..100))).await;
        }
        kill_and_replace(&s, &mut replicas, &leader, round).await;
        s.wait_accepted(seen, "trigger", Duration::from_secs(30)).await;
        s.outage(false);
        wait_for("the cluster incident resolved", Duration::from_secs(60), async || {
            let by_key = crate::support::invariants::actions_by_key(&s.pd.received());
            by_key.len() > round && by_key.iter().all(|(_, actions)| actions.last().is_some_and(|a| a == "resolve"))
        })
        .await;
        assert_promise(&s.pd.received(), round + 1, true);
        let keys = crate::support::invariants::actions_by_key(&s.pd.received());
        assert!(keys.iter().all(|(key, _)| key.starts_with("cluster.east-")), "one page for the cluster: {keys:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_lease_or_the_mirror_costs_at_most_a_lease_duration() {
    let s = StubReplicas::start().await;
    let mut replicas = vec![("r0".to_string(), s.replica("r0", FAST_HA))];
    s.wait_leader(|h| h == "r0", Duration::from_secs(30)).await;
    replicas.push(("r1".to_string(), s.replica("r1", FAST_HA)));
    wait_for("r1 to stand by", Duration::from_secs(20), async || replicas[1].1.log().contains("standing by")).await;
    eprintln!("phase: one failover, so that the mirror's term is above 0");
    take(&mut replicas, "r0").kill();
    s.wait_leader(|h| h == "r1", LEASE + Duration::from_secs(20)).await;
    replicas.push(("r2".to_string(), s.replica("r2", FAST_HA)));
    wait_for("r1's mirror in its term", Duration::from_secs(20), async || mirrored_term(&s.api) == lease_term(&s.api))
        .await;
    wait_for("r2 to stand by", Duration::from_secs(20), async || {
        replicas[1].1.log().contains("copied the leader's state")
    })
    .await;

    eprintln!("phase: kubectl delete lease: the leader makes it again in its own term, and nobody steps down");
    let (leader, term) = (lease_holder(&s.api), mirrored_term(&s.api));
    s.api.delete("leases", "monitoring", "hubwatch-leader");
    let took = wait_for("the Lease again", LEASE, async || !lease_holder(&s.api).is_empty()).await;
    eprintln!("    led again after {took:?}");
    assert_eq!(lease_holder(&s.api), leader);
    assert_eq!(lease_term(&s.api), term, "the term continues from the mirror's, never from 0");
    stays_leading(&s, &mut replicas, LEASE * 3).await;

    eprintln!("phase: the Lease deleted with its leader gone too: the standby makes it within a lease duration");
    s.api.delete("leases", "monitoring", "hubwatch-leader");
    take(&mut replicas, &leader).kill();
    let took = wait_for("a new leader", LEASE * 2 + Duration::from_secs(5), async || {
        !lease_holder(&s.api).is_empty() && lease_holder(&s.api) != leader
    })
    .await;
    eprintln!("    led again after {took:?}");
    wait_for("the mirror in the new term", Duration::from_secs(20), async || mirrored_term(&s.api) > term).await;
    assert_eq!(lease_term(&s.api), mirrored_term(&s.api), "the new term is above the mirror's old one");
    stays_leading(&s, &mut replicas, LEASE * 2).await;

    eprintln!("phase: kubectl delete secret (the mirror): written again, nobody steps down");
    s.api.delete("secrets", "monitoring", "hubwatch-state");
    s.outage(true);
    wait_for("the trigger", Duration::from_secs(30), async || !s.pd.accepted().is_empty()).await;
    wait_for("the mirror written again", Duration::from_secs(20), async || s.api.mirrored_state().is_some()).await;
    stays_leading(&s, &mut replicas, LEASE * 2).await;
    s.outage(false);
    wait_for("the resolve", Duration::from_secs(30), async || s.pd.accepted_actions().contains(&"resolve".into()))
        .await;
    assert_promise(&s.pd.received(), 1, true);
}

/// The Lease's term (its transitions).
fn lease_term(api: &ApiServer) -> i64 {
    api.get("leases", "monitoring", "hubwatch-leader")
        .and_then(|l| l["spec"]["leaseTransitions"].as_i64())
        .unwrap_or(-1)
}

/// The term the mirror Secret was last written in.
/// True once the mirror holds `key`'s events and none of them pending (none a new leader would send again).
fn mirror_holds_sent(api: &ApiServer, key: &str) -> bool {
    let Some(state) = api.mirrored_state().and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
    else {
        return false;
    };
    let rows: Vec<&serde_json::Value> =
        state["tables"]["outbox"].as_array().into_iter().flatten().filter(|row| row["key"] == key).collect();
    !rows.is_empty() && rows.iter().all(|row| row["state"] != "pending")
}

fn mirrored_term(api: &ApiServer) -> i64 {
    let secret = api.get("secrets", "monitoring", "hubwatch-state");
    secret
        .and_then(|s| s["metadata"]["annotations"]["hubwatch.jupyter.org/leader-term"].as_str()?.parse().ok())
        .unwrap_or(-1)
}

/// For `span`, the lease keeps one holder and every replica keeps running (no step-down, no crash loop).
async fn stays_leading(s: &StubReplicas, replicas: &mut [(String, Daemon)], span: Duration) {
    let holder = lease_holder(&s.api);
    let started = std::time::Instant::now();
    while started.elapsed() < span {
        assert_eq!(lease_holder(&s.api), holder, "the lease changed hands");
        for (name, daemon) in replicas.iter_mut() {
            assert!(daemon.child.try_wait().unwrap().is_none(), "{name} exited:\n{}", daemon.log());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_cannot_read_the_mirror_gives_the_lease_up_rather_than_page_again() {
    let s = StubReplicas::start().await;
    let a = s.replica("a", FAST_HA);
    s.wait_leader(|h| h == "a", Duration::from_secs(30)).await;
    s.outage(true);
    wait_for("the trigger", Duration::from_secs(30), async || !s.pd.accepted().is_empty()).await;
    let key = s.pd.accepted()[0]["dedup_key"].as_str().unwrap().to_string();
    wait_for("the mirror holds the incident", Duration::from_secs(20), async || {
        s.api.mirrored_state().is_some_and(|m| m.contains(&key))
    })
    .await;

    eprintln!("phase: the Secret cannot be read; the leader dies; a replica with an empty volume wins the lease");
    s.api.forbid("secrets");
    a.kill();
    let b = s.replica("b", FAST_HA);
    wait_for("b to give the lease up", LEASE + Duration::from_secs(30), async || {
        b.log().contains("giving the lease up rather than lead without it")
    })
    .await;
    assert_eq!(sample(&b.metrics().await, "hubwatch_probe_runs_total", &[]), None, "b never probed");
    assert_eq!(metric(&b.metrics().await, "hubwatch_ha_leader", &[]), 0.0);
    assert_eq!(s.pd.accepted_actions(), ["trigger"], "nothing paged from an empty state");

    eprintln!("phase: the Secret readable again: b takes over with the incident, and resolves it");
    s.api.allow("secrets");
    wait_for("b leads", Duration::from_secs(30), async || b.log().contains("this replica leads now")).await;
    s.outage(false);
    wait_for("the resolve", Duration::from_secs(30), async || s.pd.accepted_actions().contains(&"resolve".into()))
        .await;
    assert_promise(&s.pd.received(), 1, true);
    assert!(s.pd.accepted().iter().all(|e| e["dedup_key"] == key.as_str()), "{:#?}", s.pd.accepted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_its_lease_while_the_api_server_answers_every_call_after_4s() {
    // Every call takes 4 s: winning the lease (read, write) 8 s, reading the mirror 4 s, the renewal right
    // after (one write over the Lease it wrote) 4 s, all within the renew deadline.
    let slow = "high_availability: {lease_duration: 20s, renew_deadline: 18s, retry_period: 2s}\n\
                kubernetes: {enabled: true, call_timeout: 6s}\n";
    let s = StubReplicas::start().await;
    let a = s.replica("a", slow);
    s.wait_leader(|h| h == "a", Duration::from_secs(30)).await;
    let mut b = s.replica("b", slow);
    wait_for("b to stand by", Duration::from_secs(20), async || b.log().contains("standing by")).await;
    s.api.set_delay(Some(Duration::from_secs(4)));
    a.kill();
    let took = s.wait_leader(|h| h == "b", Duration::from_secs(60)).await;
    eprintln!("    {took} won the lease");
    wait_for("b to take over", Duration::from_secs(40), async || b.log().contains("this replica leads now")).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        assert!(b.child.try_wait().unwrap().is_none(), "b exited:\n{}", b.log());
        assert_eq!(lease_holder(&s.api), "b");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!b.log().contains("lost the leader lease"), "{}", b.log());
    assert!(!b.log().contains("not leading after all"), "{}", b.log());
}

#[test]
fn the_promise_check_rejects_one_outage_paged_under_two_keys() {
    let event = |key: &str, action: &str| crate::support::pagerduty::Received {
        at: SystemTime::now(),
        sender: "hubwatch/0.1.0 a".into(),
        event: json!({"dedup_key": key, "event_action": action}),
    };
    let twice = [event("k1", "trigger"), event("k2", "trigger"), event("k1", "resolve"), event("k2", "resolve")];
    assert!(std::panic::catch_unwind(|| assert_promise(&twice, 1, true)).is_err(), "two keys for one outage");
    let late = [event("k1", "trigger"), event("k1", "resolve"), event("k1", "trigger")];
    assert!(std::panic::catch_unwind(|| assert_promise(&late, 1, false)).is_err(), "a trigger after the resolve");
    let unresolved = [event("k1", "trigger")];
    assert!(std::panic::catch_unwind(|| assert_promise(&unresolved, 1, true)).is_err(), "healed, never resolved");
    assert_promise(&[event("k1", "trigger"), event("k1", "trigger"), event("k1", "resolve")], 1, true);
}
