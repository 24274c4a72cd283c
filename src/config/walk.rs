//! A small walker over the parsed YAML tree that records every problem with its key path instead of
//! stopping at the first one, so `hubwatch validate` can report all of them in one pass.

use serde_json::{Map, Value};
use std::collections::HashSet;
use std::time::Duration;

/// Problems found so far, each with the dotted key path it concerns.
#[derive(Debug, Default)]
pub struct Problems {
    pub list: Vec<(String, String)>,
}

impl Problems {
    pub fn add(&mut self, key: &str, problem: impl Into<String>) {
        self.list.push((key.to_string(), problem.into()));
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A mapping whose keys are taken one by one; whatever is left at `finish` is an unknown key.
pub struct Table<'a> {
    map: &'a Map<String, Value>,
    pub path: String,
    allowed: &'static [&'static str],
    taken: HashSet<&'static str>,
}

impl<'a> Table<'a> {
    /// `allowed` lists every key this mapping may hold, for the unknown-key message.
    pub fn new(
        value: &'a Value,
        path: &str,
        allowed: &'static [&'static str],
        problems: &mut Problems,
    ) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Table { map, path: path.to_string(), allowed, taken: HashSet::new() }),
            other => {
                problems.add(path_or_root(path), format!("expected a mapping, found {}", type_name(other)));
                None
            }
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, or None when absent (or null, which YAML writes as an empty value).
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        debug_assert!(self.allowed.contains(&key), "key {key} missing from the allowed list");
        self.taken.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn required(&mut self, key: &'static str, problems: &mut Problems) -> Option<&'a Value> {
        let value = self.get(key);
        if value.is_none() {
            problems.add(&self.key_path(key), "is required");
        }
        value
    }

    pub fn finish(self, problems: &mut Problems) {
        for key in self.map.keys() {
            if !self.allowed.contains(&key.as_str()) {
                problems
                    .add(&join(&self.path, key), format!("unknown key (expected one of: {})", self.allowed.join(", ")));
            }
        }
    }
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() { "(top level)" } else { path }
}

pub fn string(value: &Value, path: &str, problems: &mut Problems) -> Option<String> {
    match value {
        Value::String(s) if s.trim().is_empty() => {
            problems.add(path, "must not be empty");
            None
        }
        Value::String(s) => Some(s.clone()),
        other => {
            problems.add(path, format!("expected a string, found {}", type_name(other)));
            None
        }
    }
}

pub fn boolean(value: &Value, path: &str, problems: &mut Problems) -> Option<bool> {
    let found = value.as_bool();
    if found.is_none() {
        problems.add(path, format!("expected true or false, found {}", type_name(value)));
    }
    found
}

pub fn positive_integer(value: &Value, path: &str, max: u64, problems: &mut Problems) -> Option<u64> {
    match value.as_u64() {
        Some(n) if (1..=max).contains(&n) => Some(n),
        Some(n) => {
            problems.add(path, format!("must be between 1 and {max}, found {n}"));
            None
        }
        None => {
            problems.add(path, format!("expected a whole number from 1 to {max}, found {}", render(value)));
            None
        }
    }
}

/// A duration like `30s`, `10m` or `1h 30m`, at least one second.
pub fn duration(value: &Value, path: &str, problems: &mut Problems) -> Option<Duration> {
    let Value::String(text) = value else {
        problems.add(path, format!("expected a duration like 30s or 10m, found {}", render(value)));
        return None;
    };
    match humantime::parse_duration(text) {
        Ok(d) if d < Duration::from_secs(1) => {
            problems.add(path, format!("must be at least 1s, found {text:?}"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.add(path, format!("invalid duration {text:?} ({e}); use forms like 30s, 10m, 1h"));
            None
        }
    }
}

/// A duration where `0s` means "none" (a damping turned off), else as [`duration`].
pub fn duration_or_zero(value: &Value, path: &str, problems: &mut Problems) -> Option<Duration> {
    match value {
        Value::String(text) if humantime::parse_duration(text).is_ok_and(|d| d.is_zero()) => Some(Duration::ZERO),
        _ => duration(value, path, problems),
    }
}

pub fn object(value: &Value, path: &str, problems: &mut Problems) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map.clone()),
        other => {
            problems.add(path, format!("expected a mapping, found {}", type_name(other)));
            None
        }
    }
}

pub fn string_list(value: &Value, path: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let Value::Array(items) = value else {
        problems.add(path, format!("expected a list of strings, found {}", type_name(value)));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(string(item, &format!("{path}[{i}]"), problems)?);
    }
    Some(out)
}

/// A short rendering of a scalar for messages (never used on secret-bearing keys).
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}
