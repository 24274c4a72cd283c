//! Secrets come from the environment or a file, never inline, and never print themselves.

use super::walk::{Problems, Table, string, type_name};
use serde_json::Value;

use std::path::Path;

use crate::domain::Secret;

/// Reads the environment; injected so tests do not have to change the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Resolves `{env: NAME}` or `{file: PATH}` (a relative PATH is relative to the config file's folder).
pub fn resolve(
    value: &Value,
    path: &str,
    config_dir: &Path,
    env: EnvLookup,
    problems: &mut Problems,
) -> Option<Secret> {
    if let Value::String(_) = value {
        // Say nothing of the value itself: it is a secret written inline.
        problems.add(path, "secrets must be given as {env: NAME} or {file: PATH}, never inline");
        return None;
    }
    if !value.is_object() {
        problems.add(path, format!("expected {{env: NAME}} or {{file: PATH}}, found {}", type_name(value)));
        return None;
    }
    let mut table = Table::new(value, path, &["env", "file"], problems)?;
    let from_env = table.get("env");
    let from_file = table.get("file");
    table.finish(problems);
    match (from_env, from_file) {
        (Some(_), Some(_)) => {
            problems.add(path, "give either env or file, not both");
            None
        }
        (None, None) => {
            problems.add(path, "expected {env: NAME} or {file: PATH}");
            None
        }
        (Some(name), None) => {
            let key = format!("{path}.env");
            let name = string(name, &key, problems)?;
            match env(&name) {
                Some(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
                Some(_) => {
                    problems.add(&key, format!("environment variable {name} is empty"));
                    None
                }
                None => {
                    problems.add(&key, format!("environment variable {name} is not set"));
                    None
                }
            }
        }
        (None, Some(file)) => {
            let key = format!("{path}.file");
            let file = string(file, &key, problems)?;
            let full = config_dir.join(&file);
            match std::fs::read_to_string(&full) {
                Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
                Ok(_) => {
                    problems.add(&key, format!("secret file {} is empty", full.display()));
                    None
                }
                Err(e) => {
                    problems.add(&key, format!("cannot read secret file {}: {e}", full.display()));
                    None
                }
            }
        }
    }
}
