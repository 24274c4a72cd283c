//! No cross-site writes, no rebinding. A browser sends the on-call engineer's cached credentials with any
//! request a foreign page makes it send, so authentication alone does not say the engineer meant it:
//!
//! - every request must name, in `Host`, a host hubwatch is served at: an IP address, `localhost` (a
//!   `kubectl port-forward`), `public_url`'s host or one of `web.hosts` — a name an attacker's DNS points at
//!   hubwatch (DNS rebinding) is none of these;
//! - a request that changes something (any method but GET, HEAD and OPTIONS) must come from hubwatch's own
//!   origin: refused when `Sec-Fetch-Site` says `cross-site` or `same-site`, or when its `Origin` (without
//!   one, its `Referer`) is another origin than the one it was sent to or `public_url`'s. The CLI sends
//!   neither header;
//! - and, when it has a body, `Content-Type: application/json`, which no HTML form can send.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use url::Url;

/// Where hubwatch's pages are served: what `Host` and `Origin` may name.
#[derive(Debug, Clone)]
pub struct Served {
    /// `public_url`'s origin (`https://hubwatch.example.org`), when configured.
    public_origin: Option<String>,
    /// Host names besides IP addresses and `localhost` (lowercase, no port).
    names: Vec<String>,
}

/// Why a request is refused before anything else looks at it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `Host` names no host hubwatch is served at.
    Host(String),
    /// A write from another site.
    CrossSite(String),
    /// A write whose body is not JSON.
    NotJson,
}

impl Served {
    pub fn new(public_url: Option<&Url>, hosts: &[String]) -> Self {
        let public_host = public_url.and_then(Url::host_str).map(str::to_ascii_lowercase);
        let names = public_host.into_iter().chain(hosts.iter().map(|h| h.to_ascii_lowercase())).collect();
        let public_origin = public_url.map(|url| url.origin().ascii_serialization());
        Served { public_origin, names }
    }

    /// The refusal of a request with `method` and `headers`, if it is refused.
    pub fn judge(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refused> {
        let host = text(headers, header::HOST);
        if let Some(host) = host
            && !self.serves(host)
        {
            return Err(Refused::Host(host.to_string()));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        if let Some(site @ ("cross-site" | "same-site")) = text(headers, "sec-fetch-site") {
            return Err(Refused::CrossSite(format!("the browser says the request is {site}")));
        }
        let from = text(headers, header::ORIGIN).or_else(|| text(headers, header::REFERER));
        if let Some(from) = from
            && !self.own_origin(from, host)
        {
            return Err(Refused::CrossSite(format!("it comes from {from}")));
        }
        let has_body = !matches!(*method, Method::DELETE);
        let json = text(headers, header::CONTENT_TYPE)
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if has_body && !json {
            return Err(Refused::NotJson);
        }
        Ok(())
    }

    fn serves(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        let ip = name.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok();
        ip || name == "localhost" || self.names.contains(&name)
    }

    /// `from` (an Origin or a Referer) is the origin the request was sent to (`host`, already known to be
    /// served) or `public_url`'s.
    fn own_origin(&self, from: &str, host: Option<&str>) -> bool {
        let Ok(url) = Url::parse(from) else { return false };
        let origin = url.origin().ascii_serialization();
        let to_host = host.is_some_and(|host| {
            ["http", "https"].iter().any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
        });
        to_host || self.public_origin.as_deref().is_some_and(|public| origin.eq_ignore_ascii_case(public))
    }
}

fn text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty())
}

/// `host:port` → `host` (`[::1]:80` → `[::1]`).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    }
}

/// The middleware: refuses what [`Served::judge`] refuses, before authentication spends a bcrypt on it.
pub async fn require(State(served): State<Arc<Served>>, request: Request, next: Next) -> Response {
    match served.judge(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(Refused::Host(host)) => {
            let why = format!("hubwatch is not served at {host:?} (public_url and web.hosts name where it is)\n");
            (StatusCode::MISDIRECTED_REQUEST, why).into_response()
        }
        Err(Refused::CrossSite(why)) => {
            let why = format!("refused: a change to hubwatch must come from its own pages or its API ({why})\n");
            (StatusCode::FORBIDDEN, why).into_response()
        }
        Err(Refused::NotJson) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be JSON (Content-Type: application/json)\n")
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn served() -> Served {
        Served::new(Some(&Url::parse("https://hubwatch.example.org/").unwrap()), &["hubwatch.monitoring".into()])
    }

    #[test]
    fn hosts_are_addresses_localhost_public_url_and_web_hosts() {
        let served = served();
        for host in [
            "127.0.0.1:9464",
            "10.2.3.4",
            "[::1]:8080",
            "localhost:8080",
            "HubWatch.example.org",
            "hubwatch.monitoring:9464",
        ] {
            assert_eq!(served.judge(&Method::GET, &headers(&[("host", host)])), Ok(()), "{host}");
        }
        let rebound = served.judge(&Method::GET, &headers(&[("host", "evil.example:9464")]));
        assert_eq!(rebound, Err(Refused::Host("evil.example:9464".into())));
    }

    #[test]
    fn writes_come_from_the_own_origin_with_json() {
        let served = served();
        let json = ("content-type", "application/json");
        let host = ("host", "localhost:8080");
        let ok = |pairs: &[(&'static str, &str)]| served.judge(&Method::POST, &headers(pairs));
        assert_eq!(ok(&[host, json]), Ok(()), "the CLI: no Origin");
        assert_eq!(ok(&[host, json, ("origin", "http://localhost:8080")]), Ok(()), "the pages themselves");
        assert_eq!(ok(&[host, json, ("origin", "https://hubwatch.example.org")]), Ok(()), "public_url");
        assert!(matches!(ok(&[host, json, ("origin", "https://evil.example")]), Err(Refused::CrossSite(_))));
        assert!(matches!(ok(&[host, json, ("origin", "null")]), Err(Refused::CrossSite(_))));
        assert!(matches!(ok(&[host, json, ("referer", "https://evil.example/x")]), Err(Refused::CrossSite(_))));
        assert!(matches!(ok(&[host, json, ("sec-fetch-site", "cross-site")]), Err(Refused::CrossSite(_))));
        assert!(matches!(ok(&[host, json, ("sec-fetch-site", "same-site")]), Err(Refused::CrossSite(_))));
        for form in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            assert_eq!(ok(&[host, ("content-type", form)]), Err(Refused::NotJson), "{form}");
        }
        assert_eq!(ok(&[host]), Err(Refused::NotJson), "no Content-Type");
        let delete = served.judge(&Method::DELETE, &headers(&[host, ("origin", "https://evil.example")]));
        assert!(matches!(delete, Err(Refused::CrossSite(_))), "DELETE too");
        assert_eq!(served.judge(&Method::DELETE, &headers(&[host])), Ok(()), "a DELETE has no body");
    }
}
