//! Faults of hubwatch's own environment, made to happen, with the promise asserted on what the PagerDuty
//! stand-in received (not on timings): for every outage exactly one incident key, triggers before its
//! resolve, none after it, and a resolve for every trigger once the hub heals.
//! - the state volume full (a real tmpfs filled up) while an outage begins, then freed; again while it
//!   recovers; a later outage still opens its own incident;
//! - SQLITE_FULL from the database's page limit, in process: the decision waits and is stored when it can;
//! - PagerDuty answering 500 and then 429 for a while;
//! - `kill -9` at random points, many times, while outages begin and end;
//! - SIGTERM while an outage's first failing round runs: its trigger goes out before the exit;
//! - the wall clock stepping an hour back and forward mid-incident (libfaketime): no held retry, no second
//!   incident.
//!
//! High availability's faults (a partitioned leader, clocks an hour off) are in tests/it/ha.rs.

use crate::support::daemon::{
    Daemon, clock_from, free_port, fresh_state, get, metric, more_probe_runs, sample, wait_for,
};
use crate::support::disk::SmallDisk;
use crate::support::invariants::assert_promise;
use crate::support::lab::Lab;
use crate::support::pagerduty::{Fault, PagerDuty, ROUTING_KEY};
use crate::support::scenario::{FAST_HA, Scenario, StubReplicas};
use crate::support::tiers::{Needs, require};
use hubwatch::app::pipeline::Pipeline;
use hubwatch::clock::Clock;
use hubwatch::config::Config;
use hubwatch::domain::{Capability, ProbeOutcome, ProbeResult, Stage, StepFailure};
use hubwatch::http::HttpClient;
use hubwatch::incident::recorder::{Inputs, Recorder};
use hubwatch::store::Store;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Long enough for a failing round to be seen (server every 4 s, its timeout 30 s) on a busy machine.
const DETECT: Duration = Duration::from_secs(60);

/// A fault test's scenario, its state database where `state` puts it (the faults make writes fail for a
/// while on purpose: `unhealthy_after` is long).
async fn scenario(name: &str, port: u16, state: impl FnOnce(&Lab) -> PathBuf) -> Scenario {
    let s = Scenario::on_lab(name, port).await;
    let state = state(&s.lab);
    s.config(json!({
        "state_path": state,
        "state": {"unhealthy_after": "10m"},
        "scheduler": {"shutdown_grace": "20s", "cleanup_timeout": "20s"},
    }))
}

#[ignore = "needs the lab and root for a tmpfs (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_volume_delays_pages_and_never_loses_them() {
    require(&[Needs::Lab, Needs::Mount]);
    let setup = scenario("faults-disk", 18830, |lab| lab.dir.join("state-volume/state.db")).await;
    let disk = SmallDisk::mount(setup.lab.dir.join("state-volume")).expect("a tmpfs mounts (checked above)");
    let (lab, pd) = (&setup.lab, &setup.pd);
    let daemon = setup.daemon();
    daemon.wait_ready().await;
    let unstored = async || metric(&daemon.metrics().await, "hubwatch_state_unstored_decisions", &[]);

    eprintln!("phase: the state volume is full when spawning starts failing");
    disk.fill();
    lab.set_flag("spawn-fail", None, "");
    wait_for("a decision waiting to be stored", DETECT, async || unstored().await >= 1.0).await;
    let (status, why) = get(&format!("{}/readyz", daemon.base), None).await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("state database unwritable") && !why.contains("disk is full"), "no error text: {why}");
    let metrics = daemon.metrics().await;
    assert!(metric(&metrics, "hubwatch_state_write_failures_total", &[]) >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "hubwatch_state_writable", &[]), 0.0);
    more_probe_runs(async || daemon.metrics().await, "server", "failed", 2.0).await;
    assert!(pd.accepted().is_empty(), "nothing can be paged before it is stored");
    assert!(daemon.log().contains("database or disk is full"), "the log says why");

    eprintln!("phase: space comes back; the page goes out within seconds");
    disk.free();
    let latency = wait_for("the trigger", Duration::from_secs(30), async || !pd.accepted().is_empty()).await;
    eprintln!("    trigger {latency:?} after space came back");
    let key = pd.accepted()[0]["dedup_key"].as_str().unwrap().to_string();
    wait_for("ready again", Duration::from_secs(15), async || {
        get(&format!("{}/readyz", daemon.base), None).await.0 == 200
    })
    .await;
    let (_, page) = get(&format!("{}/incidents/{key}", daemon.base), None).await;
    assert!(page.contains("recorded late") && page.contains("database or disk is full"), "{page}");

    eprintln!("phase: full again while the hub heals; the recovery waits, then resolves");
    disk.fill();
    lab.clear_flags();
    wait_for("the recovery waiting to be stored", DETECT, async || unstored().await >= 1.0).await;
    assert_eq!(pd.accepted_actions(), ["trigger"], "no resolve before the recovery is stored");
    disk.free();
    // Two healthy rounds per user: each a real spawn and stop, which a busy machine can take its 20 s over.
    wait_for("the resolve", DETECT * 2, async || pd.accepted_actions().contains(&"resolve".into())).await;

    eprintln!("phase: a later outage opens its own incident (no stale row blocks it)");
    lab.set_flag("spawn-fail", None, "");
    wait_for("the second trigger", DETECT, async || pd.accepted().len() >= 3).await;
    lab.clear_flags();
    wait_for("the second resolve", DETECT, async || pd.accepted().len() >= 4).await;
    more_probe_runs(async || daemon.metrics().await, "server", "ok", 2.0).await;
    assert_promise(&pd.received(), 2, true);
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}

