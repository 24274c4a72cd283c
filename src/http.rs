//! The HTTP client of every outgoing request (probes, PagerDuty, webhooks, the identity provider): every
//! request under a deadline, every body read with a size limit, errors scrubbed of anything that looks like
//! a token. What hubs' answers say is read in `probe::answers`.

use crate::domain::Secret;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
    USER_AGENT as USER_AGENT_HEADER,
};
use hyper::{Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};
use url::Url;

/// Largest response body read from a hub; JupyterHub's answers (and its login page) are a few KB. With
/// answers parsed only into the fields hubwatch reads (never into a JSON tree), a round holds at most about
/// twice this: 256 rounds at once stay inside 64 MiB however the hubs answer.
pub const BODY_LIMIT: usize = 128 * 1024;

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// `Authorization: token T`: the hub and single-user servers.
    Token(&'a Secret),
    /// `Authorization: jupyterhub T`: Dask Gateway behind a hub.
    Gateway(&'a Secret),
}

impl Auth<'_> {
    pub fn header(&self) -> Option<HeaderValue> {
        let value = match self {
            Auth::None => return None,
            Auth::Token(t) => format!("token {}", t.expose()),
            Auth::Gateway(t) => format!("jupyterhub {}", t.expose()),
        };
        let mut header = HeaderValue::from_str(&value).ok()?;
        header.set_sensitive(true);
        Some(header)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no answer before the deadline")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("response body larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// A response whose body has been read (within the limit).
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as `T`: only the fields `T` names are kept; whatever else a hub sends is skipped, never built
    /// into a JSON tree (whose size could be tens of times the body's).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!("HTTP {} with a body that is not JSON hubwatch understands ({e})", self.status.as_u16())
        })
    }
}

/// The connection pool of every request that is sent and read whole.
type Direct = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One HTTP client for all hubs and sinks; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    /// Every request goes to hyper's client directly, built by [`RequestBuilder`]: reqwest's layers around it
    /// (the URL parsed again, the redirect layer even with redirects off) were a sixth of hubwatch's CPU at
    /// thousands of hubs, and building through reqwest a twentieth (docs/benchmarks.md).
    direct: Direct,
    /// TLS as hyper's client has it (the system's trusted certificates), for the kernels' websockets: a hub
    /// whose certificate the system trusts is trusted for all of its probes.
    tls: Arc<rustls::ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot load the system's trusted certificates: {0}")]
    Roots(#[from] rustls::Error),
}

