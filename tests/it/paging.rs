//! Paging end to end: `hubwatch run` against the real lab, PagerDuty played by a local server that checks
//! every event against the documented schema. Five tests, each on its own lab (the tickets and the stuck
//! start are `below_threshold.rs`):
//! - spawning fails for both probe users → exactly one trigger naming both users and the hub's reason,
//!   within `every + timeout` plus a small margin; healing → exactly one resolve with the same dedup key;
//!   status notes reach the PagerDuty incident (REST API) while it is open and once at the resolve, none
//!   after; the report draft has the right impact start and end and every timeline entry, `hubwatch report`
//!   prints the same report the daemon serves, and `hubwatch incidents` lists it;
//! - PagerDuty answering 500, then 429, and the daemon killed with `kill -9` while the trigger is unsent →
//!   after a restart the trigger arrives once, never twice, and the resolve follows healing;
//! - the login page failing and working in turn every 5 s, three times → one incident, resolved
//!   `keep_open_for` after the last failure;
//! - the new probes, on one lab: a BinderHub (the stand-in, launching on the lab) failing every launch on
//!   GitHub's rate limit, one profile's spawns failing → each one page in the probe's words, resolved when
//!   healed; launches that work after retries → `slow`, no page;
//! - users' servers with no route to the Dask scheduler while the gateway's API answers hubwatch → one page
//!   in Dask's words (the gateway probe from hubwatch's pod succeeding between them clears nothing),
//!   resolved when the route is back.

use crate::support::binderhub::{BinderHub, Script, TOKEN};
use crate::support::daemon::{Daemon, metric, more_probe_runs, sample, wait_for};
use crate::support::pagerduty::{API_TOKEN, FIRST_RESPONDER, FROM_EMAIL, Fault, ROUTING_KEY};
use crate::support::paging::{APART, EVERY, Load, MARGIN, Paging, TIMEOUT};
use crate::support::scenario::Scenario;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

/// The time in a report's table row `| {label} | 2026-…Z (…) |`.
fn report_time(report: &str, label: &str) -> SystemTime {
    let row =
        report.lines().find(|l| l.starts_with(&format!("| {label} |"))).unwrap_or_else(|| panic!("{label}: {report}"));
    let value = row.split('|').nth(2).unwrap().split_whitespace().next().unwrap();
    humantime::parse_rfc3339(value).unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// Whole seconds (the report's precision).
fn floor(at: SystemTime) -> SystemTime {
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

fn events_for<'a>(accepted: &'a [Value], key: &str, action: &str) -> Vec<&'a Value> {
    accepted.iter().filter(|e| e["dedup_key"] == key && e["event_action"] == action).collect()
}

/// `hubwatch ARGS --config CONFIG` with the daemon's environment.
fn cli(config: &std::path::Path, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hubwatch"))
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .envs(env(token))
        .output()
        .unwrap()
}