/// A failure whose reason is long enough that storing it needs new database pages.
fn failed(user: &str) -> ProbeOutcome {
    let reason = format!("Spawn failed: quota exceeded {}", "x".repeat(20_000));
    ProbeOutcome {
        hub: "temple".into(),
        user: user.into(),
        capability: Capability::Server,
        started_at: SystemTime::now(),
        duration: Duration::from_secs(1),
        result: ProbeResult::Failed(StepFailure::hub(Stage::Progress, reason)),
        stages: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_keeps_the_decision_until_the_store_takes_it() {
    hubwatch::http::install_crypto_provider();
    let (pd, events_url) = PagerDuty::running().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state_path: {}\npagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: \"{events_url}\", retry_delay: 1s}}\nhubs:\n  - name: temple\n    url: https://temple.example.org\n    token: {{env: T}}\n    users: [probe-1, probe-2]\n",
        dir.path().join("state.db").display()
    );
    let config = Config::parse(&yaml, Path::new("faults.yaml"), &|name| match name {
        "ROUTING_KEY" => Some(ROUTING_KEY.into()),
        _ => Some("token".into()),
    })
    .unwrap();
    let store = Arc::new(Store::open(&config.state_path).unwrap());
    let pipeline = Pipeline::new(&config, store.clone(), HttpClient::new().unwrap(), Clock::start());
    let health = pipeline.health.clone();
    let (outcomes_tx, outcomes) = mpsc::channel(16);
    let (_real_users_tx, real_users) = mpsc::channel(1);
    let (_changes_tx, changes) = mpsc::channel(1);
    let (manager, context) = (pipeline.manager(&Arc::new(config.clone()), None), pipeline.context(&config, None));
    let recorder =
        Recorder::start(manager, vec![("temple".into(), vec![hubwatch::domain::IncidentKind::HubAccess])], context)
            .await;
    let recording = tokio::spawn(async move { recorder.run(&mut Inputs { outcomes, real_users, changes }).await });
    let notifier = pipeline.notifier(Arc::new(config.clone()));

    // The database may not grow by a single page (the limit cannot go below its size): a write that needs
    // one fails with SQLITE_FULL, as on a full disk.
    store.limit_pages(1).unwrap();
    outcomes_tx.send(failed("probe-1")).await.unwrap();
    outcomes_tx.send(failed("probe-2")).await.unwrap();
    wait_for("the opening to wait", Duration::from_secs(10), async || health.unstored() == 1).await;
    assert!(store.open_incidents().unwrap().is_empty());
    assert!(health.readiness().is_err());
    notifier.deliver_due(SystemTime::now()).await.unwrap();
    assert!(pd.accepted().is_empty());

    store.limit_pages(1 << 20).unwrap();
    wait_for("the opening to be stored", Duration::from_secs(15), async || health.unstored() == 0).await;
    notifier.deliver_due(SystemTime::now()).await.unwrap();
    assert_eq!(pd.accepted_actions(), ["trigger"]);
    let incident = store.open_incidents().unwrap().remove(0);
    let timeline = store.timeline(&incident.key).unwrap();
    let late = timeline.iter().find(|e| e.kind == hubwatch::store::TimelineKind::StateDelayed).expect("said so");
    assert!(late.text.contains("database or disk is full"), "{}", late.text);
    drop(outcomes_tx);
    recording.await.unwrap();
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_failing_for_a_while_delays_pages_and_never_drops_or_repeats_them() {
    require(&[Needs::Lab]);
    let setup = scenario("faults-pagerduty", 18840, |lab| fresh_state(&lab.dir, "state.db")).await;
    let (lab, pd) = (&setup.lab, &setup.pd);
    let daemon = setup.daemon();
    daemon.wait_ready().await;

    eprintln!("phase: PagerDuty answers 500 while an outage begins");
    pd.set_outage(Some(Fault::Status(500)));
    lab.set_flag("spawn-fail", None, "");
    let before = pd.requests();
    wait_for("failed deliveries", DETECT, async || pd.requests() >= before + 2).await;
    eprintln!("phase: then 429");
    pd.set_outage(Some(Fault::Status(429)));
    let before = pd.requests();
    // Retries back off exponentially (1 s, 2 s, 4 s... with jitter): the next one comes within a minute.
    wait_for("a rate-limited delivery", Duration::from_secs(60), async || pd.requests() > before).await;
    assert!(metric(&daemon.metrics().await, "hubwatch_pagerduty_unsent_events", &[]) >= 1.0);
    eprintln!("phase: PagerDuty is back; the hub heals while it still fails now and then");
    pd.set_outage(None);
    wait_for("the trigger", Duration::from_secs(120), async || !pd.accepted().is_empty()).await;
    pd.queue_faults([Fault::Status(500), Fault::Status(502), Fault::Status(429)]);
    lab.clear_flags();
    wait_for("the resolve", DETECT, async || pd.accepted_actions().contains(&"resolve".into())).await;
    more_probe_runs(async || daemon.metrics().await, "server", "ok", 2.0).await;
    assert_promise(&pd.received(), 1, true);
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "each once");
    assert_eq!(metric(&daemon.metrics().await, "hubwatch_pagerduty_unsent_events", &[]), 0.0);
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}

/// A pseudo-random pause in `0..limit`, from a seed the test prints (to replay a failure).
fn pause(seed: &mut u64, limit: Duration) -> Duration {
    *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    limit.mul_f64((*seed >> 11) as f64 / (1u64 << 53) as f64)
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_never_loses_or_repeats_a_page() {
    require(&[Needs::Lab]);
    hubwatch::http::install_crypto_provider();
    let mut seed: u64 = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("FAULTS_SEED={seed} replays this run");
    let setup = scenario("faults-kill", 18850, |lab| fresh_state(&lab.dir, "state.db")).await;
    let (lab, pd) = (&setup.lab, &setup.pd);
    let start = || setup.daemon();
    let mut daemon = start();
    daemon.wait_ready().await;
    let mut kills = 0;
    // Three kills at random points within the next 36 s (the fault's schedule, replayed by FAULTS_SEED).
    let mut kill_thrice = async |mut daemon: Daemon| {
        for _ in 0..3 {
            tokio::time::sleep(pause(&mut seed, Duration::from_secs(12))).await;
            daemon.kill();
            kills += 1;
            daemon = start();
            daemon.wait_ready().await;
        }
        daemon
    };
    for outage in 1..=2 {
        eprintln!("phase: outage {outage} begins; kill -9 at random points while it is detected and paged");
        lab.set_flag("spawn-fail", None, "");
        daemon = kill_thrice(daemon).await;
        let triggered = async || pd.accepted().iter().filter(|e| e["event_action"] == "trigger").count();
        let keys = async || crate::support::invariants::actions_by_key(&pd.received()).len();
        wait_for("this outage's trigger", DETECT * 2, async || keys().await >= outage && triggered().await >= 1).await;
        eprintln!("phase: outage {outage} ends; kill -9 at random points while it recovers and resolves");
        lab.clear_flags();
        daemon = kill_thrice(daemon).await;
        let resolved = async || pd.accepted().iter().filter(|e| e["event_action"] == "resolve").count();
        wait_for("this outage's resolve", DETECT * 2, async || resolved().await >= outage).await;
    }
    more_probe_runs(async || daemon.metrics().await, "server", "ok", 2.0).await;
    eprintln!("{kills} kills; PagerDuty received {:#?}", crate::support::invariants::actions_by_key(&pd.received()));
    assert_promise(&pd.received(), 2, true);
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}

/// A state database another process holds locked (a stuck transaction, a hung disk: every write waits its
/// 5 s busy timeout, then fails): SQLite runs off the runtime, so the leader keeps renewing its lease (renew
/// deadline 3 s), keeps answering its probes and keeps probing; the decisions wait and are paged once the
/// lock goes, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_stalls_no_lease_renewal_health_check_or_page() {
    use crate::support::stub_hub::Progress;
    let s = StubReplicas::start().await;
    let (stub, pd, api) = (&s.stub, &s.pd, &s.api);
    let metrics_listen = free_port();
    let mut daemon = s.replica("leader", &format!("metrics_listen: {metrics_listen}\n{FAST_HA}"));
    let state = s.dir.path().join("leader.db");
    let health = format!("http://{metrics_listen}/healthz");
    wait_for("the leader to probe", Duration::from_secs(60), async || {
        let metrics = get(&format!("http://{metrics_listen}/metrics"), None).await.1;
        crate::support::daemon::sample(&metrics, "hubwatch_probe_runs_total", &["capability=\"login\""]).unwrap_or(0.0)
            >= 2.0
    })
    .await;

    // Another process takes the write lock and holds it for 12 s; meanwhile spawning fails for both users.
    let locker = rusqlite::Connection::open(&state).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    stub.behaviour.lock().unwrap().progress = Progress::FailedEmpty;
    let renewed_at = || {
        let leases = api.inner.lock().unwrap().objects.get("leases").cloned().unwrap_or_default();
        leases.first().map(|l| l["spec"]["renewTime"].to_string()).unwrap_or_default()
    };
    let (started, mut renewals, mut slowest) =
        (std::time::Instant::now(), std::collections::BTreeSet::new(), Duration::ZERO);
    while started.elapsed() < Duration::from_secs(12) {
        let asked = std::time::Instant::now();
        assert_eq!(get(&health, None).await.0, 200, "/healthz answers while the database is locked:\n{}", daemon.log());
        slowest = slowest.max(asked.elapsed());
        renewals.insert(renewed_at());
        assert!(daemon.child.try_wait().unwrap().is_none(), "the leader kept its lease:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("    locked 12 s: {} lease renewals seen, slowest /healthz {slowest:?}", renewals.len());
    assert!(renewals.len() >= 6, "the lease was renewed throughout (every 1 s): {renewals:?}");
    assert!(pd.accepted().is_empty(), "nothing could be stored, so nothing was paged yet");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    wait_for("the outage to be paged", Duration::from_secs(30), async || !pd.accepted().is_empty()).await;
    more_probe_runs(async || get(&format!("http://{metrics_listen}/metrics"), None).await.1, "server", "failed", 2.0)
        .await;
    assert_eq!(pd.accepted_actions(), ["trigger"], "paged once");
    assert!(daemon.log().contains("database is locked"), "the log says why decisions waited");
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}

/// `hubwatch run` (one replica, no Kubernetes) against the stub hub, and the PagerDuty stand-in.
struct OnStub {
    stub: crate::support::stub_hub::Stub,
    pd: PagerDuty,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl OnStub {
    /// Started with `env` added, and past its first healthy server rounds.
    async fn start(env: &[(&str, String)]) -> OnStub {
        let world = StubReplicas::start().await;
        let daemon = world.replica_with("hubwatch", "kubernetes: {enabled: false}\n", env);
        daemon.wait_ready().await;
        wait_for("healthy server rounds", Duration::from_secs(60), async || {
            sample(&daemon.metrics().await, "hubwatch_probe_runs_total", &["capability=\"server\"", "result=\"ok\""])
                .is_some_and(|runs| runs >= 2.0)
        })
        .await;
        let StubReplicas { stub, pd, dir, .. } = world;
        OnStub { stub, pd, daemon, dir }
    }

    fn spawns(&self, progress: crate::support::stub_hub::Progress) {
        self.stub.behaviour.lock().unwrap().progress = progress;
    }

    async fn server_failures(&self) -> f64 {
        let metrics = self.daemon.metrics().await;
        sample(&metrics, "hubwatch_probe_runs_total", &["capability=\"server\"", "result=\"failed\""]).unwrap_or(0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outages_first_failing_round_pages_before_the_exit() {
    use crate::support::stub_hub::Progress;
    let s = OnStub::start(&[]).await;
    // Both users' next spawns fail, and stopping what is left of them takes 3 s: a round reports when its
    // clean-up is done, so the outage is decided only while the daemon drains.
    let requests = || s.stub.record.lock().unwrap().requests.clone();
    s.stub.behaviour.lock().unwrap().stop_delay = Duration::from_secs(3);
    let before = requests().len();
    s.spawns(Progress::FailedEmpty);
    wait_for("both users' failed spawns being cleaned up", Duration::from_secs(20), async || {
        let since = requests().split_off(before);
        ["probe-1", "probe-2"].iter().all(|user| {
            let progress = since.iter().position(|r| r.ends_with(&format!("/users/{user}/server/progress")));
            progress.is_some_and(|at| since[at..].iter().any(|r| *r == format!("DELETE /hub/api/users/{user}/server")))
        })
    })
    .await;
    let metrics = s.daemon.metrics().await;
    assert_eq!(metric(&metrics, "hubwatch_incidents_open", &["hub=\"stub\""]), 0.0, "not decided yet: {metrics}");
    let log = s.daemon.log.clone();
    assert_eq!(s.daemon.stop(Duration::from_secs(60)).await, Some(0));
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(s.pd.accepted_actions(), ["trigger"], "the drain's decision was paged before the exit:\n{log}");
    drop(s.dir);
}

#[ignore = "needs libfaketime (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_of_an_hour_either_way_holds_no_page_and_makes_no_second_incident() {
    use crate::support::stub_hub::Progress;
    require(&[Needs::Faketime]);
    let offset = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(offset.path(), "+0\n").unwrap();
    let s = OnStub::start(&clock_from(offset.path())).await;

    eprintln!("phase: the trigger's first attempt fails; the wall clock steps an hour back before its retry");
    s.pd.queue_faults([Fault::Status(503)]);
    s.spawns(Progress::FailedEmpty);
    wait_for("the trigger attempted", Duration::from_secs(30), async || s.pd.requests() >= 1).await;
    std::fs::write(offset.path(), "-1h\n").unwrap();
    let took = wait_for("the retried trigger", Duration::from_secs(20), async || !s.pd.accepted().is_empty()).await;
    eprintln!("    retried {took:?} after the step (not an hour)");
    wait_for("the offset reported", Duration::from_secs(20), async || {
        metric(&s.daemon.metrics().await, "hubwatch_clock_offset_seconds", &[]) < -3500.0
    })
    .await;

    eprintln!("phase: the wall clock steps an hour forward, past the detection window, mid-incident");
    std::fs::write(offset.path(), "+0\n").unwrap();
    let failures = s.server_failures().await;
    wait_for("more failing rounds after the step", Duration::from_secs(30), async || {
        s.server_failures().await >= failures + 6.0
    })
    .await;
    assert_eq!(s.pd.accepted_actions(), ["trigger"], "no resolve and no second incident: {:#?}", s.pd.accepted());

    s.spawns(Progress::Ready);
    wait_for("the resolve", Duration::from_secs(30), async || s.pd.accepted_actions().contains(&"resolve".into()))
        .await;
    assert_promise(&s.pd.received(), 1, true);
}
