//! Redaction: every text hubwatch takes from a hub or the cluster (probe failure messages, pod and event
//! messages, logs, `describe` output, Deployment annotations) and every line it logs passes through one
//! [`Redactor`] before it is stored, shown, sent or written. It replaces
//! - the secrets hubwatch itself holds (hub tokens, probe passwords, the routing key, the PagerDuty REST token,
//!   tokens found by discovery), verbatim, JSON-escaped, percent-encoded, and in base64 (standard and
//!   URL-safe, at any alignment: inside `Basic …` or a Secret's data);
//! - credentials recognisable by their shape: JupyterHub tokens (runs of 32 or more hex digits, also inside
//!   `/authorizations/token/...` paths), JWTs, GitHub, GitLab, Slack, Google, Hugging Face, OpenAI and Stripe
//!   tokens, Slack and Discord webhook URLs, AWS access key ids, private key blocks, and base64 blobs whose
//!   decoded text holds a secret (a service account's JSON key);
//! - credentials recognisable by what names them: `Authorization` headers, `Basic` and bearer credentials,
//!   secret query parameters (`token=`, `sig=`, `key=`, `X-Amz-Signature=`, OAuth `code=`/`state=`, …), URL
//!   user-info (`postgresql://u:pw@`), JupyterHub cookies, `.dockerconfigjson` and docker `auth`, and the value
//!   of any key one of whose words is a secret word ([`secret_key`]: `DB_PASSWORD_PROD`, `routing_key`,
//!   `AccountKey`, `JUPYTERHUB_CRYPT_KEY`, `pwd`, …) in JSON (also JSON inside a JSON string, and
//!   HTML-escaped), YAML (block scalars too) and the environment — to the closing quote, else to the end of
//!   the line.
//!
//! Redact before cutting a text short: a cut can separate a secret from the key that identifies it.
//! Hex runs are kept where they are never secrets and a responder needs them: image digests (`sha256:`) and
//! container ids (`containerd://`). Dask Gateway's cluster names are 32 hex digits too, like a token: they
//! are redacted (the cluster's user and state still say which one it is).

use base64::Engine;
use regex::Regex;
use std::sync::RwLock;

pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not replaced verbatim: replacing them would mangle ordinary words and
/// reveal more than it hides (they are still caught by shape and by name).
const SHORTEST_KNOWN: usize = 8;
/// A hex run this long is taken for a token (JupyterHub's are 32, `openssl rand -hex 32` gives 64).
const HEX_TOKEN: usize = 32;
/// A base64 run this long is decoded and redacted if what it holds has a secret.
const BASE64_BLOB: usize = 48;

/// A word that makes a key's value a secret, wherever it stands in the key (`DB_PASSWORD_PROD`).
const SECRET_WORDS: &[&str] = &[
    "token",
    "tokens",
    "secret",
    "secrets",
    "password",
    "passwords",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "credential",
    "credentials",
    "creds",
    "auth",
    "sig",
    "signature",
    "cookie",
    "cookies",
    "session",
    "apikey",
    "privatekey",
    "accesskey",
    "secretkey",
    "connectionstring",
];
/// A last word that makes the value describe a secret rather than be one (`token_type`, `secret_name`,
/// `password_file`).
const DESCRIBING: &[&str] = &[
    "name",
    "names",
    "file",
    "path",
    "dir",
    "type",
    "kind",
    "id",
    "ids",
    "ref",
    "rule",
    "count",
    "total",
    "length",
    "env",
    "fingerprint",
    "expires",
    "expiry",
    "expiration",
    "at",
    "since",
    "url",
    "uri",
    "endpoint",
    "source",
    "hint",
    "timeout",
    "ttl",
    "age",
    "format",
    "mode",
    "enabled",
    "required",
];
/// Keys with "key" among several words whose value is no secret (an incident's key is how responders
/// name it).
const NOT_SECRET_KEYS: &[&str] = &[
    "dedup_key",
    "incident_key",
    "public_key",
    "sort_key",
    "partition_key",
    "primary_key",
    "foreign_key",
    "cache_key",
];

