//! Silences end to end on the real lab: `hubwatch run` against it, PagerDuty played by the stand-in, a
//! webhook receiver standing in for a helpdesk, the pages behind basic auth, and silences made and ended
//! with `hubwatch silence` as an engineer would:
//! - a silenced outage sends nothing and shows as silenced (status JSON, grid); bad silences are refused
//!   with a message; a restart keeps the silence; expiring it with the outage on pages exactly once (and the
//!   webhook hears of it once); healing resolves;
//! - an outage that recovers while silenced sends nothing at all;
//! - one user failing is a support ticket: the webhook hears it opened and closed, once each.

use crate::support::daemon::{get, sample, wait_for};
use crate::support::scenario::Scenario;
use crate::support::webhook::{AUTHORIZATION, Receiver};
use serde_json::{Value, json};
use std::process::Output;
use std::time::Duration;

const PORT: u16 = 18960;
const USER: &str = "oncall";
const PASSWORD: &str = "correct horse battery staple";
/// Detection: a server round (every 4 s) that fails within its timeout, plus a margin for a busy machine.
const DETECTION: Duration = Duration::from_secs(60);

fn basic() -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")))
}

/// `hubwatch silence ARGS` as an engineer runs it (with the pages' credentials unless `anonymous`).
fn silence(base: &str, args: &[&str], anonymous: bool) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hubwatch"));
    command.arg("silence").args(args).args(["--url", base]).env_remove("HUBWATCH_WEB_USER");
    if !anonymous {
        command.env("HUBWATCH_WEB_USER", USER).env("HUBWATCH_WEB_PASSWORD", PASSWORD);
    }
    command.output().unwrap()
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).trim().to_string()
}