const USER_AGENT: &str = concat!("hubwatch/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_PER_HOST: usize = 4;

impl HttpClient {
    pub fn new() -> Result<Self, ClientError> {
        install_crypto_provider();
        use rustls_platform_verifier::BuilderVerifierExt;
        let tls = rustls::ClientConfig::builder().with_platform_verifier()?.with_no_client_auth();
        Ok(HttpClient { direct: direct(tls.clone()), tls: Arc::new(tls) })
    }

    /// A request to `target`, with the user agent and `Accept: */*` (which its headers may replace).
    pub fn request(&self, method: Method, target: impl Target) -> RequestBuilder {
        let request = target.uri().map(|uri| {
            let mut request = hyper::Request::new(Full::new(Bytes::new()));
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            let headers = request.headers_mut();
            headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            request
        });
        RequestBuilder { request }
    }

    pub fn get(&self, target: impl Target) -> RequestBuilder {
        self.request(Method::GET, target)
    }

    pub fn post(&self, target: impl Target) -> RequestBuilder {
        self.request(Method::POST, target)
    }

    pub fn put(&self, target: impl Target) -> RequestBuilder {
        self.request(Method::PUT, target)
    }

    /// The TLS settings for a connection made outside this client (a websocket).
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// A request with JSON `body` (if any) and `auth`, its body read up to [`BODY_LIMIT`] before `deadline`.
    pub async fn call(
        &self,
        method: Method,
        target: impl Target,
        auth: Auth<'_>,
        body: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> Result<Response, RequestError> {
        let mut request = self.request(method, target).auth(auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, deadline).await
    }

    /// Sends `request` (never redirected) and reads its answer's body up to [`BODY_LIMIT`], all before
    /// `deadline`.
    pub async fn send(&self, request: RequestBuilder, deadline: Instant) -> Result<Response, RequestError> {
        // One timer for the answer and its body (a timer costs about what parsing the answer does).
        let answered = async { self.answer(request).await?.rest(BODY_LIMIT).await };
        timeout_at(deadline, answered).await.map_err(|_| RequestError::Timeout)?
    }

    /// Sends `request` and returns as soon as the answer's head has come (before `deadline`), its body to be
    /// read as it streams in.
    pub async fn open(&self, request: RequestBuilder, deadline: Instant) -> Result<Streaming, RequestError> {
        timeout_at(deadline, self.answer(request)).await.map_err(|_| RequestError::Timeout)?
    }

    async fn answer(&self, request: RequestBuilder) -> Result<Streaming, RequestError> {
        let request = request.request.map_err(RequestError::Transport)?;
        let (head, body) = self.direct.request(request).await.map_err(from_hyper)?.into_parts();
        Ok(Streaming { status: head.status, headers: head.headers, body })
    }
}

/// An answer whose body is read as it comes (a server's progress, a build's events).
pub struct Streaming {
    pub status: StatusCode,
    headers: HeaderMap,
    body: hyper::body::Incoming,
}

impl Streaming {
    /// The body's next piece; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, RequestError> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| RequestError::Transport(scrub(&innermost(&e))))?;
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// The rest of the body, refusing more than `limit` bytes (a hostile or broken hub cannot grow memory),
    /// before `deadline`.
    pub async fn read(self, limit: usize, deadline: Instant) -> Result<Response, RequestError> {
        timeout_at(deadline, self.rest(limit)).await.map_err(|_| RequestError::Timeout)?
    }

    async fn rest(self, limit: usize) -> Result<Response, RequestError> {
        let declared = self.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(RequestError::TooLarge { limit });
        }
        let body =
            Limited::new(self.body, limit).collect().await.map_err(|e| match e.downcast_ref::<LengthLimitError>() {
                Some(_) => RequestError::TooLarge { limit },
                None => RequestError::Transport(scrub(&innermost(&*e))),
            })?;
        Ok(Response { status: self.status, headers: self.headers, body: body.to_bytes() })
    }
}

/// hyper's client: `tls`, HTTP/2 where the server offers it, a 10-s connect timeout, a few idle connections
/// per origin kept for 30 s, redirects never followed (they are part of what is checked: login answers 302).
fn direct(tls: rustls::ClientConfig) -> Direct {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .build(connector)
}

/// Where a request goes: a URL as the configuration holds it, or a hub's path joined as text
/// (`probe::login::hub_url`), made into the request's URI once.
pub trait Target {
    fn uri(self) -> Result<Uri, String>;
}

impl Target for &Url {
    fn uri(self) -> Result<Uri, String> {
        // Never quoted: a URL may carry a key in its path (a heartbeat's).
        self.as_str().parse().map_err(|e: hyper::http::uri::InvalidUri| format!("the URL cannot be sent ({e})"))
    }
}

impl Target for Url {
    fn uri(self) -> Result<Uri, String> {
        (&self).uri()
    }
}

/// A request being made: hyper's request with the headers and body hubwatch gives it. What cannot be made
/// (a URL hyper refuses, a header value with a line break) is the error of its send.
pub struct RequestBuilder {
    request: Result<hyper::Request<Full<Bytes>>, String>,
}

impl RequestBuilder {
    /// Sets header `name` (replacing the value there was).
    pub fn header<V>(mut self, name: impl Into<HeaderName>, value: V) -> Self
    where
        HeaderValue: TryFrom<V>,
    {
        if let Ok(request) = &mut self.request {
            match HeaderValue::try_from(value) {
                Ok(value) => _ = request.headers_mut().insert(name.into(), value),
                Err(_) => self.request = Err(format!("the value of header {} is not valid", name.into())),
            }
        }
        self
    }

    /// Sets each of `headers` (replacing the values there were).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        if let Ok(request) = &mut self.request {
            for (name, value) in headers.iter() {
                request.headers_mut().insert(name, value.clone());
            }
        }
        self
    }

    /// Sets the `Authorization` header `auth` makes (marked sensitive), if any.
    pub fn auth(self, auth: Auth<'_>) -> Self {
        match auth.header() {
            Some(value) => self.header(AUTHORIZATION, value),
            None => self,
        }
    }

    /// HTTP basic authentication (marked sensitive).
    pub fn basic_auth(self, user: &str, password: Option<&str>) -> Self {
        use base64::Engine;
        let pair = format!("{user}:{}", password.unwrap_or_default());
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::try_from(format!("Basic {encoded}")).expect("base64 is a valid header value");
        value.set_sensitive(true);
        self.header(AUTHORIZATION, value)
    }

    /// `body` as JSON, with its content type.
    pub fn json<T: serde::Serialize + ?Sized>(self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.header(CONTENT_TYPE, HeaderValue::from_static("application/json")).body(bytes),
            Err(e) => RequestBuilder { request: Err(format!("cannot write the request body: {e}")) },
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        if let Ok(request) = &mut self.request {
            *request.body_mut() = Full::new(body.into());
        }
        self
    }
}

