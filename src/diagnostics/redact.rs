//! Redaction of what diagnostics copy out of the cluster. Hub and proxy logs, pod messages and events can
//! hold credentials: `Authorization` headers, `?token=` in logged URLs, `apiToken` values (configurable-http-
//! proxy, the hub's own config), passwords, the tokens single-user pages embed in their page config, and
//! `JUPYTERHUB_API_TOKEN`-style variables. Everything collected passes through [`Redactor::redact`] before it
//! is stored, shown or sent; the secrets hubwatch itself knows (hub tokens, passwords, the routing key) are
//! also replaced wherever they appear verbatim.

use regex::Regex;

const REDACTED: &str = "[redacted]";

pub struct Redactor {
    patterns: Vec<(Regex, &'static str)>,
    known: Vec<String>,
}

impl Redactor {
    /// `known`: secret values to replace wherever they appear (values shorter than 8 characters are skipped:
    /// replacing them would mangle ordinary words and reveal more than it hides).
    pub fn new(known: impl IntoIterator<Item = String>) -> Self {
        let rules: [(&str, &'static str); 6] = [
            // Authorization / Proxy-Authorization headers, whatever the scheme.
            (
                r"(?i)\b((?:proxy-)?authorization[\x22']?\s*[:=]\s*[\x22']?)(?:(?:bearer|token|basic|jupyterhub)\s+)?[^\s\x22',;]+",
                "${1}[redacted]",
            ),
            // Bearer tokens anywhere.
            (r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", "${1}[redacted]"),
            // token=..., access_token=..., _xsrf=... in URLs and logs; OAuth's code= and state= in query strings.
            (
                r"(?i)(\b(?:access_|api_|auth_|refresh_|id_)?token|\b_xsrf|[?&]code|[?&]state)=[^\s&\x22'<>;,]+",
                "${1}=[redacted]",
            ),
            // JSON / YAML / env style keys that hold secrets: "apiToken": "x", api_token: x, PASSWORD=x.
            (
                r#"(?i)((?:[\w.-]*(?:token|password|passwd|secret|api[_-]?key|cookie|credentials?|private[_-]?key))[\x22']?\s*[:=]\s*)(?:"[^"\n]*"|'[^'\n]*'|[^\s,;}\[\]]+)"#,
                "${1}[redacted]",
            ),
            // Set-Cookie / Cookie header values.
            (r"(?i)\b((?:set-)?cookie[\x22']?\s*[:=]\s*)[^\n]+", "${1}[redacted]"),
            // Private key blocks.
            (r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", "[redacted private key]"),
        ];
        let patterns =
            rules.iter().map(|(pattern, with)| (Regex::new(pattern).expect("a valid pattern"), *with)).collect();
        let mut known: Vec<String> = known.into_iter().filter(|s| s.len() >= 8).collect();
        // Longest first, so a secret that contains another is replaced whole.
        known.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { patterns, known }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.known {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        for (pattern, with) in &self.patterns {
            if pattern.is_match(&out) {
                out = pattern.replace_all(&out, *with).into_owned();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary0123456789abcdef0123456789";

    fn redactor() -> Redactor {
        Redactor::new(["known-secret-value".to_string(), "short".to_string()])
    }

    #[test]
    fn credentials_in_hub_and_proxy_logs_are_replaced() {
        let lines = [
            format!("[I 2026-11-24 10:00:01 JupyterHub log:191] 200 GET /hub/api/user?token={CANARY} (probe@10.0.0.1)"),
            format!("Authorization: token {CANARY}"),
            format!("headers: {{'Authorization': 'Bearer {CANARY}'}}"),
            format!("\"apiToken\": \"{CANARY}\""),
            format!("CONFIGPROXY_AUTH_TOKEN={CANARY}"),
            format!("JUPYTERHUB_API_TOKEN={CANARY}"),
            format!("password: {CANARY}"),
            format!(
                "<script id=\"jupyter-config-data\">{{\"token\": \"{CANARY}\", \"baseUrl\": \"/user/a/\"}}</script>"
            ),
            format!("Set-Cookie: jupyterhub-hub-login={CANARY}; HttpOnly"),
            format!("GET /hub/oauth_callback?code={CANARY}&state={CANARY}"),
            format!("-----BEGIN RSA PRIVATE KEY-----\n{CANARY}\n-----END RSA PRIVATE KEY-----"),
        ];
        let redactor = redactor();
        for line in lines {
            let redacted = redactor.redact(&line);
            assert!(!redacted.contains(CANARY), "{line:?} became {redacted:?}");
            assert!(redacted.contains("redacted"), "{redacted}");
        }
    }

    #[test]
    fn known_secrets_go_wherever_they_appear_and_ordinary_text_stays() {
        let redactor = redactor();
        assert_eq!(redactor.redact("echo known-secret-value!"), "echo [redacted]!");
        let plain = "0/3 nodes are available: 3 Insufficient memory. short preemption: 0/3 nodes";
        assert_eq!(redactor.redact(plain), plain);
        let image = "Failed to pull image \"quay.io/jupyter/base-notebook:2024-01-01\": not found";
        assert_eq!(redactor.redact(image), image);
    }
}
