//! Redaction: every text hubwatch takes from a hub or the cluster (probe failure messages, pod and event
//! messages, logs, `describe` output, Deployment annotations) and every line it logs passes through one
//! [`Redactor`] before it is stored, shown, sent or written. It replaces
//! - the secrets hubwatch itself holds (hub tokens, probe passwords, the routing key, the PagerDuty REST token,
//!   tokens found by discovery), verbatim, JSON-escaped or percent-encoded;
//! - credentials recognisable by their shape: JupyterHub tokens (runs of 32 or more hex digits, also inside
//!   `/authorizations/token/...` paths), JWTs, GitHub tokens, Slack tokens and webhook URLs, AWS access key
//!   ids, private key blocks;
//! - credentials recognisable by what names them: `Authorization` headers, bearer tokens, `token=` and
//!   `_xsrf=` in URLs, OAuth `code=`/`state=`, URL user-info (`postgresql://u:pw@`), JupyterHub cookies,
//!   `.dockerconfigjson` and docker `auth`, and any key ending in token, password, secret, secret key, API
//!   key, cookie or credentials (JSON, JSON inside JSON, YAML, environment variables).
//!
//! Redact before cutting a text short: a cut can separate a secret from the key that identifies it.
//! Hex runs are kept where they are never secrets and a responder needs them: image digests (`sha256:`) and
//! container ids (`containerd://`). Dask Gateway's cluster names are 32 hex digits too, like a token: they
//! are redacted (the cluster's user and state still say which one it is).

use regex::Regex;
use std::sync::RwLock;

pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not replaced verbatim: replacing them would mangle ordinary words and
/// reveal more than it hides (they are still caught by shape and by name).
const SHORTEST_KNOWN: usize = 8;
/// A hex run this long is taken for a token (JupyterHub's are 32, `openssl rand -hex 32` gives 64).
const HEX_TOKEN: usize = 32;