/// hyper's client and tokio-tungstenite both use rustls, which needs one process-wide crypto provider; ring is the
/// one in the tree (no aws-lc, no openssl). Installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// hyper's client's error as its innermost cause ("Connection refused (os error 111)", "connection closed
/// before message completed"): its own words ("client error (Connect)") tell an operator nothing.
fn from_hyper(error: hyper_util::client::legacy::Error) -> RequestError {
    let text = scrub(&innermost(&error));
    if error.is_connect() { RequestError::Connect(text) } else { RequestError::Transport(text) }
}

/// The innermost cause of `error`, as text.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(inner) = current.source() {
        current = inner;
    }
    current.to_string()
}

/// Masks anything that looks like a token (a run of 24 or more letters, digits or underscores), so a hub
/// message that quotes a credential cannot carry it into logs, metrics or pages.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 24 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_masks_token_like_runs() {
        assert_eq!(scrub("bad token 53c10e1d9fe7412dada16f0ddf534d22 here"), "bad token [redacted] here");
        assert_eq!(scrub("Spawn failed: injected spawn failure"), "Spawn failed: injected spawn failure");
    }

    #[tokio::test]
    async fn requests_carry_the_defaults_and_what_they_are_given() {
        let http = HttpClient::new().unwrap();
        let url: Url = "https://hub.example.org/hub/api/user".parse().unwrap();
        let request = http.post(&url).header(ACCEPT, "text/event-stream").json(&serde_json::json!({"a": 1}));
        let request = request.basic_auth("ops", Some("pw")).request.unwrap();
        assert_eq!((request.method(), request.uri().to_string()), (&Method::POST, url.to_string()));
        let header = |name| request.headers().get(name).unwrap().to_str().unwrap();
        assert_eq!(header(USER_AGENT_HEADER), USER_AGENT);
        assert_eq!(header(ACCEPT), "text/event-stream", "a header given replaces the default");
        assert_eq!(header(CONTENT_TYPE), "application/json");
        assert_eq!(header(AUTHORIZATION), "Basic b3BzOnB3");
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
        assert_eq!(request.into_body().collect().await.unwrap().to_bytes(), r#"{"a":1}"#);
        // A value that cannot be a header fails the send, and the message never quotes it.
        let refused = http.get(&url).header(AUTHORIZATION, "token secret\nmore");
        let error = http.send(refused, Instant::now() + Duration::from_secs(5)).await.err().unwrap().to_string();
        assert!(error.contains("authorization") && !error.contains("secret"), "{error}");
    }

    #[test]
    fn auth_headers_are_sensitive() {
        let secret = Secret::new("abc");
        let header = Auth::Gateway(&secret).header().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().unwrap(), "jupyterhub abc");
        assert!(Auth::None.header().is_none());
    }
}
