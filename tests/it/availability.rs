//! `hubwatch availability` over a scripted incident history in a real state database (golden): a month with
//! two outages on one hub (one paged after 2 minutes, one after 5), a gateway outage, a quiet hub, and an
//! outage that ended before the period; the same figures from `/api/v1/availability`.

use crate::support::golden::assert_golden;
use hubwatch::domain::IncidentKind;
use hubwatch::domain::Message;
use hubwatch::store::{IncidentRecord, NewEvent, OutboxState, Store};
use std::process::Command;
use std::time::{Duration, SystemTime};

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// An incident `days_ago` days back: impact from then, opened `detect` s later, paged `page` s after the
/// impact start (None: the page is not on record), recovered `last` s after the impact start.
struct Scripted {
    key: &'static str,
    hub: &'static str,
    kind: IncidentKind,
    days_ago: u64,
    detect: u64,
    page: Option<u64>,
    last: u64,
}

fn record(store: &Store, now: SystemTime, s: &Scripted) {
    let start = now - Duration::from_secs(s.days_ago * DAY);
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    let incident = IncidentRecord::opened(&s.key.into(), &s.hub.into(), s.kind, start, at(s.detect));
    let trigger = crate::support::a_trigger(s.hub, at(s.detect));
    store
        .open_incident(&incident, "impact", &[(hubwatch::store::TimelineKind::Detected, "detected")], &[trigger])
        .unwrap();
    let queued =
        store.due_events(SystemTime::now() + Duration::from_secs(60), hubwatch::domain::Channel::Events, 100).unwrap();
    let event = queued.iter().find(|e| e.key == s.key).unwrap();
    match s.page {
        Some(after) => store.finish_event(event, OutboxState::Sent, at(after), None, None, None).unwrap(),
        None => store.finish_event(event, OutboxState::Rejected, at(s.detect), Some("400"), None, None).unwrap(),
    }
    let resolve = NewEvent::now(Message::Resolve);
    store.recover_incident(&s.key.into(), at(s.last), "recovered", &[resolve]).unwrap();
}

#[test]
fn a_scripted_month_gives_the_reports_figures() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let store = Store::open(&state).unwrap();
    let now = SystemTime::now();
    let history = [
        Scripted {
            key: "temple-1",
            hub: "temple",
            kind: IncidentKind::HubAccess,
            days_ago: 20,
            detect: 60,
            page: Some(2 * MINUTE),
            last: 62 * MINUTE,
        },
        Scripted {
            key: "temple-2",
            hub: "temple",
            kind: IncidentKind::HubAccess,
            days_ago: 3,
            detect: 240,
            page: Some(5 * MINUTE),
            last: 18 * MINUTE,
        },
        Scripted {
            key: "temple-3",
            hub: "temple",
            kind: IncidentKind::DaskGateway,
            days_ago: 9,
            detect: 30,
            page: None,
            last: 45 * MINUTE,
        },
        Scripted {
            key: "temple-0",
            hub: "temple",
            kind: IncidentKind::HubAccess,
            days_ago: 45,
            detect: 60,
            page: Some(90),
            last: 600,
        },
    ];
    for scripted in &history {
        record(&store, now, scripted);
    }
    drop(store);
    let config = dir.path().join("hubwatch.yaml");
    std::fs::write(
        &config,
        format!(
            "state_path: {}\nhubs:\n  - {{name: temple, url: https://temple.example.org, token: {{env: T}}, users: [a, b], \
             dask_gateway: {{url: https://temple.example.org/services/dask-gateway}}}}\n  - {{name: chapel, url: https://chapel.example.org, \
             token: {{env: T}}, users: [a, b]}}\n",
            state.display()
        ),
    )
    .unwrap();
    let run = |output: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_hubwatch"))
            .args(["availability", "--config", config.to_str().unwrap(), "--since", "30d", "--output", output])
            .env("T", "x")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_golden("availability-scripted.txt", &run("table"));
    let rows: Vec<serde_json::Value> = run("json").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let temple = rows.iter().find(|r| r["hub"] == "temple" && r["kind"] == "hub_access").unwrap();
    assert_eq!(temple["incidents"], 2, "the outage 45 days ago is outside the period");
    assert_eq!(temple["impact_minutes"], 80.0);
    assert_eq!(temple["mean_time_to_page_seconds"], 210.0, "(120 + 300) / 2");
    assert_eq!(temple["mean_time_to_resolve_seconds"], 2400.0, "(62 + 18) / 2 minutes");
    let open_minutes = 61.0 + 14.0;
    let expected = 1.0 - open_minutes / (30.0 * 24.0 * 60.0);
    assert!((temple["availability"].as_f64().unwrap() - expected).abs() < 1e-6, "{temple}");
    let gateway = rows.iter().find(|r| r["kind"] == "dask_gateway").unwrap();
    assert_eq!(gateway["mean_time_to_page_seconds"], serde_json::Value::Null, "its page was refused");
    let keys: Vec<&str> = rows[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "hub",
            "kind",
            "since",
            "availability",
            "incidents",
            "impact_minutes",
            "mean_time_to_page_seconds",
            "mean_time_to_resolve_seconds"
        ]
    );
}
