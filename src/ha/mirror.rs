//! The leader's state, mirrored into a Secret (gzip-compressed JSON) for the replica that takes over. A
//! Secret, not a ConfigMap: the state holds diagnostics (logs, events) and real users' names, which the
//! cluster's `view` role must not read. The Secret's annotations carry the [`Version`] of the state it
//! holds (leader term, write sequence); a write is refused when the Secret already holds a newer version
//! (a deposed leader's late write never overwrites its successor's state), and every write carries the
//! `resourceVersion` it read (409 on a race). A snapshot too large for a Secret sheds history first; if
//! even open incidents and unsent events do not fit, that is reported (metric and alert), never silent.

use super::{Fence, HaError};
use crate::store::Version;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

/// A Secret holds at most 1 MiB of data; the snapshot leaves room for the rest of the object.
pub const STATE_LIMIT: usize = 900 * 1024;
const STATE_KEY: &str = "state.json.gz";
/// What the previous release mirrored into a ConfigMap (read once, for a rolling upgrade).
const LEGACY_STATE_KEY: &str = "state.json";
const TERM_ANNOTATION: &str = "hubwatch.jupyter.org/leader-term";
const SEQUENCE_ANNOTATION: &str = "hubwatch.jupyter.org/state-sequence";
const LEADER_ANNOTATION: &str = "hubwatch.jupyter.org/leader";
/// Refuse to inflate more than this (a corrupt or hostile Secret must not exhaust memory).
const INFLATED_LIMIT: u64 = 256 << 20;

/// A snapshot ready to write: compressed, with what had to be left out to fit.
#[derive(Debug)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub version: Version,
    /// False when open incidents or unsent events had to be cut (diagnostics of open incidents, or more).
    pub complete: bool,
    pub dropped: Vec<String>,
}

/// What became of one mirror write.
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    Written,
    /// The fence does not hold: this replica may not write.
    NotLeading,
    /// The Secret holds a newer state (a newer leader wrote it): this replica is deposed.
    Superseded(Version),
    /// Another write raced this one (409): try again.
    Conflict,
}

pub struct Mirror {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    name: String,
    legacy_config_map: String,
    identity: String,
    call_timeout: Duration,
}

impl Mirror {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        legacy: &str,
        identity: &str,
        call_timeout: Duration,
    ) -> Self {
        Mirror {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            name: name.to_string(),
            legacy_config_map: legacy.to_string(),
            identity: identity.to_string(),
            call_timeout,
        }
    }

    /// The mirrored state, if any: the Secret's, else what an earlier release left in its ConfigMap.
    pub async fn load(&self) -> Result<Option<Value>, HaError> {
        let loaded = self.read().await?;
        match loaded.unreadable {
            Some(reason) => Err(HaError::State { name: self.name.clone(), reason }),
            None => Ok(loaded.snapshot),
        }
    }

    /// The mirrored state with the Secret it came from, so that a takeover can write over exactly that
    /// Secret ([`Mirror::claim`]). A Secret whose content cannot be read is reported in `unreadable`, not an
    /// error: the new leader writes over it.
    pub async fn read(&self) -> Result<Loaded, HaError> {
        let secret = call(self.call_timeout, "state Secret", self.secrets.get_opt(&self.name)).await?;
        if let Some(bytes) = secret.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(STATE_KEY)) {
            return Ok(match unpack(&bytes.0) {
                Ok(snapshot) => Loaded { snapshot: Some(snapshot), unreadable: None, secret },
                Err(reason) => Loaded { snapshot: None, unreadable: Some(reason), secret },
            });
        }
        let legacy =
            call(self.call_timeout, "legacy state ConfigMap", self.config_maps.get_opt(&self.legacy_config_map))
                .await
                .unwrap_or_default();
        let text = legacy.and_then(|c| c.data).and_then(|d| d.get(LEGACY_STATE_KEY).cloned());
        let (snapshot, unreadable) = match text.map(|t| serde_json::from_str(&t)) {
            None => (None, None),
            Some(Ok(snapshot)) => (Some(snapshot), None),
            Some(Err(e)) => (None, Some(format!("{}: {e}", self.legacy_config_map))),
        };
        Ok(Loaded { snapshot, unreadable, secret })
    }

    /// Writes `packed` if the fence holds and the Secret holds nothing newer; the write itself gets only what
    /// the fence still allows.
    pub async fn save(&self, packed: &Packed, fence: &Fence) -> Result<Saved, HaError> {
        let Some(budget) = fence.budget(self.call_timeout) else { return Ok(Saved::NotLeading) };
        let existing = call(budget, "state Secret", self.secrets.get_opt(&self.name)).await?;
        if let Some(stored) = existing.as_ref().map(version_of).filter(|stored| *stored > packed.version) {
            return Ok(Saved::Superseded(stored));
        }
        // Asked again right before the write: reading took part of the budget.
        let Some(budget) = fence.budget(budget) else { return Ok(Saved::NotLeading) };
        self.write(existing, packed, budget).await
    }

    /// Writes `packed` over exactly the Secret `loaded` came from: `Conflict` when anyone wrote it since (a
    /// deposed leader's last write), so the takeover reads again and misses nothing.
    pub async fn claim(&self, packed: &Packed, fence: &Fence, loaded: Loaded) -> Result<Saved, HaError> {
        let Some(budget) = fence.budget(self.call_timeout) else { return Ok(Saved::NotLeading) };
        self.write(loaded.secret, packed, budget).await
    }

    /// Replaces `existing` (its resourceVersion makes a concurrent write a 409) or creates the Secret.
    async fn write(&self, existing: Option<Secret>, packed: &Packed, budget: Duration) -> Result<Saved, HaError> {
        let annotations = BTreeMap::from([
            (TERM_ANNOTATION.to_string(), packed.version.term.to_string()),
            (SEQUENCE_ANNOTATION.to_string(), packed.version.sequence.to_string()),
            (LEADER_ANNOTATION.to_string(), self.identity.clone()),
        ]);
        let data = BTreeMap::from([(STATE_KEY.to_string(), ByteString(packed.bytes.clone()))]);
        let written = match existing {
            Some(mut secret) => {
                secret.metadata.annotations.get_or_insert_default().extend(annotations);
                secret.data = Some(data);
                call(budget, "state Secret", self.secrets.replace(&self.name, &PostParams::default(), &secret)).await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    type_: Some("Opaque".into()),
                    ..Secret::default()
                };
                call(budget, "state Secret", self.secrets.create(&PostParams::default(), &secret)).await
            }
        };
        match written {
            Ok(_) => Ok(Saved::Written),
            Err(HaError::Api { source: kube::Error::Api(status), .. }) if status.code == 409 => Ok(Saved::Conflict),
            Err(e) => Err(e),
        }
    }
}

