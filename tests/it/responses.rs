//! Responses read back from PagerDuty's REST API (the stand-in acknowledges, reassigns and resolves as a
//! responder would): the timeline, the report and the status pages say who has it, and an incident resolved
//! there while the outage goes on is not paged again until it recovers and fails anew. One reading pass at a
//! time (`read_all`), so every assertion follows the pass that had its chance.

use crate::support::decisions::{Decisions, setup};
use crate::support::pagerduty::{FIRST_RESPONDER, Fault};
use hubwatch::clock::Clock;
use hubwatch::domain::{Capability, IncidentKey, IncidentKind, Stage, Transition, UserFailure};
use hubwatch::http::HttpClient;
use hubwatch::incident::report::{ReportSettings, draft};
use hubwatch::incident::responses::{CALL_TIMEOUT, ResponseReader};
use std::time::Duration;

fn reader(d: &Decisions) -> ResponseReader {
    let settings = d.config.pagerduty.as_ref().and_then(|p| p.status_updates.clone()).unwrap();
    let http = HttpClient::new().unwrap();
    ResponseReader { store: d.store.clone(), http, settings, clock: Clock::start(), call_timeout: CALL_TIMEOUT }
}

fn timeline(d: &Decisions, key: &IncidentKey) -> Vec<String> {
    d.store.timeline(key).unwrap().into_iter().map(|e| e.text).collect()
}

#[tokio::test]
async fn acknowledgements_and_hand_offs_are_read_back_into_the_timeline_the_report_and_the_pages() {
    let d = setup("{min_hubs: 0}", true).await;
    d.fails("a", 0);
    let key = IncidentKey::from(d.delivered().await[0].1.clone());
    let reader = reader(&d);
    reader.read_all().await.unwrap();
    assert!(
        timeline(&d, &key).contains(&format!("assigned to {FIRST_RESPONDER} in PagerDuty")),
        "{:?}",
        timeline(&d, &key)
    );
    d.pd.acknowledge(&key, FIRST_RESPONDER);
    reader.read_all().await.unwrap();
    d.pd.reassign(&key, "Ben Commander");
    reader.read_all().await.unwrap();
    let entries = timeline(&d, &key);
    for expected in [
        format!("acknowledged in PagerDuty by {FIRST_RESPONDER}"),
        "reassigned to Ben Commander in PagerDuty".to_string(),
        "triggered again in PagerDuty: the acknowledgement timed out or was undone".to_string(),
    ] {
        assert!(entries.contains(&expected), "{expected:?} in {entries:?}");
    }
    reader.read_all().await.unwrap();
    assert_eq!(timeline(&d, &key).len(), entries.len(), "read again, nothing changed: nothing recorded");

    let settings = ReportSettings { public_url: "https://hubwatch.example.org".parse().unwrap(), threshold: 2 };
    let report = draft(&d.store, &key, |_| None, &settings).unwrap().unwrap();
    assert!(report.contains("| Time to acknowledge | "), "{report}");
    assert!(
        report.contains(&format!("Acknowledged in PagerDuty: acknowledged in PagerDuty by {FIRST_RESPONDER}")),
        "{report}"
    );
    let open = d.store.open_incidents().unwrap();
    let grid = hubwatch::web::pages::grid(&Default::default(), &open, &[], &Default::default(), d.at(60));
    assert!(grid.contains("assigned to Ben Commander, not acknowledged"), "the status page says who has it: {grid}");
}

#[tokio::test]
async fn resolved_in_pagerduty_while_failing_it_is_not_paged_again_until_it_recovers_and_fails_anew() {
    let d = setup("{min_hubs: 0}", true).await;
    d.fails("a", 0);
    let first = IncidentKey::from(d.delivered().await[0].1.clone());
    let reader = reader(&d);
    d.pd.resolve_by(&first, FIRST_RESPONDER);
    reader.read_all().await.unwrap();
    let incident = d.store.incident(&first).unwrap().unwrap();
    assert!(incident.open && incident.hold.as_ref().is_some_and(|h| h.resolved_in_pagerduty), "{incident:?}");
    assert!(
        timeline(&d, &first)
            .iter()
            .any(|e| e.starts_with(&format!("resolved in PagerDuty by {FIRST_RESPONDER} while")))
    );

    // The outage grows past the update interval: a follow-up would reopen a PagerDuty incident; none is sent.
    let at = d.at(700);
    let failure = UserFailure { stage: Stage::Execute, reason: "the kernel died".into(), since: at, last: at };
    let mut symptoms = d.store.incident(&first).unwrap().unwrap().symptoms;
    symptoms.affected.insert(Capability::Kernel, [("p1".to_string(), failure)].into());
    let grown = Transition::Updated {
        hub: "a".into(),
        kind: IncidentKind::HubAccess,
        symptoms,
        material: true,
        relapse: None,
        at,
    };
    d.manager.handle(&grown).unwrap();
    d.manager.flush_pending_updates(d.at(1300)).unwrap();
    d.manager.queue_status_updates(d.at(40_000)).unwrap();
    d.tick(1400);
    d.recovers("a", 1500);
    assert_eq!(d.delivered().await.len(), 1, "nothing more for it: no follow-up, no note, no resolve");

    d.fails("a", 1600);
    let sent = d.delivered().await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_ne!(sent[1].1, first, "failing anew after recovering is a new incident, paged");
}

#[tokio::test]
async fn a_rate_limited_pass_stops_at_once_and_asks_to_wait_as_long_as_pagerduty_says() {
    let d = setup("{min_hubs: 0}", true).await;
    d.fails("a", 0);
    d.fails("b", 0);
    d.delivered().await;
    {
        let mut inner = d.pd.inner.lock().unwrap();
        inner.rest_outage = Some(Fault::Status(429));
        inner.retry_after = Some(120);
    }
    let before = d.pd.rest_requests().len();
    assert_eq!(reader(&d).read_all().await, Err(Some(Duration::from_secs(120))));
    assert_eq!(d.pd.rest_requests().len(), before + 1, "the pass stopped at the first 429");
}

#[tokio::test]
async fn a_hanging_rest_api_ends_the_pass_at_its_first_call_delays_no_page_and_holds_up_no_stop() {
    let d = setup("{min_hubs: 0}", true).await;
    d.fails("a", 0);
    d.fails("b", 0);
    d.delivered().await;
    d.pd.inner.lock().unwrap().rest_outage = Some(Fault::Hang);
    let received = || d.pd.inner.lock().unwrap().rest_received;
    let before = received();
    let quick = ResponseReader { call_timeout: Duration::from_millis(300), ..reader(&d) };
    assert_eq!(quick.read_all().await, Err(None), "a call past its deadline ends the pass");
    assert_eq!(received(), before + 1, "one hanging call, not one per incident");

    let stop = tokio_util::sync::CancellationToken::new();
    let patient = ResponseReader { call_timeout: Duration::from_secs(3600), ..reader(&d) };
    let task = tokio::spawn(patient.run(stop.clone()));
    crate::support::daemon::wait_for("the reader's call", Duration::from_secs(20), async || received() > before + 1)
        .await;
    d.fails("c", 10);
    assert_eq!(d.delivered().await.len(), 3, "a new page goes out while the reader waits on the REST API");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task).await.expect("a stop ends a hanging pass").unwrap();
}
