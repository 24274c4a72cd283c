use super::*;
use crate::domain::{ChangeNotice, Channel, EventAction, IncidentKind, Message, Page, Severity, Symptoms};
use crate::sync::lock;
use serde_json::json;

/// The tables as schema version 2 wrote them (before timeline kinds and status notes).
const SCHEMA_V2: &str = "
CREATE TABLE incidents (key TEXT PRIMARY KEY, hub TEXT NOT NULL, kind TEXT NOT NULL, open INTEGER NOT NULL,
    impact_start INTEGER NOT NULL, opened_at INTEGER NOT NULL, recovered_at INTEGER, symptoms TEXT NOT NULL,
    affected_ever TEXT NOT NULL DEFAULT '{}', last_trigger_at INTEGER, pending_update INTEGER NOT NULL DEFAULT 0,
    diagnostics TEXT, diagnostics_at INTEGER);
CREATE TABLE timeline (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL REFERENCES incidents(key),
    at INTEGER NOT NULL, entry TEXT NOT NULL);
INSERT INTO incidents (key, hub, kind, open, impact_start, opened_at, symptoms, last_trigger_at)
    VALUES ('temple-hub_access-1', 'temple', 'hub_access', 1, 1000, 2000, '{\"affected\":{}}', 2000);
INSERT INTO timeline (key, at, entry) VALUES ('temple-hub_access-1', 2000, 'detected: temple: 2 users');
PRAGMA user_version = 2;";

fn t(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

fn record(key: &str, open: bool, at: SystemTime) -> IncidentRecord {
    IncidentRecord { open, ..IncidentRecord::opened(&key.into(), &"temple".into(), IncidentKind::HubAccess, at, at) }
}

fn trigger() -> NewEvent {
    NewEvent::now(Message::Trigger(Box::new(Page {
        hub: "temple".into(),
        hub_url: "https://temple.example.org/".parse().unwrap(),
        kind: IncidentKind::HubAccess,
        summary: "temple: 2 users cannot start their servers".into(),
        severity: Severity::Critical,
        symptoms: Symptoms::default(),
        impact_start: t(0),
        threshold: 2,
        window: Duration::from_secs(900),
        incident_url: "https://hubwatch.example.org/incidents/temple-hub_access-1".parse().unwrap(),
        diagnostics: "being collected".into(),
        routing: None,
        parts: Vec::new(),
        at: t(0),
    })))
}

#[test]
fn a_version_2_database_is_migrated_in_place_and_keeps_its_incident() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    Connection::open(&path).unwrap().execute_batch(SCHEMA_V2).unwrap();
    let store = Store::open(&path).unwrap();
    let incident = store.incident(&"temple-hub_access-1".into()).unwrap().expect("kept");
    assert!(incident.open && incident.failures_ever.affected.is_empty());
    let timeline = store.timeline(&"temple-hub_access-1".into()).unwrap();
    assert_eq!((timeline[0].kind, timeline[0].text.as_str()), (TimelineKind::Changed, "detected: temple: 2 users"));
    store
        .queue_status_note(
            &"temple-hub_access-1".into(),
            from_millis(3000),
            NewEvent::now(Message::Note { content: "still failing".into() }),
        )
        .unwrap();
    assert_eq!(store.last_status_update(&"temple-hub_access-1".into()).unwrap(), Some(from_millis(3000)));
    let version: i64 = store.conn().pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_database_from_a_newer_hubwatch_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    let error = Store::open(&path).err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("newer hubwatch") && message.contains(&path.display().to_string()), "{message}");
    let version: i64 = Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1, "not migrated down");
}

#[test]
fn a_corrupt_database_is_moved_aside_and_a_new_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"this is not a database, it is what a torn disk left behind").unwrap();
    let store = Store::open(&path).unwrap();
    assert!(store.all_incidents().unwrap().is_empty());
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("state.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "kept for the operator: {aside:?}");
    let kept = std::fs::read(dir.path().join(&aside[0])).unwrap();
    assert!(kept.starts_with(b"this is not a database"));
}