/// What a takeover read: the mirrored state (if any could be read), why not, and the Secret it came from.
pub struct Loaded {
    pub snapshot: Option<Value>,
    /// The Secret (or the legacy ConfigMap) held something that is not a state: why.
    pub unreadable: Option<String>,
    secret: Option<Secret>,
}

fn version_of(secret: &Secret) -> Version {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let number = |key: &str| annotations.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    Version { term: number(TERM_ANNOTATION), sequence: number(SEQUENCE_ANNOTATION) }
}

async fn call<T>(
    limit: Duration,
    what: &'static str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, HaError> {
    match tokio::time::timeout(limit, request).await {
        Err(_) => Err(HaError::Timeout { what }),
        Ok(result) => result.map_err(|source| HaError::Api { what, source }),
    }
}

fn compress(snapshot: &Value) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(snapshot.to_string().as_bytes()).expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

fn unpack(bytes: &[u8]) -> Result<Value, String> {
    let mut text = Vec::new();
    GzDecoder::new(bytes).take(INFLATED_LIMIT).read_to_end(&mut text).map_err(|e| format!("not gzip: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))
}

/// Compresses `snapshot` to fit in `limit` bytes, shedding in this order until it fits: delivered events,
/// the diagnostics of closed incidents, the oldest closed incidents with their timelines, and last the
/// diagnostics of open incidents. Open incidents, incidents with unsent events, their timelines and the unsent
/// events are never dropped: if the diagnostics of open incidents had to go, or even that was not enough, the
/// result is incomplete.
pub fn pack(mut snapshot: Value, limit: usize) -> Packed {
    let version = Version::of(&snapshot);
    let mut dropped = Vec::new();
    let mut bytes = compress(&snapshot);
    let mut step = 0;
    while bytes.len() > limit {
        let (what, cut) = match step {
            0 => ("delivered events", retain(&mut snapshot, "outbox", |row| row["state"] == "pending")),
            1 => ("diagnostics of closed incidents", clear_diagnostics(&mut snapshot, false)),
            2 => ("oldest closed incidents", drop_oldest_closed(&mut snapshot)),
            3 => ("diagnostics of open incidents", clear_diagnostics(&mut snapshot, true)),
            _ => break,
        };
        // Closed incidents go a tenth at a time: the step repeats while there are some.
        if !(step == 2 && cut) {
            step += 1;
        }
        if cut {
            if !dropped.iter().any(|d| d == what) {
                dropped.push(what.to_string());
            }
            bytes = compress(&snapshot);
        }
    }
    let complete = bytes.len() <= limit && !dropped.iter().any(|d| d.ends_with("of open incidents"));
    Packed { bytes, version, complete, dropped }
}

/// Keeps the rows of `table` for which `keep` holds; true when any went.
fn retain(snapshot: &mut Value, table: &str, keep: impl Fn(&Value) -> bool) -> bool {
    let Some(rows) = snapshot["tables"][table].as_array_mut() else { return false };
    let before = rows.len();
    rows.retain(|row| keep(row));
    rows.len() != before
}

fn clear_diagnostics(snapshot: &mut Value, open: bool) -> bool {
    let mut cleared = false;
    for row in snapshot["tables"]["incidents"].as_array_mut().into_iter().flatten() {
        if (row["open"] == 1) == open && !row["diagnostics"].is_null() {
            row["diagnostics"] = "(not mirrored: the state was too large)".into();
            cleared = true;
        }
    }
    cleared
}

/// Drops the oldest tenth (at least one) of the closed incidents with their timelines and events; never one
/// with an unsent event (a resolve still pending must reach the replica that takes over).
fn drop_oldest_closed(snapshot: &mut Value) -> bool {
    let unsent: Vec<Value> = snapshot["tables"]["outbox"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["state"] == "pending")
        .map(|row| row["key"].clone())
        .collect();
    let closed: Vec<Value> = snapshot["tables"]["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["open"] == 0 && !unsent.contains(&row["key"]))
        .map(|row| row["key"].clone())
        .collect();
    let keys: Vec<Value> = closed.iter().take((closed.len() / 10).max(1)).cloned().collect();
    if keys.is_empty() {
        return false;
    }
    for table in ["incidents", "timeline", "outbox"] {
        retain(snapshot, table, |row| !keys.contains(&row["key"]));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Text that does not compress (as real logs mostly do not, in the amounts that matter here).
    fn noise(seed: usize, length: usize) -> String {
        let mut state = seed as u64 * 2_654_435_761 + 1;
        (0..length)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                char::from(b'a' + (state >> 59) as u8 % 26)
            })
            .collect()
    }

    fn snapshot(history: usize, open_diagnostics: &str) -> Value {
        let noise = |i: usize| noise(i, 600);
        let mut incidents = vec![json!({"key": "now", "open": 1, "diagnostics": open_diagnostics})];
        let mut timeline = vec![json!({"key": "now", "entry": "detected"})];
        for i in 0..history {
            incidents.push(json!({"key": format!("old-{i}"), "open": 0, "diagnostics": noise(i)}));
            timeline.push(json!({"key": format!("old-{i}"), "entry": noise(i + 1)}));
        }
        json!({"schema_version": 4, "term": 2, "sequence": 9, "tables": {
            "incidents": incidents, "timeline": timeline,
            "outbox": [{"key": "old-0", "state": "sent", "body": noise(7)}, {"key": "now", "state": "pending", "body": "{}"}],
        }})
    }

    #[test]
    fn a_small_snapshot_is_kept_whole_and_round_trips() {
        let small = snapshot(2, "pods");
        let packed = pack(small.clone(), STATE_LIMIT);
        assert!(packed.complete && packed.dropped.is_empty());
        assert_eq!(packed.version, Version { term: 2, sequence: 9 });
        assert_eq!(unpack(&packed.bytes).unwrap(), small);
    }

    #[test]
    fn a_large_snapshot_sheds_history_never_open_incidents_or_unsent_events() {
        let packed = pack(snapshot(400, "pods"), 20_000);
        assert!(packed.complete, "{:?}", packed.dropped);
        assert!(packed.bytes.len() <= 20_000);
        let kept = unpack(&packed.bytes).unwrap();
        let keys: Vec<&str> =
            kept["tables"]["incidents"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert!(keys.contains(&"now") && keys.len() < 401);
        assert_eq!(kept["tables"]["outbox"], json!([{"key": "now", "state": "pending", "body": "{}"}]));
        assert!(kept["tables"]["timeline"].as_array().unwrap().contains(&json!({"key": "now", "entry": "detected"})));
    }

    #[test]
    fn a_closed_incident_whose_resolve_is_unsent_is_never_trimmed() {
        let mut state = snapshot(400, "pods");
        state["tables"]["outbox"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "old-0", "state": "pending", "body": "{}"}));
        let packed = pack(state, 20_000);
        assert!(packed.complete, "{:?}", packed.dropped);
        let kept = unpack(&packed.bytes).unwrap();
        let keys: Vec<&str> =
            kept["tables"]["incidents"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert!(keys.contains(&"old-0") && keys.len() < 401, "the oldest closed incident stays: its resolve is unsent");
        let pending = kept["tables"]["outbox"].as_array().unwrap().iter().filter(|r| r["state"] == "pending").count();
        assert_eq!(pending, 2);
    }

    #[test]
    fn open_incidents_that_cannot_fit_are_reported_incomplete() {
        let packed = pack(snapshot(3, &noise(99, 200_000)), 20_000);
        assert!(!packed.complete);
        assert!(packed.dropped.contains(&"diagnostics of open incidents".to_string()), "{:?}", packed.dropped);
        let kept = unpack(&packed.bytes).unwrap();
        assert_eq!(kept["tables"]["incidents"][0]["key"], "now", "the open incident itself stays");
    }

    #[test]
    fn a_corrupt_or_oversized_secret_is_an_error_not_a_crash() {
        assert!(unpack(b"not gzip").is_err());
        let bomb = compress(&Value::String("0".repeat(1 << 20)));
        assert!(unpack(&bomb).is_ok(), "a megabyte inflates fine");
    }
}
