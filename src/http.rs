//! The HTTP side of probing: every request under a deadline, every body read with a size limit, and
//! failure reasons built from the hub's own short message, never from a verbatim body (single-user error
//! pages embed API tokens).

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
/// Longest hub message quoted in a failure reason.
const MESSAGE_LIMIT: usize = 300;

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

    /// "HTTP 500 Internal Server Error: <the hub's message>", safe to log.
    pub fn describe(&self) -> String {
        let mut text = format!("HTTP {}", self.status);
        let message = hub_message(&self.headers, &self.body);
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(&message);
        }
        text
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

/// The hub's own words from an error answer: JSON `message`/`error`, or the login error or title of an
/// HTML page. Truncated and scrubbed of anything that looks like a token.
pub fn hub_message(headers: &HeaderMap, body: &[u8]) -> String {
    let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]);
    let message = if content_type.contains("json") || text.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Said {
            #[serde(default)]
            message: Text,
            #[serde(default)]
            error: Text,
            #[serde(default)]
            detail: Text,
        }
        serde_json::from_str::<Said>(&text)
            .ok()
            .and_then(|said| said.message.0.or(said.error.0).or(said.detail.0))
            .unwrap_or_default()
    } else if content_type.contains("html") || text.contains("<html") {
        html_element_text(&text, "class=\"login_error\"")
            .or_else(|| html_element_text(&text, "<title"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    truncate(&scrub(&message), MESSAGE_LIMIT)
}

/// A field that is text when the other side behaves; anything else (a number, an object) is skipped without
/// being built, so one odd field neither fails the whole answer nor costs memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text(pub Option<String>);

impl Text {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct AnyValue;
        impl<'de> Visitor<'de> for AnyValue {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(AnyValue)
    }
}

/// The text inside the first element whose opening tag contains `marker`, tags stripped, whitespace folded.
pub fn html_element_text(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)?;
    let open_end = at + html[at..].find('>')? + 1;
    let close = open_end + html[open_end..].find("</")?;
    let text: String = strip_tags(&html[open_end..close]);
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!folded.is_empty()).then(|| unescape_html(&folded))
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
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

pub use crate::domain::truncate;

/// `link` (a path or URL a hub gave: a server's URL, a form's action) resolved against `base`, if it stays
/// on `base`'s scheme, host and port. A hub's answer must not steer hubwatch's tokens, cookies or passwords
/// elsewhere: `//other.example.com/x` is a URL on another host, not a path.
pub fn on_origin(base: &Url, link: &str) -> Result<Url, String> {
    let url = base.join(link).map_err(|e| format!("{:?} is not a URL ({e})", truncate(link, 100)))?;
    if url.origin() != base.origin() {
        return Err(format!(
            "it points to {}://{}, not the hub ({}); hubwatch sends its credentials only to the hub",
            url.scheme(),
            url.host_str().unwrap_or("(no host)"),
            base.origin().ascii_serialization()
        ));
    }
    Ok(url)
}

/// Whether `text` (a kernel id, a Dask cluster name an answer gave) can go into a URL path as one segment
/// as it is: letters, digits, `-`, `_` and `.`, not `.` or `..` (which would climb the path).
pub fn path_segment(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text != "."
        && text != ".."
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        h
    }

    #[test]
    fn json_message_is_the_hub_message() {
        let body = br#"{"status": 400, "message": "probe-1 is already running"}"#;
        assert_eq!(hub_message(&headers("application/json"), body), "probe-1 is already running");
        let body = br#"{"error": "Cluster nope not found"}"#;
        assert_eq!(hub_message(&headers("application/json"), body), "Cluster nope not found");
    }

    #[test]
    fn html_login_error_is_extracted_and_tokens_never_are() {
        let page = r#"<html><head><title>JupyterHub</title></head><body data-jupyter-api-token="53c10e1d9fe7412dada16f0ddf534d22">
            <p class="login_error">
              Invalid username or password
            </p></body></html>"#;
        assert_eq!(hub_message(&headers("text/html; charset=UTF-8"), page.as_bytes()), "Invalid username or password");
        let page = r#"<html><head><title>500 Internal Server Error</title></head><body data-jupyter-api-token="53c10e1d9fe7412dada16f0ddf534d22"></body></html>"#;
        let message = hub_message(&headers("text/html"), page.as_bytes());
        assert_eq!(message, "500 Internal Server Error");
    }

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

    #[test]
    fn links_stay_on_the_hubs_origin() {
        let hub = Url::parse("https://hub.example.org/prefix/").unwrap();
        assert_eq!(on_origin(&hub, "/prefix/user/a/").unwrap().as_str(), "https://hub.example.org/prefix/user/a/");
        assert_eq!(
            on_origin(&hub, "hub/login?next=").unwrap().as_str(),
            "https://hub.example.org/prefix/hub/login?next="
        );
        for elsewhere in [
            "//evil.example.com/user/a/",
            "https://evil.example.com/",
            "http://hub.example.org/prefix/",
            "https://hub.example.org:8443/",
            "\\\\evil.example.com/x",
        ] {
            let error = on_origin(&hub, elsewhere).unwrap_err();
            assert!(error.contains("not the hub (https://hub.example.org)"), "{elsewhere}: {error}");
        }
    }

    #[test]
    fn only_plain_segments_go_into_paths() {
        for ok in ["5f1c1b7e-2d3a-4c7e-9a51-0d3f4b2a6c11", "temple.8f14e45fceea167a5a36dedd4bea2543", "k_1"] {
            assert!(path_segment(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../../hub/api/users", "a/b", "a?b", "a%2Fb", "a b", "é"] {
            assert!(!path_segment(bad), "{bad}");
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