#[test]
fn a_full_database_fails_writes_loudly_and_recovers_when_space_returns() {
    let (_dir, store) = fresh();
    store
        .open_incident(&record("a", true, t(0)), "impact", &[(TimelineKind::Detected, "detected")], &[trigger()])
        .unwrap();
    assert!(store.health().failing().is_none());
    // As a full disk: no page may be added (SQLITE_FULL).
    let pages: i64 = store.conn().query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    store.limit_pages(pages).unwrap();
    let big = "x".repeat(64 * 1024);
    let error = store.add_timeline(&"a".into(), t(1), TimelineKind::Changed, &big).unwrap_err();
    assert!(error.is_full(), "{error}");
    let (since, why) = store.health().failing().expect("failing");
    assert!(why.contains("full"), "{why}");
    assert_eq!(store.health().failures(), 1);
    store.add_timeline(&"a".into(), t(2), TimelineKind::Changed, &big).unwrap_err();
    assert_eq!(store.health().failing().unwrap().0, since, "failing since the first failure");
    assert_eq!(store.timeline(&"a".into()).unwrap().len(), 2, "nothing half-written; reads still work");
    store.limit_pages(1 << 20).unwrap();
    store.add_timeline(&"a".into(), t(3), TimelineKind::Changed, &big).unwrap();
    assert!(store.health().failing().is_none(), "writable again");
    assert_eq!(store.health().failures(), 2);
}

#[test]
fn every_write_advances_the_sequence_and_the_term_is_kept() {
    let (_dir, store) = fresh();
    assert_eq!(store.version().unwrap(), Version::default());
    store.set_term(3).unwrap();
    store
        .open_incident(&record("a", true, t(0)), "impact", &[(TimelineKind::Detected, "detected")], &[trigger()])
        .unwrap();
    assert_eq!(store.version().unwrap(), Version { term: 3, sequence: 2 });
}

#[test]
fn retention_deletes_old_closed_incidents_in_batches_and_keeps_open_ones() {
    let (_dir, store) = fresh();
    for i in 0..5 {
        let key = format!("old-{i}");
        store
            .open_incident(&record(&key, true, t(i)), "impact", &[(TimelineKind::Detected, "detected")], &[trigger()])
            .unwrap();
        let resolve = NewEvent::now(Message::Resolve);
        store.recover_incident(&key.as_str().into(), t(100 + i), "recovered", &[resolve]).unwrap();
    }
    // The last one's resolve never reached PagerDuty: it is not expired, however old.
    store.conn().execute("UPDATE outbox SET state = 'sent' WHERE key != 'old-4'", []).unwrap();
    store
        .open_incident(&record("open", true, t(0)), "impact", &[(TimelineKind::Detected, "detected")], &[trigger()])
        .unwrap();
    store
        .queue_change(
            "change-temple-hub-7",
            t(1),
            NewEvent::now(Message::Change(ChangeNotice {
                hub: "temple".into(),
                hub_url: "https://temple.example.org/".parse().unwrap(),
                summary: "hub Deployment hub changed: image".into(),
                namespace: "temple".into(),
                deployment: "hub".into(),
                generation: 7,
                changes: vec!["image".into()],
                at: t(1),
            })),
        )
        .unwrap();
    let change = store
        .due_events(t(2), Channel::Events, 10)
        .unwrap()
        .into_iter()
        .find(|e| e.action == EventAction::Change)
        .unwrap();
    store.finish_event(&change, OutboxState::Sent, t(3), None, None, None).unwrap();
    // Two incidents (each: its row, three timeline entries, its trigger and resolve) and the change event.
    assert_eq!(store.prune(t(102), 2).unwrap(), 2 * 6 + 1);
    assert_eq!(store.all_incidents().unwrap().len(), 4);
    while store.prune(t(1000), 2).unwrap() > 0 {}
    let mut left: Vec<String> = store.all_incidents().unwrap().into_iter().map(|i| i.key.to_string()).collect();
    left.sort();
    assert_eq!(left, ["old-4", "open"], "the open incident stays, and so does one whose resolve is unsent");
    let outbox: i64 = store.conn().query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(outbox, 3, "the open incident's trigger and old-4's unsent events; the delivered change event went");
}

