//! One page per cause: hubs of one cluster failing together page one cluster incident (`incidents.fold`),
//! decided by the incident manager as the daemon wires it and delivered to the PagerDuty stand-in, with the
//! decisions' time an argument (no waiting).

use crate::support::decisions::setup;
use hubwatch::domain::{HubName, IncidentKey};
use std::time::Duration;

#[tokio::test]
async fn three_hubs_of_one_cluster_page_once_a_fourth_joins_and_it_resolves_with_the_last() {
    let f = setup("{min_hubs: 3, within: 2m}", false).await;
    f.fails("a", 0);
    f.fails("e", 5);
    f.fails("b", 10);
    assert_eq!(f.delivered().await, [], "clustered hubs' pages wait for their cluster's others");
    f.fails("c", 20);
    let sent = f.delivered().await;
    assert_eq!(sent.len(), 1, "one page for three hubs: {sent:?}");
    let cluster_key = IncidentKey::from(sent[0].1.clone());
    assert!(cluster_key.starts_with("cluster.east-hub_access-"), "{cluster_key}");
    let trigger = &f.pd.accepted()[0];
    assert_eq!(trigger["payload"]["summary"], "cluster east: 3 hubs, 6 users cannot start their servers");
    assert_eq!(trigger["links"][0]["text"], "hubwatch: every hub's status");
    assert_eq!(trigger["links"][0]["href"], "https://hubwatch.example.org/");
    let hubs: Vec<&str> = trigger["payload"]["custom_details"]["hubs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hub"].as_str().unwrap())
        .collect();
    assert_eq!(hubs, ["a", "b", "c"]);
    assert_eq!(trigger["payload"]["custom_details"]["affected_users"]["server"][0], "a/p1");
    let diagnostics = trigger["payload"]["custom_details"]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("=== hub c (incident c-hub_access-"), "each hub's evidence: {diagnostics}");
    let part = f.store.incident(&f.key_of("a")).unwrap().unwrap();
    assert_eq!(part.part_of.as_deref(), Some(cluster_key.as_str()));
    assert!(part.hold.is_none());
    let timeline: Vec<String> = f.store.timeline(&part.key).unwrap().into_iter().map(|e| e.text).collect();
    assert!(
        timeline.iter().any(|e| e.starts_with(&format!("folded into cluster incident {cluster_key}"))),
        "{timeline:?}"
    );

    f.fails("d", 60);
    let sent = f.delivered().await;
    assert_eq!(sent[1], ("trigger".into(), cluster_key.to_string()), "a hub that joins later is a follow-up: {sent:?}");
    assert_eq!(f.pd.accepted()[1]["payload"]["summary"], "cluster east: 4 hubs, 8 users cannot start their servers");
    f.tick(125);
    let sent = f.delivered().await;
    assert_eq!(sent[2].1, f.key_of("e"), "another cluster's hub pages on its own once its wait ends: {sent:?}");
    assert_eq!(sent.len(), 3, "the folded hubs' waits ended in the fold: nothing of theirs pages: {sent:?}");

    for (hub, at) in [("a", 300), ("b", 310), ("c", 320)] {
        f.recovers(hub, at);
    }
    assert_eq!(f.delivered().await.len(), 3, "no resolve while a hub of it still fails");
    let cluster = f.store.incident(&cluster_key).unwrap().unwrap();
    assert!(cluster.open && cluster.symptoms.users().into_iter().all(|u| u.starts_with("d/")), "{cluster:?}");
    f.recovers("d", 330);
    let sent = f.delivered().await;
    assert_eq!(sent[3], ("resolve".into(), cluster_key.to_string()), "resolved once, with the last: {sent:?}");
    assert_eq!(sent.len(), 4);

    let report = |key: &IncidentKey| {
        let settings = hubwatch::incident::report::ReportSettings {
            public_url: "https://hubwatch.example.org/".parse().unwrap(),
            threshold: 2,
        };
        hubwatch::incident::report::draft(&f.store, key, |_| None, &settings).unwrap().unwrap()
    };
    let cluster_report = report(&cluster_key);
    assert!(cluster_report.starts_with("# Incident report: cluster east: 4 hubs, 8 users cannot"), "{cluster_report}");
    assert!(cluster_report.contains("8 users of 4 hubs of cluster east (a, b, c, d) could not"), "{cluster_report}");
    let a_key = f.key_of("a");
    assert!(
        cluster_report
            .contains(&format!("- **a**: incident `{a_key}` (<https://hubwatch.example.org/incidents/{a_key}>")),
        "each hub's incident is listed: {cluster_report}"
    );
    assert!(cluster_report.contains("hubwatch_probe_runs_total{hub=~\"a|b|c|d\"}"), "{cluster_report}");
    assert!(report(&a_key).contains(&format!("| Paged as part of | `{cluster_key}`")));

    let since = f.t0;
    let hubs: Vec<(HubName, bool)> = ["a", "b", "c", "d", "e"].iter().map(|h| (HubName::new(h), false)).collect();
    let rows = hubwatch::incident::availability::from_store(&f.store, &hubs, since, f.at(3000)).unwrap();
    let counted: Vec<(&str, usize)> = rows.iter().map(|r| (r.hub.as_str(), r.incidents)).collect();
    assert_eq!(counted, [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)], "a folded incident counts once per hub");
    assert!(rows[0].mean_time_to_page.is_some(), "a folded hub was paged by its cluster's incident");
}

