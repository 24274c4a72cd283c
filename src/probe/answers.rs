//! What hubs answer, read defensively: failure reasons built from the hub's own short message, never from a
//! verbatim body (single-user error pages embed API tokens); fields that are text only when the hub behaves;
//! links that must stay on the hub; names that must be one path segment.

use crate::domain::wording::truncate;
use crate::http::{Response, scrub};
use hyper::header::HeaderMap;
use url::Url;

/// Longest hub message quoted in a failure reason.
const MESSAGE_LIMIT: usize = 300;

impl Response {
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

/// The hub's own words from an error answer: JSON `message`/`error`, or the login error or title of an
/// HTML page. Truncated and scrubbed of anything that looks like a token.
pub fn hub_message(headers: &HeaderMap, body: &[u8]) -> String {
    let content_type = headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
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
    use hyper::header::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
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
}