#[test]
fn a_trigger_behind_its_resolve_is_skipped_and_retries_a_clock_step_pushed_out_come_forward() {
    let (_dir, store) = fresh();
    store
        .open_incident(&record("a", true, t(0)), "impact", &[(TimelineKind::Detected, "detected")], &[trigger()])
        .unwrap();
    let dask = IncidentRecord { kind: IncidentKind::DaskGateway, ..record("b", true, t(0)) };
    store.open_incident(&dask, "impact", &[], &[trigger()]).unwrap();
    store.recover_incident(&"a".into(), t(10), "recovered", &[NewEvent::now(Message::Resolve)]).unwrap();
    assert_eq!(store.skip_triggers_behind_resolves(t(11)).unwrap(), ["a"]);
    let due = store.due_events(t(12), Channel::Events, 10).unwrap();
    let due: Vec<(&str, EventAction)> = due.iter().map(|e| (e.key.as_str(), e.action)).collect();
    assert_eq!(due, [("b", EventAction::Trigger), ("a", EventAction::Resolve)], "b's trigger has no resolve behind it");
    let trigger_b = store.due_events(t(12), Channel::Events, 10).unwrap().into_iter().find(|e| e.key == "b").unwrap();
    store.retry_event(&trigger_b, t(12) + Duration::from_secs(7200), "HTTP 503", None).unwrap();
    assert_eq!(store.clamp_retries(t(13), Duration::from_secs(3600)).unwrap(), 1);
    assert!(store.due_events(t(12), Channel::Events, 10).unwrap().iter().all(|e| e.key != "b"));
    assert!(store.due_events(t(13), Channel::Events, 10).unwrap().iter().any(|e| e.key == "b"), "due again");
    assert_eq!(store.unused_key("a").unwrap(), "a-2", "a key is never reused");
    assert_eq!(store.unused_key("c").unwrap(), "c");
}

#[test]
fn a_snapshot_from_an_older_leader_restores_and_one_from_a_newer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    Connection::open(&old).unwrap().execute_batch(SCHEMA_V2).unwrap();
    let mut snapshot = Store::open(&old).unwrap().snapshot().unwrap();
    // As a version 2 leader mirrored it: without the columns version 3 added, and without a version.
    snapshot["schema_version"] = 2.into();
    for key in ["term", "sequence"] {
        snapshot.as_object_mut().unwrap().remove(key);
    }
    for row in snapshot["tables"]["incidents"].as_array_mut().unwrap() {
        let row = row.as_object_mut().unwrap();
        for column in ["last_status_update_at", "pagerduty_incident", "failures_ever"] {
            row.remove(column);
        }
    }
    for row in snapshot["tables"]["timeline"].as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("kind");
    }
    let store = Store::open(&dir.path().join("new.db")).unwrap();
    let report = store.restore(&snapshot).unwrap();
    assert_eq!(report, RestoreReport { rows: 2, rejected: vec![] });
    assert!(store.incident(&"temple-hub_access-1".into()).unwrap().is_some_and(|i| i.open));
    assert_eq!(store.timeline(&"temple-hub_access-1".into()).unwrap()[0].kind, TimelineKind::Changed);
    snapshot["schema_version"] = (SCHEMA_VERSION + 1).into();
    assert!(matches!(store.restore(&snapshot), Err(StoreError::Snapshot(_))));
}