async fn status(base: &str) -> Value {
    let (code, body) = get(&format!("{base}/api/v1/status"), Some(&basic())).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits for two more server probes ending in `result`, read from the pages' /metrics (with credentials).
async fn more_rounds(base: &str, result: &str) {
    let metrics = async || get(&format!("{base}/metrics"), Some(&basic())).await.1;
    crate::support::daemon::more_probe_runs(metrics, "server", result, 2.0).await;
}

/// The lab's open incidents as `/api/v1/status` shows them.
async fn open_incidents(base: &str) -> Vec<Value> {
    let status = status(base).await;
    let lab = status["hubs"].as_array().unwrap().iter().find(|h| h["name"] == "lab").cloned().unwrap();
    lab["incidents"].as_array().cloned().unwrap_or_default()
}

#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_hold_pages_survive_a_restart_and_page_once_when_they_end() {
    let receiver = Receiver::default();
    let hook = receiver.clone().start(2).await;
    let users = serde_json::Map::from_iter([(USER.to_string(), bcrypt::hash(PASSWORD, 4).unwrap().into())]);
    let s = Scenario::on_lab("silences", PORT).await.with_rest_api().env("HOOK_AUTH", AUTHORIZATION).config(json!({
        "web": {"basic_auth_users": users},
        "incidents": {"ticket_after": "10s"},
        "pagerduty": {"priority": "P1"},
        "webhook": {"url": hook, "headers": {"Authorization": {"env": "HOOK_AUTH"}}, "retry_delay": "1s"},
    }));
    let (pd, lab, token) = (&s.pd, &s.lab, s.token.clone());
    let daemon = s.start().await;
    let base = daemon.base.clone();

    eprintln!("phase: bad silences are refused with what is wrong");
    let refused = silence(&base, &["add", "--hub", "nowhere", "--for", "1h", "--reason", "x"], false);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("unknown hub \"nowhere\" (hubwatch watches: lab)"),
        "{}",
        text(&refused.stderr)
    );
    let refused = silence(&base, &["add", "--hub", "lab", "--until", "2020-01-01T00:00:00Z", "--reason", "x"], false);
    assert!(
        text(&refused.stderr).contains("the end (2020-01-01T00:00:00Z) is in the past"),
        "{}",
        text(&refused.stderr)
    );
    let refused = silence(&base, &["add", "--hub", "lab", "--kind", "dask", "--for", "1h", "--reason", "x"], false);
    assert!(text(&refused.stderr).contains("unknown kind \"dask\""), "{}", text(&refused.stderr));
    let refused = silence(&base, &["add", "--hub", "lab", "--for", "1h", "--reason", "x"], true);
    assert!(
        text(&refused.stderr).contains("set HUBWATCH_WEB_USER and HUBWATCH_WEB_PASSWORD"),
        "{}",
        text(&refused.stderr)
    );
    let no_reason = reqwest::Client::new()
        .post(format!("{base}/api/v1/silences"))
        .header("Authorization", basic())
        .json(&serde_json::json!({"hub": "lab", "duration": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_reason.status(), 400);
    let body: Value = no_reason.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().starts_with("a reason is required"), "{body}");

    eprintln!("phase: a silence, then an outage: recorded and shown as silenced, nothing sent");
    let made = silence(&base, &["add", "--hub", "lab", "--for", "2h", "--reason", "upgrading the lab"], false);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let id = text(&made.stdout);
    assert!(id.starts_with("s-"), "{id}");
    lab.set_flag("spawn-fail", None, "");
    wait_for("the silenced incident", DETECTION, async || !open_incidents(&base).await.is_empty()).await;
    let incident = open_incidents(&base).await[0].clone();
    assert_eq!(incident["silenced"], true, "{incident}");
    assert_eq!(incident["silence"]["id"], id.as_str(), "{incident}");
    let key = incident["key"].as_str().unwrap().to_string();
    let (_, grid) = get(&format!("{base}/"), Some(&basic())).await;
    assert!(grid.contains("Incident (silenced)") && grid.contains("upgrading the lab"), "{grid}");
    assert!(
        grid.contains("<span class=\"state\">Silenced</span> lab · every kind until"),
        "the silence on the grid: {grid}"
    );
    let (_, page) = get(&format!("{base}/incidents/{key}"), Some(&basic())).await;
    assert!(page.contains("open, silenced (not paged)"), "{page}");
    more_rounds(&base, "failed").await;
    assert!(pd.accepted().is_empty(), "silenced: nothing to PagerDuty: {:?}", pd.accepted());

    eprintln!("phase: hubwatch restarts; the silence holds");
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
    let daemon = s.start().await;
    let listed = silence(&base, &["list", "--output", "json"], false);
    let listed: Vec<Value> = text(&listed.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(listed.iter().any(|s| s["id"] == id.as_str() && s["active"] == true), "{listed:?}");
    let table = text(&silence(&base, &["list"], false).stdout);
    assert!(table.starts_with("ID") && table.contains("upgrading the lab"), "{table}");
    more_rounds(&base, "failed").await;
    assert!(pd.accepted().is_empty(), "still silenced after the restart");
    assert_eq!(open_incidents(&base).await[0]["silenced"], true);

    eprintln!("phase: the silence is expired with the outage still on: one trigger");
    let expired = silence(&base, &["expire", &id], false);
    assert_eq!(expired.status.code(), Some(0), "{}", text(&expired.stderr));
    wait_for("the trigger", Duration::from_secs(30), async || !pd.accepted().is_empty()).await;
    wait_for("the priority", Duration::from_secs(30), async || !pd.priorities_set().is_empty()).await;
    more_rounds(&base, "failed").await;
    assert_eq!(pd.accepted_actions(), ["trigger"], "exactly one trigger when the silence ended");
    assert_eq!(pd.accepted()[0]["dedup_key"], key.as_str());
    assert_eq!(pd.priorities_set()[0].1, "P1");

    eprintln!("phase: healed: one resolve");
    lab.clear_flags();
    wait_for("the resolve", DETECTION, async || pd.accepted().len() >= 2).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"]);

    eprintln!("phase: silenced again; an outage that recovers while silenced sends nothing");
    let made = silence(
        &base,
        &["add", "--hub", "lab", "--kind", "hub_access", "--for", "1h", "--reason", "chaos drill"],
        false,
    );
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    lab.set_flag("spawn-fail", None, "");
    wait_for("the second, silenced incident", DETECTION, async || !open_incidents(&base).await.is_empty()).await;
    lab.clear_flags();
    wait_for("its recovery", DETECTION, async || open_incidents(&base).await.is_empty()).await;
    more_rounds(&base, "ok").await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "nothing for the incident that recovered silenced");

    eprintln!("phase: one user failing is a support ticket, opened and closed on the webhook");
    // An outage's first failing user may have made a ticket of its own before the second failed (if that took
    // longer than the ticket's 10 s `ticket_after`): the ticket looked for here is probe-1's alone.
    let probe_1_ticket = |event: &str| {
        let opened = receiver
            .accepted()
            .into_iter()
            .find(|b| b["event"] == "ticket_opened" && b["users"] == serde_json::json!(["probe-1"]));
        let id = opened.and_then(|b| b["id"].as_str().map(String::from));
        id.filter(|id| receiver.events().iter().any(|(e, i)| e == event && i == id))
    };
    lab.set_flag("spawn-fail", Some("probe-1"), "");
    wait_for("probe-1's ticket", DETECTION + Duration::from_secs(30), async || {
        probe_1_ticket("ticket_opened").is_some()
    })
    .await;
    lab.clear_flags();
    wait_for("probe-1's ticket closed", Duration::from_secs(120), async || probe_1_ticket("ticket_closed").is_some())
        .await;
    let events = receiver.events();
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(count("incident_opened"), 1, "only the paged incident: {events:?}");
    assert_eq!(count("incident_resolved"), 1, "{events:?}");
    assert_eq!(count("ticket_opened"), count("ticket_closed"), "every ticket opened was closed: {events:?}");
    let mut unique = events.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), events.len(), "every webhook event once, though the receiver was down at first");
    let closed = receiver
        .accepted()
        .into_iter()
        .find(|b| b["event"] == "ticket_closed" && b["users"] == serde_json::json!(["probe-1"]));
    assert_eq!(closed.unwrap()["closed_because"], "nobody is affected any more");
    let (_, metrics) = get(&format!("{base}/metrics"), Some(&basic())).await;
    assert!(sample(&metrics, "hubwatch_webhook_deliveries_total", &["outcome=\"sent\""]).unwrap_or(0.0) >= 4.0);

    let everything = format!("{:?}{:?}{}", pd.accepted(), receiver.accepted(), daemon.log());
    assert!(!everything.contains(&token) && !everything.contains(AUTHORIZATION), "no secrets leaked");
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
}