fn env(token: &str) -> [(&str, &str); 3] {
    [("HUBWATCH_TOKEN", token), ("ROUTING_KEY", ROUTING_KEY), ("PD_API_TOKEN", API_TOKEN)]
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_two_users_pages_once_resolves_once_with_status_notes_and_a_report() {
    let s = Paging::start("paging", 18700).await;
    let (lab, pd) = (&s.world.lab, &s.world.pd);
    let broken_at = floor(SystemTime::now());
    lab.set_flag("spawn-fail", None, "");
    let latency = wait_for("the trigger", EVERY + TIMEOUT + MARGIN, async || !pd.accepted().is_empty()).await;
    eprintln!("    trigger after {latency:?}");
    more_probe_runs(async || s.daemon.metrics().await, "server", "failed", 2.0).await;
    let accepted = pd.accepted();
    assert_eq!(pd.accepted_actions(), ["trigger"], "exactly one trigger while it lasts");
    let trigger = &accepted[0];
    let key = trigger["dedup_key"].as_str().unwrap().to_string();
    assert_eq!(trigger["payload"]["summary"], "lab: 2 users cannot start their servers");
    assert_eq!(
        trigger["payload"]["custom_details"]["affected_users"]["server"],
        serde_json::json!(["probe-1", "probe-2"])
    );
    let reasons = trigger["payload"]["custom_details"]["last_errors"].to_string();
    assert!(reasons.contains("Spawn failed: injected spawn failure (flag spawn-fail)"), "{reasons}");
    assert_eq!(trigger["payload"]["source"], "127.0.0.1");
    assert!(!trigger.to_string().contains(&s.world.token), "no hub token in the page");
    wait_for("a status note while it is open", Duration::from_secs(20), async || !pd.notes().is_empty()).await;
    pd.acknowledge(&key, FIRST_RESPONDER);
    wait_for("the acknowledgement read back onto the status API", Duration::from_secs(30), async || {
        let (_, status) = crate::support::daemon::get(&format!("{}/api/v1/status", s.daemon.base), None).await;
        status.contains(&format!("acknowledged by {FIRST_RESPONDER}"))
    })
    .await;
    a_check_on_demand_answers_now_and_notes_the_incident(&s).await;

    eprintln!("phase: healed");
    let healed_at = floor(SystemTime::now());
    lab.clear_flags();
    let latency = wait_for("the resolve", EVERY * 3 + TIMEOUT + MARGIN, async || pd.accepted().len() >= 2).await;
    eprintln!("    resolve after {latency:?}");
    wait_for("the last status note", Duration::from_secs(20), async || {
        pd.notes().last().is_some_and(|(_, content, _)| content.starts_with("hubwatch: RESOLVED."))
    })
    .await;
    more_probe_runs(async || s.daemon.metrics().await, "server", "ok", 2.0).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "exactly one resolve");
    assert_eq!(pd.accepted()[1]["dedup_key"], key.as_str());
    let notes = pd.notes();
    assert!(notes.iter().all(|(id, _, from)| id == "Q000001" && from == FROM_EMAIL), "{notes:#?}");
    let updates = |(_, c, _): &&(String, String, String)| {
        c.starts_with("hubwatch status update: ONGOING.") || c.starts_with("checked on demand: ")
    };
    assert!(notes[..notes.len() - 1].iter().all(|n| updates(&n)), "{notes:#?}");
    assert!(notes.last().unwrap().1.starts_with("hubwatch: RESOLVED."), "one last note, after the updates");
    assert!(pd.rest_requests().iter().all(|(_, status)| *status < 300), "{:?}", pd.rest_requests());

    let (status, report) =
        crate::support::daemon::get(&format!("{}/incidents/{key}/report.md", s.daemon.base), None).await;
    assert_eq!(status, 200, "{report}");
    let detected = report_time(&report, "Detected");
    let impact_start = report_time(&report, "Impact Start Time");
    let impact_end = report_time(&report, "Impact End Time");
    assert!(broken_at <= impact_start && impact_start <= detected, "{broken_at:?} {impact_start:?} {detected:?}");
    assert!(healed_at <= impact_end, "impact end after healing: {healed_at:?} {impact_end:?}");
    assert!(report.contains("| Time to acknowledge | "), "{report}");
    for entry in [
        "Impact start",
        "Detected",
        "Paged",
        "Acknowledged in PagerDuty",
        "Status update",
        "Impact end",
        "Resolved in PagerDuty",
    ] {
        assert!(report.contains(&format!("Z** {entry}: ")), "missing {entry:?} in the timeline:\n{report}");
    }
    assert!(report.contains("injected spawn failure (flag spawn-fail)"), "{report}");
    let notes_at_resolve = pd.notes().len();
    more_probe_runs(async || s.daemon.metrics().await, "server", "ok", 2.0).await;
    assert_eq!(pd.notes().len(), notes_at_resolve, "no notes once every incident is resolved");
    let Paging { daemon, world } = s;
    assert_eq!(daemon.stop(Duration::from_secs(40)).await, Some(0));
    the_cli_reads_what_the_daemon_stored(&world.config_path, &world.token, &key, &report);
}

