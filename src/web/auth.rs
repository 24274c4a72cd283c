//! Who may read the pages: HTTP basic authentication against `web.basic_auth_users` (user → bcrypt hash, as
//! Prometheus' web config takes it), on every path but `/healthz` and `/readyz`. A bcrypt check costs about
//! a tenth of a second of CPU: at most [`VERIFYING_AT_ONCE`] run at once, each on a thread of its own (never
//! on the blocking pool that incident and outbox writes use), and a successful one is remembered (as a
//! salted digest, never the password) for a few minutes so a page load does not pay it per request. Unknown
//! users cost the same check as known ones (every hash has one cost: validation sees to it). Attempts are
//! counted per client before they are checked (a success gives its count back), so parallel guesses cannot
//! race past the limit: past it a client gets 429 until its window ends. The client is the peer, or behind
//! a proxy `web.trusted_proxies` lists, the address it forwarded. Every answer carries security headers.

use crate::sync::lock;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How long a verified user and password are remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Failed attempts a client may make per window before it is refused without a check.
const FAILURES_ALLOWED: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Bounds on what is remembered, so no client can grow it without end.
const REMEMBERED_MAX: usize = 10_000;
/// bcrypt verifications running at once, over every client.
pub const VERIFYING_AT_ONCE: usize = 2;

/// Paths that are never authenticated (the kubelet's probes).
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

pub struct Access {
    users: BTreeMap<String, String>,
    /// Proxies whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Checked against when the user is unknown (at the users' cost), so an unknown user takes as long as a
    /// known one.
    dummy_hash: String,
    salt: [u8; 16],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Attempts (counted before they are checked) per client, and when its window began.
    attempts: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    verifying: Semaphore,
    /// The most verifications seen running at once (tests read it).
    peak_verifying: std::sync::atomic::AtomicUsize,
}

/// The user a request authenticated as (a request extension), when the pages need a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub String);

/// What a request's credentials got it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As this user.
    Allowed(String),
    Denied,
    /// Too many failed attempts from this client lately.
    Throttled,
}

impl Access {
    /// Anyone may read, when `users` is empty.
    pub fn new(users: BTreeMap<String, String>, trusted_proxies: Vec<ipnet::IpNet>) -> Self {
        let salt = uuid::Uuid::new_v4().into_bytes();
        let cost = users.values().filter_map(|h| h.get(4..6)?.parse::<u32>().ok()).max().unwrap_or(4);
        let dummy_hash = bcrypt::hash(uuid::Uuid::new_v4().to_string(), cost).unwrap_or_default();
        Access {
            users,
            trusted_proxies,
            dummy_hash,
            salt,
            verified: Mutex::default(),
            attempts: Mutex::default(),
            verifying: Semaphore::new(VERIFYING_AT_ONCE),
            peak_verifying: Default::default(),
        }
    }

