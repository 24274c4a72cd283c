//! `web` and `metrics_listen`: who may read the pages (Prometheus web-config style `basic_auth_users`, user
//! to bcrypt hash), TLS for them, and a second listener for `/metrics`, `/healthz` and `/readyz` only.

use super::Validator;
use super::walk::join;
use super::walk::{Table, string, type_name};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

const WEB_KEYS: &[&str] = &["basic_auth_users", "tls"];
const TLS_KEYS: &[&str] = &["cert_file", "key_file"];

#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// User name to bcrypt hash. Empty: no authentication (hubwatch warns when it listens beyond loopback).
    pub basic_auth_users: BTreeMap<String, String>,
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its key, PEM files (re-read when they change).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A bcrypt hash as Prometheus' web config takes it: `$2a$`, `$2b$` or `$2y$`, a cost, 53 characters.
fn is_bcrypt(hash: &str) -> bool {
    let parts: Vec<&str> = hash.splitn(4, '$').collect();
    matches!(parts.as_slice(), ["", "2a" | "2b" | "2y", cost, rest]
        if cost.len() == 2 && cost.chars().all(|c| c.is_ascii_digit()) && rest.len() == 53)
}

impl Validator<'_> {
    pub(super) fn web(&mut self, value: Option<&Value>) -> Option<WebConfig> {
        let Some(value) = value else { return Some(WebConfig::default()) };
        let mut table = Table::new(value, "web", WEB_KEYS, self.problems)?;
        let users = match table.get("basic_auth_users") {
            None => Some(BTreeMap::new()),
            Some(v) => self.basic_auth_users(v),
        };
        let tls = match table.get("tls") {
            None => Some(None),
            Some(v) => self.tls(v).map(Some),
        };
        table.finish(self.problems);
        Some(WebConfig { basic_auth_users: users?, tls: tls? })
    }

    fn basic_auth_users(&mut self, value: &Value) -> Option<BTreeMap<String, String>> {
        let path = "web.basic_auth_users";
        let Value::Object(users) = value else {
            self.problems.add(path, format!("expected a mapping of user to bcrypt hash, found {}", type_name(value)));
            return None;
        };
        let mut ok = true;
        let mut out = BTreeMap::new();
        for (user, hash) in users {
            let key = join(path, user);
            if user.is_empty() || user.contains(':') {
                self.problems.add(&key, "a user name may not be empty or hold ':'");
                ok = false;
                continue;
            }
            // A hash inline (as Prometheus' web config has it), or from a Secret like other credentials.
            let hash = match hash {
                Value::String(hash) => Some(hash.clone()),
                other => super::secret::resolve(other, &key, self.config_dir, self.env, self.problems)
                    .map(|s| s.expose().to_string()),
            };
            match hash {
                Some(hash) if is_bcrypt(&hash) => {
                    out.insert(user.clone(), hash);
                }
                // Never quote what was given: it may be a password written where its hash belongs.
                Some(_) => {
                    self.problems.add(&key, "expected a bcrypt hash ($2b$12$..., see `hubwatch hash-password`)");
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn tls(&mut self, value: &Value) -> Option<TlsFiles> {
        let mut table = Table::new(value, "web.tls", TLS_KEYS, self.problems)?;
        let mut file = |key: &'static str, problems: &mut super::walk::Problems| {
            let path = format!("web.tls.{key}");
            let name = string(table.required(key, problems)?, &path, problems)?;
            let file = self.config_dir.join(name);
            match std::fs::metadata(&file) {
                Ok(meta) if meta.is_file() => Some(file),
                _ => {
                    problems.add(&path, format!("{} is not a readable file", file.display()));
                    None
                }
            }
        };
        let cert_file = file("cert_file", self.problems);
        let key_file = file("key_file", self.problems);
        table.finish(self.problems);
        Some(TlsFiles { cert_file: cert_file?, key_file: key_file? })
    }

    pub(super) fn metrics_listen(&mut self, value: Option<&Value>) -> Option<Option<SocketAddr>> {
        match value {
            None => Some(None),
            Some(v) => self.address(v, "metrics_listen").map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bcrypt_hashes_are_recognised_and_passwords_are_not() {
        assert!(super::is_bcrypt("$2b$12$PBh0ZC8CnQzWkqL5dlJNV.BCBz6g4e.Xf0rGX.DkZgtv0mgHAe4fG"));
        assert!(!super::is_bcrypt("hunter2"));
        assert!(!super::is_bcrypt("$2b$12$short"));
    }
}