/// Patterns and what replaces their match; applied in order.
const RULES: &[(&str, Replace)] = &[
    // Private key blocks, also when cut before their end.
    (
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\z)",
        Replace::With("[redacted private key]"),
    ),
    // URL user-info: scheme://user:password@host.
    (r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@\x22'<>\\]*:)[^\s@/\x22'<>\\]+@", Replace::With("${1}[redacted]@")),
    // Slack and Discord webhooks, Slack tokens.
    (
        r"(?i)\b(https?://(?:hooks\.slack(?:-gov)?\.com/|(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/))[^\s\x22'<>\\]+",
        Replace::With("${1}[redacted]"),
    ),
    (r"\bxox[abposre]-[A-Za-z0-9.-]{10,}|\bxapp-[A-Za-z0-9-]{10,}", Replace::With(REDACTED)),
    // GitHub (classic and fine-grained), GitLab, Hugging Face, Google API keys and OAuth access tokens,
    // OpenAI and Stripe keys.
    (
        r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}|AIza[0-9A-Za-z_-]{35}|ya29\.[0-9A-Za-z_-]{20,}|sk-(?:proj-)?[A-Za-z0-9_-]{20,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,})",
        Replace::With(REDACTED),
    ),
    // JWTs: base64url header and payload (both JSON objects, so both start with eyJ) and signature.
    (r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", Replace::With(REDACTED)),
    // AWS access key ids.
    (r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}\b", Replace::With(REDACTED)),
    // Authorization / Proxy-Authorization headers, whatever the scheme.
    (
        r"(?i)\b((?:proxy-)?authorization\\*[\x22']?\s*[:=]\s*\\*[\x22']?)(?:(?:bearer|token|basic|jupyterhub)\s+)?[^\s\x22',;\\]+",
        Replace::With("${1}[redacted]"),
    ),
    // Bearer and Basic credentials anywhere.
    (r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}", Replace::With("${1}[redacted]")),
    // Secret query parameters and `token=` in logs; OAuth's code= and state= in query strings.
    (
        r"(?i)(\b(?:access_|api_|auth_|refresh_|id_|security_)?token|\b_xsrf|[?&;](?:code|state|sig|signature|key|api_?key|password|pwd|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|client_secret))=[^\s&\x22'<>;,\\]+",
        Replace::With("${1}=[redacted]"),
    ),
    // JupyterHub's cookies: jupyterhub-hub-login, jupyterhub-session-id, jupyterhub-user-NAME.
    (r"(?i)\b(jupyterhub-[\w-]+=)[^\s;,\x22'\\]+", Replace::With("${1}[redacted]")),
    // A docker config as a value (a Secret's .dockerconfigjson / .dockercfg, plain or base64).
    (
        r#"(?i)(\.docker(?:configjson|cfg)\\*[\x22']?\s*[:=]\s*)(\\+"[^"\n]*?\\+"|"(?:[^"\\\n]|\\.)*"|\S+)"#,
        Replace::ValueKeepingQuotes,
    ),
    // Set-Cookie / Cookie header values.
    (r"(?i)\b((?:set-)?cookie[\x22']?\s*[:=]\s*)[^\n]+", Replace::With("${1}[redacted]")),
    // Any key and its value, in JSON (also JSON inside a JSON string, or HTML-escaped), YAML (block scalars
    // too) and the environment; the value goes when the key is a secret's (`secret_key`).
    (
        r#"((?:&quot;|&#34;|\b)([A-Za-z_][A-Za-z0-9_.-]*)(?:\\*[\x22']|&quot;|&#34;)?[ \t]*[:=][ \t]*)(\\+"[^"\n]*?\\+"|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|(?:&quot;|&#34;).*?(?:&quot;|&#34;)|[|>][-+]?[ \t]*\n(?:(?:\[[^\]\n]*\] )?[ \t]+[^\n]*(?:\n|\z))+|[^\n]*)"#,
        Replace::SecretKeysValue,
    ),
];