    /// The most bcrypt verifications that ran at once so far.
    pub fn peak_verifying(&self) -> usize {
        self.peak_verifying.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Who the client is: the peer, or the address a trusted proxy forwarded (the last one in
    /// `X-Forwarded-For` that no trusted proxy added).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<IpAddr> = forwarded.flat_map(|v| v.split(',')).filter_map(|a| a.trim().parse().ok()).collect();
        hops.into_iter().rev().find(|ip| !trusted(ip)).unwrap_or(peer)
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

    /// Checks `authorization` (a `Basic` header) from `client`; only when [`Access::required`].
    pub async fn check(self: &Arc<Self>, authorization: Option<&HeaderValue>, client: IpAddr) -> Verdict {
        let now = Instant::now();
        // No credentials is how every browser asks first: not an attempt, so not counted.
        let Some(authorization) = authorization else {
            return if self.throttled(client, now) { Verdict::Throttled } else { Verdict::Denied };
        };
        if !self.attempt(client, now) {
            return Verdict::Throttled;
        }
        let Some((user, password)) = basic_credentials(authorization) else { return Verdict::Denied };
        let digest = self.digest(&user, &password);
        let remembered = lock(&self.verified).get(&digest).is_some_and(|at| now.duration_since(*at) < REMEMBER);
        if !remembered && !self.verify(&user, password).await {
            return Verdict::Denied;
        }
        self.succeeded(client);
        let mut verified = lock(&self.verified);
        if verified.len() >= REMEMBERED_MAX {
            verified.retain(|_, at| now.duration_since(*at) < REMEMBER);
        }
        verified.insert(digest, now);
        Verdict::Allowed(user)
    }

    /// bcrypt, on a thread of its own, at most [`VERIFYING_AT_ONCE`] at once.
    async fn verify(&self, user: &str, password: String) -> bool {
        let known = self.users.get(user);
        let hash = known.unwrap_or(&self.dummy_hash).clone();
        let Ok(_permit) = self.verifying.acquire().await else { return false };
        let running = VERIFYING_AT_ONCE - self.verifying.available_permits();
        self.peak_verifying.fetch_max(running, std::sync::atomic::Ordering::Relaxed);
        let (send, receive) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name("bcrypt".into()).spawn(move || {
            let _ = send.send(bcrypt::verify(password, &hash).unwrap_or(false));
        });
        spawned.is_ok() && receive.await.unwrap_or(false) && known.is_some()
    }

    fn throttled(&self, client: IpAddr, now: Instant) -> bool {
        lock(&self.attempts)
            .get(&client)
            .is_some_and(|(count, since)| *count >= FAILURES_ALLOWED && now.duration_since(*since) < FAILURE_WINDOW)
    }

    /// Counts an attempt of `client` before it is checked; `false` when the client has no attempt left.
    fn attempt(&self, client: IpAddr, now: Instant) -> bool {
        let mut attempts = lock(&self.attempts);
        if attempts.len() >= REMEMBERED_MAX {
            attempts.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        }
        let entry = attempts.entry(client).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        if entry.0 >= FAILURES_ALLOWED {
            return false;
        }
        entry.0 += 1;
        true
    }

    /// A success gives its attempt back: only failures use the allowance up.
    fn succeeded(&self, client: IpAddr) {
        if let Some(entry) = lock(&self.attempts).get_mut(&client) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
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
    mut request: Request,
    next: Next,
) -> Response {
    if !access.required() || OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let client = access.client(client.ip(), request.headers());
    match access.check(request.headers().get(header::AUTHORIZATION), client).await {
        Verdict::Allowed(user) => {
            request.extensions_mut().insert(Authenticated(user));
            next.run(request).await
        }
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
        Arc::new(Access::new(BTreeMap::from([("oncall".to_string(), hash)]), vec!["10.9.0.0/16".parse().unwrap()]))
    }

    #[tokio::test]
    async fn only_the_right_user_and_password_get_in_and_a_check_is_remembered() {
        let access = access();
        let client: IpAddr = [10, 0, 0, 1].into();
        let oncall = Verdict::Allowed("oncall".into());
        assert_eq!(access.check(Some(&basic("oncall", "correct horse")), client).await, oncall);
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
        let oncall = Verdict::Allowed("oncall".into());
        assert_eq!(access.check(Some(&right), colleague).await, oncall, "other clients are not affected");
        tokio::time::advance(FAILURE_WINDOW).await;
        assert_eq!(access.check(Some(&right), attacker).await, oncall, "the window ended");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_guesses_cannot_race_past_the_limit_and_few_verifications_run_at_once() {
        let access = access();
        let attacker: IpAddr = [10, 0, 0, 9].into();
        let guesses = (0..200).map(|i| {
            let access = access.clone();
            tokio::spawn(async move { access.check(Some(&basic("oncall", &format!("guess {i}"))), attacker).await })
        });
        let verdicts = futures_util::future::join_all(guesses).await;
        let denied = verdicts.iter().filter(|v| matches!(v, Ok(Verdict::Denied))).count();
        assert_eq!(denied, FAILURES_ALLOWED as usize, "only the allowance was checked; the rest throttled");
        assert!(access.peak_verifying() <= VERIFYING_AT_ONCE, "{} at once", access.peak_verifying());
    }

    #[test]
    fn the_client_behind_a_trusted_proxy_is_the_address_it_forwarded() {
        let access = access();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, 10.9.1.1"));
        let (proxy, stranger): (IpAddr, IpAddr) = ([10, 9, 0, 1].into(), [192, 0, 2, 1].into());
        assert_eq!(access.client(proxy, &headers), IpAddr::from([203, 0, 113, 7]), "past every trusted hop");
        assert_eq!(access.client(stranger, &headers), stranger, "an untrusted peer's header says nothing");
        assert_eq!(access.client(proxy, &HeaderMap::new()), proxy, "no header: the proxy itself");
    }
}