#[tokio::test]
async fn two_hubs_of_a_cluster_page_as_today_once_their_wait_ends_and_a_later_third_does_not_fold() {
    let f = setup("{min_hubs: 3, within: 2m}", false).await;
    f.fails("a", 0);
    f.fails("b", 10);
    f.tick(119);
    assert_eq!(f.delivered().await, [], "within the wait");
    f.tick(120);
    f.tick(130);
    let sent = f.delivered().await;
    assert_eq!(
        sent,
        [("trigger".into(), f.key_of("a").to_string()), ("trigger".into(), f.key_of("b").to_string())],
        "two incidents as today"
    );
    f.fails("c", 150);
    f.fails("d", 160);
    f.tick(270);
    let sent = f.delivered().await;
    assert_eq!(sent.len(), 3, "a and b paged before: only c and d wait, two are no fold: {sent:?}");
    f.tick(280);
    let sent = f.delivered().await;
    assert_eq!(
        sent[2..],
        [("trigger".into(), f.key_of("c").to_string()), ("trigger".into(), f.key_of("d").to_string())]
    );
    f.recovers("a", 400);
    assert_eq!(f.delivered().await[4], ("resolve".into(), f.key_of("a").to_string()));
}

#[tokio::test]
async fn with_folding_off_a_clustered_hub_pages_at_once_and_a_hub_recovered_while_waiting_sends_nothing() {
    let off = setup("{min_hubs: 0}", false).await;
    off.fails("a", 0);
    assert_eq!(off.delivered().await, [("trigger".into(), off.key_of("a").to_string())]);

    let on = setup("{min_hubs: 3, within: 2m}", false).await;
    on.fails("a", 0);
    on.recovers("a", 60);
    on.tick(200);
    assert_eq!(on.delivered().await, [], "it recovered within its wait: nothing to page");
}

#[tokio::test]
async fn a_cluster_incident_open_in_pagerduty_when_the_state_is_lost_is_adopted_joined_and_resolved_once() {
    use hubwatch::incident::reconcile::Reconciled;
    let before = setup("{min_hubs: 3, within: 2m}", true).await;
    for (hub, at) in [("a", 0), ("b", 5), ("c", 10)] {
        before.fails(hub, at);
    }
    let sent = before.delivered().await;
    let key = IncidentKey::from(sent[0].1.clone());
    assert!(key.starts_with("cluster.east-"), "{sent:?}");

    let after = before.state_lost();
    assert_eq!(after.reconcile(3600).await, [Reconciled::Adopted { key: key.clone() }]);
    let adopted = after.store.incident(&key).unwrap().unwrap();
    assert_eq!((adopted.hub.as_str(), adopted.cluster.as_deref()), ("cluster east", Some("east")));
    after.fails("a", 3660);
    after.fails("b", 3670);
    after.tick(3900);
    let sent = after.delivered().await;
    assert!(sent.iter().all(|(_, k)| k == &key), "the hubs still failing join the adopted incident: {sent:?}");
    assert_eq!(after.pd.accepted()[1]["payload"]["summary"], "cluster east: 1 hub, 2 users cannot start their servers");
    assert_eq!(
        after.pd.accepted().last().unwrap()["payload"]["summary"],
        "cluster east: 2 hubs, 4 users cannot start their servers"
    );
    after.recovers("a", 4000);
    assert_eq!(after.delivered().await.last().unwrap().0, "trigger", "b still fails");
    after.recovers("b", 4010);
    let sent = after.delivered().await;
    assert_eq!(sent.last().unwrap(), &("resolve".into(), key.to_string()), "{sent:?}");
    assert_eq!(sent.iter().filter(|(action, _)| action == "resolve").count(), 1);
    assert_eq!(after.pd.open_alerts(crate::support::pagerduty::ROUTING_KEY), Vec::<String>::new());
    assert_eq!(after.reconcile(4100).await, [], "nothing left to reconcile");
}