/// Patterns and what replaces their match; applied in order.
const RULES: &[(&str, Replace)] = &[
    // Private key blocks, also when cut before their end.
    (
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\z)",
        Replace::With("[redacted private key]"),
    ),
    // URL user-info: scheme://user:password@host.
    (r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@\x22'<>\\]*:)[^\s@/\x22'<>\\]+@", Replace::With("${1}[redacted]@")),
    // Slack incoming webhooks and tokens.
    (r"(?i)\b(https?://hooks\.slack(?:-gov)?\.com/)[^\s\x22'<>\\]+", Replace::With("${1}[redacted]")),
    (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", Replace::With(REDACTED)),
    // GitHub tokens (classic and fine-grained).
    (r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})", Replace::With(REDACTED)),
    // JWTs: base64url header and payload (both JSON objects, so both start with eyJ) and signature.
    (r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", Replace::With(REDACTED)),
    // AWS access key ids.
    (r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}\b", Replace::With(REDACTED)),
    // Authorization / Proxy-Authorization headers, whatever the scheme.
    (
        r"(?i)\b((?:proxy-)?authorization\\*[\x22']?\s*[:=]\s*\\*[\x22']?)(?:(?:bearer|token|basic|jupyterhub)\s+)?[^\s\x22',;\\]+",
        Replace::With("${1}[redacted]"),
    ),
    // Bearer tokens anywhere.
    (r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", Replace::With("${1}[redacted]")),
    // token=..., access_token=..., _xsrf=... in URLs and logs; OAuth's code= and state= in query strings.
    (
        r"(?i)(\b(?:access_|api_|auth_|refresh_|id_)?token|\b_xsrf|[?&]code|[?&]state)=[^\s&\x22'<>;,\\]+",
        Replace::With("${1}=[redacted]"),
    ),
    // JupyterHub's cookies: jupyterhub-hub-login, jupyterhub-session-id, jupyterhub-user-NAME.
    (r"(?i)\b(jupyterhub-[\w-]+=)[^\s;,\x22'\\]+", Replace::With("${1}[redacted]")),
    // A docker config as a value (a Secret's .dockerconfigjson / .dockercfg, plain or base64).
    (
        r#"(?i)(\.docker(?:configjson|cfg)\\*[\x22']?\s*[:=]\s*)(\\+"[^"\n]*?\\+"|"(?:[^"\\\n]|\\.)*"|\S+)"#,
        Replace::ValueKeepingQuotes,
    ),
    // Keys that hold secrets, in JSON (also JSON inside a JSON string), YAML and the environment:
    // "apiToken": "x", \"token\": \"x\", api_token: x, PASSWORD=x, aws_secret_access_key = x, "auth": "x".
    (
        r#"(?i)((?:[\w.-]*(?:token|password|passwd|secret|secret[_-]?(?:access[_-]?)?key|api[_-]?key|cookie|credentials?|private[_-]?key)|\bauth)\\*[\x22']?\s*[:=]\s*)(\\+"[^"\n]*?\\+"|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|(?:\[redacted\]|[^\s,;}\[\]\x22'\\])+)"#,
        Replace::ValueKeepingQuotes,
    ),
    // Set-Cookie / Cookie header values.
    (r"(?i)\b((?:set-)?cookie[\x22']?\s*[:=]\s*)[^\n]+", Replace::With("${1}[redacted]")),
];

/// What replaces a rule's match.
#[derive(Clone, Copy)]
enum Replace {
    /// This text (`${1}` is the first group).
    With(&'static str),
    /// The first group, then the value (the second group) as `[redacted]` inside the value's own quotes, so
    /// that JSON stays JSON: `"token": "x"` → `"token": "[redacted]"`, `\"token\": \"x\"` likewise.
    ValueKeepingQuotes,
}

/// Replaces secrets in text; shared (behind an `Arc`) by everything that takes text in or writes it out.
pub struct Redactor {
    rules: Vec<(Regex, Replace)>,
    hex: Regex,
    /// Longest first, so a secret that contains another is replaced whole.
    known: RwLock<Vec<String>>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new()
    }
}

impl Redactor {
    /// Knows the shapes and names of secrets; learns hubwatch's own with [`Redactor::learn`].
    pub fn new() -> Self {
        let rules =
            RULES.iter().map(|(pattern, with)| (Regex::new(pattern).expect("a valid pattern"), *with)).collect();
        let hex = Regex::new(&format!("[0-9a-fA-F]{{{HEX_TOKEN},}}")).expect("a valid pattern");
        Redactor { rules, hex, known: RwLock::new(Vec::new()) }
    }

    pub fn knowing<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let redactor = Redactor::new();
        redactor.learn(secrets);
        redactor
    }

    /// Adds secrets to replace verbatim wherever they appear, with their JSON-escaped and percent-encoded
    /// forms (a password with a quote or a space is written that way in logs and URLs).
    pub fn learn<S: AsRef<str>>(&self, secrets: impl IntoIterator<Item = S>) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() < SHORTEST_KNOWN {
                continue;
            }
            let escaped = serde_json::to_string(secret).unwrap_or_default();
            let forms = [secret.to_string(), escaped[1..escaped.len() - 1].to_string(), percent_encoded(secret)];
            for form in forms {
                if !known.contains(&form) {
                    known.push(form);
                }
            }
        }
        known.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.known.read().unwrap_or_else(|p| p.into_inner()).iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        for (pattern, replace) in &self.rules {
            if !pattern.is_match(&out) {
                continue;
            }
            out = match replace {
                Replace::With(with) => pattern.replace_all(&out, *with).into_owned(),
                Replace::ValueKeepingQuotes => pattern
                    .replace_all(&out, |found: &regex::Captures| {
                        let value = &found[2];
                        let quotes = &value[..value.len() - value.trim_start_matches(['\\', '"', '\'']).len()];
                        format!("{}{quotes}{REDACTED}{quotes}", &found[1])
                    })
                    .into_owned(),
            };
        }
        self.redact_hex_runs(&out)
    }

    /// As [`Redactor::redact`], except for `names` (Kubernetes object names this text is about: a Dask
    /// cluster's 32 hex digits look like a token but a responder needs them to tell clusters apart). A name
    /// that sits where a secret's value would (`token: NAME`) still goes with the value.
    pub fn redact_keeping(&self, text: &str, names: &[&str]) -> String {
        let mut names: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty() && text.contains(n)).collect();
        if names.is_empty() {
            return self.redact(text);
        }
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        names.dedup();
        // Private-use characters: no pattern matches them, and no API text holds them.
        let placeholder = |i: usize| format!("\u{E000}{i}\u{E001}");
        let mut held = text.replace(['\u{E000}', '\u{E001}'], "");
        for (i, name) in names.iter().enumerate() {
            held = held.replace(name, &placeholder(i));
        }
        let mut out = self.redact(&held);
        for (i, name) in names.iter().enumerate() {
            out = out.replace(&placeholder(i), name);
        }
        out
    }

    /// Redacted, then cut to at most `limit` characters (never the other way round).
    pub fn redact_bounded(&self, text: &str, limit: usize) -> String {
        crate::domain::truncate(&self.redact(text), limit)
    }

    fn redact_hex_runs(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut from = 0;
        for run in self.hex.find_iter(text) {
            let before = &text[..run.start()];
            let kept = cannot_be_a_token(run.as_str()) || not_a_secret_here(before);
            out.push_str(&text[from..run.start()]);
            out.push_str(if kept { run.as_str() } else { REDACTED });
            from = run.end();
        }
        out.push_str(&text[from..]);
        out
    }
}