/// `hubwatch check --url … --hub lab`, run off the runtime (it blocks until the daemon answers).
async fn check_on_demand(s: &Paging) -> std::process::Output {
    let (config, token, base) = (s.world.config_path.clone(), s.world.token.clone(), s.daemon.base.clone());
    let args = ["check", "--url", &base, "--hub", "lab", "--output", "json"].map(String::from);
    tokio::task::spawn_blocking(move || cli(&config, &token, &args.each_ref().map(String::as_str))).await.unwrap()
}

/// "Is it fixed?": the daemon runs every capability now (beside its own rounds of the same users, never over
/// them), the CLI prints the rows, and the result is noted on the open incident; a second check within the
/// minute is refused.
async fn a_check_on_demand_answers_now_and_notes_the_incident(s: &Paging) {
    eprintln!("phase: a check on demand while it is open");
    let checked = check_on_demand(s).await;
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "failures exit 1: {stderr}");
    let rows: Vec<Value> =
        String::from_utf8(checked.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let result = |capability: &str, user: &str| {
        let row = rows.iter().find(|r| r["capability"] == capability && r["user"] == user);
        row.unwrap_or_else(|| panic!("no {capability} row for {user}: {rows:?} ({stderr})"))["result"].clone()
    };
    for user in ["probe-1", "probe-2"] {
        assert_eq!(
            (result("login", user), result("server", user), result("kernel", user)),
            (json!("ok"), json!("failed"), json!("blocked"))
        );
    }
    let note = || {
        let notes = s.world.pd.notes();
        notes.into_iter().map(|(_, content, _)| content).find(|c| c.starts_with("checked on demand: "))
    };
    wait_for("the check's note on the incident", Duration::from_secs(20), async || note().is_some()).await;
    let note = note().unwrap();
    assert!(note.contains("failed: probe-1 server (progress: Spawn failed: injected spawn failure"), "{note}");
    let again = check_on_demand(s).await;
    let refused = String::from_utf8_lossy(&again.stderr);
    assert!(refused.contains("lab was checked less than a minute ago: one check a minute"), "{refused}");
}