#[tokio::test]
async fn an_adopted_cluster_incident_that_no_hub_joins_resolves_after_the_window() {
    let before = setup("{min_hubs: 3, within: 2m}", true).await;
    for (hub, at) in [("a", 0), ("b", 5), ("c", 10)] {
        before.fails(hub, at);
    }
    let key = IncidentKey::from(before.delivered().await[0].1.clone());
    let after = before.state_lost();
    after.reconcile(3600).await;
    after.tick(3600 + 899);
    assert_eq!(after.delivered().await.len(), 1, "within incidents.window its hubs may still join it");
    after.tick(3600 + 901);
    assert_eq!(after.delivered().await[1], ("resolve".into(), key.to_string()));
    let timeline: Vec<String> = after.store.timeline(&key).unwrap().into_iter().map(|e| e.text).collect();
    assert!(timeline.iter().any(|e| e.contains("no hub of it failed within 15m")), "{timeline:?}");
}

/// The lab as three hubs of cluster east (three entries, two probe users each), broken before hubwatch
/// starts: one page naming the three, and one resolve once every hub is healthy again.
#[ignore = "needs the lab (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hub_entries_on_the_lab_down_at_once_page_once_and_resolve_once() {
    use crate::support::daemon::{get, more_probe_runs, wait_for};
    use crate::support::scenario::Scenario;
    use serde_json::json;
    let users = "probe-1 probe-2 probe-3 probe-4 probe-5 probe-6";
    let world = Scenario::on_lab_with("fold", 18860, &[("LAB_USERS", users)]).await;
    let url = world.lab.url.clone();
    let hubs: Vec<serde_json::Value> = [("north", ["probe-1", "probe-2"]), ("south", ["probe-3", "probe-4"]), ("west", ["probe-5", "probe-6"])]
        .into_iter()
        .map(|(name, users)| json!({"name": name, "cluster": "east", "url": url, "token": {"env": "HUBWATCH_TOKEN"}, "users": users}))
        .collect();
    let world = world.config(json!({"hubs": hubs, "incidents": {"fold": {"min_hubs": 3, "within": "1m"}},
        "defaults": {"probes": {"server": {"every": "6s", "timeout": "30s"}, "kernel": {"every": "6s", "timeout": "10s"}}}}));
    world.lab.set_flag("spawn-fail", None, "");
    let daemon = world.start().await;
    let pd = &world.pd;
    wait_for("the cluster's page", Duration::from_secs(120), async || !pd.accepted().is_empty()).await;
    more_probe_runs(async || daemon.metrics().await, "server", "failed", 6.0).await;
    assert_eq!(pd.accepted_actions(), ["trigger"], "one page for three hubs while they fail");
    let trigger = &pd.accepted()[0];
    let key = IncidentKey::from(trigger["dedup_key"].as_str().unwrap());
    let summary = trigger["payload"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("cluster east: 3 hubs, 6 users cannot start their servers"), "{summary}");
    let (status, page) = get(&format!("{}/incidents/{key}", daemon.base), None).await;
    assert_eq!(status, 200, "{page}");
    for hub in ["north", "south", "west"] {
        assert!(page.contains(&format!(">{hub}</a> — failing")), "the cluster incident's page lists {hub}: {page}");
    }

    world.lab.clear_flags();
    wait_for("the resolve", Duration::from_secs(180), async || pd.accepted().len() >= 2).await;
    more_probe_runs(async || daemon.metrics().await, "server", "ok", 6.0).await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "resolved once, when the last hub recovered");
    assert_eq!(pd.accepted()[1]["dedup_key"], key.as_str());
    assert_eq!(daemon.stop(Duration::from_secs(40)).await, Some(0));
}
