//! Who may read the pages: HTTP basic authentication against `web.basic_auth_users` (user → bcrypt hash, as
//! Prometheus' web config takes it), on every path but `/healthz` and `/readyz`. A bcrypt check costs about
//! a tenth of a second of CPU, so it runs off the runtime, and a successful one is remembered (as a salted
//! digest, never the password) for a few minutes so a page load does not pay it per request. Unknown users
//! cost the same check as known ones. Failed attempts are counted per client address: past a limit a
//! client gets 429 until its window ends. Every answer carries security headers.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a verified user and password are remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Failed attempts a client may make per window before it is refused without a check.
const FAILURES_ALLOWED: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Bounds on what is remembered, so no client can grow it without end.
const REMEMBERED_MAX: usize = 10_000;

/// Paths that are never authenticated (the kubelet's probes).
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

pub struct Access {
    users: BTreeMap<String, String>,
    /// Checked against when the user is unknown (at the users' cost), so an unknown user takes as long as a
    /// known one.
    dummy_hash: String,
    salt: [u8; 16],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// What a request's credentials got it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Too many failed attempts from this client lately.
    Throttled,
}

impl Access {
    /// Anyone may read, when `users` is empty.
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let salt = uuid::Uuid::new_v4().into_bytes();
        let cost = users.values().filter_map(|h| h.get(4..6)?.parse::<u32>().ok()).max().unwrap_or(4);
        let dummy_hash = bcrypt::hash(uuid::Uuid::new_v4().to_string(), cost).unwrap_or_default();
        Access { users, dummy_hash, salt, verified: Mutex::default(), failures: Mutex::default() }
    }

    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [&self.salt[..], user.as_bytes(), b"\0", password.as_bytes()] {
            context.update(part);
        }
        context.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    /// Checks `authorization` (a `Basic` header) from `client`.
    pub async fn check(self: &Arc<Self>, authorization: Option<&HeaderValue>, client: IpAddr) -> Verdict {
        let now = Instant::now();
        if self.throttled(client, now) {
            return Verdict::Throttled;
        }
        // No credentials is how every browser asks first: not an attempt, so not counted.
        let Some(authorization) = authorization else { return Verdict::Denied };
        let Some((user, password)) = basic_credentials(authorization) else {
            return self.failed(client, now);
        };
        let digest = self.digest(&user, &password);
        if lock(&self.verified).get(&digest).is_some_and(|at| now.duration_since(*at) < REMEMBER) {
            return Verdict::Allowed;
        }
        let hash = self.users.get(&user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !(matches && known) {
            return self.failed(client, now);
        }
        let mut verified = lock(&self.verified);
        if verified.len() >= REMEMBERED_MAX {
            verified.retain(|_, at| now.duration_since(*at) < REMEMBER);
        }
        verified.insert(digest, now);
        Verdict::Allowed
    }

    fn throttled(&self, client: IpAddr, now: Instant) -> bool {
        lock(&self.failures)
            .get(&client)
            .is_some_and(|(count, since)| *count >= FAILURES_ALLOWED && now.duration_since(*since) < FAILURE_WINDOW)
    }

    fn failed(&self, client: IpAddr, now: Instant) -> Verdict {
        let mut failures = lock(&self.failures);
        if failures.len() >= REMEMBERED_MAX {
            failures.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        }
        let entry = failures.entry(client).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        Verdict::Denied
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Basic base64(user:password)`.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The middleware: every path but [`OPEN_PATHS`] needs credentials when users are configured.
pub async fn require(
    State(access): State<Arc<Access>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !access.required() || OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match access.check(request.headers().get(header::AUTHORIZATION), client.ip()).await {
        Verdict::Allowed => next.run(request).await,
        Verdict::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"hubwatch\"")],
            "authentication required\n",
        )
            .into_response(),
        Verdict::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, FAILURE_WINDOW.as_secs().to_string())],
            "too many failed attempts; try again later\n",
        )
            .into_response(),
    }
}

/// Security headers on every answer: no script at all, no framing, no sniffing, no referrer.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    add_security_headers(response.headers_mut());
    response
}

fn add_security_headers(headers: &mut HeaderMap) {
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn access() -> Arc<Access> {
        let hash = bcrypt::hash("correct horse", 4).unwrap();
        Arc::new(Access::new(BTreeMap::from([("oncall".to_string(), hash)])))
    }

    #[tokio::test]
    async fn only_the_right_user_and_password_get_in_and_a_check_is_remembered() {
        let access = access();
        let client: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(access.check(Some(&basic("oncall", "correct horse")), client).await, Verdict::Allowed);
        assert_eq!(access.check(Some(&basic("oncall", "wrong")), client).await, Verdict::Denied);
        assert_eq!(access.check(Some(&basic("nobody", "correct horse")), client).await, Verdict::Denied);
        assert_eq!(access.check(None, client).await, Verdict::Denied);
        assert_eq!(access.check(Some(&HeaderValue::from_static("Bearer x")), client).await, Verdict::Denied);
        assert_eq!(lock(&access.verified).len(), 1, "remembered as a digest");
        let remembered = lock(&access.verified).keys().next().copied().unwrap();
        assert_ne!(&remembered[..], b"correct horse", "never the password itself");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_are_throttled_per_client_for_a_window() {
        let access = access();
        let (attacker, colleague): (IpAddr, IpAddr) = ([10, 0, 0, 9].into(), [10, 0, 0, 2].into());
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(access.check(Some(&basic("oncall", "guess")), attacker).await, Verdict::Denied);
        }
        let right = basic("oncall", "correct horse");
        assert_eq!(access.check(Some(&right), attacker).await, Verdict::Throttled, "even with the right password");
        assert_eq!(access.check(Some(&right), colleague).await, Verdict::Allowed, "other clients are not affected");
        tokio::time::advance(FAILURE_WINDOW).await;
        assert_eq!(access.check(Some(&right), attacker).await, Verdict::Allowed, "the window ended");
    }
}
