//! The HTTP client of every outgoing request (probes, PagerDuty, webhooks, the identity provider): every
//! request under a deadline, every body read with a size limit, errors scrubbed of anything that looks like
//! a token. What hubs' answers say is read in `probe::answers`.

use crate::domain::Secret;
use bytes::{Bytes, BytesMut};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
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

/// One HTTP client for all hubs; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        let inner = reqwest::Client::builder()
            .user_agent(concat!("hubwatch/", env!("CARGO_PKG_VERSION")))
            // Redirects are part of what is checked (login answers 302), so they are never followed blindly.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(HttpClient { inner })
    }

    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    /// A request with JSON `body` (if any) and `auth`, its body read up to [`BODY_LIMIT`] before `deadline`.
    pub async fn call(
        &self,
        method: Method,
        url: Url,
        auth: Auth<'_>,
        body: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> Result<Response, RequestError> {
        let mut request = self.inner.request(method, url);
        if let Some(header) = auth.header() {
            request = request.header(AUTHORIZATION, header);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, deadline).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder, deadline: Instant) -> Result<Response, RequestError> {
        let response =
            timeout_at(deadline, request.send()).await.map_err(|_| RequestError::Timeout)?.map_err(from_reqwest)?;
        read_limited(response, BODY_LIMIT, deadline).await
    }
}

/// reqwest and tokio-tungstenite both use rustls, which needs one process-wide crypto provider; ring is the
/// one in the tree (no aws-lc, no openssl). Installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a body chunk by chunk, refusing more than `limit` bytes: a hostile or broken hub cannot grow memory.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> Result<Response, RequestError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(RequestError::TooLarge { limit });
    }
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = BytesMut::new();
    loop {
        let chunk =
            timeout_at(deadline, response.chunk()).await.map_err(|_| RequestError::Timeout)?.map_err(from_reqwest)?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > limit {
            return Err(RequestError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, headers, body: body.freeze() })
}

/// A reqwest error as a short sentence without the URL, ending with the innermost cause
/// ("... : Connection refused (os error 111)"), which is what tells an operator what happened.
pub fn from_reqwest(error: reqwest::Error) -> RequestError {
    if error.is_timeout() {
        return RequestError::Timeout;
    }
    let connect = error.is_connect();
    let error = error.without_url();
    let mut text = error.to_string();
    let mut innermost: Option<&dyn std::error::Error> = None;
    let mut current = std::error::Error::source(&error);
    while let Some(e) = current {
        innermost = Some(e);
        current = e.source();
    }
    if let Some(inner) = innermost {
        text = format!("{text}: {inner}");
    }
    if connect { RequestError::Connect(scrub(&text)) } else { RequestError::Transport(scrub(&text)) }
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

    #[test]
    fn auth_headers_are_sensitive() {
        let secret = Secret::new("abc");
        let header = Auth::Gateway(&secret).header().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().unwrap(), "jupyterhub abc");
        assert!(Auth::None.header().is_none());
    }
}
