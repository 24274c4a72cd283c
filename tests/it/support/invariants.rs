//! The promise to the on-call engineer, checked on what the PagerDuty stand-in received rather than on
//! timings: every outage pages under exactly one incident key; for each key, triggers come first, a
//! resolve follows once the hub has healed, and nothing triggers after it.

use super::pagerduty::Received;
use std::collections::BTreeMap;

/// Per dedup key, the actions in the order they arrived (keys in order of their first event).
pub fn actions_by_key(received: &[Received]) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<String> = Vec::new();
    let mut actions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in received {
        let key = r.event["dedup_key"].as_str().unwrap_or_default().to_string();
        if !keys.contains(&key) {
            keys.push(key.clone());
        }
        actions.entry(key).or_default().push(r.event["event_action"].as_str().unwrap_or_default().to_string());
    }
    keys.into_iter().map(|k| (k.clone(), actions.remove(&k).unwrap_or_default())).collect()
}

/// Checks the promise for `outages` outages; with `healed`, every one must also be resolved.
pub fn assert_promise(received: &[Received], outages: usize, healed: bool) {
    let by_key = actions_by_key(received);
    let report = format!("{by_key:#?}");
    assert_eq!(by_key.len(), outages, "one incident key per outage: {report}");
    for (key, actions) in &by_key {
        assert_eq!(actions.first().map(String::as_str), Some("trigger"), "{key} starts with a trigger: {report}");
        if let Some(resolved) = actions.iter().position(|a| a == "resolve") {
            assert!(
                actions[resolved..].iter().all(|a| a == "resolve"),
                "{key}: nothing may trigger after its resolve: {report}"
            );
        } else {
            assert!(!healed, "{key} was never resolved although the hub healed: {report}");
        }
    }
}

/// Events whose sender (User-Agent) mentions `replica`.
pub fn from(received: &[Received], replica: &str) -> Vec<Received> {
    received.iter().filter(|r| r.sender.contains(replica)).cloned().collect()
}