#[test]
fn a_restore_takes_only_what_it_knows_and_reports_the_rest() {
    let (_dir, leader) = fresh();
    leader.set_term(4).unwrap();
    leader
        .open_incident(&record("good", true, t(0)), "impact", &[(TimelineKind::Detected, "detected")], &[trigger()])
        .unwrap();
    let mut snapshot = leader.snapshot().unwrap();
    let tables = snapshot["tables"].as_object_mut().unwrap();
    tables.insert("secrets".into(), json!([{"token": "x"}]));
    let incidents = tables["incidents"].as_array_mut().unwrap();
    let mut strange = incidents[0].clone();
    strange["key"] = "strange".into();
    strange["kind"] = "everything".into();
    incidents.push(strange);
    let mut extra = incidents[0].clone();
    extra["key"] = "extra".into();
    extra["open"] = 0.into();
    extra["favourite_colour"] = "blue".into();
    incidents.push(extra);
    let outbox = tables["outbox"].as_array_mut().unwrap();
    let mut unknown = outbox[0].clone();
    unknown["id"] = 99.into();
    unknown["action"] = "acknowledge".into();
    outbox.push(unknown);
    tables["timeline"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 50, "key": "ghost", "at": 1, "entry": "x", "kind": "changed"}));

    let (_dir2, standby) = fresh();
    let report = standby.restore(&snapshot).unwrap();
    assert_eq!(report.rows, 4, "the good incident, its two timeline entries and its trigger");
    let rejected = report.rejected.join("\n");
    for expected in [
        "unknown table \"secrets\"",
        "unknown incident kind",
        "unknown column \"favourite_colour\"",
        "unknown event action \"acknowledge\"",
        "not in the snapshot (\"ghost\")",
    ] {
        assert!(rejected.contains(expected), "{expected}: {rejected}");
    }
    assert_eq!(standby.version().unwrap(), leader.version().unwrap(), "the leader's version came along");
    assert_eq!(standby.due_events(t(5), Channel::Events, 10).unwrap().len(), 1, "no unknown action became a trigger");
}