/// A run of only digits (a number) or only letters is no token.
fn cannot_be_a_token(run: &str) -> bool {
    run.bytes().all(|b| b.is_ascii_digit()) || run.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Hex that names something a responder needs and that is never a credential: an image digest, a
/// container id.
fn not_a_secret_here(before: &str) -> bool {
    const NAMED_BY: [&str; 4] = ["sha256:", "containerd://", "docker://", "cri-o://"];
    NAMED_BY.iter().any(|prefix| before.ends_with(prefix))
}

fn percent_encoded(secret: &str) -> String {
    secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary0123456789abcdef0123456789";

    fn redactor() -> Redactor {
        Redactor::knowing(["known-secret-value", "short", "pa ss\"word!"])
    }

    fn assert_redacted(redactor: &Redactor, line: &str, secret: &str) {
        let redacted = redactor.redact(line);
        assert!(!redacted.contains(secret), "{line:?} became {redacted:?}");
        assert!(redacted.contains("redacted"), "{line:?} became {redacted:?}");
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
            format!("-----BEGIN PRIVATE KEY-----\n{CANARY}"),
        ];
        let redactor = redactor();
        for line in lines {
            assert_redacted(&redactor, &line, CANARY);
        }
    }

    #[test]
    fn each_kind_of_secret_is_replaced_by_its_shape_or_its_name() {
        let token = "53c10e1d9fe7412dada16f0ddf534d22";
        let cases = [
            (format!("404 DELETE /hub/api/authorizations/token/{token} (::1) 1.2ms"), token),
            (format!("using {token} for the service"), token),
            (format!(r#"{{"log": "{{\"token\": \"{CANARY}\"}}"}}"#), CANARY),
            ("creds AKIAIOSFODNN7EXAMPLE in use".into(), "AKIAIOSFODNN7EXAMPLE"),
            ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(), "wJalrXUtnFEMI"),
            // A value whose long alphanumeric head was already scrubbed (the hub's words are scrubbed of
            // token-like runs first): the rest of it goes too (REDACTION_SEED=11070682682302418565).
            ("aws_secret_access_key = [redacted]+V1VE9D5K".into(), "V1VE9D5K"),
            (r#""SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY""#.into(), "wJalrXUtnFEMI"),
            (r#"{"auths":{"quay.io":{"auth":"dXNlcjpodW50ZXIy"}}}"#.into(), "dXNlcjpodW50ZXIy"),
            (".dockerconfigjson: eyJhdXRocyI6e319Cg==".into(), "eyJhdXRocyI6e319Cg"),
            ("db_url: postgresql://hub:hunter2hunter2@db:5432/jupyterhub".into(), "hunter2hunter2"),
            ("jupyterhub-hub-login=2|1:0|10:1700000000|20:jupyterhub-hub-login|44:ZmFrZQ==|abc".into(), "ZmFrZQ"),
            ("cloning with ghp_0123456789abcdefghijABCDEFGHIJ012345".into(), "ghp_0123456789"),
            (format!("github_pat_11ABCDEFG0123456789_{CANARY}"), CANARY),
            ("id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl ok".into(), "eyJzdWIiOiJhbGljZSJ9"),
            (
                "posting to https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefABCDEF012345678901".into(),
                "abcdefABCDEF",
            ),
            ("the password was known-secret-value".into(), "known-secret-value"),
            (r#"{"p": "pa ss\"word!"}"#.into(), r#"pa ss\"word!"#),
            ("/login?p=pa%20ss%22word%21".into(), "pa%20ss%22word%21"),
        ];
        let redactor = redactor();
        for (line, secret) in cases {
            assert_redacted(&redactor, &line, secret);
        }
    }

    #[test]
    fn ordinary_text_and_what_a_responder_needs_stay() {
        let redactor = redactor();
        assert_eq!(redactor.redact("echo known-secret-value!"), "echo [redacted]!");
        let kept = [
            "0/3 nodes are available: 3 Insufficient memory. short preemption: 0/3 nodes",
            "Failed to pull image \"quay.io/jupyter/base-notebook:2024-01-01\": not found",
            "Image ID: quay.io/jupyter/base@sha256:0f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100",
            "Container ID: containerd://0f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100",
            "Normal  Scheduled  12s  default-scheduler  Successfully assigned temple/jupyter-alice to node-1",
            "kernel 5f1c1b7e-2d3a-4c7e-9a51-0d3f4b2a6c11 started",
            "disk quota exceeded: 10737418240 bytes 12345678901234567890123456789012345",
        ];
        for line in kept {
            assert_eq!(redactor.redact(line), line);
        }
    }

    #[test]
    fn object_names_are_kept_and_secrets_next_to_them_are_not() {
        let redactor = redactor();
        let cluster = "8f14e45fceea167a5a36dedd4bea2543";
        let text = format!("dask-scheduler-{cluster} Pending; created temple.{cluster}; token: {CANARY}");
        let out = redactor.redact_keeping(&text, &[cluster, &format!("dask-scheduler-{cluster}")]);
        assert_eq!(out, format!("dask-scheduler-{cluster} Pending; created temple.{cluster}; token: [redacted]"));
        assert_eq!(redactor.redact_keeping(&format!("token: {cluster}"), &[cluster]), "token: [redacted]");
        assert_eq!(
            redactor.redact(&text),
            "dask-scheduler-[redacted] Pending; created temple.[redacted]; token: [redacted]"
        );
    }

    #[test]
    fn bounded_text_is_redacted_before_it_is_cut() {
        let redactor = redactor();
        let line = format!("Authorization: token {CANARY}");
        for limit in 1..line.len() {
            let out = redactor.redact_bounded(&line, limit);
            assert!(!out.contains(&CANARY[..8]), "cut at {limit}: {out:?}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// A secret of one kind (`secret`: the part that must never appear) and the line that carries it.
        fn planted() -> impl Strategy<Value = (String, String)> {
            let hex32 = "[0-9a-f]{32}";
            let token = "[A-Za-z0-9]{24,40}";
            prop_oneof![
                hex32.prop_flat_map(|s| {
                    prop_oneof![
                        Just(s.clone()),
                        Just(format!("/hub/api/authorizations/token/{s}")),
                        Just(format!("?token={s}&x=1")),
                        Just(format!("Authorization: token {s}")),
                    ]
                    .prop_map(move |line| (s.clone(), line))
                }),
                "[0-9a-f]{64}".prop_map(|s| (s.clone(), format!("proxy secretToken {s}"))),
                token.prop_flat_map(|s| {
                    prop_oneof![
                        Just(format!("\"apiToken\": \"{s}\"")),
                        Just(format!("{{\\\"token\\\": \\\"{s}\\\"}}")),
                        Just(format!("JUPYTERHUB_API_TOKEN={s}")),
                        Just(format!("password: {s}")),
                        Just(format!("client_secret={s}")),
                        Just(format!("headers: {{'Authorization': 'Bearer {s}'}}")),
                        Just(format!("Set-Cookie: jupyterhub-hub-login={s}; HttpOnly")),
                        Just(format!("jupyterhub-session-id={s}")),
                        Just(format!("postgresql://hub:{s}@db:5432/jupyterhub")),
                        Just(format!("https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{s}")),
                        Just(format!("ghp_{s}{s}")),
                        Just(format!("\"auth\": \"{s}\"")),
                        Just(format!(".dockerconfigjson: {s}")),
                        Just(format!("aws_secret_access_key = {s}")),
                    ]
                    .prop_map(move |line| (s.clone(), line))
                }),
                "[A-Z0-9]{16}".prop_map(|s| (s.clone(), format!("key AKIA{s} used"))),
                ("[A-Za-z0-9_-]{8,30}", "[A-Za-z0-9_-]{8,30}").prop_map(|(payload, signature)| {
                    let jwt = format!("eyJhbGciOiJSUzI1NiJ9.eyJ{payload}.{signature}");
                    (format!("eyJ{payload}"), format!("id_token {jwt}"))
                }),
            ]
        }

        /// Ordinary log words around the secret (no 8-character run a secret could share by chance).
        fn noise() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("GET"),
                    Just("/hub/api/users"),
                    Just("200"),
                    Just("spawn"),
                    Just("pending"),
                    Just("\n"),
                    Just("\t"),
                    Just("{"),
                    Just("}"),
                    Just("\""),
                    Just(","),
                    Just("é"),
                    Just("x=1"),
                ],
                0..12,
            )
            .prop_map(|words| words.join(" "))
        }

        /// How the line reaches hubwatch: as it is, inside a JSON log record, or quoted in an event message.
        fn wrapped(line: &str, how: u8) -> String {
            match how % 3 {
                0 => line.to_string(),
                1 => serde_json::json!({"level": "info", "msg": line}).to_string(),
                _ => format!("Warning  Failed  pod/jupyter-alice  {line:?}"),
            }
        }

        /// One for every case: compiling the patterns costs more than a case.
        fn shared() -> &'static Redactor {
            static REDACTOR: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
            REDACTOR.get_or_init(Redactor::new)
        }

        fn windows(secret: &str) -> Vec<&str> {
            let width = 8.min(secret.len());
            (0..=secret.len() - width).map(|i| &secret[i..i + width]).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]
            #[test]
            fn no_planted_secret_survives(
                (secret, line) in planted(),
                before in noise(),
                after in noise(),
                how in any::<u8>(),
                cut in any::<prop::sample::Index>(),
            ) {
                let redactor = shared();
                let text = wrapped(&format!("{before} {line} {after}"), how);
                let limit = cut.index(text.chars().count() + 1);
                for out in [redactor.redact(&text), redactor.redact_bounded(&text, limit)] {
                    for window in windows(&secret) {
                        prop_assert!(!out.contains(window), "{window:?} of {secret:?} survives in {out:?} (from {text:?})");
                    }
                }
            }

            #[test]
            fn known_secrets_go_in_any_form(secret in "[ -~]{8,40}", before in noise(), how in any::<u8>()) {
                prop_assume!(secret.trim().len() >= 8);
                let redactor = shared();
                redactor.learn([&secret]);
                let text = wrapped(&format!("{before}{secret}{before}"), how);
                let out = redactor.redact(&text);
                prop_assert!(!out.contains(&secret), "{secret:?} survives in {out:?}");
            }
        }
    }
}