/// `hubwatch report` prints what the daemon served, and `hubwatch incidents` lists the incident.
fn the_cli_reads_what_the_daemon_stored(config: &std::path::Path, token: &str, key: &str, report: &str) {
    let cli = |args: &[&str]| cli(config, token, args);
    let printed = cli(&["report", key]);
    assert_eq!(printed.status.code(), Some(0), "{}", String::from_utf8_lossy(&printed.stderr));
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), report, "the CLI prints what the daemon serves");
    let unknown = cli(&["report", "no-such-incident"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no incident \"no-such-incident\""));

    let listed = cli(&["incidents", "--output", "json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", String::from_utf8_lossy(&listed.stderr));
    let incidents: Vec<Value> =
        String::from_utf8(listed.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let [incident] = incidents.as_slice() else { panic!("{incidents:#?}") };
    assert_eq!(incident["key"], key);
    assert_eq!(incident["status"], "recovered");
    assert_eq!(incident["users"], serde_json::json!(["probe-1", "probe-2"]));
    assert_eq!(incident["summary"], "lab: 2 users cannot start their servers");
    let time = |field: &str| {
        humantime::parse_rfc3339(incident[field].as_str().unwrap_or_else(|| panic!("{field}: {incident}"))).unwrap()
    };
    assert!(time("impact_start") <= time("opened") && time("opened") <= time("impact_end"), "{incident}");
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_failing_and_kill_9_with_the_trigger_unsent_page_once_after_the_restart() {
    let s = Paging::start("paging-restart", 18720).await;
    let (lab, pd) = (&s.world.lab, &s.world.pd);
    pd.set_outage(Some(Fault::Status(500)));
    let before = pd.requests();
    lab.set_flag("spawn-fail", None, "");
    wait_for("failed deliveries", EVERY + TIMEOUT + MARGIN, async || pd.requests() >= before + 2).await;
    pd.set_outage(Some(Fault::Status(429)));
    let before = pd.requests();
    wait_for("a rate-limited delivery", Duration::from_secs(60), async || pd.requests() > before).await;
    let metrics = s.daemon.metrics().await;
    assert!(metric(&metrics, "hubwatch_pagerduty_unsent_events", &[]) >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "hubwatch_incidents_open", &["kind=\"hub_access\""]), 1.0);
    s.daemon.kill();
    assert!(pd.accepted().is_empty(), "nothing was accepted during the outage");

    pd.set_outage(None);
    let daemon = s.world.start().await;
    wait_for("the unsent trigger", Duration::from_secs(30), async || !pd.accepted().is_empty()).await;
    let key = pd.accepted()[0]["dedup_key"].as_str().unwrap().to_string();
    more_probe_runs(async || daemon.metrics().await, "server", "failed", 3.0).await;
    assert_eq!(events_for(&pd.accepted(), &key, "trigger").len(), 1, "once, not again after the restart");
    assert!(daemon.log().contains("resumed an open incident"));

    lab.clear_flags();
    wait_for("the resolve after the restart", EVERY * 3 + TIMEOUT + MARGIN, async || {
        !events_for(&pd.accepted(), &key, "resolve").is_empty()
    })
    .await;
    more_probe_runs(async || daemon.metrics().await, "server", "ok", 2.0).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "{:#?}", pd.accepted());
    assert!(!daemon.log().contains(ROUTING_KEY) && !daemon.log().contains(&s.world.token), "no secrets in the log");
    assert_eq!(daemon.stop(Duration::from_secs(40)).await, Some(0));
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_flapping_every_5s_is_one_incident_resolved_keep_open_for_after_it_settles() {
    const KEEP_OPEN_FOR: Duration = Duration::from_secs(15);
    let s = Paging::start_with("paging-flap", 18730, |world| {
        world.config(json!({"incidents": {"keep_open_for": "15s"}, "defaults": {"probes": {"login": {"every": "1s"}}}}))
    })
    .await;
    let (lab, pd) = (&s.world.lab, &s.world.pd);
    // The hub's login page fails and works in turn, three times each (a hub pod restarting, a proxy losing
    // its routes). A login round takes milliseconds, whatever the tests beside this one do to spawn times:
    // each 5-s healthy spell holds both users' two successes (login every second), so without keep_open_for
    // every spell would resolve the incident and the next open another (two relapses).
    let mut turns = tokio::time::interval(Duration::from_secs(5));
    let mut settled = SystemTime::now();
    for turn in 0..6 {
        turns.tick().await;
        if turn % 2 == 0 {
            lab.set_flag("login-500", None, "");
        } else {
            lab.clear_flags();
            settled = SystemTime::now();
        }
    }
    // One more turn, so that a run which started before the last clear has finished before we count.
    turns.tick().await;
    let failures = |metrics: &str| {
        sample(metrics, "hubwatch_probe_runs_total", &["capability=\"login\"", "result=\"failed\""]).unwrap_or(0.0)
    };
    let failed = failures(&s.daemon.metrics().await);
    assert!(failed >= 3.0, "the failing spells were seen: {failed}");
    wait_for("the resolve", KEEP_OPEN_FOR + Duration::from_secs(60), async || {
        pd.accepted_actions().contains(&"resolve".into())
    })
    .await;
    let resolved = SystemTime::now();
    let after = resolved.duration_since(settled).unwrap();
    eprintln!("    resolved {after:?} after the hub settled (keep_open_for {KEEP_OPEN_FOR:?})");
    assert!(after >= KEEP_OPEN_FOR, "not before keep_open_for: {after:?}");
    assert_eq!(failures(&s.daemon.metrics().await), failed, "no failure after the hub settled");
    assert_eq!(pd.accepted()[0]["payload"]["summary"], "lab: 2 users cannot log in");
    let received = pd.received();
    crate::support::invariants::assert_promise(&received, 1, true);
    let key = pd.accepted()[0]["dedup_key"].as_str().unwrap().to_string();
    let (status, page) = crate::support::daemon::get(&format!("{}/incidents/{key}", s.daemon.base), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("failing again after"), "the relapses are in the timeline: {page}");
}

/// The new probes' outages through `hubwatch run` to PagerDuty, on one lab and one daemon: nothing pages while
/// they work; then, phase by phase, each fault pages once in the probe's words and resolves when healed.
#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binderhub_failing_and_a_broken_profile_each_page_once_and_resolve() {
    let _apart = APART.enter(Load::Heavy).await;
    let binder = BinderHub::default();
    let binder_url = binder.clone().start().await;
    let users = ("LAB_USERS", "probe-1 probe-2 probe-3 probe-4 probe-5 probe-6");
    let world = Scenario::on_lab_with("paging-new-probes", 18740, &[users]).await;
    let world = world
        // One success each is recovery here: the recovery rule is the other tests' subject. Six users'
        // servers and launches are a load on a small machine that runs other lab tests beside this one (with
        // Dask clusters too, healthy spawns beside it took 18 s): rounds are spaced, and the kernel probe (not
        // this test's subject) runs once.
        .config(json!({"incidents": {"recovery_successes": 1}, "defaults": {"probes": {
            "server": {"every": "15s", "timeout": "30s"}, "kernel": {"every": "1h", "timeout": "30s"},
            "binderhub": {"every": "15s", "timeout": "30s"}}}}))
        .hub(json!({
            "binderhub": {"url": binder_url, "repo": "gh/binder-examples/requirements", "ref": "0123abc",
                "token": {"env": "BINDER_TOKEN"}},
            "profiles": [{"name": "gpu", "user_options": {"profile": "gpu"}, "users": ["probe-3", "probe-4"]}],
        }))
        .env("BINDER_TOKEN", TOKEN);
    // The stand-in launches as probe-5 and probe-6: users no round of the hub starts.
    binder.launching_on(&world.lab.url, &world.token, &["probe-5", "probe-6"]);
    let daemon = world.start().await;
    for (capability, runs) in [("binder", 2.0), ("server", 4.0)] {
        more_probe_runs(async || daemon.metrics().await, capability, "ok", runs).await;
    }
    assert!(world.pd.accepted().is_empty(), "working probes page nobody: {:?}", world.pd.accepted_actions());
    let pages = NewProbes { world: &world, daemon: &daemon };
    a_binderhub_rate_limited_pages_in_its_words_and_retried_launches_do_not(&pages, &binder).await;
    a_broken_profile_pages_naming_it(&pages).await;
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
    assert!(!format!("{:?}", world.pd.received()).contains(TOKEN), "no BinderHub token reached PagerDuty");
}