#[test]
fn an_unknown_action_in_the_outbox_is_rejected_never_sent_as_a_trigger() {
    let (_dir, store) = fresh();
    store
        .open_incident(&record("a", true, t(0)), "impact", &[(TimelineKind::Detected, "detected")], &[trigger()])
        .unwrap();
    store.conn().execute("UPDATE outbox SET action = 'acknowledge'", []).unwrap();
    assert!(store.due_events(t(1), Channel::Events, 10).unwrap().is_empty());
    let (state, error): (String, String) =
        store.conn().query_row("SELECT state, last_error FROM outbox", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((state.as_str(), error.as_str()), ("rejected", "unknown event action \"acknowledge\""));
}

#[test]
fn a_word_no_version_wrote_is_left_out_and_reported_never_read_as_a_default() {
    let (_dir, store) = fresh();
    let open = |key| {
        store.open_incident(&record(key, true, t(0)), "impact", &[(TimelineKind::Detected, "detected")], &[]).unwrap()
    };
    open("b");
    store.conn().execute("UPDATE incidents SET kind = 'quota' WHERE key = 'b'", []).unwrap();
    open("a");
    store.conn().execute("UPDATE timeline SET kind = 'escalated' WHERE key = 'a' AND kind = 'detected'", []).unwrap();
    let open: Vec<String> = store.open_incidents().unwrap().into_iter().map(|i| i.key.to_string()).collect();
    assert_eq!(open, ["a"], "the unreadable incident is left out, not taken for another kind");
    let kinds: Vec<TimelineKind> = store.timeline(&"a".into()).unwrap().into_iter().map(|e| e.kind).collect();
    assert!(!kinds.contains(&TimelineKind::Changed) && !kinds.contains(&TimelineKind::Detected), "{kinds:?}");
    let reported = lock(&store.unreadable.reported).clone();
    assert!(reported.contains(&("incidents", "b".to_string())) && reported.contains(&("timeline", "a".to_string())));
    store.open_incidents().unwrap();
    assert_eq!(lock(&store.unreadable.reported).len(), 2, "each reported once");
}

#[test]
fn discovered_hubs_are_remembered_mirrored_and_forgotten_without_their_tokens() {
    let (_dir, leader) = fresh();
    let temple = DiscoveredHub {
        name: "temple".into(),
        namespace: "temple".into(),
        url: "https://temple.example.org/".into(),
        users: vec!["probe-1".into(), "probe-2".into()],
        last_seen: t(10),
        gone: None,
    };
    let chapel = DiscoveredHub {
        name: "chapel".into(),
        url: "https://chapel.example.org/".into(),
        namespace: "chapel".into(),
        gone: Some((t(20), "its namespace chapel is gone".into())),
        ..temple.clone()
    };
    leader.remember_discovered_hubs(&[temple.clone(), chapel.clone()]).unwrap();
    assert_eq!(leader.discovered_hubs().unwrap(), [chapel.clone(), temple.clone()], "sorted by name");
    let schema: String = leader
        .conn()
        .query_row("SELECT sql FROM sqlite_master WHERE name = 'discovered_hubs'", [], |r| r.get(0))
        .unwrap();
    assert!(!schema.contains("token"), "{schema}");

    let (_dir2, standby) = fresh();
    let report = standby.restore(&leader.snapshot().unwrap()).unwrap();
    assert_eq!((report.rows, report.rejected.len()), (2, 0), "{:?}", report.rejected);
    assert_eq!(standby.discovered_hubs().unwrap(), [chapel.clone(), temple.clone()], "failover keeps them");

    assert!(leader.forget_discovered_hub("chapel").unwrap());
    assert!(!leader.forget_discovered_hub("chapel").unwrap(), "already forgotten");
    assert_eq!(leader.discovered_hubs().unwrap(), [temple]);
    leader.remember_discovered_hubs(&[]).unwrap();
    assert!(leader.discovered_hubs().unwrap().is_empty());
}

#[test]
fn silences_and_tickets_are_state_a_snapshot_carries_and_expiring_ends_them_now() {
    use crate::domain::{Silence, SilenceSource};
    let (_dir, leader) = fresh();
    let silence = Silence {
        id: "s-1".into(),
        hub: "temple".into(),
        kind: Some(IncidentKind::HubAccess),
        starts_at: t(0),
        ends_at: t(7200),
        reason: "upgrading".into(),
        created_by: "yuvi".into(),
        source: SilenceSource::Api,
        every: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
    };
    leader.put_silence(&silence).unwrap();
    let ticket = Ticket {
        id: "ticket-temple-hub_access-5".into(),
        hub: "temple".into(),
        kind: crate::domain::TicketKind::HubAccess,
        opened_at: t(5),
        users: vec!["ana".into()],
        reason: None,
    };
    leader.open_ticket(&ticket, None).unwrap();
    // A kind no incident has, with what failed: a failover keeps it too.
    let first_login = Ticket {
        id: "ticket-temple-first_login-5".into(),
        kind: crate::domain::TicketKind::FirstLogin,
        users: vec![],
        reason: Some("progress: Spawn failed: [Errno 13] Permission denied".into()),
        ..ticket.clone()
    };
    leader.open_ticket(&first_login, None).unwrap();
    let snapshot = leader.snapshot().unwrap();
    let (_dir2, standby) = fresh();
    let report = standby.restore(&snapshot).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(standby.silences(t(10)).unwrap(), [silence], "the silence survives a failover");
    assert_eq!(standby.open_tickets().unwrap(), [first_login, ticket]);
    let expired = standby.expire_silence("s-1", t(60)).unwrap().unwrap();
    assert_eq!(expired.ends_at, t(60));
    assert!(standby.silences(t(61)).unwrap().is_empty());
    assert_eq!(standby.take_ended_silences(t(61)).unwrap().len(), 1, "its end is told once");
    assert!(standby.take_ended_silences(t(62)).unwrap().is_empty());
    assert_eq!(standby.expire_silence("s-unknown", t(60)).unwrap(), None);
}

#[test]
fn readers_open_the_state_read_only_and_never_migrate_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    Connection::open(&old).unwrap().execute_batch(SCHEMA_V2).unwrap();
    let before = std::fs::read(&old).unwrap();
    let refused = Store::open_read_only(&old).err().expect("an older database is refused");
    assert!(refused.to_string().contains("`hubwatch run` of this version migrates it"), "{refused}");
    assert_eq!(std::fs::read(&old).unwrap(), before, "not migrated, not touched");

    let (_dir, store) = fresh();
    store.open_incident(&record("a", true, t(0)), "impact", &[], &[trigger()]).unwrap();
    let reader = Store::open_read_only(store.path()).unwrap();
    assert_eq!(reader.open_incidents().unwrap().len(), 1, "reads what the daemon wrote, beside it");
    assert!(reader.add_timeline(&"a".into(), t(1), TimelineKind::Changed, "x").is_err(), "and writes nothing");
    assert!(Store::open_read_only(&dir.path().join("missing.db")).is_err(), "a missing file is an error, not created");
    assert!(!dir.path().join("missing.db").exists());
}