/// What replaces a rule's match.
#[derive(Clone, Copy)]
enum Replace {
    /// This text (`${1}` is the first group).
    With(&'static str),
    /// The first group, then the value (the second group) as `[redacted]` inside the value's own quotes, so
    /// that JSON stays JSON: `"token": "x"` → `"token": "[redacted]"`, `\"token\": \"x\"` likewise.
    ValueKeepingQuotes,
    /// As `ValueKeepingQuotes` (the value is the third group), when the key (the second) is a secret's.
    SecretKeysValue,
}

/// Replaces secrets in text; shared (behind an `Arc`) by everything that takes text in or writes it out.
pub struct Redactor {
    rules: Vec<(Regex, Replace)>,
    hex: Regex,
    base64: Regex,
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
        let base64 = Regex::new(&format!("[A-Za-z0-9+/_-]{{{BASE64_BLOB},}}={{0,2}}")).expect("a valid pattern");
        Redactor { rules, hex, base64, known: RwLock::new(Vec::new()) }
    }

    pub fn knowing<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let redactor = Redactor::new();
        redactor.learn(secrets);
        redactor
    }

    /// Adds secrets to replace verbatim wherever they appear, with their JSON-escaped and percent-encoded
    /// forms (a password with a quote or a space is written that way in logs and URLs) and base64 ones.
    pub fn learn<S: AsRef<str>>(&self, secrets: impl IntoIterator<Item = S>) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() < SHORTEST_KNOWN {
                continue;
            }
            let escaped = serde_json::to_string(secret).unwrap_or_default();
            let mut forms =
                vec![secret.to_string(), escaped[1..escaped.len() - 1].to_string(), percent_encoded(secret)];
            forms.extend(base64_forms(secret.as_bytes()));
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
        let out = self.redact_hex_runs(&self.apply_rules(out));
        self.redact_base64_blobs(&out)
    }

    fn apply_rules(&self, mut text: String) -> String {
        for (pattern, replace) in &self.rules {
            if !pattern.is_match(&text) {
                continue;
            }
            text = match replace {
                Replace::With(with) => pattern.replace_all(&text, *with).into_owned(),
                Replace::ValueKeepingQuotes => pattern
                    .replace_all(&text, |found: &regex::Captures| keeping_quotes(&found[1], &found[2]))
                    .into_owned(),
                Replace::SecretKeysValue => secret_keys_values(pattern, &text),
            };
        }
        text
    }

    /// Base64 runs long enough to hold a document (a service account's JSON key, a kubeconfig), decoded:
    /// a run whose text holds a secret by shape or by name is replaced whole.
    fn redact_base64_blobs(&self, text: &str) -> String {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        self.base64
            .replace_all(text, |found: &regex::Captures| {
                let run = &found[0];
                let bytes = [&STANDARD, &URL_SAFE].iter().find_map(|engine| engine.decode(run).ok());
                match bytes.and_then(|b| String::from_utf8(b).ok()) {
                    Some(inner) if self.redact_hex_runs(&self.apply_rules(inner.clone())) != inner => {
                        REDACTED.to_string()
                    }
                    _ => run.to_string(),
                }
            })
            .into_owned()
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
        crate::domain::wording::truncate(&self.redact(text), limit)
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

/// Panics report through the redactor: the default hook would print a panic's message (which may quote a
/// hub's or the cluster's text) to stderr as it is.
pub fn install_panic_hook(redactor: std::sync::Arc<Redactor>) {
    std::panic::set_hook(Box::new(move |info| eprintln!("{}", panic_report(&redactor, info))));
}

/// What [`install_panic_hook`] prints for a panic: where, and the message, redacted.
pub fn panic_report(redactor: &Redactor, info: &std::panic::PanicHookInfo<'_>) -> String {
    let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
    redactor.redact(&format!("thread '{thread}' {info}"))
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

/// The value as `keeping_quotes`: `[redacted]` inside the value's own quotes, so that JSON stays JSON.
fn keeping_quotes(key: &str, value: &str) -> String {
    let quotes = &value[..value.len() - value.trim_start_matches(['\\', '"', '\'']).len()];
    let quotes = if value.starts_with("&quot;") {
        "&quot;"
    } else if value.starts_with("&#34;") {
        "&#34;"
    } else {
        quotes
    };
    format!("{key}{quotes}{REDACTED}{quotes}")
}

/// Every `key: value` of `text` (the [`RULES`]' last pattern) whose key is a secret's, with its value
/// redacted. A key that is not a secret's gives its value back to the search: it may hold `token=…`.
fn secret_keys_values(pattern: &Regex, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(found) = pattern.captures_at(text, from) {
        let (key, value) = (found.get(1).expect("a key"), found.get(3).expect("a value"));
        // Redacted already by a rule that knew where the value ends (`token=[redacted] (@10.0.0.1) 1ms`),
        // unless the value goes on right after it (`[redacted]+V1VE9D5K`).
        let bare = value.as_str().trim_start_matches(['\\', '"', '\'']);
        let already = bare
            .strip_prefix(REDACTED)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || "+/=-_.%".contains(c)));
        if secret_key(&found[2]) && !value.as_str().trim().is_empty() && !already {
            out.push_str(&text[copied..key.start()]);
            let block = value.as_str().starts_with(['|', '>']);
            out.push_str(&if block {
                format!("{}{REDACTED}\n", key.as_str())
            } else {
                keeping_quotes(key.as_str(), value.as_str())
            });
            // A value to the end of the line that ends in a block scalar's `|` (another key's, swallowed
            // with it): the indented lines after it go too.
            let mut end = value.end();
            if !block && value.as_str().trim_end().trim_end_matches(['-', '+']).ends_with(['|', '>']) {
                end += indented_lines(&text[end..]);
            }
            copied = end;
            from = end;
        } else {
            from = key.end();
        }
        if from >= text.len() {
            break;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The length of the indented lines `text` starts with (after the newline that ends a line), also when
/// each has kubectl's `--prefix` (`[pod/NAME/CONTAINER] `) before its indentation.
fn indented_lines(text: &str) -> usize {
    let mut length = 0;
    while let Some(rest) = text[length..].strip_prefix('\n') {
        let content = match rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            Some((prefix, after)) if !prefix.contains('\n') => after,
            _ => rest,
        };
        if !content.starts_with([' ', '\t']) {
            break;
        }
        length += 1 + rest.find('\n').unwrap_or(rest.len());
    }
    length
}

/// Whether a key names a secret: one of its words (split at `_`, `-`, `.`, digits and camel case) is a
/// secret word, or it is a compound of "key" (`routing_key`, `AccountKey`) other than the few that name
/// no secret; unless its last word says it describes one (`token_type`, `secret_name`).
pub fn secret_key(key: &str) -> bool {
    let words = words(key);
    if words.len() > 1 && words.last().is_some_and(|last| DESCRIBING.contains(&last.as_str())) {
        return false;
    }
    if words.iter().any(|w| SECRET_WORDS.contains(&w.as_str())) {
        return true;
    }
    words.len() > 1 && words.iter().any(|w| w == "key") && !NOT_SECRET_KEYS.contains(&words.join("_").as_str())
}

/// `SharedAccessKey` → shared, access, key; `DB_PASSWORD_PROD` → db, password, prod; `HUB_TOKEN_1` → hub,
/// token, 1.
fn words(key: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let chars: Vec<char> = key.chars().collect();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let previous = i.checked_sub(1).map(|p| chars[p]);
        let boundary = match previous {
            Some(p) if c.is_uppercase() => p.is_lowercase() || p.is_ascii_digit() || (p.is_uppercase() && next_lower),
            Some(p) => c.is_ascii_digit() != p.is_ascii_digit() && c.is_alphanumeric() && p.is_alphanumeric(),
            None => false,
        };
        if !c.is_alphanumeric() || boundary {
            words.extend((!word.is_empty()).then(|| std::mem::take(&mut word).to_lowercase()));
        }
        if c.is_alphanumeric() {
            word.push(c);
        }
    }
    words.extend((!word.is_empty()).then(|| word.to_lowercase()));
    words
}

/// The base64 text only `secret` decides, standard and URL-safe, at each of the three alignments it may have
/// inside a longer encoding (`Basic base64(user:password)`, a Secret's data).
fn base64_forms(secret: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = Vec::new();
    for offset in 0..3 {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret);
        // Characters that also hold bits of the bytes before or after are left out.
        let (first, last) = ((offset * 8).div_ceil(6), (bytes.len() * 8) / 6);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&bytes);
            if let Some(core) = encoded.get(first..last).filter(|c| c.len() >= SHORTEST_KNOWN) {
                forms.push(core.to_string());
            }
        }
    }
    forms
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

    /// The shapes an operator found leaking, each as a hub's log or a Secret would hold it.
    #[test]
    fn keys_by_their_words_whole_values_blocks_parameters_prefixes_and_base64() {
        let redactor = Redactor::knowing(["correct-horse-battery", "probe-password-1234"]);
        let key = "53cr3tV4lu3Xy9Qw";
        let cases = [
            (format!("HUB_TOKEN_1={key}"), key.to_string()),
            (format!("DB_PASSWORD_PROD={key}"), key.into()),
            (format!("GCP_CREDENTIALS_B64={key}"), key.into()),
            (format!("routing_key: {key}"), key.into()),
            (format!("\"service_key\": \"{key}\""), key.into()),
            (format!("integration_key={key}"), key.into()),
            (
                format!("DefaultEndpointsProtocol=https;AccountName=x;AccountKey={key}==;EndpointSuffix=core"),
                key.into(),
            ),
            (format!("SharedAccessKey={key}"), key.into()),
            (format!("JUPYTERHUB_CRYPT_KEY={key}"), key.into()),
            (format!("pass: {key}"), key.into()),
            (format!("pwd={key}"), key.into()),
            (format!("passphrase = {key}"), key.into()),
            ("password: correct horse battery".to_string(), "horse battery".into()),
            (format!("token: |\n    {key}\n    more{key}\nnext: line"), key.into()),
            (format!("https://acct.blob.core.windows.net/c/b?sv=2022&sig={key}%3D&se=2026"), key.into()),
            ("https://maps.googleapis.com/x?key=AIzaSyA1234567890abcdefghijklmnopqrstuv".into(), "AIzaSyA12345".into()),
            (format!("https://s3.amazonaws.com/b/k?X-Amz-Signature={key}&X-Amz-Date=1"), key.into()),
            ("using AIzaSyA1234567890abcdefghijklmnopqrstuv".into(), "AIzaSyA12345".into()),
            ("auth ya29.a0AfH6SMBx1234567890abcdefghijk".into(), "a0AfH6SMBx12".into()),
            ("HF hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345".into(), "AbCdEfGhIjKlMn".into()),
            ("git clone https://gitlab.com/o/r with glpat-AbCdEfGhIjKlMnOpQrSt".into(), "AbCdEfGhIjKlMn".into()),
            ("OPENAI sk-proj-AbCdEfGhIjKlMnOpQrStUvWx".into(), "AbCdEfGhIjKlMn".into()),
            ("stripe sk_live_AbCdEfGhIjKlMnOpQrSt".into(), "AbCdEfGhIjKlMn".into()),
            ("slack xapp-1-A0123-456-abcdef0123 and xoxe-1-AbCdEfGhIjKl".into(), "abcdef0123".into()),
            ("https://discord.com/api/webhooks/123456789/AbCdEfGhIjKlMnOp".into(), "AbCdEfGhIjKlMnOp".into()),
            ("Proxy header: Basic dXNlcjpwcm9iZS1wYXNzd29yZC0xMjM0".into(), "dXNlcjpwcm9iZS1wYXNzd29yZC0xMjM0".into()),
            (format!("&quot;token&quot;: &quot;{key}&quot;"), key.into()),
            ("pw in data: Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5".into(), "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5".into()),
            ("xx: eHhjb3JyZWN0LWhvcnNlLWJhdHRlcnk".into(), "LWhvcnNlLWJhdHRl".into()),
        ];
        for (line, secret) in cases {
            let out = redactor.redact(&line);
            assert!(!out.contains(&secret) && out.contains("redacted"), "{line:?} became {out:?}");
        }
        // A service account's JSON key, base64 as a Secret's data holds it.
        let key_json = r#"{"type": "service_account", "private_key_id": "abc", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "client_email": "x@y.iam.gserviceaccount.com"}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(key_json);
        let out = redactor.redact(&format!("key.json: {encoded}"));
        assert!(!out.contains(&encoded[..40]), "{out}");
    }

    #[test]
    fn keys_that_only_describe_a_secret_and_incident_keys_stay() {
        let redactor = Redactor::new();
        let kept = [
            "dedup_key: temple-hub_access-1796533412",
            "key=temple-hub_access-1796533412 hub=temple",
            "SecretName:  hub-tls",
            "token_type: bearer",
            "routing_key_rule=hubs[temple].pagerduty.routing_key",
            "key_file: /etc/hubwatch-tls/tls.key",
            "token_expires_at: 2026-12-06T10:00:00Z",
            "keyboard: us",
        ];
        for line in kept {
            assert_eq!(redactor.redact(line), line);
        }
        assert_eq!(words("SharedAccessKey"), ["shared", "access", "key"]);
        assert_eq!(words("AWSSecretKey"), ["aws", "secret", "key"]);
        assert_eq!(words("HUB_TOKEN_1"), ["hub", "token", "1"]);
        assert_eq!(words("apiToken"), ["api", "token"]);
    }

    #[test]
    fn a_panic_is_reported_redacted() {
        let redactor = std::sync::Arc::new(redactor());
        let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (seen, for_hook) = (reports.clone(), redactor.clone());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| seen.lock().unwrap().push(panic_report(&for_hook, info))));
        let result = std::panic::catch_unwind(|| panic!("the hub said password: {CANARY} and known-secret-value"));
        std::panic::set_hook(previous);
        assert!(result.is_err());
        let reports = reports.lock().unwrap();
        let report = reports.iter().find(|r| r.contains("the hub said")).expect("the panic was reported");
        assert!(!report.contains(CANARY) && !report.contains("known-secret-value"), "{report}");
        assert!(report.contains("src/redact.rs"), "where it panicked: {report}");
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
                        Just(format!("HUB_TOKEN_1={s}")),
                        Just(format!("DB_PASSWORD_PROD={s}")),
                        Just(format!("routing_key: {s}")),
                        Just(format!("AccountKey={s};EndpointSuffix=core.windows.net")),
                        Just(format!("password: correct horse {s}")),
                        Just(format!("token: |\n  {s}\n")),
                        Just(format!("?sv=1&sig={s}&se=2")),
                        Just(format!("&quot;token&quot;: &quot;{s}&quot;")),
                        Just(format!("glpat-{s}")),
                        Just(format!("hf_{s}{s}")),
                        Just(format!("Basic {s}")),
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
                // Also in base64, at whatever alignment it has inside a longer encoding.
                for prefix in ["", "u:", "ab:"] {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{secret}"));
                    let out = redactor.redact(&format!("{before} x-data {encoded} {before}"));
                    let middle = &encoded[4..encoded.len() - 4];
                    prop_assert!(!out.contains(middle), "{secret:?} in base64 {encoded:?} survives in {out:?}");
                }
            }
        }
    }
}