/// Dask from inside through the daemon: the users' servers reach the gateway's API but not their clusters'
/// schedulers (a NetworkPolicy), while hubwatch's own gateway probe goes on succeeding — the outage the probe
/// from hubwatch's pod alone would pass through.
#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dask_unreachable_from_users_servers_pages_once_while_the_gateway_answers_hubwatch() {
    let _apart = APART.enter(Load::Heavy).await;
    let world = Scenario::on_lab("paging-dask-inside", 18750).await;
    let gateway = format!("{}/services/dask-gateway", world.lab.url);
    let world = world
        // Every Dask attempt starts a scheduler and a worker (Python processes): two users, rounds spaced, one
        // success each is recovery (the recovery rule is the other tests' subject), the kernel probe once.
        .config(json!({"incidents": {"recovery_successes": 1}, "defaults": {"probes": {
            "server": {"every": "15s", "timeout": "45s"}, "kernel": {"every": "1h", "timeout": "30s"},
            "dask_gateway": {"every": "15s", "timeout": "60s"}}}}))
        .hub(json!({"dask_gateway": {"url": gateway, "from_server": true}}));
    let daemon = world.start().await;
    // Dask runs twice a due round: from hubwatch's pod, and from the user's server (its stages in the run).
    more_probe_runs(async || daemon.metrics().await, "dask_gateway", "ok", 4.0).await;
    assert!(world.pd.accepted().is_empty(), "working probes page nobody: {:?}", world.pd.accepted_actions());
    let pages = NewProbes { world: &world, daemon: &daemon };
    eprintln!("phase: users' servers have no route to the Dask scheduler");
    let lab = &world.lab;
    let no_route = || ["probe-1", "probe-2"].iter().for_each(|user| lab.set_flag("dask-no-route", Some(user), ""));
    let trigger = pages.page_and_resolve("the Dask trigger", no_route, || lab.clear_flags()).await;
    assert_eq!(trigger["payload"]["summary"], "lab: 2 users cannot create or use Dask Gateway clusters");
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["dask_gateway"], json!(["probe-1", "probe-2"]), "{trigger:#}");
    let reasons = details["last_errors"].to_string();
    assert!(reasons.contains("connect_from_server"), "the stage and Dask's words: {reasons}");
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}

struct NewProbes<'a> {
    world: &'a Scenario,
    daemon: &'a Daemon,
}

impl NewProbes<'_> {
    /// Switches a fault on with `fault`, waits for its one trigger, heals with `heal`, waits for its resolve;
    /// the trigger.
    async fn page_and_resolve(&self, what: &str, fault: impl FnOnce(), heal: impl FnOnce()) -> Value {
        let pd = &self.world.pd;
        let before = pd.accepted().len();
        fault();
        wait_for(what, Duration::from_secs(120), async || pd.accepted().len() > before).await;
        let trigger = pd.accepted()[before].clone();
        assert_eq!(trigger["event_action"], "trigger", "{trigger:#}");
        heal();
        let key = trigger["dedup_key"].as_str().unwrap().to_string();
        wait_for("its resolve", Duration::from_secs(120), async || {
            events_for(&pd.accepted(), &key, "resolve").len() == 1
        })
        .await;
        assert_eq!(events_for(&pd.accepted(), &key, "trigger").len(), 1, "{what}: paged once");
        trigger
    }
}

/// GitHub's rate limit fails every launch at `resolve`: a page in BinderHub's words. Launches that work only
/// after BinderHub's retries are `slow`: no page.
async fn a_binderhub_rate_limited_pages_in_its_words_and_retried_launches_do_not(
    pages: &NewProbes<'_>,
    binder: &BinderHub,
) {
    eprintln!("phase: GitHub's rate limit fails every launch at resolve");
    let trigger = pages
        .page_and_resolve(
            "the BinderHub trigger",
            || binder.set_script(Script::RateLimited),
            || binder.set_script(Script::Launch),
        )
        .await;
    assert_eq!(trigger["payload"]["summary"], "lab: 2 users cannot launch repositories through the hub's BinderHub");
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["binder"], json!(["probe-1", "probe-2"]), "{trigger:#}");
    let reasons = details["last_errors"].to_string();
    assert!(reasons.contains("GitHub rate limit exceeded"), "BinderHub's words: {reasons}");

    eprintln!("phase: launches work after one retry (slow, not an incident)");
    let sent = pages.world.pd.accepted().len();
    binder.set_script(Script::LaunchRetried);
    more_probe_runs(async || pages.daemon.metrics().await, "binder", "slow", 2.0).await;
    binder.set_script(Script::Launch);
    assert_eq!(pages.world.pd.accepted().len(), sent, "slow launches page nobody");
}

/// The `gpu` profile's spawns fail: its two users page, the summary naming the profile; the hub's own users
/// go on starting theirs.
async fn a_broken_profile_pages_naming_it(pages: &NewProbes<'_>) {
    eprintln!("phase: the gpu profile's spawns fail");
    let lab = &pages.world.lab;
    let trigger = pages
        .page_and_resolve("the profile trigger", || lab.set_flag("profile-fail", None, "gpu"), || lab.clear_flags())
        .await;
    assert_eq!(trigger["payload"]["summary"], "lab: 2 users cannot start their servers (profile gpu)");
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(details["affected_users"]["server"], json!(["probe-3", "probe-4"]), "{trigger:#}");
    assert!(details["last_errors"].to_string().contains("profile gpu: Spawn failed"), "{trigger:#}");
}
